#!/usr/bin/env bash
# Split one batch over 4 Slurm array tasks: task i runs shard i/4 with its own checkpoint, and a job that
# depends on the whole array merges the shards' outputs with `chatbatch merge`. The rate limit is per key:
# give each task its own key (as here, one file per index) or divide the concurrency and budget between them.
#
#   mkdir -p out && sbatch jobs/slurm-array.sh      # Slurm opens out/… for the log before the script runs
#
# How each ending is taken (the checkpoint is on shared storage; a task that runs again resumes from it, and
# prompts already answered are not sent again):
# - scancel, or preemption: Slurm signals every process of the task, so chatbatch gets SIGTERM once, from Slurm;
#   this script does not pass it on (a second SIGTERM would abandon the requests in flight). chatbatch stops
#   sending, lets them finish, commits and exits 4. A preempted task is requeued by Slurm (--requeue).
# - the time limit: 120 s before it Slurm sends USR1 to this script alone (--signal=B:USR1@120); the script gives
#   chatbatch one SIGTERM, waits for it to commit, and requeues the task (scontrol requeue): the afterok merge
#   waits for the requeued task, which resumes.
# - a node failure: the task is requeued by Slurm (--requeue).
# - every line ended, some failed: exit 0 (--exit-zero-when-done): the task is done, and the merge runs.
#SBATCH --job-name=chatbatch-extract
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=out/slurm-%A_%a.log
set -euo pipefail

work=${WORK:-$PWD}
count=${SLURM_ARRAY_TASK_COUNT:-4}
index=${SLURM_ARRAY_TASK_ID:?run this with sbatch (SLURM_ARRAY_TASK_ID is not set)}
mkdir -p "$work/out"

if [ "$index" = 0 ] && [ -z "${SLURM_RESTART_COUNT:-}" ]; then
  # One merge job, after every task of this array succeeded (a requeued task is waited for).
  shards="" summaries=""
  for i in $(seq 0 $((count - 1))); do
    shards+=" $work/out/extract.shard-$i.jsonl"
    summaries+=" --summary $work/out/summary.shard-$i.json"
  done
  sbatch --dependency="afterok:$SLURM_ARRAY_JOB_ID" --job-name=chatbatch-merge --output="$work/out/slurm-merge-%j.log" \
    --wrap="chatbatch merge$shards --output $work/out/extract.jsonl$summaries --summary-json $work/out/summary.json"
fi

chatbatch run "$work/jobs/extract.yaml" --shard "$index/$count" --api-key-file "$work/keys/key-$index" \
  --output "$work/out/extract.shard-$index.jsonl" --summary-json "$work/out/summary.shard-$index.json" \
  --exit-zero-when-done --quiet &
child=$!
requeue=""
# The time limit's warning: one SIGTERM to chatbatch, then the requeue once it has committed (below).
trap 'requeue=yes; kill -TERM "$child" 2>/dev/null' USR1
# scancel and preemption signal chatbatch themselves: nothing to pass on.
trap ':' TERM INT
set +e
while kill -0 "$child" 2>/dev/null; do wait "$child"; done  # a trapped signal ends `wait` early
wait "$child"; code=$?  # chatbatch's own exit code, which bash keeps once it has ended
if [ -n "$requeue" ]; then
  scontrol requeue "${SLURM_JOB_ID:?}"   # this task runs again later and resumes from its checkpoint
fi
exit "$code"
