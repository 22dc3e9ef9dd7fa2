"""cdfv-train: the command line over cdfv.trainer.train, cdfv.trainer.codec_train and cdfv.trainer.export.
Training (and torch) is imported once the options are parsed, so `--help` and `--version` answer at once."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cdfv.options import common_options, version_option
from cdfv.shards import DAMAGE_POLICIES, ShardSetError

from .archs import ARCHS, JUNCTION_NAMES

# options that shape one task only, named as Click names them; given to the other task they are refused
FACES_ONLY = ("arch", "phase", "classify_epochs", "arcface_epochs", "distill_epochs", "identity_weight", "val_shards", "init",
              "width", "embedding_dim", "no_amp", "untrained", "in_channels", "junction", "map_weight", "tail_lr", "adapter_width",
              "centre")
CODEC_ONLY = ("codec", "quality", "patch", "metric", "codec_weights", "untrained_codec", "lr_schedule", "lr_final", "aux_lr",
              "eb_init_scale", "mask_padding", "id_weight", "id_distance", "id_map", "id_map_weight",
              "student", "student_weight", "freeze_student", "rate_target", "rate_gain", "variant")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@version_option
@click.option("--shards", help="Training shard set: a name resolved in --root / $CDFV_SHARDS, or a directory.")
@click.option("--root", type=click.Path(file_okay=False), help="Where shard sets live (default $CDFV_SHARDS, else .).")
@click.option("--task", type=click.Choice(["faces", "codec"]), default="faces",
              help="faces: face model (thesis recipe); codec: train/fine-tune a CompressAI codec on image shards.")
@click.option("--arch", type=click.Choice(("auto",) + ARCHS), default="auto",
              help="--task faces: auto: resnet50 on image shards, cresnet39 on latent shards.")
@click.option("--phase", type=click.Choice(["both", "classify", "arcface", "distill", "transplant"]), default="both",
              help="--task faces: classify: cross-entropy over all identities; arcface: embedding FC on a frozen trunk; both: the thesis "
                   "recipe; distill: reproduce a teacher's embeddings (member teacher.npy), with --identity-weight ArcFace; "
                   "transplant: an adapter from the latents to dlib's map at --junction, then dlib's own remaining layers, "
                   "trained on dlib's maps and embeddings (cdfv-prep teacher --maps).")
@click.option("--junction", type=click.Choice(JUNCTION_NAMES), default="level1",
              help="--phase transplant: dlib's map the adapter makes, after residual level 0 (32x35x35), 1 (64x17x17) or 2 (128x8x8).")
@click.option("--map-weight", type=float, default=1.0,
              help="--phase transplant: weight of the map's relative squared error beside 1 - cos to dlib's embedding.")
@click.option("--tail-lr", type=float, default=0.0,
              help="--phase transplant: dlib's tail trains at this fraction of --lr (0: frozen).")
@click.option("--adapter-width", type=int, default=128, help="--phase transplant: channels of the adapter's convolutions.")
@click.option("--centre/--no-centre", default=True,
              help="--phase transplant: take the cosine to the teacher about the mean teacher embedding (dlib's crowd in a narrow cone).")
@click.option("--epochs", type=int, help="Epochs of every phase run (default: thesis, 10+5 ResNet50, 6+3 cResNet).")
@click.option("--classify-epochs", type=int, help="--task faces: phase 1 epochs (overrides --epochs).")
@click.option("--arcface-epochs", type=int, help="--task faces: phase 2 epochs (overrides --epochs).")
@click.option("--distill-epochs", type=int, help="--task faces: distillation or transplant epochs (overrides --epochs; default 10).")
@click.option("--identity-weight", type=float, show_default="0.1 distill, 0 transplant",
              help="--task faces, --phase distill or transplant on labelled shards: weight of ArcFace over the identities beside "
                   "1 - cos (0: teacher alone; transplant: measured worse at 0.1, see results/transplant-curves).")
@click.option("--batch-size", type=int, help="Per-rank batch (default 64 faces, 16 codec).")
@click.option("--lr", type=float, help="Learning rate of the phase(s) run (default 0.1 classify, 0.005 arcface, 0.05 distill, 1e-4 codec).")
@click.option("--val-shards", help="--task faces: held-out samples of the training identities: phase-1 validation each epoch.")
@click.option("--init", type=click.Path(dir_okay=False, exists=True),
              help="--task faces: trunk weights: a VGGFace2-pytorch resnet50_*_weight.pkl, a cdfv-train checkpoint.pt or model.pt, "
                   "or a ResNet50 state dict (torchvision's names); cResNet39/50 take a ResNet50's stages, their M-channel input "
                   "layers stay fresh.")
@click.option("--width", type=int, default=64, help="--task faces: stage width (64 = thesis model; smaller for tests).")
@click.option("--embedding-dim", type=int, default=2048, help="--task faces: embedding size (the ArcFace phase, --untrained; distillation takes the teacher's).")
@click.option("--seed", type=int, default=0)
@click.option("--workers", type=int, default=4, help="DataLoader workers per rank.")
@click.option("--device", default="auto", help="auto (cuda if present, else cpu), cuda or cpu.")
@click.option("--no-amp", is_flag=True, help="--task faces: disable bf16 autocast and channels_last on CUDA.")
@click.option("--max-steps", type=int, help="Stop (and checkpoint) after this many steps in total; it never adds epochs "
                                             "(a run whose epochs end first stops there and says so).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<shards>).")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint.pt (or codec-checkpoint.pt) with the same options.")
@click.option("--allow-change", metavar="OPT[,OPT]", default="",
              help="--resume: options that may differ from the checkpoint's (e.g. classify_epochs,lr_classify).")
@click.option("--damaged", type=click.Choice(DAMAGE_POLICIES), default="error",
              help="Damaged shards: error stops; skip reads past them, counting and listing what is lost. "
                   "Damaged samples are always skipped, counted and listed in <out>/damaged.tsv.")
@click.option("--untrained", is_flag=True,
              help="--task faces: write <out>/model.pt with random weights (tests and demos; recorded untrained=True), no training.")
@click.option("--in-channels", type=int, help="--task faces, --untrained without --shards: the latent's M.")
@click.option("--codec", default="bmshj2018-hyperprior", help="--task codec: CompressAI zoo name.")
@click.option("--quality", default="1", help="--task codec: quality (sets CompressAI's lambda), or several (1,3,6,8: one codec "
                                             "each, --out and --codec-weights then hold {quality}).")
@click.option("--patch", type=int, help="--task codec: train on random PATCHxPATCH crops of the padded faces (default: whole).")
@click.option("--metric", type=click.Choice(["mse", "ms-ssim"]), default="mse", help="--task codec.")
@click.option("--codec-weights", help="--task codec: start from this file (a pattern with {quality} for several).")
@click.option("--untrained-codec", is_flag=True, help="--task codec: start from random weights instead of the zoo's.")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant",
              help="--task codec: constant lr, or a half-cosine from --lr to --lr-final x --lr over the run's steps.")
@click.option("--lr-final", type=float, default=0.01, help="--task codec, --lr-schedule cosine: the last step's lr as a fraction of --lr.")
@click.option("--aux-lr", type=float, default=1e-3, help="--task codec: lr of the entropy bottleneck's quantiles (aux loss).")
@click.option("--eb-init-scale", type=float,
              help="--task codec with --untrained-codec: init_scale of the hyperprior's entropy bottleneck (CompressAI: 10; "
                   "smaller starts z's density near its scale, so z stops costing bits within a few hundred steps).")
@click.option("--mask-padding", is_flag=True,
              help="--task codec: measure the distortion over the 224x224 face only, not its zero padding (as PSNR is).")
@click.option("--id-weight", type=float, default=0.0,
              help="--task codec: weight of the identity term, dlib's distance between the original face and the "
                   "reconstruction's chip, beside rate and distortion (0: none; needs a dlib teacher set, cdfv-prep teacher).")
@click.option("--id-distance", type=click.Choice(["cos", "centred"]), default="cos",
              help="--task codec: the identity term's 1 - cos to dlib's embedding of the original, or about the teacher mean.")
@click.option("--id-map", type=click.Choice(JUNCTION_NAMES),
              help="--task codec: add dlib's map at this junction to the identity term (teacher set made with --maps).")
@click.option("--id-map-weight", type=float, default=1.0,
              help="--task codec: weight of that map's relative squared error inside the identity term.")
@click.option("--student", type=click.Path(dir_okay=False, exists=True),
              help="--task codec: a transplanted student's model.pt (cdfv-train --phase transplant on this codec's latents) "
                   "trained with the encoder: its teacher loss joins rate and distortion; writes <out>/student.pt beside codec.pt "
                   "(the teacher set needs dlib's maps at its junction).")
@click.option("--student-weight", type=float, default=1.0, help="--task codec --student: weight of the student's teacher loss.")
@click.option("--freeze-student", is_flag=True, help="--task codec --student: keep the student's weights as trained (its "
              "BatchNorm statistics follow the new latents); only the codec learns to feed it.")
@click.option("--variant", help="--task codec: the name the codec is filed under beside its codec and quality "
                                 "(default: id with --id-weight, joint with --student, none otherwise).")
@click.option("--rate-target", type=float, metavar="BPP",
              help="--task codec on whole faces: steer the rate term's weight so each batch's rate as the coder codes it "
                   "(its rounded latents' likelihoods, within a few per cent of cdfv-prep's rate.bpp) holds BPP bits per face "
                   "pixel: an identity or student term then costs no bits against a codec of that rate.")
@click.option("--rate-gain", type=float, default=0.2, help="--task codec --rate-target: how fast the rate weight moves "
              "(per step, exp(gain x relative excess)).")
@click.option("--tensorboard/--no-tensorboard", default=None, show_default="on when the tensorboard package is installed",
              help="TensorBoard event files in <out>/tensorboard (codec: <out>/tensorboard-codec) beside the JSON-lines metrics.")
@common_options
def main(**o) -> None:
    """Train cResNet39 on latent shards or ResNet50 on image shards (thesis recipe), or a codec.

    \b
    cdfv-train --shards latents-q6                     # cResNet39, phases 1+2, exports runs/latents-q6/model.pt
    cdfv-train --shards faces --arch resnet50
    cdfv-train --shards latents-q1 --phase transplant --junction level1   # adapter + dlib's tail
    torchrun --nproc-per-node 8 -m cdfv.trainer --shards latents-q6
    cdfv-train --shards faces --task codec --quality 3  # fine-tune bmshj2018 q3, writes codec.pt
    cdfv-train --untrained --arch cresnet39 --in-channels 192 --out runs/demo

    Options marked "--task faces:" or "--task codec:" shape that task only; given to the other, they are refused.
    """
    refuse_inapplicable(click.get_current_context(), o["task"])
    try:
        run(o)
    except (ShardSetError, ValueError, FileNotFoundError) as e:
        click.echo(f"cdfv-train: error: {one_line(e)}", err=True)
        sys.exit(2)
    except OSError as e:  # a full disk, a read-only output directory
        click.echo(f"cdfv-train: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", err=True)
        sys.exit(2)


def refuse_inapplicable(ctx: click.Context, task: str) -> None:
    """A face-model option given with --task codec, or a codec option with --task faces, is a
    mistake the run would otherwise ignore."""
    other = CODEC_ONLY if task == "faces" else FACES_ONLY
    given = [name for name in other if ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                                                          click.core.ParameterSource.ENVIRONMENT)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(f"{flags}: not used by --task {task}")


def one_line(e: Exception) -> str:
    """The message itself: an error raised in a DataLoader worker comes back wrapped in the
    worker's traceback, whose last line is the original `Type: message`."""
    text = str(e).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def run(o: dict) -> None:
    out = o["out"] or str(Path("runs") / Path(o["shards"] or "untrained").name)
    if o["untrained"]:
        export_untrained_cli(o, out)
        return
    if not o["shards"]:
        raise click.UsageError("--shards is required (or --untrained)")
    if o["task"] == "codec":
        from .codec_train import CodecTrainConfig, train_codec

        qualities = [int(q) for q in o["quality"].split(",")]
        for name, value in (("--out", o["out"]), ("--codec-weights", o["codec_weights"])):
            if len(qualities) > 1 and value and "{quality}" not in value:
                raise click.UsageError(f"a sweep over qualities trains one codec each: put {{quality}} in {name}")
        for q in qualities:  # one codec per quality, each a run of its own
            weights = o["codec_weights"].format(quality=q) if o["codec_weights"] else None
            cfg = CodecTrainConfig(shards=o["shards"], out=(o["out"] or f"{out}-codec-q{{quality}}").format(quality=q),
                                   codec=o["codec"], quality=q, metric=o["metric"], weights=weights, untrained=o["untrained_codec"],
                                   root=o["root"], seed=o["seed"], workers=o["workers"], device=o["device"], patch=o["patch"],
                                   max_steps=o["max_steps"], tensorboard=o["tensorboard"], resume=o["resume"],
                                   allow_change=allow_change(o), damaged=o["damaged"], lr_schedule=o["lr_schedule"],
                                   lr_final=o["lr_final"], aux_lr=o["aux_lr"], eb_init_scale=o["eb_init_scale"],
                                   mask_padding=o["mask_padding"], identity_weight=o["id_weight"],
                                   identity_distance=o["id_distance"], identity_map=o["id_map"], identity_map_weight=o["id_map_weight"],
                                   student=o["student"], student_weight=o["student_weight"], freeze_student=o["freeze_student"],
                                   rate_target=o["rate_target"], rate_gain=o["rate_gain"], variant=o["variant"])
            for key, value in (("epochs", o["epochs"]), ("batch_size", o["batch_size"]), ("lr", o["lr"])):
                if value is not None:
                    setattr(cfg, key, value)
            print_summary(train_codec(cfg))
        return
    from .augment import AugmentConfig
    from .train import TrainConfig, train

    cfg = TrainConfig(shards=o["shards"], out=out, root=o["root"], val_shards=o["val_shards"], arch=o["arch"],
                      phase=o["phase"], classify_epochs=o["classify_epochs"] or o["epochs"],
                      arcface_epochs=o["arcface_epochs"] or o["epochs"], distill_epochs=o["distill_epochs"] or o["epochs"],
                      identity_weight=(0.0 if o["phase"] == "transplant" else 0.1) if o["identity_weight"] is None else o["identity_weight"],
                      init=o["init"], width=o["width"], junction=o["junction"],
                      map_weight=o["map_weight"], tail_lr=o["tail_lr"], adapter_width=o["adapter_width"], centre=o["centre"],
                      embedding_dim=o["embedding_dim"], seed=o["seed"], workers=o["workers"], device=o["device"],
                      amp=not o["no_amp"], max_steps=o["max_steps"], resume=o["resume"], tensorboard=o["tensorboard"],
                      augment=AugmentConfig(), allow_change=allow_change(o), damaged=o["damaged"])
    if o["batch_size"] is not None:
        cfg.batch_size = o["batch_size"]
    if o["lr"] is not None:
        cfg.lr_classify = cfg.lr_arcface = cfg.lr_distill = o["lr"]
    print_summary(train(cfg))


