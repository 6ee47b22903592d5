#!/usr/bin/env bash
# Stage 1 of the default recipe: synthesize the multilingual corpus
# (Hindi, Marathi, Tamil, Telugu) with espeak-ng, as configured in
# conf/corpus.yaml, into Kaldi data dirs
#   data/{train,dev,test,test_unseen_voice}/{wav.scp,text,utt2spk,spk2utt,utt2lang}
# and data/lang_list (one language code a line; line index = language id).
# Wavs (16 kHz mono 16-bit) go to downloads/wav/<lang>/.
# Re-running with the same options does nothing.
#
#   local/data.sh [--size default|fast|train=N,dev=N,test=N,test_unseen_voice=N] [--nj 2] [--seed 0]
#
# Options:
#   --size       utterances per language and set: a preset of conf/corpus.yaml
#                (default 400/40/40/40, fast 6/2/2/2) or an explicit spec
#   --nj         parallel espeak-ng processes
#   --seed       seed of vocabulary, sentence and voice choice
#   --languages  comma-separated subset of the config's languages ("" = all)
#   --config     corpus config; --data_dir, --wav_dir: output locations
set -euo pipefail

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[0]##*/}:${BASH_LINENO[0]}) $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

size=default
nj=2
seed=0
languages=""
config=conf/corpus.yaml
data_dir=data
wav_dir=downloads/wav

help_message="$(sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//')"
. utils/parse_options.sh
[ $# -eq 0 ] || die "unexpected arguments: $* (see $0 --help)"

# standalone use: activate the toolkit's environment (llm_asr.sh has done it already)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f path.sh ]; then . ./path.sh; fi
python=python3
command -v python >/dev/null && python=python

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
