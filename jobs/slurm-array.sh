#!/usr/bin/env bash
# Split one batch over 4 Slurm array tasks: task i runs shard i/4 with its own checkpoint, and a job that
# depends on the whole array merges the shards' outputs with `chatbatch merge`. The rate limit is per key:
# give each task its own key (as here, one file per index) or divide the concurrency and budget between them.
#
#   sbatch jobs/slurm-array.sh            # submits the array; it submits the merge itself, afterok
#
# A task that dies (node failure, preemption, time limit) is requeued by Slurm and resumes from its
# checkpoint: prompts already answered are not sent again. SIGTERM from Slurm (scancel, the time limit)
# makes chatbatch stop sending, let requests in flight finish, commit, and exit 4; the requeue resumes.
#SBATCH --job-name=chatbatch-extract
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --output=out/slurm-%A_%a.log
set -euo pipefail

work=${WORK:-$PWD}
count=${SLURM_ARRAY_TASK_COUNT:-4}
index=${SLURM_ARRAY_TASK_ID:?run this with sbatch (SLURM_ARRAY_TASK_ID is not set)}
mkdir -p "$work/out"

if [ "$index" = 0 ] && [ -z "${CHATBATCH_MERGE_SUBMITTED:-}" ] && [ -z "${SLURM_RESTART_COUNT:-}" ]; then
  # One merge job, after every task of this array succeeded.
  shards="" summaries=""
  for i in $(seq 0 $((count - 1))); do
    shards+=" $work/out/extract.shard-$i.jsonl"
    summaries+=" --summary $work/out/summary.shard-$i.json"
  done
  sbatch --dependency="afterok:$SLURM_ARRAY_JOB_ID" --job-name=chatbatch-merge --output="$work/out/slurm-merge-%j.log" \
    --wrap="chatbatch merge$shards --output $work/out/extract.jsonl$summaries --summary-json $work/out/summary.json"
fi

export TERA_API_KEY="$(cat "$work/keys/key-$index")"
# Slurm's SIGTERM (--signal=B:TERM) reaches this shell; it is passed on to chatbatch, which stops cleanly.
chatbatch run "$work/jobs/extract.yaml" --shard "$index/$count" \
  --output "$work/out/extract.shard-$index.jsonl" --summary-json "$work/out/summary.shard-$index.json" --quiet &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
set +e
wait "$child"; code=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done  # a trapped signal ends `wait` early
# Exit 1 (some lines failed, in the errors file) is a finished shard: success for the merge's afterok.
[ "$code" = 1 ] && exit 0
exit "$code"
