"""Training throughput of cResNet39 and ResNet50: synthetic tensors, loader alone, real shards.

Prints samples/s of full training steps (forward, backward, SGD) on synthetic batches, of the
shard loader alone, and of steps fed by the loader, plus peak memory, so a loader bottleneck
shows as loader samples/s below step samples/s. Targets on one H100: cResNet39 >= 10,000
latents/s, ResNet50 >= 3,000 images/s.

    python benchmarks/train.py --steps 20 --batch-size 256            # GPU
    python benchmarks/train.py --steps 3 --batch-size 8 --width 16    # CPU smoke run
    python benchmarks/train.py --latent-shards latents-q6 --image-shards faces
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from cdfv.shards import open_shard_set
from cdfv.trainer.augment import AugmentConfig, prepare_train
from cdfv.trainer.data import ShardStream, make_loader, probe_input
from cdfv.trainer.models import build_model


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_steps(model, batches, kind: str, device: torch.device, steps: int) -> float:
    """samples/s of `steps` training steps over `batches` (an iterator of (x, y)), after 2 warm-up steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    aug = AugmentConfig()
    cuda = device.type == "cuda"
    count, start = 0, 0.0
    for i, (x, y, *_) in enumerate(batches):
        if i == 2:
            if cuda:
                torch.cuda.synchronize(device)
            count, start = 0, time.perf_counter()
        if i == steps + 2:
            break
        x = prepare_train(x.to(device, non_blocking=True), kind, aug, gen)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y.to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        count += len(y)
    if cuda:
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - start)


def synthetic(kind: str, channels: int, batch: int, classes: int):
    while True:
        if kind == "image":
            x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
        else:
            x = torch.randint(-8, 9, (batch, channels, 16, 16)).float()
        yield x, torch.randint(0, classes, (batch,))


def loader_only(loader, steps: int) -> float:
    """samples/s of the loader alone over `steps` batches, counting worker start-up and the
    shuffle buffer's fill (a lower bound: short runs on tiny sets are dominated by both)."""
    count, start = 0, time.perf_counter()
    for i, (x, *_) in enumerate(loader):
        if i == steps:
            break
        count += len(x)
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--latent-channels", type=int, default=320)
    p.add_argument("--classes", type=int, default=8631)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--latent-shards", help="latent shard set for the loader rows")
    p.add_argument("--image-shards", help="image shard set for the loader rows")
    p.add_argument("--root")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    print(f"device {device}  batch {a.batch_size}  width {a.width}  steps {a.steps}  workers {a.workers}")
    print(f"{'model':10} {'source':22} {'step samples/s':>15} {'loader samples/s':>17} {'peak MB':>9}")
    for arch, kind, shards in (("cresnet39", "latent", a.latent_shards), ("resnet50", "image", a.image_shards)):
        channels = a.latent_channels
        sources = [("synthetic", None)]
        if shards:
            shard_set = open_shard_set(shards, a.root)
            sources.append((f"shards:{shard_set.name}", shard_set))
        for source, shard_set in sources:
            if shard_set is not None and kind == "latent":
                channels = probe_input(shard_set).channels
            classes = max(a.classes, len(shard_set.identities)) if shard_set is not None else a.classes
            model = build_model(arch, in_channels=channels if kind == "latent" else None, num_classes=classes, width=a.width)
            model.to(device).train()
            if device.type == "cuda":
                model.to(memory_format=torch.channels_last)
                torch.cuda.reset_peak_memory_stats(device)
            if shard_set is None:
                batches, loader_rate = synthetic(kind, channels, a.batch_size, a.classes), float("nan")
            else:
                def stream():
                    return make_loader(ShardStream(shard_set, batch_size=a.batch_size, seed=0, shuffle=True),
                                       a.workers, device.type == "cuda")
                loader_rate = loader_only(stream(), a.steps)
                batches = iter(stream())
            rate = train_steps(model, batches, kind, device, a.steps)
            print(f"{arch:10} {source:22} {rate:15.1f} {loader_rate:17.1f} {peak_memory_mb(device):9.0f}")


if __name__ == "__main__":
    main()
