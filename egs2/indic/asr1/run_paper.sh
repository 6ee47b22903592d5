#!/usr/bin/env bash
# The papers' configurations on real corpora (needs a GPU machine, the corpora
# and the checkpoints in the local Hugging Face cache or as local dirs; nothing
# is downloaded at run time):
#
#   ./run_paper.sh smear_moe [llm_asr.sh options]   # Whisper-large-v3 + SMEAR-MoE + Gemma-2-9B
#   ./run_paper.sh mono      [...]                  # the SMEAR paper's single-projector baseline
#   ./run_paper.sh moe_cif   [...]                  # Whisper-large-v3 + MoE+CIF + Qwen2.5-7B
#   ./run_paper.sh moe_cif_lora [...]               # its second stage (LoRA r=16), after moe_cif
#
# Data (stage 1): Kathbath (db.sh: KATHBATH) gives train, dev, test_known and
# test_unknown for hi, mr, ta, te; the FLEURS and Common Voice test sets are
# added as test_fleurs and test_commonvoice when db.sh sets their roots.  Any
# other corpus: local/data.sh --corpus ... (see its --help), then --stage 2.
# Decoding: conf/decode_paper.yaml (the SMEAR paper's beam 4, repetition
# penalty 1.3, length penalty 0.8, 200 new tokens).  The encoder runs on full
# 30 s windows as real Whisper does (pad_to_30s; in bf16 where the card has
# it, dtype: auto), outputs trimmed to the utterance, dumped in float16.
# E.g. on 8 GPUs (a dumping or decoding job on each card, DDP training):
#   ./run_paper.sh smear_moe --ngpu 8 --nj 8 --inference_nj 8
#   ./run_paper.sh smear_moe --encoder /models/whisper-large-v3 --llm /models/gemma-2-9b
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 1; }
cd "$(dirname "$0")"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (run_paper.sh) $*"; }
paper=$1; shift
langs=hi,mr,ta,te
init_param=()
case "${paper}" in
    smear_moe) llm=google/gemma-2-9b; asr_config=conf/paper/train_smear_moe_gemma2_9b.yaml ;;
    mono) llm=google/gemma-2-9b; asr_config=conf/paper/train_mono_gemma2_9b.yaml ;;
    moe_cif) llm=Qwen/Qwen2.5-7B; asr_config=conf/paper/train_moe_cif_qwen2_7b.yaml ;;
    moe_cif_lora) llm=Qwen/Qwen2.5-7B; asr_config=conf/paper/train_moe_cif_qwen2_7b_lora.yaml
        init_param=(--asr_args "--init_param exp/asr_train_moe_cif_qwen2_7b/valid.acc.ave.pth") ;;
    *) echo "$0: unknown configuration '${paper}' (smear_moe, mono, moe_cif, moe_cif_lora)" >&2; exit 1 ;;
esac

# stage 1 here (several corpora), the rest in llm_asr.sh; --stage N is honoured
stage=1
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --stage) stage=$2; shift 2 ;;
        --stage=*) stage=${1#*=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
test_sets="test_known test_unknown"
. ./db.sh
[ -n "${FLEURS}" ] && test_sets+=" test_fleurs"
[ -n "${COMMONVOICE}" ] && test_sets+=" test_commonvoice"
if [ "${stage}" -le 1 ]; then
    log "Stage 1: Kathbath (${langs}) and the test sets of FLEURS / Common Voice where db.sh sets them"
    local/data.sh --corpus kathbath --langs "${langs}"
    [ -z "${FLEURS}" ] || local/data.sh --corpus fleurs --langs "${langs}" --splits test --suffix _fleurs
    [ -z "${COMMONVOICE}" ] || local/data.sh --corpus commonvoice --langs "${langs}" --splits test --suffix _commonvoice
fi

./llm_asr.sh \
    --stage "$(( stage > 2 ? stage : 2 ))" \
    --train_set train \
    --valid_set dev \
    --test_sets "${test_sets}" \
    --lang_list data/lang_list \
    --encoder openai/whisper-large-v3 \
    --encoder_conf "{pad_to_30s: true, dtype: auto}" \
    --dump_dtype float16 \
    --llm "${llm}" \
    --asr_config "${asr_config}" \
    --inference_config conf/decode_paper.yaml \
    --inference_model valid.acc.ave.pth \
    --max_wav_duration 30 \
    "${init_param[@]}" \
    "${args[@]}"
