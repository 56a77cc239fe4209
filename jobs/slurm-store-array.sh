#!/usr/bin/env bash
# One batch worked by 4 Slurm array tasks on a PostgreSQL store: every task claims lines from the job in the store
# (no shard is any task's own), they share the key's limits and the budget, and the task that settles the last line
# writes the results and errors files: no merge job. Tasks may start at any time; one that starts after the job is
# done exits 0 at once.
#
#   mkdir -p out && CHATBATCH_STORE=postgres://chatbatch@db:5432/chatbatch sbatch --export=ALL jobs/slurm-store-array.sh
#
# The store's password comes from ~/.pgpass (or PGPASSWORD in the environment), never the command line.
# How each ending is taken:
# - scancel, or preemption: Slurm signals chatbatch itself (once): it stops sending, lets what is in flight finish,
#   gives its unsent lines back and exits 4. A preempted task is requeued (--requeue); the others carry on meanwhile.
# - the time limit: 120 s before it Slurm sends USR1 to this script alone (--signal=B:USR1@120); the script gives
#   chatbatch one SIGTERM and waits for it. The other tasks take the lines over; nothing needs requeueing.
# - a node failure: that task's lines return to the others when their lease runs out (60 s).
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
store=${CHATBATCH_STORE:?set CHATBATCH_STORE to the store, e.g. postgres://chatbatch@db:5432/chatbatch}
mkdir -p "$work/out"

chatbatch run "$work/jobs/extract.yaml" --store "$store" --job-name "${CHATBATCH_JOB:-extract}" \
  --api-key-file "$work/keys/key" --output "$work/out/extract.jsonl" --exit-zero-when-done --quiet &
child=$!
# The time limit's warning: one SIGTERM to chatbatch. scancel and preemption signal chatbatch themselves.
trap 'kill -TERM "$child" 2>/dev/null' USR1
trap ':' TERM INT
set +e
while kill -0 "$child" 2>/dev/null; do wait "$child"; done  # a trapped signal ends `wait` early
wait "$child"
