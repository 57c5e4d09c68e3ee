#!/bin/bash
# Train a tsf recipe on several nodes with Slurm: one Slurm task per node runs torchrun, which starts
# one training process per GPU of its node; the processes meet at a rendezvous on the job's first node.
#
#   DATA=/datasets/k400 sbatch scripts/slurm_train.sh                    # the recipe below, 4 nodes x 8 GPUs
#   RECIPE=k400_hr_16x16_448 DATA=/datasets/k400 sbatch --nodes 2 scripts/slurm_train.sh --set batch_size=1
#
# Arguments after the script go to `python -m tsf train` (--set KEY=VALUE, flags) when the run starts.
# The global batch stays the recipe's on any number of GPUs (gradient accumulation makes up the
# difference; set global_batch= to change it, and the lr scales with it): see `python -m tsf recipes`.
#
# Node failure or preemption: with --requeue Slurm restarts the job under the same job id, so the same
# RUN_DIR; finding RUN_DIR/last.pt there, the script resumes from it (--resume) instead of starting
# again. A resumed run needs the same number of processes (nodes x GPUs) it started with. RUN_DIR must be
# on a file system every node sees: rank 0 writes the checkpoints, every rank reads them on resume.
#SBATCH --job-name=tsf-train
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=72
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-k400_divided_8x32_224}                # a recipe name or a recipe file
DATA=${DATA:?set DATA to the data folder (train.csv, val.csv, classes.txt)}
RUN_DIR=${RUN_DIR:-runs/${SLURM_JOB_NAME:-tsf-train}-${SLURM_JOB_ID}}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
# the rendezvous: the first node of the job, on a port derived from the job id (two jobs sharing a
# node do not collide); --rdzv-id keeps nodes of other jobs out. (awk reads every line: `head -n 1`
# would end the pipe early, and scontrol's SIGPIPE fails the script under pipefail.)
RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | awk 'NR == 1')
RDZV_PORT=$((29500 + SLURM_JOB_ID % 2000))

if [[ -f "$RUN_DIR/last.pt" ]]; then
    # a requeued job: continue with the run's own settings (only --device/--num-workers/--progress may change)
    TRAIN_ARGS=(--resume "$RUN_DIR" --no-progress)
else
    TRAIN_ARGS=(--config "$RECIPE" --data "$DATA" --out "$RUN_DIR" --no-progress "$@")
fi

# one thread per process for the CPU-side work; the data loaders have their own worker processes
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_JOB_NUM_NODES" --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$RDZV_HOST:$RDZV_PORT" --rdzv-id "$SLURM_JOB_ID" \
    -m tsf train "${TRAIN_ARGS[@]}"
