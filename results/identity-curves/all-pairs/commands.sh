#!/bin/bash
# What made this folder (2026-12-07, this 2-core machine, one thread a job, two or three jobs at a time). Run in the
# folder holding the sets of ../README.md (here /tmp/id): celeba/ (the 6,289 CelebA training faces, taught by dlib),
# lfw/faces (the 3,443 faces pairsDevTrain.txt names), runs/base-q1/codec.pt (the start codec), A-control's and Gc's
# codecs (../README.md), Gc300 (../README.md, "G again"), level0/model.pt (../../transplant-curves/devtrain).
set -euo pipefail
export CDFV_THREADS=1 OMP_NUM_THREADS=1
RATE=0.11015468410083226   # the start codec's coded rate on 512 CelebA training faces (../README.md, Joint training)

# the identity codec at larger weights, held at the coded rate: Gc's recipe (weight 18.6) otherwise
for W in 60 200; do
  cdfv-train --task codec --shards faces-dlib-resnet-v1 --root celeba --quality 1 --codec-weights runs/base-q1/codec.pt \
    --batch-size 8 --lr 5e-5 --lr-schedule constant --id-weight $W --rate-target $RATE --rate-gain 0.2 \
    --epochs 1000000 --max-steps 150 --workers 0 --threads 1 --no-tensorboard --out runs/id$W-coded-rate
done

# joint training with the student's weights frozen (--freeze-student, commit 4ad6bc9); the first try, at commit 78dc70b,
# also kept its BatchNorm statistics and was stopped at step 70 (logs/training-jointfz-bn-frozen-q1-killed.jsonl)
cdfv-train --task codec --shards faces-dlib-l0l2 --root celeba --quality 1 --codec-weights runs/base-q1/codec.pt \
  --student level0/model.pt --student-weight 1 --freeze-student --rate-target $RATE --max-steps 150 --epochs 1000 --batch-size 8 \
  --lr 5e-5 --lr-schedule constant --variant jointfz --workers 0 --threads 1 --no-tensorboard --out runs/jointfz-q1
cdfv-prep run --input faces --quality 1 --weights runs/jointfz-q1/codec.pt --outputs latents --out lfw
cdfv-eval run --pairs ../shared/data/lfw/meta/pairsDevTrain.txt --root lfw --device cpu --bootstrap 1000 \
  --compressed level0/model.pt=latents-q1 --compressed runs/jointfz-q1/student.pt=latents-jointfz-q1 --out eval-jointfz

# a second rate point for the MSE codec: the control's recipe at q2's lambda, from the same start codec
cdfv-train --task codec --shards faces-dlib-resnet-v1 --root celeba --quality 2 --codec-weights runs/base-q1/codec.pt \
  --batch-size 8 --lr 5e-5 --lr-schedule constant --epochs 1000000 --max-steps 150 --workers 0 --threads 1 --no-tensorboard \
  --out runs/mse-q2lambda

# dlib on each codec's decoded probes, every pairsDevTrain pair (run in several calls as the codecs came: a codec already
# scored is read back); B-id18.6 is ../README.md's B (weight 18.6 at q1's lambda, no rate target). The last call:
python score.py --faces lfw --out all-pairs control=A-control/run/codec.pt start=runs/base-q1/codec.pt \
  mse-q2lambda=runs/mse-q2lambda/codec.pt id18.6=Gc-id18.6-coded-rate/run/codec.pt id18.6-300=Gc300/codec.pt \
  id60=runs/id60-coded-rate/codec.pt id200=runs/id200-coded-rate/codec.pt id18.6-fixed-lambda=B-id18.6/run/codec.pt \
  --bd control,mse-q2lambda id18.6,id18.6-fixed-lambda

# a fresh level0 student fitted to the joint codec's (student weight 0.1, ../README.md's jointlo) final latents
cdfv-prep run --input faces-dlib-l0l2 --quality 1 --weights jointlo-q1/codec.pt --outputs latents --out celeba
cdfv-train --shards latents-jointlo-q1 --root celeba --phase transplant --epochs 8 --workers 0 --threads 1 --junction level0 \
  --out runs/refit-jointlo-level0
cdfv-eval run --pairs ../shared/data/lfw/meta/pairsDevTrain.txt --root lfw --device cpu --bootstrap 1000 \
  --compressed level0/model.pt=latents-q1 --compressed runs/refit-jointlo-level0/model.pt=latents-jointlo-q1 --out eval-refit
