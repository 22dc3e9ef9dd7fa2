"""Training or fine-tuning a CompressAI codec on image shards (rate-distortion loss).

The codec sees what cdfv-prep gives it: the 224x224 face zero-padded to 256x256, RGB in [0, 1].
The loss is CompressAI's RateDistortionLoss with CompressAI's lambda for the quality, plus the
entropy bottleneck's aux loss on its own optimiser, as CompressAI's example trainer does. The
result is saved with cdfv.pipeline.codecs.save_codec, so `cdfv-prep encode --weights` loads it.

Options for learning fast on a small budget (measured in results/codec-curves): a cosine decay
of the learning rate (`lr_schedule`), the hyperprior's entropy-bottleneck density started narrow
(`eb_init_scale`: CompressAI's init_scale 10 makes the near-zero z of a fresh codec cost ~1,400
bytes a face, which Adam takes thousands of steps to undo), and the distortion measured on the
224x224 face alone (`mask_padding`), since PSNR is. None changes the architecture or the coding.

With `identity_weight` the loss adds a frozen face model's distance between the original face and
the reconstruction (trainer/identity.py): the codec then spends its bits where dlib reads identity.
It trains on a teacher set (`cdfv-prep teacher --model dlib`, with `--maps J` for `--id-map J`).
With `student` a transplanted student trains with the encoder (trainer/joint.py), on the same
teacher set with dlib's maps at the student's junction.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from cdfv import progress
from cdfv.provenance import provenance
from cdfv.eval.dlib_arch import EMBEDDING_DIM
from cdfv.pipeline.codecs import CodecSpec, load_codec, save_codec, weights_file_id, with_variant
from cdfv.shards import Damage, ShardSet, ShardSetError, atomic_write_bytes, open_shard_set, remove_stale_temporaries, spec

from .checkpoint import check_resume_config, data_identity, load_checkpoint, restore_rng, rng_state, save_checkpoint
from .data import CHIP_VALUES, ShardStream, damage_summary, make_loader
from .identity import IdentityLoss
from .joint import LatentTap, save_student
from .transplant import LATENT_SIDE, TransplantTask
from .train import (Context, MetricsLog, phase_total, rank_zero_lock, setup_context, short_of_max_steps, start_run_directory,
                    tensorboard_dir, tensorboard_note)

logger = logging.getLogger(__name__)

# CompressAI's zoo lambdas per quality (https://interdigitalinc.github.io/CompressAI/zoo.html)
LAMBDAS = {
    "mse": (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800),
    "ms-ssim": (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00),
}
PAD = (spec.CODED_SIZE - spec.FACE_SIZE) // 2
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class CodecTrainConfig:
    shards: str
    out: str
    codec: str = "bmshj2018-hyperprior"
    quality: int = 1
    metric: str = "mse"
    weights: str | None = None  # start from this file; else the zoo weights; else --untrained
    untrained: bool = False  # start from random weights
    root: str | None = None
    epochs: int = 1
    batch_size: int = 16  # CompressAI zoo: 16 or 32
    lr: float = 1e-4  # CompressAI zoo: main optimiser
    lr_schedule: str = "constant"  # cosine: from lr down to lr * lr_final over the run's steps
    lr_final: float = 0.01  # cosine: the last step's lr as a fraction of lr
    aux_lr: float = 1e-3  # CompressAI example: entropy-bottleneck quantiles
    eb_init_scale: float | None = None  # random start only: the entropy bottleneck's init_scale (CompressAI: 10)
    mask_padding: bool = False  # distortion over the 224x224 face only, not its zero padding (mse metric)
    clip_grad: float = 1.0  # CompressAI example's --clip_max_norm
    seed: int = 0
    workers: int = 4
    patch: int | None = None  # random PATCHxPATCH crops of the padded 256x256 faces (CompressAI trains on 256 crops)
    shuffle_buffer: int = 200
    device: str = "auto"
    max_steps: int | None = None
    log_every: int = 10
    progress: bool = True  # tqdm progress bar (the closing summary is a log message: logging decides; cdfv-train prints it)
    tensorboard: bool | None = None  # event files in <out>/tensorboard-codec; None: when the tensorboard package is installed
    resume: bool = False  # continue from <out>/codec-checkpoint.pt
    allow_change: tuple[str, ...] = ()  # options a --resume may change
    damaged: str = "error"  # damaged shards: error stops, skip reads past them
    identity_weight: float = 0.0  # weight of the identity term (trainer/identity.py) beside rate and distortion; 0: none
    identity_distance: str = "cos"  # cos: 1 - cos to the teacher; centred: about the teacher embeddings' mean
    identity_map: str | None = None  # also dlib's map at this junction (the teacher set's teacher-<junction>.npy)
    identity_map_weight: float = 1.0  # weight of that map's relative squared error inside the identity term
    student: str | None = None  # a transplanted student's model.pt, trained with the encoder (trainer/joint.py)
    student_weight: float = 1.0  # weight of the student's teacher loss beside rate and distortion
    freeze_student: bool = False  # the student's weights stay as trained (its BatchNorm statistics follow the latents): only the codec learns to feed it
    variant: str | None = None  # the saved codec's variant name (CodecSpec); None: "joint" with a student, "id" with the identity term
    rate_target: float | None = None  # bpp per face pixel the training rate is held at (RateSteer): equal-rate comparisons
    rate_gain: float = 0.2  # how fast RateSteer moves the rate weight
    student_map_weight: float = 1.0  # the student's map term inside its loss (as --phase transplant's --map-weight)


def pad_faces(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, 224, 224) -> float [0, 1] (N, 3, 256, 256), zero-padded on every side."""
    return F.pad(x.float() / 255.0, (PAD, PAD, PAD, PAD))


