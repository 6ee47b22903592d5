#!/usr/bin/env bash
# Local job runner (what Kaldi's run.pl does): runs a command once per job
# index, in parallel, each with its own log.
#
#   utils/run_jobs.sh JOB=1:4 exp/log/decode.JOB.log python -m x --part JOB
#   utils/run_jobs.sh exp/log/train.log python -m y          # a single job
#   utils/run_jobs.sh --gpu 1 JOB=1:4 exp/log/dump.JOB.log python -m z --device cuda
#
# Every literal "JOB" in the log path and the command is replaced by the job
# index.  --gpu N (ESPnet's cuda_cmd option) gives each job N cards of its own
# through CUDA_VISIBLE_DEVICES, taken in turn from the visible cards (the
# caller's CUDA_VISIBLE_DEVICES, else nvidia-smi's list): job j gets cards
# (j-1)*N .. j*N-1, so no two jobs share a card while jobs x N <= cards (more
# jobs wrap around, with a warning).  Exits non-zero, naming the failed jobs'
# logs, if any job fails.
set -uo pipefail
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 1; }
gpu=0
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) [ $# -ge 2 ] || usage; gpu="$2"; shift 2 ;;
        --gpu=*) gpu="${1#*=}"; shift ;;
        -h|--help) usage ;;
        --*) echo "$0: unknown option $1 (this runner takes --gpu N; a cluster wrapper may take more)" >&2; exit 1 ;;
        *) break ;;
    esac
done
[[ "${gpu}" =~ ^[0-9]+$ ]] || { echo "$0: --gpu must be a number of cards, got '${gpu}'" >&2; exit 1; }
if [ $# -lt 2 ]; then usage; fi
first=1; last=1
if [[ "$1" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
    first="${BASH_REMATCH[1]}"; last="${BASH_REMATCH[2]}"; shift
fi
log_pattern="$1"; shift
cards=()
if [ "${gpu}" -gt 0 ]; then
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        IFS=, read -r -a cards <<< "${CUDA_VISIBLE_DEVICES}"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        mapfile -t cards < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)
    fi
    if [ ${#cards[@]} -eq 0 ]; then
        echo "$0: --gpu ${gpu}: no GPU visible (CUDA_VISIBLE_DEVICES is ${CUDA_VISIBLE_DEVICES+empty}${CUDA_VISIBLE_DEVICES-unset and nvidia-smi lists no card})" >&2
        exit 1
    fi
    if [ "${gpu}" -gt ${#cards[@]} ]; then
        echo "$0: --gpu ${gpu}: only ${#cards[@]} card(s) visible (${cards[*]})" >&2
        exit 1
    fi
    if [ $(( (last - first + 1) * gpu )) -gt ${#cards[@]} ]; then
        echo "$0: warning: $(( last - first + 1 )) job(s) x ${gpu} card(s) > ${#cards[@]} visible card(s) (${cards[*]}): jobs share cards" >&2
    fi
fi
cards_of_job() {  # cards_of_job <0-based job index>: its cards, comma-separated
    local i=$1 k out=()
    for ((k = 0; k < gpu; k++)); do out+=("${cards[$(( (i * gpu + k) % ${#cards[@]} ))]}"); done
    (IFS=,; echo "${out[*]}")
}
pids=(); logs=()
for ((j = first; j <= last; j++)); do
    log="${log_pattern//JOB/$j}"
    mkdir -p "$(dirname "${log}")"
    args=()
    for a in "$@"; do args+=("${a//JOB/$j}"); done
    {
        if [ "${gpu}" -gt 0 ]; then
            export CUDA_VISIBLE_DEVICES; CUDA_VISIBLE_DEVICES="$(cards_of_job $(( j - first )))"
            echo "# CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES}"
        fi
        echo "# ${args[*]}"
        echo "# Started at $(date)"
        start=$(date +%s)
        "${args[@]}"
        rc=$?
        echo "# Accounting: time=$(( $(date +%s) - start )) threads=${OMP_NUM_THREADS:-1}"
        echo "# Ended (code ${rc}) at $(date)"
        exit ${rc}
    } > "${log}" 2>&1 &
    pids+=($!); logs+=("${log}")
done
failed=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${logs[$i]}")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "$0: ${#failed[@]} of ${#pids[@]} job(s) failed; see:" >&2
    for f in "${failed[@]}"; do echo "  ${f}" >&2; tail -n 5 "${f}" | sed 's/^/    /' >&2; done
    exit 1
fi
exit 0
