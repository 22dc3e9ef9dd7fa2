#!/bin/bash
# The joint codec with student weight 0.1 (against weight 1's 0.482 and the start codec's 0.614 TAR@FAR=1e-2): same start
# codec, student, coded rate target, steps and lr as results/identity-curves' joint training, all 2,200 pairsDevTrain pairs.
set -uo pipefail
export CDFV_THREADS=1 OMP_NUM_THREADS=1
B=/work/main/.venv/bin
PAIRS=/work/shared/data/lfw/meta/pairsDevTrain.txt
cd /tmp/id
while pgrep -f "cdfv-reproduce --data /work/shared/data --preset smoke" > /dev/null; do sleep 10; done
R=$($B/python -c "import json;print(json.load(open('/tmp/dev/coded-rate-q1.json'))['bpp'])")
echo "=== joint w0.1, coded rate target $R $(date -u +%T)"
$B/cdfv-train --task codec --shards faces-dlib-l0l2 --root celeba --quality 1 --codec-weights runs/base-q1/codec.pt \
  --student /tmp/dev/runs/level0/model.pt --student-weight 0.1 --rate-target $R --max-steps 150 --epochs 1000 --batch-size 8 \
  --lr 5e-5 --lr-schedule constant --variant jointlo --workers 0 --threads 1 --quiet --out /tmp/dev5/runs/jointlo-q1
echo "=== code $(date -u +%T)"
$B/cdfv-prep run --input faces --quality 1 --weights /tmp/dev5/runs/jointlo-q1/codec.pt --outputs latents --quiet --out lfw
echo "=== eval $(date -u +%T)"
$B/cdfv-eval run --pairs $PAIRS --root lfw --faces faces --device cpu --bootstrap 1000 --image-model dlib \
  --compressed /tmp/dev/runs/level0/model.pt=latents-q1 --compressed /tmp/dev5/runs/jointlo-q1/student.pt=latents-jointlo-q1 \
  --quiet --out /tmp/dev5/eval-jointlo
echo "=== JOINT DONE $(date -u +%T)"