def option_defaults() -> dict[str, Any]:
    """The options' defaults: what a checkpoint written before an option existed ran with."""
    return {f.name: f.default for f in fields(CodecTrainConfig) if f.default is not MISSING}


def face_mask(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 256, 256) ones over the 224x224 face of a padded batch, zeros over its padding."""
    return F.pad(torch.ones_like(x[:, :1, PAD:-PAD, PAD:-PAD]), (PAD, PAD, PAD, PAD))


def masked_mse(x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where mask is 1 (all three channels): the distortion
    PSNR over the face measures, so the codec spends nothing on reproducing the padding."""
    return ((x_hat - x) ** 2 * mask).sum() / (mask.sum() * x.shape[1]).clamp(min=1)


def lr_at(step: int, total: int, lr: float, schedule: str = "constant", final: float = 0.01) -> float:
    """The main optimiser's lr for training step `step` (0-based) of `total`: constant, or a
    half-cosine from lr at step 0 to lr * final at the last step. Stateless, so a resumed run
    continues the same curve."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"lr schedule {schedule!r}: one of {', '.join(LR_SCHEDULES)}")
    progress = min(step, max(total - 1, 1)) / max(total - 1, 1)
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


def narrow_entropy_bottleneck(model: torch.nn.Module, init_scale: float, seed: int) -> None:
    """Replaces a fresh codec's entropy bottleneck with CompressAI's own, built with init_scale
    (seeded, so runs repeat): same parameters and coding, a density that starts near z's scale."""
    from compressai.entropy_models import EntropyBottleneck

    if init_scale <= 0:
        raise ValueError(f"--eb-init-scale {init_scale}: must be positive")
    old = model.entropy_bottleneck
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.entropy_bottleneck = EntropyBottleneck(old.channels, init_scale=init_scale, tail_mass=old.tail_mass,
                                                     filters=old.filters)


