#!/usr/bin/env bash
# A place index built by a Slurm array of N tasks, then merged by a dependent job.
#   sbatch --array=0-7 deploy/index-build-slurm.sh            # the shards
#   sbatch --dependency=afterok:<array job id> --wrap \
#       "sare-tf index merge $INDEX_ROOT/shard-* --out $INDEX_ROOT/city"
# A failed or preempted task rerun with the same index resumes from its chunks.
#SBATCH --job-name=city-index
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=12:00:00
set -euo pipefail
: "${MODEL:=saved_models/city}" "${DATASET:=city_db.csv}" "${INDEX_ROOT:=city-index}"
NUM_SHARDS="${SLURM_ARRAY_TASK_COUNT:?run as an array job: sbatch --array=0-7}"
sare-tf index build --model "$MODEL" --dataset "$DATASET" --index-type ivfpq --pq-m 32 \
    --refine-factor 10 --shard "${SLURM_ARRAY_TASK_ID}/${NUM_SHARDS}" \
    --out "${INDEX_ROOT}/shard-${SLURM_ARRAY_TASK_ID}"
