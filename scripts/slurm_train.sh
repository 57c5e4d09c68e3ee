#!/bin/bash
# Train a tsf recipe on several nodes with Slurm: one Slurm task per node runs torchrun, which starts
# one training process per GPU of its node; the processes meet at a rendezvous on the job's first node.
#
#   DATA=/datasets/k400 sbatch scripts/slurm_train.sh                    # the recipe below, 4 nodes x 8 GPUs
#   RECIPE=k400_hr_16x16_448 DATA=/datasets/k400 sbatch --job-name k400-hr --nodes 2 scripts/slurm_train.sh --set batch_size=1
#   NPROC_PER_NODE=4 DATA=... sbatch --gpus-per-node 0 --cpus-per-task 16 scripts/slurm_train.sh --device cpu   # CPU nodes
#
# Arguments after the script go to `python -m tsf train` (--set KEY=VALUE, flags) when the run starts.
# The global batch stays the recipe's on any number of GPUs (gradient accumulation makes up the
# difference; set global_batch= to change it, and the lr scales with it): see `python -m tsf recipes`.
# Processes per node: the GPUs Slurm allocated on it, else NPROC_PER_NODE (default 1).
#
# The run folder, RUN_DIR, defaults to runs/<job name> (in the submission folder): the same for a
# requeued job and for a later `sbatch` under the same --job-name, which both resume from its last.pt
# (with the run's own settings: RECIPE and the arguments are then ignored). A resumed run needs the
# process count (nodes x processes per node) it started with. RUN_DIR must be on a file system every
# node sees: rank 0 writes the checkpoints, every rank reads them on resume.
#
# Stops and restarts (the training stops after the same optimiser step on every process, rank 0
# writes RUN_DIR/last.pt, and a restart continues exactly from there):
# - the time limit: Slurm warns the script with SIGUSR1 300 s before it (--signal below; another lead
#   time: sbatch --signal=B:USR1@600); the script passes the warning on to the training processes,
#   waits for last.pt and requeues the job (scontrol requeue), so a run longer than the limit goes on in
#   the next allocation by itself. The lead time covers the step in flight, a validation pass in
#   progress, and the checkpoint of a base model on a slow shared file system.
# - preemption, scontrol requeue, scancel: Slurm sends SIGTERM to every process of the job and SIGKILL
#   KillWait (often 30 s; preemption: GraceTime) later; the training stops after the step in flight and
#   writes last.pt in that time. The job comes back if Slurm requeues it (preemption with
#   PreemptMode=REQUEUE, scontrol requeue); after scancel, sbatch it again to continue.
# - a stop signal to the training processes only (scancel --signal=TERM or --signal=USR1 JOBID):
#   checkpoint and requeue, as at the time limit.
# - a failure (a crash, a NaN loss, bad input): the job ends FAILED and is not requeued.
# Slurm holds a requeued job for the credential lifetime (AuthInfo=cred_expire, 120 s by default;
# squeue: Reason=BeginTime) before it starts it again.
#SBATCH --job-name=tsf-train
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=72
#SBATCH --time=48:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-k400_divided_8x32_224}                # a recipe name or a recipe file
DATA=${DATA:?set DATA to the data folder (train.csv, val.csv, classes.txt)}
RUN_DIR=${RUN_DIR:-runs/${SLURM_JOB_NAME:-tsf-train}}
PROCS_PER_NODE=${SLURM_GPUS_ON_NODE:-${NPROC_PER_NODE:-1}}
# the rendezvous: the first node of the job, on a port derived from the job id (two jobs sharing a
# node do not collide); --rdzv-id keeps nodes of other jobs out. (awk reads every line: `head -n 1`
# would end the pipe early, and scontrol's SIGPIPE fails the script under pipefail.)
RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | awk 'NR == 1')
RDZV_PORT=$((29500 + SLURM_JOB_ID % 2000))

if [[ -f "$RUN_DIR/last.pt" ]]; then
    # a requeued job: continue with the run's own settings (only --device/--num-workers/--progress may change)
    echo "slurm_train.sh: $RUN_DIR/last.pt exists: resuming it (attempt $((${SLURM_RESTART_COUNT:-0} + 1)) of job $SLURM_JOB_ID)"
    TRAIN_ARGS=(--resume "$RUN_DIR" --no-progress)
elif [[ -d "$RUN_DIR" && ! -f "$RUN_DIR/best.pt" && ${SLURM_RESTART_COUNT:-0} -gt 0 ]]; then
    # a requeued job killed before its first checkpoint: only its config.yaml and log lines are there
    echo "slurm_train.sh: $RUN_DIR has no checkpoint yet: starting attempt $((SLURM_RESTART_COUNT + 1)) over it"
    TRAIN_ARGS=(--config "$RECIPE" --data "$DATA" --out "$RUN_DIR" --overwrite --no-progress "$@")
else
    TRAIN_ARGS=(--config "$RECIPE" --data "$DATA" --out "$RUN_DIR" --no-progress "$@")
fi

WARNED=""   # the time-limit warning came: stop the training, then requeue
ENDING=""   # Slurm ends the job (scancel, requeue, preemption, the limit itself): it signalled every process
warned() {
    WARNED=1
    echo "slurm_train.sh: time-limit warning (SIGUSR1) at $(date +%T): stopping the training to requeue"
    # to the training processes only, not to this script; torchrun ignores SIGUSR1 (see below)
    scancel --signal=USR1 "$SLURM_JOB_ID" || true
}
trap warned USR1
trap 'ENDING=1' TERM

# one thread per process for the CPU-side work; the data loaders have their own worker processes
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# torchrun passes SIGTERM and SIGINT on to its workers but dies of SIGUSR1: it ignores that one (ignored
# signals survive exec), while the training processes, which get it from Slurm too, stop on it
srun --kill-on-bad-exit=1 bash -c 'trap "" USR1; exec "$@"' torchrun torchrun \
    --nnodes "$SLURM_JOB_NUM_NODES" --nproc-per-node "$PROCS_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$RDZV_HOST:$RDZV_PORT" --rdzv-id "$SLURM_JOB_ID" \
    -m tsf train "${TRAIN_ARGS[@]}" &
TRAINING=$!
# a trapped signal interrupts `wait`; wait again until the training has really ended
while true; do
    status=0
    wait "$TRAINING" || status=$?
    kill -0 "$TRAINING" 2>/dev/null || break
done

if (( status == 0 )); then
    exit 0
fi
last_record=$(tail -n 1 "$RUN_DIR/metrics.jsonl" 2>/dev/null || true)
if [[ -n $WARNED || ( -z $ENDING && $last_record == *'"kind": "interrupted"'* ) ]]; then
    echo "slurm_train.sh: the training stopped at a checkpoint ($last_record); requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
if [[ -n $ENDING ]]; then
    echo "slurm_train.sh: Slurm ended the job; $RUN_DIR/last.pt holds the run ($last_record)"
    exit 75  # tsf train's exit code for a run stopped by a signal
fi
exit "$status"
