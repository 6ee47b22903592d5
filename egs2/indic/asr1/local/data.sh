#!/usr/bin/env bash
# Stage 1: data preparation into Kaldi data dirs
#   data/<set>/{wav.scp,text,utt2spk,spk2utt,utt2lang}
# and data/lang_list (one language code a line; line index = language id).
#
# --corpus synthetic (default): synthesize the multilingual corpus (Hindi,
# Marathi, Tamil, Telugu) with espeak-ng, as configured in conf/corpus.yaml,
# into data/{train,dev,test,test_unseen_voice}; wavs (16 kHz mono 16-bit) go
# to downloads/wav/<lang>/.  Re-running with the same options does nothing.
#
#   local/data.sh [--size default|fast|train=N,dev=N,test=N,test_unseen_voice=N] [--nj 2] [--seed 0]
#
# --corpus fleurs|commonvoice|kathbath|indicvoices: a real corpus whose root
# is set in db.sh (FLEURS, COMMONVOICE, KATHBATH, INDICVOICES) or given with
# --root; --corpus kaldi imports an existing Kaldi data dir.  Layouts, set
# names and id rules: espnet_llm_asr/data/preparers/.
#
#   local/data.sh --corpus fleurs --langs hi,mr,ta,te [--suffix _fleurs] [--skip_bad true]
#   local/data.sh --corpus kathbath --root /data/kathbath   # -> train dev test_known test_unknown
#   local/data.sh --corpus kaldi --src_dir /x/data/test --lang hi --set_name test_x
#
# Options (synthetic):
#   --size       utterances per language and set: a preset of conf/corpus.yaml
#                (default 400/40/40/40, fast 6/2/2/2) or an explicit spec
#   --nj         parallel espeak-ng processes (real corpora: audio decoders)
#   --seed       seed of vocabulary, sentence and voice choice
#   --languages  comma-separated subset of the config's languages ("" = all)
#   --config     corpus config; --data_dir, --wav_dir: output locations
# Options (real corpora):
#   --corpus     synthetic | fleurs | commonvoice | kathbath | indicvoices | kaldi
#   --root       corpus root (default: its db.sh variable)
#   --langs      comma-separated language codes (default hi,mr,ta,te; kaldi: all;
#                with --corpus synthetic it stands for --languages)
#   --splits     the corpus's own split names to prepare (default: all)
#   --suffix     appended to every output set name (e.g. _fleurs: data/test_fleurs)
#   --skip_bad   true: drop bad rows (counted, listed in data/<set>/dropped_prepare)
#                instead of stopping at them
#   --src_dir, --lang, --utt2lang, --set_name: --corpus kaldi (source dir, one
#                language for all or an utt2lang file, output set name)
#   mp3/m4a audio, wav.scp pipes and segments become wavs under --wav_dir
#   (default for real corpora: downloads/<corpus>).
set -euo pipefail

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[0]##*/}:${BASH_LINENO[0]}) $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

size=default
nj=2
seed=0
languages=""
config=conf/corpus.yaml
data_dir=data
wav_dir=""
corpus=synthetic
root=""
langs=""
splits=""
suffix=""
skip_bad=false
src_dir=""
lang=""
utt2lang=""
set_name=""

help_message="$(sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//')"
. utils/parse_options.sh
[ $# -eq 0 ] || die "unexpected arguments: $* (see $0 --help)"

# standalone use: activate the toolkit's environment (llm_asr.sh has done it already)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f path.sh ]; then . ./path.sh; fi
python=python3
command -v python >/dev/null && python=python

if [ "${corpus}" != synthetic ]; then
    if [ -z "${root}" ] && [ -f db.sh ]; then
        . ./db.sh
        case "${corpus}" in
            fleurs) root="${FLEURS}" ;;
            commonvoice) root="${COMMONVOICE}" ;;
            kathbath) root="${KATHBATH}" ;;
            indicvoices) root="${INDICVOICES}" ;;
        esac
    fi
    log "preparing --corpus ${corpus}${root:+ from ${root}}${src_dir:+ from ${src_dir}} -> ${data_dir}"
    ${python} -m espnet_llm_asr.bin.prepare_corpus --corpus "${corpus}" --out_dir "${data_dir}" \
        --nj "${nj}" --skip_bad "${skip_bad}" \
        ${root:+--root "${root}"} ${langs:+--langs "${langs}"} ${splits:+--splits "${splits}"} \
        ${suffix:+--suffix "${suffix}"} ${wav_dir:+--wav_dir "${wav_dir}"} \
        ${src_dir:+--src_dir "${src_dir}"} ${lang:+--lang "${lang}"} ${utt2lang:+--utt2lang "${utt2lang}"} \
        ${set_name:+--set_name "${set_name}"} \
        || die "preparing --corpus ${corpus} failed (see the error above)"
    log "languages (line = id): $(tr '\n' ' ' < "${data_dir}/lang_list")"
    log "successfully finished"
    exit 0
fi

[ -n "${wav_dir}" ] || wav_dir=downloads/wav
[ -n "${languages}" ] || languages="${langs}"
for tool in espeak-ng sox; do
    command -v "${tool}" >/dev/null || die "${tool} not found: install it (apt-get install ${tool}) or run tools/install.sh"
done
[ -f "${config}" ] || die "corpus config ${config} not found (run from egs2/indic/asr1)"

log "synthesizing the corpus: config ${config}, size ${size}, seed ${seed}, ${nj} job(s) -> ${data_dir}, ${wav_dir}"
${python} -m espnet_llm_asr.bin.synthesize_corpus \
    --config "${config}" \
    --out_dir "${data_dir}" \
    --wav_dir "${wav_dir}" \
    --size "${size}" \
    --seed "${seed}" \
    --nj "${nj}" \
    ${languages:+--languages "${languages}"}

for s in train dev test test_unseen_voice; do
    [ -s "${data_dir}/${s}/wav.scp" ] || die "${data_dir}/${s}/wav.scp missing or empty"
    log "${data_dir}/${s}: $(wc -l < "${data_dir}/${s}/wav.scp") utterances"
done
log "languages (line = id): $(tr '\n' ' ' < "${data_dir}/lang_list")"
log "successfully finished"
