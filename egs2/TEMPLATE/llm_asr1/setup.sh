#!/usr/bin/env bash
# Make a new recipe directory from an existing one (default: egs2/indic/asr1).
#
#   egs2/TEMPLATE/llm_asr1/setup.sh egs2/<name>/asr1 [--from egs2/indic/asr1]
#
# The new recipe gets its own run.sh, path.sh, cmd.sh, db.sh, conf/ and local/
# (copies, to be edited: e.g. conf/corpus.yaml for the languages of the
# synthetic corpus, or local/data.sh for a real corpus) and links to the
# shared llm_asr.sh and utils/.  Outside this repository the links and
# path.sh use absolute paths.
set -euo pipefail

template_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
main_root="$(cd "${template_dir}/../../.." && pwd)"
from="${main_root}/egs2/indic/asr1"

if [ $# -lt 1 ] || [ "$1" = --help ] || [ "$1" = -h ]; then sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 1; fi
target="$1"; shift
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from="$(cd "$2" && pwd)"; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 1 ;;
    esac
done
[ -e "${target}" ] && { echo "$0: ${target} already exists" >&2; exit 1; }
[ -f "${from}/run.sh" ] || { echo "$0: ${from} is not a recipe (no run.sh)" >&2; exit 1; }

mkdir -p "${target}"
target="$(cd "${target}" && pwd)"
for f in run.sh path.sh cmd.sh db.sh; do cp -p "${from}/${f}" "${target}/${f}"; done
cp -rp "${from}/conf" "${from}/local" "${target}/"

# links to the shared scripts: relative inside this repo, absolute outside
case "${target}/" in
    "${main_root}/egs2/"*/*/) rel="$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "${template_dir}" "${target}")" ;;
    *) rel="${template_dir}"
       sed -i "s|^MAIN_ROOT=.*|MAIN_ROOT=\"${main_root}\"|" "${target}/path.sh" ;;
esac
ln -s "${rel}/llm_asr.sh" "${target}/llm_asr.sh"
ln -s "${rel}/utils" "${target}/utils"
echo "created ${target} from ${from}"
echo "next: edit ${target}/conf/corpus_sentences.yaml (languages and their message catalogs; the toy word corpus: conf/corpus.yaml with --local_data_opts \"--config conf/corpus.yaml\") or ${target}/local/data.sh (corpus), then ./run.sh"
