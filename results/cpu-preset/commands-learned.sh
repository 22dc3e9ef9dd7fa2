cdfv-prep run --dataset folder --root /tmp/cpu-run/out/work/celeba --outputs faces --off-centre largest --out /tmp/cpu-run/out/shards/celeba
cdfv-prep run --dataset folder --root /tmp/cpu-run/out/work/codec-train --outputs faces --off-centre largest --no-face whole --out /tmp/cpu-run/out/shards/codec
cdfv-train --task codec --shards faces --root /tmp/cpu-run/out/shards/codec --quality 1 --untrained-codec --eb-init-scale 0.1 --max-steps 1000 --epochs 1000 --batch-size 8 --lr 0.001 --lr-schedule cosine --patch 128 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/codec-q1
cdfv-train --task codec --shards faces --root /tmp/cpu-run/out/shards/codec --quality 3 --codec-weights /tmp/cpu-run/out/runs/codec-q1/codec.pt --max-steps 2400 --epochs 1000 --batch-size 8 --lr 0.001 --lr-schedule cosine --patch 128 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/codec-q3
cdfv-prep views --input faces --views 2 --out /tmp/cpu-run/out/shards/celeba
cdfv-prep teacher --model dlib --input faces-views2 --maps level0,level2 --out /tmp/cpu-run/out/shards/celeba --batch-size 64
cdfv-prep run --input faces-views2-dlib-resnet-v1 --quality 1,3 --weights '/tmp/cpu-run/out/runs/codec-q{quality}/codec.pt' --outputs latents --device cpu --out /tmp/cpu-run/out/shards/celeba
cdfv-train --shards latents-q1 --root /tmp/cpu-run/out/shards/celeba --arch cresnet39 --phase distill --width 16 --epochs 6 --batch-size 32 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/cresnet39-q1
cdfv-train --shards latents-q1 --root /tmp/cpu-run/out/shards/celeba --phase transplant --junction level0 --epochs 8 --batch-size 64 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/transplant-level0-q1
cdfv-train --shards latents-q1 --root /tmp/cpu-run/out/shards/celeba --phase transplant --junction level2 --epochs 8 --batch-size 64 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/transplant-level2-q1
cdfv-train --shards latents-q3 --root /tmp/cpu-run/out/shards/celeba --arch cresnet39 --phase distill --width 16 --epochs 6 --batch-size 32 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/cresnet39-q3
cdfv-train --shards latents-q3 --root /tmp/cpu-run/out/shards/celeba --phase transplant --junction level0 --epochs 8 --batch-size 64 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/transplant-level0-q3
cdfv-train --shards latents-q3 --root /tmp/cpu-run/out/shards/celeba --phase transplant --junction level2 --epochs 8 --batch-size 64 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/transplant-level2-q3
cdfv-train --shards faces --root /tmp/cpu-run/out/shards/celeba --arch resnet50 --width 8 --classify-epochs 4 --arcface-epochs 2 --batch-size 32 --workers 1 --device cpu --out /tmp/cpu-run/out/runs/resnet50
