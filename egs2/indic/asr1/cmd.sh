# How jobs are run (Kaldi/ESPnet convention).  utils/run_jobs.sh runs them on
# this machine in parallel; for a cluster, point these at your own wrapper
# with the same interface (JOB=1:N LOG COMMAND...).
export train_cmd="utils/run_jobs.sh"
export decode_cmd="utils/run_jobs.sh"
