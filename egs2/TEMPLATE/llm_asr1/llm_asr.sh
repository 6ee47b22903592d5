#!/usr/bin/env bash
# Shared stage script for LLM-based ASR recipes (espnet_llm_asr), in the
# manner of ESPnet's asr.sh.  A recipe's run.sh sets options and calls it:
#
#   ./llm_asr.sh --stage 1 --stop_stage 13 --asr_config conf/train_smear_moe.yaml ...
#
# Stages (asr.sh numbering where it fits):
#   1  data preparation (local/data.sh)           8  LLM dev perplexity
#   2  speed perturbation (optional)               9  frozen encoder feature dumping
#   3  audio to 16 kHz mono under dump/raw         10 shape statistics (+ untokenizable filter)
#   4  filtering (length, empty text) + report     11 training
#   5  tokenizer and tiny models (embedded default) 12 batched decoding in --inference_nj jobs
#   6  LLM text statistics                         13 sclite scoring (WER, CER), RESULTS.md, plots
#   7  pretraining of the tiny LLM (skipped for a real LLM)
#   14 packing (after 13; not run by default): <exp>/pack, a self-describing
#      model dir for Speech2Text.from_pretrained, bin/transcribe and the Hub
#
# Every stage logs to a file under its output dir, says what it did, and skips
# work whose inputs have not changed (a signature in a .done file); pass
# --redo true to force the selected stages.
set -euo pipefail

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}) $*"; }
die() { log "ERROR: $*" >&2; exit 1; }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# ------------------------------------------------------------------ options
stage=1                 # first stage to run
stop_stage=13           # last stage to run
nj=2                    # parallel jobs for data and dumping stages
inference_nj=2          # parallel decoding jobs
ngpu=0                  # GPUs (0: CPU).  N >= 1: training on N cards (N > 1: one process a card, DDP);
                        # each dumping (stage 9) and decoding (stage 12) job on a card of its own
                        # (${cuda_cmd} --gpu 1: cards in turn from CUDA_VISIBLE_DEVICES)
train_threads=""        # CPU threads of the single-job stages 5, 7, 11 (default: all cores;
                        # parallel jobs keep path.sh's OMP_NUM_THREADS, 1 each)
redo=false              # re-run selected stages even when done
continue_run=false      # stage 11: resume the exp dir's checkpoint even when that run had other inputs
                        # (e.g. to train on with a larger --max_epoch); otherwise such a dir stops the stage
dumpdir=dump            # dumped data
expdir=exp              # experiments

# data
local_data_opts=""      # options passed to local/data.sh
train_set=train
valid_set=dev
test_sets="test"
lang_list=data/lang_list  # one language code a line (written by local/data.sh)
speed_perturb_factors=""  # e.g. "0.9 1.0 1.1"
min_wav_duration=0.1      # seconds
max_wav_duration=60       # seconds (audio over 30 s is encoded in windows)
fix_data=false            # drop bad utterances (with a report) instead of stopping

# models: "tiny" builds the embedded default models in stage 5
encoder=tiny            # HF Whisper dir/name, or tiny
llm=tiny                # HF causal LM dir/name, or tiny
tiny_config=conf/tiny_models.yaml
dump_feats=true         # dump frozen encoder features (stage 9) and train on them
dump_dtype=float32      # float32 | float16 (half the disk; read back as float32, within fp16 rounding)
encoder_conf=""         # encoder options (flow yaml), for stage 9 and the trained model; default:
                        # the asr_config's frontend_conf.encoder_conf, else {pad_to_30s: false}

# training / decoding
asr_config=conf/train_smear_moe.yaml
asr_tag=""              # experiment name suffix (default: config name)
asr_args=""             # extra options for the train binary
inference_config=conf/decode.yaml
results=""              # RESULTS.md path (default: RESULTS.md for --expdir exp, else <expdir>/RESULTS.md)
inference_tag=""
inference_model=valid.acc.ave.pth
inference_args=""
batch_size=8            # decoding batch size
pack_embed_max_mb=64    # stage 14: frozen model dirs up to this size go into the pack