def random_patches(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random size x size crop of each picture (sides multiples of 64 for the transforms)."""
    if size % 64 or not 64 <= size <= x.shape[-1]:
        raise ValueError(f"--patch {size}: needs a multiple of 64 up to {x.shape[-1]}")
    n, side = x.shape[0], x.shape[-1]
    top = torch.randint(0, side - size + 1, (n,), generator=gen).tolist()
    left = torch.randint(0, side - size + 1, (n,), generator=gen).tolist()
    return torch.stack([x[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(zip(top, left))])


def dlib_teacher(shard_set: ShardSet, flag: str, junction: str | None) -> None:
    """Refuses, naming `flag`, a set without dlib's embeddings (and its maps at `junction`)."""
    from cdfv.eval.facemodels import DLIB_ARCH

    teacher = shard_set.meta.get("teacher") or {}
    if spec.TEACHER not in shard_set.members or teacher.get("arch") != DLIB_ARCH:
        raise ShardSetError(f"{shard_set.directory}: {flag} needs dlib's embeddings of the faces "
                            f"(cdfv-prep teacher --model dlib), this set has {teacher.get('model_id') or 'no teacher'}")
    if junction is not None and spec.teacher_map(junction) not in shard_set.members:
        raise ShardSetError(f"{shard_set.directory}: {flag} needs dlib's maps at {junction} "
                            f"(cdfv-prep teacher --model dlib --maps {junction})")


@dataclass(frozen=True)
class TeacherRows:
    """The layout of a batch's teacher rows (trainer/data.ShardStream): dlib's embedding, its map
    at `junction` if one is read, and the face -> chip transform if `chip`."""

    dim: int
    junction: str | None
    chip: bool

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        from cdfv.eval.dlib_arch import JUNCTIONS

        channels, side = JUNCTIONS[self.junction] if self.junction else (0, 0)
        end = self.dim + channels * side * side
        maps = rows[:, self.dim : end].reshape(-1, channels, side, side) if self.junction else None
        return rows[:, : self.dim], maps, rows[:, end : end + CHIP_VALUES].reshape(-1, 2, 3) if self.chip else None


def identity_term(cfg: CodecTrainConfig, shard_set: ShardSet, device: torch.device) -> IdentityLoss | None:
    """The identity term the config asks for, with dlib's network on `device`, after checking that
    the set carries what it reads (dlib's embeddings and chip transforms, the map if asked)."""
    if cfg.identity_weight == 0:
        if cfg.identity_map is not None or cfg.identity_distance != "cos" or cfg.identity_map_weight != 1.0:
            raise ValueError("--id-map, --id-map-weight and --id-distance shape the identity term: give --id-weight too")
        return None
    from cdfv.eval.dlib_arch import load_dlib_resnet
    from cdfv.eval.facemodels import dlib_model_files

    from .transplant import teacher_mean

    dlib_teacher(shard_set, "the identity term", cfg.identity_map)
    if cfg.patch is not None:
        raise ValueError("--patch crops the faces; the identity term reads each whole face's chip")
    centre = teacher_mean(shard_set, Damage(cfg.damaged)) if cfg.identity_distance == "centred" else None
    return IdentityLoss(load_dlib_resnet(dlib_model_files()[0]), cfg.identity_distance, cfg.identity_map,
                        cfg.identity_map_weight, centre).to(device)


def student_task(cfg: CodecTrainConfig, shard_set: ShardSet, codec: CodecSpec, channels: int, start_weights: str,
                 device: torch.device) -> tuple[TransplantTask, dict[str, Any]] | None:
    """The transplanted student trained with the encoder, in its teacher loss (trainer/joint.py),
    and its model file's info; None without --student. It must have learned the latents of the
    codec training starts from (weights `start_weights`)."""
    if cfg.student is None:
        if cfg.student_weight != 1.0:
            raise ValueError("--student-weight weighs a student's loss: give --student too")
        if cfg.freeze_student:
            raise ValueError("--freeze-student keeps a student as trained: give --student too")
        return None
    from .joint import load_student
    from .transplant import teacher_mean

    if cfg.patch is not None:
        raise ValueError("--patch crops the faces; the student reads each whole face's latent")
    start = with_variant(replace(codec, variant=""), Path(cfg.weights) if cfg.weights else None)
    student, info = load_student(Path(cfg.student), codec, channels, start.record(start_weights, cfg.untrained))
    junction = student.kwargs["junction"]
    dlib_teacher(shard_set, f"--student (a {junction} student)", junction)
    if cfg.identity_map is not None and cfg.identity_weight and cfg.identity_map != junction:
        raise ValueError(f"--id-map {cfg.identity_map} and the {junction} student read two maps; give --id-map {junction}")
    task = TransplantTask(student, None, 0.0, cfg.student_map_weight, frozen_tail=True,
                          centre=teacher_mean(shard_set, Damage(cfg.damaged)))
    return task.to(device), info


WEIGHTS = {"identity_weight": "--id-weight", "identity_map_weight": "--id-map-weight", "student_weight": "--student-weight"}


def check_weights(cfg: CodecTrainConfig) -> None:
    """Refuses a loss weight that is negative (it would reward what the term measures: a worse
    identity, a map further from dlib's) or not finite (the first step's loss, whatever the lr)."""
    for name, flag in WEIGHTS.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag} {value:g}: a loss weight must be a finite number, 0 or more")


