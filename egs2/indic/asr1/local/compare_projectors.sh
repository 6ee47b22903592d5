#!/usr/bin/env bash
# Train, decode and score several projectors on the same data and write one
# comparison table, <expdir>/compare_projectors.md (projector, parameters,
# training time, WER and CER per test set and language, read from sclite's
# result files).
#
#   local/compare_projectors.sh --projectors "mono smear_moe" [llm_asr.sh / run.sh options]
#
# Stages 1-10 (data, tokenizer, features, statistics) run once and are
# shared; then for each name, ./run.sh --stage 11 --stop_stage 13 with
# --asr_config <config_prefix><name>.yaml (default conf/train_<name>.yaml),
# i.e. experiment <expdir>/asr_<config name>.  --stage / --stop_stage limit
# both parts as usual (e.g. --stage 11 reuses data and features already
# made).  Finished stages are skipped, so re-running only adds what is new.
#
# Options:
#   --projectors     names: conf files <config_prefix><name>.yaml
#   --config_prefix  default conf/train_ (e.g. conf/paper/train_ with names
#                    smear_moe_gemma2_9b mono_gemma2_9b)
#   anything else is passed to ./run.sh (and so to llm_asr.sh), except
#   --asr_config and --asr_tag, which this script sets per projector.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (compare_projectors.sh) $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

projectors="mono smear_moe"
config_prefix=conf/train_
stage=1
stop_stage=13
expdir=exp
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --projectors) projectors=$2; shift 2 ;;
        --config_prefix) config_prefix=$2; shift 2 ;;
        --stage) stage=$2; shift 2 ;;
        --stop_stage) stop_stage=$2; shift 2 ;;
        --asr_config|--asr_tag) die "$1 is set per projector by this script; use --projectors / --config_prefix" ;;
        --expdir) expdir=$2; args+=("$1" "$2"); shift 2 ;;
        *) [ $# -ge 2 ] || die "option $1 needs a value"; args+=("$1" "$2"); shift 2 ;;
    esac
done
[ -n "${projectors// /}" ] || die "--projectors is empty"

configs=()
for name in ${projectors}; do
    config="${config_prefix}${name}.yaml"
    [ -f "${config}" ] || die "no config ${config} for projector '${name}' (--config_prefix ${config_prefix})"
    configs+=("${config}")
done

if [ "${stage}" -le 10 ]; then
    log "stages ${stage}..$(( stop_stage < 10 ? stop_stage : 10 )), shared by: ${projectors}"
    ./run.sh --stage "${stage}" --stop_stage "$(( stop_stage < 10 ? stop_stage : 10 ))" \
        --asr_config "${configs[0]}" "${args[@]}"
fi
[ "${stop_stage}" -ge 11 ] || { log "done (stop_stage ${stop_stage})"; exit 0; }

exp_dirs=()
for config in "${configs[@]}"; do
    log "${config}: stages $(( stage > 11 ? stage : 11 ))..${stop_stage}"
    ./run.sh --stage "$(( stage > 11 ? stage : 11 ))" --stop_stage "${stop_stage}" --asr_config "${config}" "${args[@]}"
    exp_dirs+=("${expdir}/asr_$(basename "${config}" .yaml)")
done

if [ "${stop_stage}" -ge 13 ]; then
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -f path.sh ]; then . ./path.sh; fi
    python=python3
    command -v python >/dev/null && python=python
    ${python} -m espnet_llm_asr.bin.compare_projectors --exp_dirs "${exp_dirs[@]}" \
        --out "${expdir}/compare_projectors.md"
    log "wrote ${expdir}/compare_projectors.md"
fi