# --help: the stages above, then every option of this block with its default and comment
help_message="$(sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//')
Options (--name value; the default after =):
$(sed -n '/^# -* options$/,/^help_message=/p' "$0" | sed '1d;$d' | sed '/^# --help/d' | sed 's/^\([a-z_]*\)=/  --\1=/; s/^                        #/                            #/')"
. utils/parse_options.sh
[ $# -eq 0 ] || die "unexpected arguments: $*"

[ -f path.sh ] && . ./path.sh
[ -f cmd.sh ] && . ./cmd.sh
: "${train_cmd:=utils/run_jobs.sh}" "${decode_cmd:=utils/run_jobs.sh}" "${cuda_cmd:=utils/run_jobs.sh}"
[[ "${ngpu}" =~ ^[0-9]+$ ]] || die "--ngpu must be a number of GPUs, got '${ngpu}'"
# dumping (9) and decoding (12) jobs get a card each, training (11) all N
if [ "${ngpu}" -ge 1 ]; then
    job_device=cuda; dump_job_cmd="${cuda_cmd} --gpu 1"; decode_job_cmd="${cuda_cmd} --gpu 1"
    train_job_cmd="${cuda_cmd} --gpu ${ngpu}"
else
    job_device=cpu; dump_job_cmd="${train_cmd}"; decode_job_cmd="${decode_cmd}"; train_job_cmd="${train_cmd}"
fi

python=python3
command -v python >/dev/null && python=python
[ -n "${train_threads}" ] || train_threads="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
single_job() { env OMP_NUM_THREADS="${train_threads}" "$@"; }  # single_job ${train_cmd} LOG CMD...

done_sig() {  # done_sig <dir> <stage> <signature...>: 0 if the stage ran with this signature
    local dir=$1 st=$2; shift 2
    [ "${redo}" = true ] && return 1
    [ -f "${dir}/.done.stage${st}" ] && [ "$(cat "${dir}/.done.stage${st}")" = "$*" ]
}
mark_done() { local dir=$1 st=$2; shift 2; mkdir -p "${dir}"; echo "$*" > "${dir}/.done.stage${st}"; }
sig_of() { ${python} -m espnet_llm_asr.bin.datadir signature "$@"; }

all_sets="${train_set} ${valid_set} ${test_sets}"
data_train_set="${train_set}"
if [ -n "${speed_perturb_factors}" ]; then data_train_set="${train_set}_sp"; fi
dump_sets="${data_train_set} ${valid_set} ${test_sets}"

case "${dump_dtype}" in float32|float16) ;; *) die "--dump_dtype must be float32 or float16, got '${dump_dtype}'" ;; esac
if [ -z "${encoder_conf}" ]; then  # one encoder_conf for the dump (stage 9) and the model (stage 11)
    encoder_conf="$(${python} -m espnet_llm_asr.bin.datadir encoder_conf --config "${asr_config}")" \
        || die "cannot read frontend_conf.encoder_conf of --asr_config ${asr_config}"
fi
[ -n "${asr_tag}" ] || asr_tag="$(basename "${asr_config}" .yaml)"
asr_exp="${expdir}/asr_${asr_tag}"
if [ -z "${inference_tag}" ]; then
    inference_tag="$(basename "${inference_config}" .yaml)"
    inference_tag="decode_${inference_tag#decode_}_$(basename "${inference_model}" .pth)"
fi
tiny_dir="${expdir}/tiny_models"
[ "${encoder}" = tiny ] && encoder_path="${tiny_dir}/whisper" || encoder_path="${encoder}"
# dumped features per encoder: a run with another encoder never replaces the default's
[ "${encoder}" = tiny ] && feats_root="${dumpdir}/feats" || feats_root="${dumpdir}/feats_$(basename "${encoder_path}")"
# RESULTS.md of the default exp dir beside run.sh; another --expdir keeps its own
[ -n "${results}" ] || { [ "${expdir}" = exp ] && results=RESULTS.md || results="${expdir}/RESULTS.md"; }
[ "${llm}" = tiny ] && llm_path="${tiny_dir}/llm" || llm_path="${llm}"

log "$0 $*"
log "stages ${stage}..${stop_stage}; experiment: ${asr_exp}; encoder: ${encoder_path}; llm: ${llm_path}"

# ------------------------------------------------------------------ stage 1
if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
    local/data.sh ${local_data_opts}
    for s in ${all_sets}; do
        [ -f "data/${s}/wav.scp" ] && [ -f "data/${s}/text" ] || die "local/data.sh did not produce data/${s}/{wav.scp,text}"
    done
fi

