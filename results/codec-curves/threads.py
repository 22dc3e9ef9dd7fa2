"""Wall and CPU seconds per codec training step at THREADS torch threads: steps 6..STEPS of a fresh q1 run
(the recommended q1 recipe, batch 8 of 128x128 crops), the first five left out as warm-up.

    OMP_NUM_THREADS=1 python threads.py 1 35 shards/codec
    OMP_NUM_THREADS=2 python threads.py 2 35 shards/codec
"""
import sys, time, json, tempfile
import torch
from cdfv.trainer.codec_train import CodecTrainConfig, train_codec
threads, steps, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
marks = {}
def hook(step, model):
    if step in (5, steps):
        marks[step] = (time.perf_counter(), time.process_time())
with tempfile.TemporaryDirectory() as d:
    cfg = CodecTrainConfig(shards="faces", root=root, out=d, quality=1, untrained=True, epochs=10**6,
                           batch_size=8, patch=128, lr=1e-3, lr_schedule="cosine", eb_init_scale=0.1, workers=0,
                           max_steps=steps, progress=False, tensorboard=False, log_every=50)
    train_codec(cfg, hook)
n = steps - 5
print(json.dumps({"threads": threads, "steps_timed": n, "wall_s_per_step": round((marks[steps][0] - marks[5][0]) / n, 3),
                  "cpu_s_per_step": round((marks[steps][1] - marks[5][1]) / n, 3)}))
