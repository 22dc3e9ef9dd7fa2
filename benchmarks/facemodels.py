"""Embedding throughput of one face model (cdfv.eval.facemodels) on batches of stored faces.

    python benchmarks/facemodels.py --model dlib --batch 32 --threads 1
    python benchmarks/facemodels.py --model dlib-native --batch 32 --threads 1
    python benchmarks/facemodels.py --model arcface.onnx --device cuda --batch 256

The faces are random 224x224 pictures with thesis-alignment metadata (landmarks on the ArcFace
template): every model does the same work whatever the pixels are (dlib's landmark trees have a
fixed depth, the networks a fixed size), so no data set is needed. `--threads` sets torch's threads
and dlib-native's worker processes (default: torch's choice, every core).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from cdfv.eval.complexity import time_step
from cdfv.eval.facemodels import ARCFACE_TEMPLATE, DlibNativeFaceModel, load_face_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dlib", help="dlib, dlib-native, FILE.onnx or an image model.pt")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32, help="faces per embed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads and dlib-native worker processes")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "dlib-native":
        model = DlibNativeFaceModel(workers=args.threads)
    else:
        model = load_face_model(args.model, args.device)
    faces = np.random.default_rng(0).integers(0, 256, size=(args.batch, 224, 224, 3), dtype=np.uint8)
    landmarks = (ARCFACE_TEMPLATE * 2.0).tolist()
    metas = [{"key": f"face{i}", "align": {"method": "thesis", "landmarks": landmarks}} for i in range(args.batch)]
    t = time_step(lambda: model.embed(faces, metas), torch.device(args.device), args.batch, args.repeats, args.warmup)
    workers = f", {model.workers} worker processes" if isinstance(model, DlibNativeFaceModel) else ""
    print(f"{model.info['model_id']} on {args.device} ({torch.get_num_threads()} torch threads{workers}): batch {args.batch}, "
          f"{t.ms_per_batch:.0f} ms/batch (sd {t.ms_per_batch_std:.0f}), {t.ms_per_batch / args.batch:.1f} ms/face, "
          f"{t.pairs_per_s:.1f} faces/s")
    if isinstance(model, DlibNativeFaceModel):
        model.close()


if __name__ == "__main__":
    main()
