"""Verification throughput per mode and the compressed-domain speed-up over the decoded anchor,
measured in one run on one device (thesis Table 7: about 5x on an RTX 3080).

    python benchmarks/eval.py --device cuda --precision bf16 --batch-pairs 256
    python benchmarks/eval.py --width 16 --repeats 3 --batch-pairs 8   # quick CPU check

Models have random weights: speed depends on the architecture only. Each mode verifies batches of
pairs from stored inputs on the host, input preparation included (see eval/complexity.py).
"""
from __future__ import annotations

import argparse

import torch

from cdfv.eval.complexity import THESIS_CODEC, pair_step, synthesis_transform, time_step, untrained_embedder
from cdfv.pipeline.codecs import CodecSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quality", type=int, default=6, help=f"{THESIS_CODEC} quality (sets M and g_s)")
    parser.add_argument("--batch-pairs", type=int, default=64, help="pairs per batch (thesis: 64)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--width", type=int, default=64, help="model width (64 = thesis models)")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args()

    device = torch.device(args.device)
    spec = CodecSpec(THESIS_CODEC, args.quality)
    resnet = untrained_embedder("resnet50", device, width=args.width, precision=args.precision)
    latent = untrained_embedder("cresnet39", device, spec.latent_channels, args.width, args.precision)
    steps = {
        "original": pair_step("original", resnet, args.batch_pairs),
        "decoded": pair_step("decoded", resnet, args.batch_pairs, synthesis_transform(spec).to(device),
                             latent_channels=spec.latent_channels),
        "compressed": pair_step("compressed", latent, args.batch_pairs),
    }
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{args.precision}, width {args.width}, {THESIS_CODEC} q{args.quality} (M={spec.latent_channels}), "
          f"{args.batch_pairs} pairs/batch, {args.repeats} repeats after {args.warmup} warm-up")
    timings = {}
    for mode, step in steps.items():
        timings[mode] = t = time_step(step, device, args.batch_pairs, args.repeats, args.warmup)
        print(f"{mode:>10}: {t.pairs_per_s:10.1f} pairs/s  {t.ms_per_batch:9.2f} ms/batch (sd {t.ms_per_batch_std:.2f})"
              f"  {t.ms_per_pair:7.3f} ms/pair")
    print(f"cresnet39 embeddings: {2 * timings['compressed'].pairs_per_s:.1f} latents/s")
    print(f"speed ratio compressed / decoded anchor: {timings['compressed'].pairs_per_s / timings['decoded'].pairs_per_s:.2f}x")


if __name__ == "__main__":
    main()
