#!/usr/bin/env bash
# Local job runner (what Kaldi's run.pl does): runs a command once per job
# index, in parallel, each with its own log.
#
#   utils/run_jobs.sh JOB=1:4 exp/log/decode.JOB.log python -m x --part JOB
#   utils/run_jobs.sh exp/log/train.log python -m y          # a single job
#
# Every literal "JOB" in the log path and the command is replaced by the job
# index.  Exits non-zero, naming the failed jobs' logs, if any job fails.
set -uo pipefail
if [ $# -lt 2 ]; then sed -n '2,9p' "$0"; exit 1; fi
first=1; last=1
if [[ "$1" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
    first="${BASH_REMATCH[1]}"; last="${BASH_REMATCH[2]}"; shift
fi
log_pattern="$1"; shift
pids=(); logs=()
for ((j = first; j <= last; j++)); do
    log="${log_pattern//JOB/$j}"
    mkdir -p "$(dirname "${log}")"
    args=()
    for a in "$@"; do args+=("${a//JOB/$j}"); done
    {
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
