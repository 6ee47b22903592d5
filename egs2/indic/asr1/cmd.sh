# How jobs are run (Kaldi/ESPnet convention).  utils/run_jobs.sh runs them on
# this machine in parallel; for a cluster, point these at your own wrapper
# with the same interface (JOB=1:N LOG COMMAND...; cuda_cmd also --gpu N,
# the cards each job gets).
export train_cmd="utils/run_jobs.sh"
export decode_cmd="utils/run_jobs.sh"
export cuda_cmd="utils/run_jobs.sh"