def variant_of(cfg: CodecTrainConfig) -> str:
    """The variant a run's codec is filed under: the one asked for, else what its loss adds."""
    if cfg.variant is not None:
        return cfg.variant
    return "joint" if cfg.student else "id" if cfg.identity_weight else ""


RATE_MEASURE = "coded"  # what RateSteer holds, recorded in checkpoints: runs that steered the noisy estimate had none


class RateSteer:
    """The rate term's weight, steered each step so that the batch's rate holds `target` bits per
    face pixel (the 224 x 224 face's bits, the padding's included, over its pixels) as the coder
    codes it (face_rate: the latents rounded, not the training loss's noisy estimate). An identity
    term or a student spends bits as well as saving them; held at the coded rate of the codec it
    starts from, the result compares with that codec at equal rate. The weight moves by exp(gain x
    relative error) a step: at the default gain 0.2 a lasting excess of 10 % doubles it in about 35
    steps, and one batch's noise moves it a few per cent. Measured (results/identity-curves): at
    gain 0.05 an identity term at weight 18.6 still ran 11 % over its target after 50 steps (weight
    1.19), too slow for the runs of a few hundred steps this machine affords."""

    def __init__(self, target: float, gain: float = 0.2, weight: float = 1.0) -> None:
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"--rate-target {target:g}: must be a positive number of bits per pixel")
        if not (math.isfinite(gain) and gain > 0):
            raise ValueError(f"--rate-gain {gain:g}: must be a positive number")
        self.target, self.gain, self.weight = target, gain, weight

    def update(self, face_bpp: float) -> None:
        self.weight = min(100.0, max(0.01, self.weight * math.exp(self.gain * (face_bpp / self.target - 1.0))))