# ------------------------------------------------------------------ stage 2
if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    if [ -n "${speed_perturb_factors}" ]; then
        sig="$(sig_of "data/${train_set}") ${speed_perturb_factors}"
        if done_sig "data/${data_train_set}" 2 "${sig}"; then
            log "Stage 2: data/${data_train_set} is up to date, skipped"
        else
            log "Stage 2: speed perturbation ${speed_perturb_factors} -> data/${data_train_set}"
            ${python} -m espnet_llm_asr.bin.datadir speed_perturb --src "data/${train_set}" \
                --dst "data/${data_train_set}" --factors "${speed_perturb_factors}" --nj "${nj}"
            mark_done "data/${data_train_set}" 2 "${sig}"
        fi
    else
        log "Stage 2: no speed perturbation (--speed_perturb_factors is empty), skipped"
    fi
fi

# ------------------------------------------------------------------ stage 3
if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    for s in ${dump_sets}; do
        out="${dumpdir}/raw/${s}"
        sig="$(sig_of "data/${s}") fix=${fix_data}"
        if done_sig "${out}" 3 "${sig}"; then log "Stage 3: ${out} is up to date, skipped"; continue; fi
        log "Stage 3: formatting data/${s} -> ${out} (16 kHz mono PCM, validated)"
        mkdir -p "${out}/logs"
        ${python} -m espnet_llm_asr.bin.datadir format --src "data/${s}" --dst "${out}" --nj "${nj}" \
            --fix_data "${fix_data}" 2>&1 | tee "${out}/logs/format.log"
        mark_done "${out}" 3 "${sig}"
    done
fi

# ------------------------------------------------------------------ stage 4
if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    for s in ${dump_sets}; do
        out="${dumpdir}/raw/${s}"
        sig="$(sig_of "${out}/wav.scp" "${out}/text") ${min_wav_duration} ${max_wav_duration}"
        if done_sig "${out}" 4 "${sig}"; then log "Stage 4: ${out} filtering is up to date, skipped"; continue; fi
        log "Stage 4: filtering ${out} (duration ${min_wav_duration}-${max_wav_duration} s, empty text)"
        ${python} -m espnet_llm_asr.bin.datadir filter --dir "${out}" \
            --min_duration "${min_wav_duration}" --max_duration "${max_wav_duration}" 2>&1 | tee "${out}/logs/filter.log"
        mark_done "${out}" 4 "$(sig_of "${out}/wav.scp" "${out}/text") ${min_wav_duration} ${max_wav_duration}"
    done
fi

# ------------------------------------------------------------------ stage 5
# The tiny encoder and the tiny tokenizer + LLM have separate signatures (the
# config sections each depends on), so changing one never rebuilds the other.
tiny_sig() {  # tiny_sig <sections>: hash of those sections of the effective tiny-model config
    ${python} -m espnet_llm_asr.bin.make_tiny_models --config "${tiny_config}" --print_config --sections "$1" \
        | sha1sum | cut -c1-16
}
if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    train_dir="${dumpdir}/raw/${data_train_set}"
    if [ "${encoder}" = tiny ]; then
        sig="$(sig_of "${train_dir}/text" "${train_dir}/wav.scp") $(tiny_sig seed,whisper,pretrain_encoder)"
        if done_sig "${tiny_dir}" 5_encoder "${sig}"; then
            log "Stage 5: tiny encoder ${encoder_path} is up to date, skipped"
        else
            log "Stage 5: building the tiny Whisper encoder and pretraining it with a CTC head" \
                "(log: ${tiny_dir}/logs/pretrain_encoder.log)"
            mkdir -p "${tiny_dir}/logs"
            ${train_cmd} "${tiny_dir}/logs/make_tiny_whisper.log" \
                ${python} -m espnet_llm_asr.bin.make_tiny_models --config "${tiny_config}" --parts whisper \
                --out_dir "${tiny_dir}" --train_text "${train_dir}/text"
            single_job ${train_cmd} "${tiny_dir}/logs/pretrain_encoder.log" \
                ${python} -m espnet_llm_asr.bin.pretrain_tiny_models encoder --config "${tiny_config}" \
                --model_dir "${encoder_path}" --data_dir "${train_dir}"
            # what the frozen features carry on their own: CTC-only transcripts of the dev set
            ${train_cmd} "${tiny_dir}/logs/ctc_decode_${valid_set}.log" \
                ${python} -m espnet_llm_asr.bin.pretrain_tiny_models ctc_decode --model_dir "${encoder_path}" \
                --data_dir "${dumpdir}/raw/${valid_set}" --out "${tiny_dir}/ctc_${valid_set}/text"
            log "Stage 5: encoder-only CTC on ${valid_set}: $(grep '^{' "${tiny_dir}/logs/ctc_decode_${valid_set}.log")"
            mark_done "${tiny_dir}" 5_encoder "${sig}"
        fi
    fi
    if [ "${llm}" = tiny ]; then
        sig="$(sig_of "${train_dir}/text") $(tiny_sig seed,tokenizer,llm)"
        if done_sig "${tiny_dir}" 5_llm "${sig}"; then
            log "Stage 5: tiny tokenizer and LLM ${llm_path} are up to date, skipped"
        else
            log "Stage 5: training the tokenizer and building the tiny LLM in ${tiny_dir}"
            mkdir -p "${tiny_dir}/logs"
            ${train_cmd} "${tiny_dir}/logs/make_tiny_llm.log" \
                ${python} -m espnet_llm_asr.bin.make_tiny_models --config "${tiny_config}" --parts tokenizer,llm \
                --out_dir "${tiny_dir}" --train_text "${train_dir}/text"
            mark_done "${tiny_dir}" 5_llm "${sig}"
        fi
    fi
    if [ "${encoder}" != tiny ] && [ "${llm}" != tiny ]; then
        log "Stage 5: real checkpoints (${encoder_path}, ${llm_path}): the LLM's own tokenizer is used, nothing to build"
    fi