def print_summary(summary: dict[str, Any]) -> None:
    """The closing summary (also <out>/summary.json) on stdout, as every cdfv command puts its
    results, so `cdfv-train ... > log` keeps it; messages and bars stay on stderr. Under torchrun
    rank 0 alone prints it, as it alone writes the file."""
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(json.dumps(summary, indent=1))


def allow_change(o: dict) -> tuple[str, ...]:
    return tuple(x.strip().replace("-", "_") for x in o["allow_change"].split(",") if x.strip())


def export_untrained_cli(o: dict, out: str) -> None:
    from cdfv.shards import open_shard_set

    from .data import probe_input
    from .export import export_untrained
    from .train import resolve_arch

    in_channels = o["in_channels"]
    arch = o["arch"]
    if o["shards"]:
        probe = probe_input(open_shard_set(o["shards"], o["root"]))
        arch = resolve_arch(arch, probe)
        in_channels = probe.channels if probe.kind == "latent" else None
    if arch == "auto":
        raise click.UsageError("--untrained needs --arch or --shards")
    path = Path(out) / "model.pt"
    info = export_untrained(path, arch, in_channels=in_channels, width=o["width"],
                            embedding_dim=o["embedding_dim"], seed=o["seed"])
    click.echo(f"cdfv-train: wrote untrained {arch} ({info['model_id']}) to {path}")


if __name__ == "__main__":
    main()
