"""Throughput of cdfv-prep: images/s per stage and end to end, and the ratio against a plain
per-image CompressAI compress()/decompress() loop on the same faces and machine.

    python benchmarks/prep.py --images 200 --quality 1 [--codec cheng2020-attn] [--device cuda]

Images: LFW View 1 from $CDFV_TEST_DATA (default ../shared/data), else the embedded demo set.
Weights: --weights FILE, else the CompressAI zoo cache when present, else untrained (an untrained
codec's latents round to zero, which makes range coding unrealistically cheap: prefer a trained file,
e.g. demo-out/runs/codec-q1/codec.pt from cdfv-demo).
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cdfv import shards
from cdfv.pipeline import stages
from cdfv.pipeline.codecs import CodecSpec, WeightsUnavailable, codec_model, load_codec
from cdfv.pipeline.coding import CodecEngine, pad_face, to_tensor
from cdfv.pipeline.demodata import make_demo_dataset
from cdfv.pipeline.detect import RetinaFaceOnnx
from cdfv.pipeline.rangecoding import CoderPool
from cdfv.pipeline.sources import lfw

REPO = Path(__file__).resolve().parents[1]


def dataset_root(tmp: Path, n: int) -> Path:
    """A temporary LFW-layout folder of n real images (symlinks), or the demo set."""
    data = Path(os.environ.get("CDFV_TEST_DATA", REPO.parent / "shared" / "data")) / "lfw" / "deepfunneled"
    root = tmp / "images"
    if data.is_dir():
        for item in lfw(data).items[:n]:
            dst = root / item.source
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(data / item.source)
        return root
    make_demo_dataset(root, identities=max(1, n // 8), per_identity=8)
    return root


def timed(label: str, n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - start)
    print(f"{label:<34} {rate:10.1f} img/s")
    return rate


def baseline(codec: stages.Codec, faces: list[np.ndarray]) -> None:
    """What a user would write with CompressAI alone: one picture at a time, full decode."""
    model, dev = codec.engine.model, codec.engine.device
    with torch.inference_mode():
        for face in faces:
            out = model.compress(to_tensor([pad_face(face)], dev))
            model.decompress(out["strings"], out["shape"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--codec", default="bmshj2018-hyperprior")
    ap.add_argument("--quality", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--weights", type=Path, help="codec weights file (e.g. the demo's trained codec)")
    ap.add_argument("--coder-workers", type=int, default=0, help="CPU processes for range coding (bmshj2018-hyperprior)")
    ap.add_argument("--baseline-images", type=int, default=200, help="faces the plain CompressAI loop codes (it is slow)")
    ap.add_argument("--stages", action="store_true", help="also time every stage on its own")
    args = ap.parse_args()

    spec = CodecSpec(args.codec, args.quality)
    try:
        model, wid = load_codec(spec, weights=args.weights)
        untrained = False
    except WeightsUnavailable:
        model, wid = load_codec(spec, untrained=True)
        untrained = True
    pool = None
    if args.coder_workers and not spec.entry.autoregressive:
        pool = CoderPool(functools.partial(codec_model, spec, args.weights, untrained, 0), args.coder_workers)
    codec = stages.Codec(spec, CodecEngine(spec, model, torch.device(args.device), pool), wid, untrained)
    print(f"codec {spec.label} ({wid}), device {args.device}, torch threads {torch.get_num_threads()}, "
          f"coder workers {args.coder_workers}")

    tmp = Path(tempfile.mkdtemp(prefix="cdfv-bench-"))
    try:
        root = dataset_root(tmp, args.images)
        dataset = lfw(root)
        n = len(dataset.items)
        print(f"{n} images from {root}")
        o = stages.RunOptions(tmp / "out", chunk_size=max(1, n), batch_size=args.batch_size)
        detector = RetinaFaceOnnx()
        timed("detect", n, lambda: stages.run_detect(dataset, detector, o))
        dets = stages.load_detections(o.out / "detections")
        timed("align", n, lambda: stages.run_align(dataset, dets, o))
        faces_set = shards.open_shard_set(o.out / "faces")
        m = faces_set.num_samples
        if args.stages:
            timed("encode", m, lambda: stages.run_encode(faces_set, codec, o, "encoded"))
            encoded = shards.open_shard_set(o.out / "encoded")
            timed("entropy-decode", m, lambda: stages.run_entropy_decode(encoded, codec, o, "latents-full"))
            timed("crop-latent", m, lambda: stages.run_crop_latent(shards.open_shard_set(o.out / "latents-full"), o, "latents"))
            timed("decode (reconstruction + quality)", m, lambda: stages.run_decode(encoded, faces_set, codec, o, "decoded"))
        so = stages.StreamOptions(outputs=("latents",))
        o2 = stages.RunOptions(tmp / "stream", chunk_size=max(1, n), batch_size=args.batch_size)
        ours = timed("end to end: run (detect..latents)", n, lambda: stages.run_stream(dataset, detector, [codec], o2, so))
        o3 = stages.RunOptions(tmp / "aligned", chunk_size=max(1, n), batch_size=args.batch_size)
        aligned = timed("aligned faces: run --input (latents)", m,
                        lambda: stages.run_stream(faces_set, None, [codec], o3, stages.StreamOptions(outputs=("latents",), detect=False)))
        faces = [s["png"] for s in faces_set.samples(("png",))]
        codec_only = timed("codec only: encode + entropy-decode", m, lambda: _codec_only(codec, faces, args.batch_size))
        few = faces[: args.baseline_images]
        plain = timed("plain CompressAI per-image loop", len(few), lambda: baseline(codec, few))
        print(f"ratio codec path / plain loop: {codec_only / plain:.2f}x; end to end incl. detection: {ours:.1f} img/s; "
              f"from aligned faces: {aligned:.1f} img/s")
    finally:
        codec.engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _codec_only(codec: stages.Codec, faces: list[np.ndarray], batch: int) -> None:
    for i in range(0, len(faces), batch):
        encoded = codec.engine.encode([pad_face(f) for f in faces[i : i + batch]])
        codec.engine.entropy_decode([(e.strings, e.shape) for e in encoded])


if __name__ == "__main__":
    main()