fi

# ------------------------------------------------------------------ stage 6
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    out="${expdir}/llm_stats"
    # only the tokenizer matters here (stage 7 may retrain the weights afterwards)
    sig="$(sig_of "${dumpdir}/raw/${data_train_set}/text" "${llm_path}"/tokenizer*)"
    if done_sig "${out}" 6 "${sig}"; then
        log "Stage 6: ${out}/stats.txt is up to date, skipped"
    else
        log "Stage 6: LLM text statistics -> ${out}/stats.txt"
        mkdir -p "${out}"
        ${python} -m espnet_llm_asr.bin.llm_text_stats stats --llm "${llm_path}" \
            --text "${dumpdir}/raw/${data_train_set}/text" --utt2lang "${dumpdir}/raw/${data_train_set}/utt2lang" \
            --out "${out}/stats.txt"
        mark_done "${out}" 6 "${sig}"
    fi
fi

# ------------------------------------------------------------------ stage 7
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
    if [ "${llm}" = tiny ]; then
        sig="$(sig_of "${dumpdir}/raw/${data_train_set}/text") $(tiny_sig seed,pretrain_llm)"
        sig="${sig} $(cat "${tiny_dir}/.done.stage5_llm" 2>/dev/null || true)"
        if done_sig "${tiny_dir}" 7 "${sig}"; then
            log "Stage 7: tiny LLM already pretrained, skipped"
        else
            log "Stage 7: pretraining the tiny LLM on the training text (log: ${tiny_dir}/logs/pretrain_llm.log)"
            # from a freshly built LM (same seed), never on top of an earlier pretraining
            ${train_cmd} "${tiny_dir}/logs/make_tiny_llm.log" \
                ${python} -m espnet_llm_asr.bin.make_tiny_models --config "${tiny_config}" --parts llm \
                --out_dir "${tiny_dir}" --train_text "${dumpdir}/raw/${data_train_set}/text"
            single_job ${train_cmd} "${tiny_dir}/logs/pretrain_llm.log" \
                ${python} -m espnet_llm_asr.bin.pretrain_tiny_models llm --config "${tiny_config}" \
                --model_dir "${llm_path}" --text "${dumpdir}/raw/${data_train_set}/text"
            # what a projector can reach through this LM: its reading of oracle speech slots of dev
            ${train_cmd} "${tiny_dir}/logs/read_check_${valid_set}.log" \
                ${python} -m espnet_llm_asr.bin.pretrain_tiny_models read_check --config "${tiny_config}" \
                --model_dir "${llm_path}" --text "${dumpdir}/raw/${valid_set}/text"
            log "Stage 7: LM reading oracle slots of ${valid_set}: $(grep '^{' "${tiny_dir}/logs/read_check_${valid_set}.log")"
            mark_done "${tiny_dir}" 7 "${sig}"
        fi
    else
        log "Stage 7: real LLM (${llm_path}): no LM pretraining, skipped"
    fi
fi

