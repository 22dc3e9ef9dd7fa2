#!/usr/bin/env bash
# The GPU session in one call (issue 11): install what the lent machine lacks from carried wheels,
# then measure prep, training and evaluation throughput and check the CUDA paths on real faces.
# Run on the device machine from the repository root, with .whl/ (cp312 wheels) and .gpudata/
# (faces-celeba: an aligned CelebA face set; lfw: LFW pictures) carried; writes logs under $OUT.
#
#   bash benchmarks/device.sh            # everything
#   STEPS="train eval" bash benchmarks/device.sh
set -uo pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
STEPS=${STEPS:-"setup codec prep crc train eval bf16 torchrun"}
W=/tmp/cdfv-work
mkdir -p $W
export PYTHONUNBUFFERED=1 CDFV_TEST_DATA=$W/data
log() { echo "=== $* ($(date +%T))"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

if want setup; then
  log setup
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, compressai, numpy, cdfv; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'compressai', compressai.__version__, 'cdfv', cdfv.__file__, 'cpus', __import__('os').cpu_count())"
  mkdir -p $W/data/lfw && ln -sfn "$PWD/.gpudata/lfw" $W/data/lfw/deepfunneled
fi
export PYTHONPATH=/tmp/site
FACES=$PWD/.gpudata/shards

if want codec; then
  log "codec: bmshj2018 q1 trained on the carried faces (GPU), the prep benchmark's codec"
  cdfv-train --task codec --shards faces-celeba --root $FACES --untrained-codec --quality 1 --patch 256 --batch-size 16 \
    --max-steps 1500 --epochs 1000 --lr 3e-4 --workers 8 --device cuda --out $W/codec-q1 --quiet 2>&1 | tail -3
  tail -1 $W/codec-q1/codec-metrics.jsonl
fi

if want prep; then
  for q in 1; do
    log "prep q$q: 4000 LFW pictures, CUDA transforms, 15 coder processes"
    python3 benchmarks/prep.py --images 4000 --quality $q --weights $W/codec-q1/codec.pt --device cuda --coder-workers 15 \
      --batch-size 64 --baseline-images 200 2>&1 | grep -v "it/s\]" | tail -12
  done
  log "prep q6, q8 (untrained: their latents round to zero, so their coding time is a lower bound) and cheng2020-attn q1"
  for q in 6 8; do
    python3 benchmarks/prep.py --images 2000 --quality $q --device cuda --coder-workers 15 --batch-size 64 \
      --baseline-images 100 2>&1 | grep -E "img/s|ratio|codec " | tail -6
  done
  python3 benchmarks/prep.py --images 64 --quality 1 --codec cheng2020-attn --device cuda --baseline-images 16 \
    2>&1 | grep -E "img/s|ratio|codec " | tail -6
fi

if want crc; then
  log "latents encoded on CUDA, entropy-decoded on CPU (and the reverse): CRC-checked"
  R=$W/crc; rm -rf $R; mkdir -p $R; ln -s $FACES/faces-celeba $R/faces
  C="--quality 1 --weights $W/codec-q1/codec.pt"
  cdfv-prep encode $C --device cuda --out $R --name enc-cuda 2>/dev/null | grep -E '"written"|rejects"' -A1 | head -4
  cdfv-prep entropy-decode $C --device cpu --out $R --input enc-cuda --name dec-cpu 2>&1 | grep -E '"rejects"|reason' | head -4
  cdfv-prep encode $C --device cpu --out $R --name enc-cpu 2>/dev/null | grep -E '"rejects"' | head -2
  cdfv-prep entropy-decode $C --device cuda --out $R --input enc-cpu --name dec-cuda 2>&1 | grep -E '"rejects"|reason' | head -4
  python3 - <<EOF
from cdfv import shards
import numpy as np
a = {s["__key__"]: s["latent.npy"] for s in shards.open_shard_set("$R/dec-cpu").samples(("latent.npy",))}
b = {s["__key__"]: s["latent.npy"] for s in shards.open_shard_set("$R/dec-cuda").samples(("latent.npy",))}
same = sum(np.array_equal(a[k], b[k]) for k in a if k in b)
print(f"cuda->cpu decoded {len(a)}, cpu->cuda decoded {len(b)}, identical latents across both {same}")
EOF
fi

if want train; then
  log "training throughput (bf16, channels_last), loader shown beside the steps"
  cdfv-prep run --input faces-celeba --quality 1 --weights $W/codec-q1/codec.pt --outputs latents --full-latent \
    --device cuda --out $FACES 2>/dev/null | grep -E '"written"' -A1
  python3 benchmarks/train.py --steps 40 --batch-size 256 --workers 8 --width 64 --root $FACES \
    --latent-shards latents-q1 --image-shards faces-celeba --latent-channels 192 2>&1 | tail -6
  python3 benchmarks/train.py --steps 40 --batch-size 512 --workers 12 --width 64 --root $FACES \
    --latent-shards latents-q1 --latent-channels 192 2>&1 | tail -3
fi

if want eval; then
  log "evaluation throughput and the compressed/decoded speed ratio, one run each"
  for prec in fp32 bf16; do
    python3 benchmarks/eval.py --device cuda --precision $prec --batch-pairs 256 --quality 1 --repeats 30 --warmup 5 2>&1 | tail -6
  done
  python3 benchmarks/eval.py --device cuda --precision bf16 --batch-pairs 256 --quality 6 --repeats 30 --warmup 5 2>&1 | tail -3
  cdfv-eval complexity --time --device cuda --precision bf16 --repeats 30 2>&1 | tail -14
fi

if want bf16; then
  log "bf16 (CUDA) and fp32 (CUDA) training on the same real latents"
  for amp in amp no-amp; do
    flag=$([ $amp = no-amp ] && echo --no-amp)
    cdfv-train --shards latents-q1 --root $FACES --width 64 --batch-size 64 --classify-epochs 4 --phase classify \
      --workers 4 --device cuda $flag --out $W/train-$amp --quiet
    python3 -c "import json; r=[json.loads(l) for l in open('$W/train-$amp/metrics.jsonl')]; t=[x for x in r if x['split']=='train']; print('$amp', 'loss', [round(x['loss'],3) for x in t[::max(1,len(t)//8)]], 'last', round(t[-1]['loss'],3))"
  done
  cp $W/train-amp/metrics.jsonl $OUT/bf16-metrics.jsonl; cp $W/train-no-amp/metrics.jsonl $OUT/fp32-metrics.jsonl
fi

if want torchrun; then
  log "torchrun with NCCL on the one GPU: both phases, stopped and resumed"
  T="torchrun --nproc-per-node 1 -m cdfv.trainer --shards latents-q1 --root $FACES --width 16 --batch-size 64 --classify-epochs 2 --arcface-epochs 1 --workers 2 --device cuda --quiet --out $W/ddp"
  $T --max-steps 20 && $T --resume && python3 -c "import json; s=json.load(open('$W/ddp/summary.json')); print('torchrun', s['world'], s['device'], 'steps', s['steps'], 'model', s['model'])"
fi
log done
