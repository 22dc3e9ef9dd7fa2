"""Wall and CPU seconds per codec training step at 1 and 2 torch threads (steps 6..N of a fresh q1 run)."""
import sys, time, json, tempfile
import torch
from cdfv.trainer.codec_train import CodecTrainConfig, train_codec
threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
marks = {}
def hook(step, model):
    if step in (5, steps):
        marks[step] = (time.perf_counter(), time.process_time())
with tempfile.TemporaryDirectory() as d:
    cfg = CodecTrainConfig(shards="faces", root="/tmp/cdfv-codec/shards/codec", out=d, quality=1, untrained=True, epochs=10**6,
                           batch_size=8, patch=128, lr=1e-3, lr_schedule="cosine", eb_init_scale=0.1, workers=0,
                           max_steps=steps, progress=False, tensorboard=False, log_every=50)
    train_codec(cfg, hook)
n = steps - 5
print(json.dumps({"threads": threads, "steps_timed": n, "wall_s_per_step": round((marks[steps][0] - marks[5][0]) / n, 3),
                  "cpu_s_per_step": round((marks[steps][1] - marks[5][1]) / n, 3)}))