# ------------------------------------------------------------------ stage 8
if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
    out="${expdir}/llm_stats"
    sig="$(sig_of "${dumpdir}/raw/${valid_set}/text" "${llm_path}")"
    if done_sig "${out}" 8 "${sig}"; then
        log "Stage 8: ${out}/perplexity_${valid_set}.txt is up to date, skipped"
    else
        log "Stage 8: LLM perplexity on ${valid_set} -> ${out}/perplexity_${valid_set}.txt"
        mkdir -p "${out}"
        ${python} -m espnet_llm_asr.bin.llm_text_stats perplexity --llm "${llm_path}" \
            --text "${dumpdir}/raw/${valid_set}/text" --utt2lang "${dumpdir}/raw/${valid_set}/utt2lang" \
            --out "${out}/perplexity_${valid_set}.txt"
        mark_done "${out}" 8 "${sig}"
    fi
    cat "${out}/perplexity_${valid_set}.txt"
fi

# ------------------------------------------------------------------ stage 9
if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
    if [ "${dump_feats}" = true ]; then
        for s in ${dump_sets}; do
            out="${feats_root}/${s}"
            sig="$(sig_of "${dumpdir}/raw/${s}/wav.scp" "${encoder_path}") ${encoder_conf}"
            [ "${dump_dtype}" = float32 ] || sig="${sig} ${dump_dtype}"  # float32: the signature as before
            if done_sig "${out}" 9 "${sig}"; then log "Stage 9: ${out} is up to date, skipped"; continue; fi
            log "Stage 9: dumping frozen encoder features of ${s} -> ${out} (${nj} jobs on ${job_device}, ${dump_dtype})"
            rm -rf "${out}"; mkdir -p "${out}/logs"
            ${dump_job_cmd} JOB=1:${nj} "${out}/logs/dump.JOB.log" \
                ${python} -m espnet_llm_asr.bin.dump_encoder_feats --encoder "${encoder_path}" \
                --encoder_conf "${encoder_conf}" --data_dir "${dumpdir}/raw/${s}" --out_dir "${out}" \
                --dtype "${dump_dtype}" --nj "${nj}" --job_id JOB --device "${job_device}"
            ${python} -m espnet_llm_asr.bin.dump_encoder_feats --data_dir "${dumpdir}/raw/${s}" \
                --out_dir "${out}" --nj "${nj}" --merge_only
            mark_done "${out}" 9 "${sig}"
        done
    else
        log "Stage 9: --dump_feats false: the encoder runs on the fly during training, skipped"
    fi
fi

# speech input of training and decoding
speech_of() {  # speech_of <set> -> "path,speech,type"
    if [ "${dump_feats}" = true ]; then echo "${feats_root}/$1/feats.scp,speech,kaldi_ark"
    else echo "${dumpdir}/raw/$1/wav.scp,speech,sound"; fi
}
stats_dir="${expdir}/stats_$(basename "${llm_path}")_$([ "${dump_feats}" = true ] && echo feats || echo raw)"

# ------------------------------------------------------------------ stage 10
if [ ${stage} -le 10 ] && [ ${stop_stage} -ge 10 ]; then
    for s in ${data_train_set} ${valid_set}; do
        out="${stats_dir}/${s}"
        feats_shape=""
        [ "${dump_feats}" = true ] && feats_shape="${feats_root}/${s}/feats_shape"
        sig="$(sig_of "${dumpdir}/raw/${s}" ${feats_shape} "${llm_path}/tokenizer_config.json")"
        if done_sig "${out}" 10 "${sig}"; then log "Stage 10: ${out} is up to date, skipped"; continue; fi
        log "Stage 10: shape statistics of ${s} -> ${out}/{speech_shape,text_shape}"
        ${python} -m espnet_llm_asr.bin.datadir shapes --dir "${dumpdir}/raw/${s}" --out_dir "${out}" \
            --llm "${llm_path}" ${feats_shape:+--feats_shape "${feats_shape}"}
        mark_done "${out}" 10 "${sig}"
    done
fi

