#!/bin/bash
# The transplant loss and frozen tail made again on pairsDevTrain (level0, every CelebA photo, first 196 steps = 2 epochs
# of the preset's 8-epoch schedule; the preset's own recipe at that step is in results/transplant-curves/devtrain).
set -uo pipefail
export CDFV_THREADS=1 OMP_NUM_THREADS=1
B=/work/main/.venv/bin
PAIRS=/work/shared/data/lfw/meta/pairsDevTrain.txt
cd /tmp/id
for spec in "arcface0.1::--identity-weight 0.1" "no-centre::--no-centre" "map0::--map-weight 0" "tail0.01::--tail-lr 0.01"; do
  NAME=${spec%%::*}; ARGS=${spec#*::}
  echo "=== $NAME $(date -u +%T)"
  $B/python /work/main/benchmarks/transplant_curve.py --train-root celeba --lfw-root lfw --pairs $PAIRS --runs /tmp/dev5/runs \
    --csv /tmp/dev5/loss-curve.csv --name level0-$NAME --epochs 8 --steps 196 -- --junction level0 $ARGS
done
echo "=== LOSS DONE $(date -u +%T)"