def face_rate(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Bits per face pixel of a padded batch as the coder codes it: the codec's likelihoods of its
    latents rounded (its eval-mode forward), over the 224 x 224 faces' pixels; the codec's mode is
    left as it was. Within a few per cent of the coded rate (the range coder's overhead: 0.1082
    against 0.1107 coded on 64 CelebA faces at q1). The training loss's noisy estimate cannot stand
    in for it: 0.3038 on the same faces, and its ratio to the coded rate moved from 2.7 to 3.8 in
    150 steps of joint training (results/identity-curves)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            likelihoods = model(x)["likelihoods"]
    finally:
        model.train(was_training)
    return sum(float(-torch.log2(lik).sum()) for lik in likelihoods.values()) / (x.shape[0] * spec.FACE_PIXELS)


def faces_rate(model: torch.nn.Module, faces: Sequence[Any], batch_size: int = 16) -> float:
    """face_rate over uint8 (224, 224, 3) faces, padded as training pads them: a codec's rate that
    --rate-target holds another codec at."""
    if not faces:
        raise ValueError("no face to measure the rate of")
    device = next(model.parameters()).device
    bits = 0.0
    for i in range(0, len(faces), batch_size):
        batch = torch.stack([torch.as_tensor(face) for face in faces[i : i + batch_size]])
        bits += face_rate(model, pad_faces(batch.permute(0, 3, 1, 2).to(device))) * len(batch)
    return bits / len(faces)


StepHook = Callable[[int, torch.nn.Module], None]  # (steps done, the codec in training) after each step


def train_codec(cfg: CodecTrainConfig, on_step: StepHook | None = None) -> dict[str, Any]:
    """Runs the codec training while holding the output directory; returns the closing summary
    (also out/summary.json) with the logged losses. on_step (main rank) sees the codec after every step: a
    learning curve evaluates it there without a second copy of the loop; it must leave it as is."""
    with rank_zero_lock(Path(cfg.out)) as held:
        if held:
            remove_stale_temporaries(Path(cfg.out))
        return _train_codec(cfg, on_step)


def _train_codec(cfg: CodecTrainConfig, on_step: StepHook | None) -> dict[str, Any]:
    from compressai.losses import RateDistortionLoss

    check_weights(cfg)
    ctx: Context = setup_context(cfg.device)
    board = tensorboard_dir(cfg.tensorboard, Path(cfg.out) / "tensorboard-codec")
    shard_set = open_shard_set(cfg.shards, cfg.root, damage=cfg.damaged)
    if shard_set.kind != "image":
        raise ShardSetError(f"{shard_set.directory}: codec training needs image shards, {shard_set.name!r} holds {shard_set.kind}s")
    codec_spec = CodecSpec(cfg.codec, cfg.quality, cfg.metric, variant_of(cfg))
    model, weights_id = load_codec(codec_spec, weights=Path(cfg.weights) if cfg.weights else None,
                                   untrained=cfg.untrained, seed=cfg.seed, any_quality=True,
                                   flags=("--codec-weights", "--untrained-codec"))
    if cfg.eb_init_scale is not None:
        if not cfg.untrained:
            raise ValueError("--eb-init-scale starts a codec from random weights: give --untrained-codec, not --codec-weights")
        narrow_entropy_bottleneck(model, cfg.eb_init_scale, cfg.seed)
    if cfg.mask_padding and cfg.metric != "mse":
        raise ValueError("--mask-padding measures the mse over the face; the ms-ssim metric has no such mask")
    if cfg.rate_target is not None and cfg.patch is not None:
        raise ValueError("--rate-target holds the rate of whole faces; --patch trains on crops")
    steer = RateSteer(cfg.rate_target, cfg.rate_gain) if cfg.rate_target is not None else None
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"--lr-schedule {cfg.lr_schedule}: one of {', '.join(LR_SCHEDULES)}")
    identity = identity_term(cfg, shard_set, ctx.device)
    joint = student_task(cfg, shard_set, codec_spec, model.M, weights_id, ctx.device)
    student, student_info = joint if joint else (None, None)
    rows = TeacherRows(EMBEDDING_DIM, student.model.kwargs["junction"] if student else cfg.identity_map if identity else None,
                       chip=identity is not None)
    tap = LatentTap(model) if student else None
    model.to(ctx.device).train()
    if student is not None:  # in train mode, frozen or not: statistics kept from the start codec's latents blew up the
        student.train()      # student's loss within 60 steps once the encoder moved (results/identity-curves/all-pairs)
        if cfg.freeze_student:
            student.requires_grad_(False)
    criterion = RateDistortionLoss(lmbda=LAMBDAS[cfg.metric][cfg.quality - 1],
                                   metric="mse" if cfg.metric == "mse" else "ms-ssim")
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    if student is not None:  # the adapter learns with the encoder (unless frozen too); dlib's tail stays frozen
        main_params += [p for p in student.parameters() if p.requires_grad]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    runner = model
    if ctx.world > 1:
        runner = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    out = Path(cfg.out)
    ckpt_path = out / "codec-checkpoint.pt"
    if ctx.main:
        start_run_directory(out, ckpt_path, cfg.resume)
    stream = ShardStream(shard_set, batch_size=cfg.batch_size, seed=cfg.seed, shuffle=True, rank=ctx.rank, world=ctx.world,
                         shuffle_buffer=cfg.shuffle_buffer, damage_policy=cfg.damaged, damage_log=out / "damaged.tsv", labels=False,
                         teacher=rows.dim if identity or student else 0, chip=rows.chip,
                         teacher_map=spec.teacher_map(rows.junction) if rows.junction else None)
    rng = torch.Generator().manual_seed(cfg.seed)  # the patches' corners

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        if ctx.main:
            save_checkpoint(ckpt_path, {"task": "codec", "codec": codec_spec.label, "model": model.state_dict(),
                                        "optimizer": optimizer.state_dict(), "aux_optimizer": aux_optimizer.state_dict(),
                                        "epoch": epoch, "step_in_epoch": step_in_epoch, "step": step,
                                        "rng": rng_state(rng), "config": asdict(cfg), "start_weights": weights_id,
                                        "data": data_identity(shard_set), "rate_weight": steer.weight if steer else None,
                                        "rate_measure": RATE_MEASURE, **({"student": student.state_dict()} if student else {})})

    history, step, started = [], 0, time.time()
    start_epoch, start_step = 0, 0
    torch.manual_seed(cfg.seed + ctx.rank)  # the quantisation noise of training draws from the global RNG
    if cfg.resume:
        state = load_checkpoint(ckpt_path, ("task", "codec", "model", "optimizer", "aux_optimizer", "epoch", "step_in_epoch",
                                            "step", "rng", "config", "start_weights"))
        if state["task"] != "codec" or state["codec"] != codec_spec.label:
            raise ValueError(f"--resume {ckpt_path}: checkpoint is for {state['codec']}, not {codec_spec.label}")
        saved = {**option_defaults(), **state["config"]}  # an option newer than the checkpoint ran at its default
        if cfg.lr_schedule != "constant" and saved["max_steps"] != cfg.max_steps and "max_steps" not in cfg.allow_change:
            raise ValueError(f"--resume {ckpt_path}: --lr-schedule {cfg.lr_schedule} spans the run's --max-steps "
                             f"({saved['max_steps']}); another ({cfg.max_steps}) bends its lr: --allow-change max_steps to do so")
        check_resume_config(ckpt_path, {**saved, "data": state.get("data")},
                            {**asdict(cfg), "data": data_identity(shard_set)}, cfg.allow_change)
        if (student is not None) != ("student" in state):
            raise ValueError(f"--resume {ckpt_path}: the run trained {'with' if 'student' in state else 'without'} a student; "
                             f"one cannot join or leave a run midway (one optimiser holds the codec's and the student's "
                             f"steps): start a new --out")
        model.load_state_dict(state["model"])
        if student is not None:
            student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        restore_rng(state["rng"], rng)
        if steer is not None and state.get("rate_weight") is not None:  # a rate target added on resume starts at 1, as a new run
            if state.get("rate_measure") != RATE_MEASURE:
                raise ValueError(f"--resume {ckpt_path}: its rate was held on the training loss's noisy estimate, which "
                                 f"--rate-target no longer steers (it holds the coded rate now): start a new --out")
            steer.weight = state["rate_weight"]
        start_epoch, start_step, step, weights_id = state["epoch"], state["step_in_epoch"], state["step"], state["start_weights"]
    resumed_at = step
    total_steps = min(cfg.max_steps or math.inf, cfg.epochs * stream.steps)
    log = MetricsLog(out / "codec-metrics.jsonl", ctx.main, step if cfg.resume else None, board)
    total = phase_total(cfg.epochs, stream.steps, start_epoch, start_step, step, cfg.max_steps)
    with progress.bar(total, f"codec {codec_spec.label}", unit="step", initial=start_epoch * stream.steps + start_step,
                      enabled=ctx.main and cfg.progress) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.max_steps is not None and step >= cfg.max_steps:  # resumed at the end: nothing left to run
                break
            stream.set_epoch(epoch, start_step)
            step_in_epoch = start_step
            for step_in_epoch, (faces, _, teacher) in enumerate(make_loader(stream, cfg.workers, ctx.device.type == "cuda"),
                                                          start=start_step + 1):
                x = pad_faces(faces.to(ctx.device, non_blocking=True))
                x = torch.cat([x, face_mask(x)], 1)  # one crop for picture and mask
                if cfg.patch is not None:
                    x = random_patches(x, cfg.patch, rng)
                x, mask = x[:, :3], x[:, 3:]
                coded = runner(x)
                losses = criterion(coded, x)
                if cfg.mask_padding:
                    losses["mse_loss"] = masked_mse(coded["x_hat"], x, mask)
                    losses["loss"] = criterion.lmbda * 255**2 * losses["mse_loss"] + losses["bpp_loss"]
                parts: dict[str, float] = {}
                if steer is not None:  # the rate term reweighted; steered on the rate the coder would spend
                    losses["loss"] = losses["loss"] + (steer.weight - 1.0) * losses["bpp_loss"]
                    parts["rate_weight"] = steer.weight
                if identity is not None or student is not None:
                    target, target_map, chips = rows.split(teacher.to(ctx.device, non_blocking=True))
                if identity is not None:
                    id_loss, id_parts = identity(coded["x_hat"], target, chips, target_map if cfg.identity_map else None)
                    parts.update(id_parts)
                    losses["loss"] = losses["loss"] + cfg.identity_weight * id_loss
                if student is not None:
                    latents = tap.student_input(LATENT_SIDE)
                    student_loss, sums = student(latents, torch.zeros(len(x), dtype=torch.long, device=ctx.device),
                                                 torch.cat([target, target_map.flatten(1)], 1))
                    losses["loss"] = losses["loss"] + cfg.student_weight * student_loss
                    parts.update({"student_loss": student_loss.item(), **{f"student_{k}": v.item() / len(x) for k, v in sums.items()}})
                if steer is not None:  # after the student read the tap: this forward passes g_a again
                    parts["steered_bpp"] = face_rate(model, x)
                    steer.update(parts["steered_bpp"])
                if not torch.isfinite(losses["loss"]):  # stop before a diverged codec is saved or checkpointed
                    raise ValueError(f"codec training diverged at step {step + 1} (loss {losses['loss'].item()}); "
                                     f"start again with a lower --lr (now {cfg.lr:g})")
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, cfg.lr, cfg.lr_schedule, cfg.lr_final)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                torch.nn.utils.clip_grad_norm_(main_params, cfg.clip_grad)
                optimizer.step()
                aux = model.aux_loss()
                aux_optimizer.zero_grad(set_to_none=True)
                aux.backward()
                aux_optimizer.step()
                step += 1
                bar.update(1)
                if on_step is not None and ctx.main:
                    on_step(step, model)
                if step % cfg.log_every == 0 or step == 1:
                    record = {"phase": "codec", "split": "train", "epoch": epoch, "step": step,
                              "loss": losses["loss"].item(), "bpp": losses["bpp_loss"].item(),
                              "distortion": losses.get("mse_loss", losses.get("ms_ssim_loss")).item(), "aux": aux.item(),
                              "lr": optimizer.param_groups[0]["lr"], **parts}
                    log.write(record)
                    history.append(record)
                    bar.set_postfix({"epoch": f"{epoch + 1}/{cfg.epochs}", "loss": f"{record['loss']:.4f}", "bpp": f"{record['bpp']:.3f}"})
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            stopped = cfg.max_steps is not None and step >= cfg.max_steps and step_in_epoch < stream.steps
            checkpoint(epoch if stopped else epoch + 1, step_in_epoch if stopped else 0)
            start_step = 0
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
    log.close()
    path = out / "codec.pt"
    if ctx.main:
        save_codec(path, model.cpu(), codec_spec, training={
            "shards": shard_set.name, "data": data_identity(shard_set), "start_weights": weights_id, "steps": step,
            "lambda": criterion.lmbda, "metric": cfg.metric, "mask_padding": cfg.mask_padding, "patch": cfg.patch,
            "lr": cfg.lr, "lr_schedule": cfg.lr_schedule, "batch_size": cfg.batch_size, "rate_target": cfg.rate_target, "rate_gain": cfg.rate_gain,
            "rate_weight": steer.weight if steer else None,
            "identity": {"weight": cfg.identity_weight, "distance": cfg.identity_distance, "map": cfg.identity_map,
                         "map_weight": cfg.identity_map_weight, "teacher": (shard_set.meta.get("teacher") or {}).get("model_id")}
            if identity else None,
            "student": {"file": cfg.student, "model_id": student_info["model_id"], "weight": cfg.student_weight,
                        "map_weight": cfg.student_map_weight, "frozen": cfg.freeze_student} if student else None})
        if student is not None:
            coded_by = codec_spec.record(weights_file_id(path), False)  # as cdfv-prep records the latents this codec codes
            save_student(out / "student.pt", student.model.cpu(), student_info, coded_by,
                         {"codec": str(path), "student_weight": cfg.student_weight, "map_weight": cfg.student_map_weight,
                          "frozen": cfg.freeze_student, "identity_weight": cfg.identity_weight, "steps": step, "shards": shard_set.name})
    if ctx.world > 1:
        torch.distributed.barrier()  # every rank's damage log lines are written
    damaged = damage_summary(out / "damaged.tsv", settle=ctx.main)
    summary = {"codec": codec_spec.label, "shards": shard_set.name, "start_weights": weights_id, "steps": step,
               "resumed_at": resumed_at, "steps_this_run": step - resumed_at, "epochs": cfg.epochs, "max_steps": cfg.max_steps,
               "stopped_early": cfg.max_steps is not None and step >= cfg.max_steps and step < cfg.epochs * stream.steps,
               "skipped_samples": damaged["damaged_samples_lost"], "damaged": damaged["damaged"], "checkpoint": str(ckpt_path),
               "seconds": round(time.time() - started, 1), "saved": str(path),
               "student": str(out / "student.pt") if student is not None else None, "history": history,
               "tensorboard": str(log.board.log_dir) if log.board is not None else None, "provenance": provenance()}
    if ctx.main:
        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
        short = short_of_max_steps(cfg.max_steps, step, f"{cfg.epochs} of {stream.steps} steps")
        if short:
            logger.warning(short)
        span = f"steps {resumed_at} -> {step} ({step - resumed_at} this run)" if resumed_at else f"{step} steps"
        done = (f"{span} in {summary['seconds']} s, loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}"
                if history else f"already trained to step {step}, nothing left to run")
        lost = f"  damaged samples skipped: {damaged['damaged_samples_lost']}" + (
            f" (listed in {out / 'damaged.tsv'})" if damaged["damaged"] else "")
        logger.info(f"cdfv-train codec: {codec_spec.label} from {weights_id}, {done}; saved {path}\n{lost}\n"
                    f"  tensorboard: {tensorboard_note(summary['tensorboard'], cfg.tensorboard)}")
    return summary