# ------------------------------------------------------------------ stage 11
if [ ${stage} -le 11 ] && [ ${stop_stage} -ge 11 ]; then
    [ -f "${asr_config}" ] || die "--asr_config ${asr_config} does not exist"
    sig="$(sig_of "${asr_config}" "${stats_dir}" "${lang_list}" "${llm_path}" "${encoder_path}") ${asr_args} ${dump_feats}"
  if done_sig "${asr_exp}" 11 "${sig}"; then
    log "Stage 11: ${asr_exp} is trained with these inputs, skipped (--redo true retrains)"
  else
    # a run resumes only itself: .started.stage11 holds the signature and inputs it was started with
    started="${asr_exp}/.started.stage11"
    inputs="config ${asr_config} ($(sha1sum < "${asr_config}" | cut -c1-12)), asr_args '${asr_args}', llm ${llm_path}, encoder ${encoder_path}, dump_feats ${dump_feats}, stats ${stats_dir}"
    resume=true
    if [ "${redo}" = true ]; then
        resume=false
        if ls "${asr_exp}"/*.pth >/dev/null 2>&1; then
            log "Stage 11: --redo true: removing the checkpoints of the earlier run in ${asr_exp}"
            rm -f "${asr_exp}"/*.pth "${asr_exp}/.done.stage11"; rm -rf "${asr_exp}/images"
        fi
    elif [ -f "${asr_exp}/checkpoint.pth" ]; then
        if [ "${continue_run}" = true ]; then
            log "Stage 11: --continue_run true: resuming ${asr_exp}'s checkpoint with these inputs: ${inputs}"
        elif [ ! -f "${started}" ]; then
            die "Stage 11: ${asr_exp} holds a run whose inputs were not recorded; resuming it could continue" \
                "another configuration. Now: ${inputs}. Pass --redo true to retrain it, --asr_tag NAME to train beside it," \
                "or --continue_run true to train it on with these inputs."
        elif [ "$(head -n 1 "${started}")" != "${sig}" ]; then
            die "Stage 11: ${asr_exp} holds a run of other inputs; resuming it would continue that run, not this one." \
                "\n  that run: $(sed -n 2p "${started}")\n  this one: ${inputs}" \
                "\n  Pass --redo true to retrain ${asr_exp}, --asr_tag NAME to train beside it, or" \
                "--continue_run true to train that run on with these inputs."
        else
            log "Stage 11: resuming the interrupted run in ${asr_exp} (same inputs)"
        fi
    fi
    log "Stage 11: training ${asr_exp} (config ${asr_config}; log ${asr_exp}/train.log)"
    mkdir -p "${asr_exp}"
    printf '%s\n%s\n' "${sig}" "${inputs}" > "${started}"
    train_args=()
    for s in train valid; do
        [ "${s}" = train ] && set_="${data_train_set}" || set_="${valid_set}"
        train_args+=(--${s}_data_path_and_name_and_type "$(speech_of "${set_}")"
                     --${s}_data_path_and_name_and_type "${dumpdir}/raw/${set_}/text,text,text"
                     --${s}_shape_file "${stats_dir}/${set_}/speech_shape")
        if [ -f "${dumpdir}/raw/${set_}/utt2lang" ]; then
            train_args+=(--${s}_data_path_and_name_and_type "${dumpdir}/raw/${set_}/utt2lang,lang,text")
        fi
    done
    # the encoder is named even when training on dumped features: it is loaded
    # only for waveform input, so the trained model can transcribe wav files
    frontend_args=(--frontend_conf "encoder=${encoder_path}" --frontend_conf "encoder_conf=${encoder_conf}")
    dist_args=()
    [ "${ngpu}" -gt 1 ] && dist_args=(--multiprocessing_distributed true)
    # shellcheck disable=SC2086
    single_job ${train_job_cmd} "${asr_exp}/train.log" \
        ${python} -m espnet_llm_asr.bin.llm_asr_train --config "${asr_config}" --output_dir "${asr_exp}" \
        --ngpu "${ngpu}" "${dist_args[@]}" --resume "${resume}" --llm "${llm_path}" --lang_list "${lang_list}" \
        "${frontend_args[@]}" "${train_args[@]}" ${asr_args}
    mark_done "${asr_exp}" 11 "${sig}"
    log "Stage 11: done; checkpoints in ${asr_exp}"
  fi
fi

# ------------------------------------------------------------------ stage 12
if [ ${stage} -le 12 ] && [ ${stop_stage} -ge 12 ]; then
    [ -f "${asr_exp}/${inference_model}" ] || die "${asr_exp}/${inference_model} not found: train first (stage 11)"
    # this decode tag's decoding: first line the config and the extra arguments (what stage 13's
    # RESULTS.md names), then every decoding option in effect (what Speech2Text(exp_dir) decodes with)
    mkdir -p "${asr_exp}/${inference_tag}"
    # shellcheck disable=SC2086
    { echo "# ${inference_config} ${inference_args}"
      ${python} -m espnet_llm_asr.bin.llm_asr_inference --print_config --config "${inference_config}" ${inference_args}
    } > "${asr_exp}/${inference_tag}/decode_config.yaml.tmp"
    mv "${asr_exp}/${inference_tag}/decode_config.yaml.tmp" "${asr_exp}/${inference_tag}/decode_config.yaml"
    for s in ${test_sets}; do
        dir="${asr_exp}/${inference_tag}/${s}"
        sig="$(sig_of "${asr_exp}/${inference_model}" "${inference_config}" "${dumpdir}/raw/${s}/wav.scp") ${inference_args}"
        if done_sig "${dir}" 12 "${sig}"; then log "Stage 12: ${dir} is up to date, skipped"; continue; fi
        log "Stage 12: decoding ${s} -> ${dir} (${inference_nj} jobs on ${job_device})"
        mkdir -p "${dir}/logs"
        key_file="${dumpdir}/raw/${s}/wav.scp"
        _nj=$(min "${inference_nj}" "$(wc -l < "${key_file}")")
        ${python} -m espnet_llm_asr.bin.datadir split_keys --key_file "${key_file}" --nj "${_nj}" --out_dir "${dir}/keys"
        speech="$(speech_of "${s}")"
        lang_arg=()
        [ -f "${dumpdir}/raw/${s}/utt2lang" ] && lang_arg=(--data_path_and_name_and_type "${dumpdir}/raw/${s}/utt2lang,lang,text")
        # shellcheck disable=SC2086
        ${decode_job_cmd} JOB=1:${_nj} "${dir}/logs/decode.JOB.log" \
            ${python} -m espnet_llm_asr.bin.llm_asr_inference --ngpu "$(min "${ngpu}" 1)" --batch_size "${batch_size}" \
            --config "${inference_config}" \
            --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${asr_exp}/${inference_model}" \
            --data_path_and_name_and_type "${speech}" "${lang_arg[@]}" \
            --key_file "${dir}/keys/keys.JOB" --output_dir "${dir}/output.JOB" ${inference_args}
        for f in text token score gates cif_count alphas; do
            if [ -f "${dir}/output.1/1best_recog/${f}" ]; then
                for j in $(seq "${_nj}"); do cat "${dir}/output.${j}/1best_recog/${f}"; done | LC_ALL=C sort > "${dir}/${f}.tmp"
                mv "${dir}/${f}.tmp" "${dir}/${f}"
            fi
        done
        mark_done "${dir}" 12 "${sig}"
    done
fi

# ------------------------------------------------------------------ stage 13
if [ ${stage} -le 13 ] && [ ${stop_stage} -ge 13 ]; then
    for s in ${test_sets}; do
        dir="${asr_exp}/${inference_tag}/${s}"
        [ -f "${dir}/text" ] || die "${dir}/text not found: decode first (stage 12)"
        log "Stage 13: scoring ${dir} with sclite (WER and CER, per language)"
        ${python} -m espnet_llm_asr.bin.score --ref_dir "${dumpdir}/raw/${s}" --hyp_dir "${dir}"
    done
    log "Stage 13: writing ${results}"
    ${python} -m espnet_llm_asr.bin.make_results --exp_dirs "${expdir}"/asr_* --out "${results}" \
        --ref_root "${dumpdir}/raw" --train_text "${dumpdir}/raw/${data_train_set}/text"
    log "Stage 13: done; see ${results}"
fi

# ------------------------------------------------------------------ stage 14
if [ ${stage} -le 14 ] && [ ${stop_stage} -ge 14 ]; then
    [ -f "${asr_exp}/${inference_model}" ] || die "${asr_exp}/${inference_model} not found: train first (stage 11)"
    log "Stage 14: packing ${asr_exp} (${inference_model}, results of ${inference_tag}) -> ${asr_exp}/pack"
    ${python} -m espnet_llm_asr.bin.pack_model --exp_dir "${asr_exp}" --model_file "${inference_model}" \
        --decode_tag "${inference_tag}" --embed_max_mb "${pack_embed_max_mb}"
    log "Stage 14: done; transcribe with: python -m espnet_llm_asr.bin.transcribe --model ${asr_exp}/pack FILE...;" \
        "share with: hf upload <user>/<repo> ${asr_exp}/pack ."
fi

log "Successfully finished stages ${stage}..${stop_stage}"
