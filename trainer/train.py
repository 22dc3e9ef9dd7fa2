"""Face-model training: the thesis recipe (5.5.2, 6.3.2), one device or many under torchrun.

Read top to bottom: setup (distributed, data, model), then each phase as a plain loop over
epochs and steps, checkpointing at every epoch end and when stopped early, and finally the
export of the embedding model that cdfv-eval loads.

Phase 1 "classify": the whole network, cross-entropy over every identity of the index, SGD
lr 0.1, batch 64, 10 epochs (ResNet50) or 6 (cResNet39/50).
Phase 2 "arcface": FC replaced by a fresh 2048-d embedding FC, everything else frozen, ArcFace
(s=64, m=0.5 rad) with a classifier over the training identities, identities split 90/10 into
train/validation, SGD lr 0.005, ReduceLROnPlateau(factor 0.5) on validation loss, 5 epochs
(ResNet50) or 3 (cResNet39/50).
Phase "distill" (instead of both): the whole network, its FC the embedding as wide as a teacher's,
trained to reproduce the teacher's embedding of each face (1 - cosine), plus 0.1 x ArcFace over
the identities when the set is labelled; SGD lr 0.05 with cosine decay, 10 epochs. No labels are
needed: a folder of faces with a teacher's embeddings is a training set.
Phase "transplant": an adapter from the latents to dlib's map at a junction and dlib's own tail
(trainer/transplant.py), trained on dlib's map of each view and its embedding; same optimiser and
schedule as "distill", the tail frozen unless tail_lr > 0.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, TypeVar

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn
from cdfv import progress
from cdfv.outlock import output_lock
from cdfv.provenance import provenance
from cdfv.safe_load import load_torch_file
from cdfv.shards import Damage, ShardSet, ShardSetError, atomic_write_bytes, open_shard_set, remove_stale_temporaries, spec

from .arcface import ArcFace
from .augment import AugmentConfig, prepare_eval, prepare_train
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import check_resume_config, data_identity, load_checkpoint, restore_rng, rng_state, save_checkpoint
from .data import (
    InputProbe,
    ShardStream,
    damage_summary,
    describe,
    identity_split,
    kept_counts,
    make_loader,
    probe_input,
    scan_labels,
)
from .export import FORMAT as MODEL_FORMAT
from .export import embedding_info, save_embedding_model
from .archs import INPUT_KIND, TRANSPLANTS, transplant_arch
from .models import FaceResNet, build_model, replace_head
from .tasks import ArcFaceTask, ClassifyTask, DistillTask
from .transplant import TransplantStudent, TransplantTask, build_transplant, median_transform, teacher_mean
from .vggface2_weights import BGR_INPUT, read_vggface2_pickle

logger = logging.getLogger(__name__)
# An ArcFace validation split of fewer identities says nothing (one identity: accuracy 1.0 whatever
# the model); the plateau scheduler then follows the epoch's training loss instead.
MIN_VAL_IDENTITIES = 5
T = TypeVar("T")
PHASES = {"both": ("classify", "arcface"), "classify": ("classify",), "arcface": ("arcface",), "distill": ("distill",),
          "transplant": ("transplant",)}
RESUME_KEYS = ("config", "arch", "in_channels", "phase", "epoch", "step_in_epoch", "step", "model", "head", "optimizer",
               "scheduler", "rng")
RECIPE_EPOCHS = {  # thesis 5.5.2 (ResNet50) and 6.3.2 (cResNet39; cResNet50 follows it); distillation: ours
    "resnet50": {"classify": 10, "arcface": 5, "distill": 10},
    "cresnet39": {"classify": 6, "arcface": 3, "distill": 10},
    "cresnet50": {"classify": 6, "arcface": 3, "distill": 10},
    **{arch: {"transplant": 10} for arch in TRANSPLANTS},
}


@dataclass
class TrainConfig:
    shards: str
    out: str
    root: str | None = None
    val_shards: str | None = None  # phase 1: held-out images of the training identities
    arch: str = "auto"  # auto: resnet50 for image shards, cresnet39 for latent shards
    phase: str = "both"
    classify_epochs: int | None = None  # None: the thesis number for the arch
    arcface_epochs: int | None = None
    batch_size: int = 64
    lr_classify: float = 0.1
    lr_arcface: float = 0.005
    momentum: float = 0.9  # the thesis says "mini-batch SGD" without momentum or decay;
    weight_decay: float = 5e-4  # these are the usual ResNet/ArcFace values
    plateau_factor: float = 0.5
    plateau_patience: int = 1  # thesis: "stable loss during some epochs"; 1 fits 3-5 epoch runs
    val_fraction: float = 0.1
    arcface_s: float = 64.0
    arcface_m: float = 0.5  # radians (28.6 degrees)
    distill_epochs: int | None = None
    lr_distill: float = 0.05  # SGD, cosine decay to 0 over the phase
    identity_weight: float = 0.1  # distill: weight of ArcFace over the identities beside 1 - cos (0: teacher alone)
    junction: str = "level1"  # transplant: where the adapter joins dlib's network
    map_weight: float = 1.0  # transplant: weight of the junction map's relative squared error beside 1 - cos
    tail_lr: float = 0.0  # transplant: the tail's lr as a fraction of the adapter's (0: frozen)
    adapter_width: int = 128  # transplant: channels of the adapter's convolutions
    centre: bool = True  # transplant: cosine to the teacher about the teacher embeddings' mean (TransplantTask)
    embedding_dim: int = 2048
    width: int = 64  # 64 is the thesis model; smaller for tests
    init: str | None = None  # trunk weights: VGGFace2-pytorch .pkl, cdfv-train checkpoint or model.pt, ResNet50 state dict
    seed: int = 0
    workers: int = 4
    shuffle_buffer: int = 1000
    device: str = "auto"
    amp: bool = True  # bf16 autocast and channels_last on CUDA
    max_steps: int | None = None  # stop (and checkpoint) after this many steps in total
    log_every: int = 10
    resume: bool = False
    allow_change: tuple[str, ...] = ()  # options a --resume may change (the rest must match the checkpoint's)
    damaged: str = "error"  # damaged shards: error stops, skip reads past them (damaged samples are always skipped)
    progress: bool = True  # tqdm progress bar (the closing summary is a log message: logging decides)
    tensorboard: bool | None = None  # event files in <out>/tensorboard; None: when the tensorboard package is installed
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class Context:
    """Where this process runs: its rank among `world` and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t)
        return t.tolist()


def setup_context(device: str) -> Context:
    """Single process, or one rank of a torchrun job (WORLD_SIZE/RANK/LOCAL_RANK set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world == 1:
        return Context(0, 1, torch.device(device))
    local = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(torch_dist.get_rank(), world, dev)


def resolve_arch(arch: str, probe: InputProbe, phase: str = "both", junction: str = "level1") -> str:
    if phase == "transplant":
        if arch != "auto":
            raise ValueError(f"--phase transplant trains its own model (an adapter and dlib's tail), not --arch {arch}")
        return transplant_arch(junction)
    return ("resnet50" if probe.kind == "image" else "cresnet39") if arch == "auto" else arch


def check_inputs(arch: str, probe: InputProbe, shard_set: ShardSet, aug: AugmentConfig) -> None:
    """Refuses shards the model cannot read, before any training starts."""
    if INPUT_KIND[arch] != probe.kind:
        raise ShardSetError(
            f"{shard_set.directory}: shard set {shard_set.name!r} holds {probe.kind} samples, "
            f"but {arch} reads {INPUT_KIND[arch]}s"
        )
    if probe.kind == "latent" and probe.size < aug.latent_crop:
        raise ShardSetError(f"{shard_set.directory}: latents are {probe.size}x{probe.size}, smaller than the {aug.latent_crop}x{aug.latent_crop} crop")
    if probe.kind == "image" and (probe.channels != 3 or probe.size < aug.crop):
        raise ShardSetError(f"{shard_set.directory}: images are {probe.size}px with {probe.channels} channels, need RGB >= {aug.crop}px")


def tensorboard_dir(wanted: bool | None, directory: Path) -> Path | None:
    """Where TensorBoard event files go, or None: on when asked, and by default when the
    tensorboard package is installed (an optional extra)."""
    installed = importlib.util.find_spec("tensorboard") is not None
    if wanted and not installed:
        raise ValueError("--tensorboard: the tensorboard package is not installed (pip install 'cdfv[tensorboard]')")
    return directory if (installed if wanted is None else wanted) else None


def tensorboard_note(directory: str | None, wanted: bool | None) -> str:
    """The closing summary's word on TensorBoard: where its files are, or why there are none."""
    if directory is not None:
        return directory
    return "off" if wanted is False else "off (pip install 'cdfv[tensorboard]' to have event files)"


class MetricsLog:
    """JSON-lines metrics (rank 0 only), the same records as TensorBoard scalars when `board` names
    a directory (tags phase/split/name, e.g. classify/train/loss, at the global step), and the
    latest values for the closing summary. A new run starts both afresh; a resumed one keeps the
    records up to its checkpoint's step (TensorBoard hides later ones: purge_step), so a run killed
    after its last checkpoint leaves no records twice."""

    NOT_SCALARS = ("phase", "split", "epoch", "step")

    def __init__(self, path: Path, enabled: bool, resume_step: int | None = None, board: Path | None = None) -> None:
        self.path = path
        self.enabled = enabled
        self.last: dict[str, dict[str, Any]] = {}
        self.board = None
        if enabled:
            kept = []
            if resume_step is not None and path.exists():
                kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())
            if board is not None:
                from torch.utils.tensorboard import SummaryWriter

                if resume_step is None:
                    for old in board.glob("events.out.tfevents.*"):
                        old.unlink()
                self.board = SummaryWriter(str(board), purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        self.last[f"{record['phase']}/{record['split']}"] = record
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.board is not None:
            for name, value in record.items():
                if name not in self.NOT_SCALARS and isinstance(value, (int, float)):
                    self.board.add_scalar(f"{record['phase']}/{record['split']}/{name}", value, record["step"])

    def close(self) -> None:
        """Writes out the TensorBoard events still queued."""
        if self.board is not None:
            self.board.close()


def init_tensors(path: str) -> dict[str, torch.Tensor]:
    """The named tensors of an --init file, read without running code from it: a VGGFace2-pytorch
    .pkl (its BGR first convolution flipped to RGB), a cdfv-train checkpoint.pt or model.pt, or a
    plain state dict (torchvision's resnet50 names its tensors as these models do)."""
    if path.endswith(".pkl"):
        arrays = read_vggface2_pickle(path)
        tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
        if BGR_INPUT in tensors:
            tensors[BGR_INPUT] = tensors[BGR_INPUT].flip(1)
        return tensors
    blob = load_torch_file(Path(path), "cdfv training checkpoint, model.pt or ResNet50 state dict")
    state = blob
    if isinstance(blob, dict) and blob.get("format") in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        state = blob.get("model" if blob["format"] == CHECKPOINT_FORMAT else "state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--init {path}: holds no state dict of named tensors (a cdfv-train checkpoint.pt or model.pt, "
                         f"a VGGFace2-pytorch .pkl, or a ResNet50 state dict)")
    return state


def input_side(model: FaceResNet) -> tuple[str, ...]:
    """The tensors of a latent model that read its input (M channels), which a ResNet50's
    weights cannot fill: its stem, else its first block's first convolution and shortcut."""
    if model.stem_names:
        return tuple(n for n in model.state_dict() if n.split(".")[0] in model.stem_names)
    first = f"{model.stage_names[0]}.0."
    return (first + "conv1.weight", first + "downsample.0.weight")


def load_init(model: FaceResNet, arch: str, path: str) -> list[str]:
    """Copies every tensor of the model's trunk from an --init file (init_tensors) and returns
    their names; a latent model's input side (input_side) keeps its fresh weights where the file's
    shapes differ, so cResNet39's stages 2-4 start from a ResNet50's. Refuses, naming the file, a
    file missing any other trunk tensor or holding it in another shape."""
    tensors = init_tensors(path)
    own = model.state_dict()
    fresh = input_side(model) if INPUT_KIND[arch] == "latent" else ()
    trunk = [n for n in own if not n.startswith(("fc.", "normalize.")) and not n.endswith("num_batches_tracked")]
    taken, wrong = [], []
    for name in trunk:
        if name in tensors and tensors[name].shape == own[name].shape:
            taken.append(name)
        elif name not in fresh:
            wrong.append(name if name not in tensors else f"{name} {tuple(tensors[name].shape)} (the model's {tuple(own[name].shape)})")
    if wrong:
        raise ValueError(f"--init {path}: does not fit the model's trunk ({len(wrong)} tensors missing or of another shape, "
                         f"e.g. {', '.join(wrong[:3])})")
    with torch.no_grad():
        for name in taken:
            own[name].copy_(tensors[name])
    return taken


def transplant_model(shard_set: ShardSet, probe: InputProbe, cfg: TrainConfig) -> TransplantStudent:
    """An adapter resampling by the median face -> chip transform of the set's unaugmented faces
    (trainer/transplant.py), and dlib's tail with the weights of the teacher the set's maps came
    from."""
    from cdfv.eval.dlib_arch import load_dlib_resnet
    from cdfv.eval.facemodels import DLIB_ARCH, dlib_model_files

    teacher = shard_set.meta.get("teacher") or {}
    member = spec.teacher_map(cfg.junction)
    if member not in shard_set.members or teacher.get("arch") != DLIB_ARCH:
        raise ShardSetError(f"{shard_set.directory}: --phase transplant --junction {cfg.junction} needs dlib's maps at that "
                            f"junction (member {member}); make them with `cdfv-prep teacher --model dlib --maps {cfg.junction}` "
                            f"before encoding")
    chips = [s[spec.META]["teacher"]["chip"] for s in shard_set.samples((spec.META,), damage=Damage(cfg.damaged))
             if not (s[spec.META].get("view") or {}).get("augmented") and "chip" in (s[spec.META].get("teacher") or {})]
    model = build_transplant(probe.channels, cfg.junction, median_transform(chips), cfg.adapter_width)
    model.copy_teacher(load_dlib_resnet(dlib_model_files()[0]))
    return model


def start_run_directory(out: Path, checkpoint: Path, resume: bool) -> None:
    """A new run needs a directory without another run's checkpoint (its logs would mix);
    --resume needs the checkpoint."""
    if resume and not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
    if not resume and checkpoint.exists():
        raise ValueError(f"{out} holds a run ({checkpoint.name}); pass --resume to continue it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / "damaged.tsv").unlink(missing_ok=True)  # left by a run killed before its first checkpoint


def seeded(seed: int, make: Callable[[], T]) -> T:
    """Builds a module from its own seed, so initialisation never depends on earlier RNG use."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def accuracy_interval(correct: float, count: float, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy over `count` faces: a validation split of a
    small run holds a few dozen faces, where the normal approximation's interval leaves [0, 1]."""
    if count <= 0:
        return math.nan, math.nan
    p, z2 = correct / count, z * z
    centre = (p + z2 / (2 * count)) / (1 + z2 / count)
    half = z * math.sqrt(p * (1 - p) / count + z2 / (4 * count * count)) / (1 + z2 / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def validation_figures(loss_sum: float, correct: float, count: float, identities: int) -> dict[str, float]:
    """A validation record: loss and accuracy with the sample they come from (faces, identities)
    and the accuracy's 95 % interval, so a figure from 40 faces is never read as a settled one."""
    low, high = accuracy_interval(correct, count)
    if count <= 0:  # no face could be scored: no figure, rather than a division by zero
        return {"loss": math.nan, "acc": math.nan, "acc_low": low, "acc_high": high, "faces": 0, "identities": identities}
    return {"loss": loss_sum / count, "acc": correct / count, "acc_low": low, "acc_high": high, "faces": int(count),
            "identities": identities}


def distinct_labels(labels: set[int], ctx: Context) -> int:
    """How many identities the validation faces of every rank hold together."""
    if ctx.world == 1:
        return len(labels)
    gathered: list[set[int] | None] = [None] * ctx.world
    torch_dist.all_gather_object(gathered, labels)
    return len(set().union(*gathered))


@torch.no_grad()
def evaluate_classify(task: ClassifyTask, stream: ShardStream, ctx: Context, cfg: TrainConfig) -> dict[str, float]:
    """Cross-entropy and top-1 accuracy on held-out samples (all ranks, summed)."""
    task.eval()
    total = [0.0, 0.0, 0.0]  # loss sum, correct, count
    labels: set[int] = set()
    for x, y, t in make_loader(stream, cfg.workers, ctx.device.type == "cuda"):
        x, y = prepare_eval(x.to(ctx.device), stream.kind, cfg.augment), y.to(ctx.device)
        with autocast(ctx, cfg):
            loss, sums = task(x, y, t.to(ctx.device))
        total[0] += loss.item() * len(y)
        total[1] += sums["acc"].item()
        total[2] += len(y)
        labels.update(y.tolist())
    loss_sum, correct, count = ctx.all_sum(total)
    return validation_figures(loss_sum, correct, count, distinct_labels(labels, ctx))


@torch.no_grad()
def evaluate_distill(task: DistillTask, stream: ShardStream, ctx: Context, cfg: TrainConfig) -> dict[str, float]:
    """Mean cosine between the student's and the teacher's embeddings of held-out faces."""
    task.eval()
    total = [0.0, 0.0]  # cosine sum, count
    for x, _, t in make_loader(stream, cfg.workers, ctx.device.type == "cuda"):
        with autocast(ctx, cfg):
            e = task.model(prepare_eval(x.to(ctx.device), stream.kind, cfg.augment))
        total[0] += F.cosine_similarity(e.float(), t.to(ctx.device), dim=1).sum().item()
        total[1] += len(t)
    cos_sum, count = ctx.all_sum(total)
    return {"loss": 1.0 - cos_sum / count, "cos": cos_sum / count, "faces": int(count)}


def centroid_cosines(emb: torch.Tensor, lab: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines of unit embeddings to every validation identity's normalised centroid (`sums`,
    `counts`: every rank's faces), each face's own identity's centroid taken without that face:
    a centroid of 3 or 4 faces that holds the face itself sits near it whatever the model, so a
    random one scored 1.0. Also which faces can be scored: those with another face of their identity."""
    cosine = emb @ F.normalize(sums).T
    rows = torch.arange(len(lab), device=emb.device)
    cosine[rows, lab] = (emb * F.normalize(sums[lab] - emb)).sum(1)
    return cosine, counts[lab] > 1


@torch.no_grad()
def evaluate_arcface(task: ArcFaceTask, stream: ShardStream, n_val: int, ctx: Context, cfg: TrainConfig) -> dict[str, float]:
    """ArcFace loss and accuracy of validation embeddings against their identities' mean
    embeddings: the validation identities are not in the training classifier, so their own
    normalised centroids (without the face scored: centroid_cosines) stand in for its weights."""
    task.eval()
    embeddings, labels = [], []
    for x, y, _ in make_loader(stream, cfg.workers, ctx.device.type == "cuda"):
        x = prepare_eval(x.to(ctx.device), stream.kind, cfg.augment)
        with autocast(ctx, cfg):
            e = task.model(x)
        embeddings.append(F.normalize(e.float()))
        labels.append(y.to(ctx.device))
    emb, lab = torch.cat(embeddings), torch.cat(labels)
    sums = torch.zeros(n_val, emb.shape[1], device=ctx.device).index_add_(0, lab, emb)
    counts = torch.zeros(n_val, device=ctx.device).index_add_(0, lab, torch.ones_like(lab, dtype=torch.float32))
    if ctx.world > 1:
        torch_dist.all_reduce(sums)
        torch_dist.all_reduce(counts)
    cosine, scored = centroid_cosines(emb, lab, sums, counts)
    cosine, lab = cosine[scored], lab[scored]
    loss = F.cross_entropy(task.head.margin_logits(cosine, lab), lab, reduction="sum").item() if len(lab) else 0.0
    correct = (cosine.argmax(1) == lab).sum().item()
    loss_sum, correct, count = ctx.all_sum([loss, float(correct), float(len(lab))])
    return validation_figures(loss_sum, correct, count, int((counts > 1).sum().item()))


def phase_epochs(cfg: TrainConfig, arch: str, phase: str) -> int:
    given = {"classify": cfg.classify_epochs, "arcface": cfg.arcface_epochs, "distill": cfg.distill_epochs,
             "transplant": cfg.distill_epochs}[phase]
    return given or RECIPE_EPOCHS[arch][phase]


def phase_total(epochs: int, steps_per_epoch: int, start_epoch: int, start_step: int, step: int, max_steps: int | None) -> int:
    """The steps a phase's progress bar counts to: its epochs' steps, or where --max-steps stops it
    (`step`: the global step at which it starts or resumes)."""
    total = epochs * steps_per_epoch
    if max_steps is None:
        return total
    return min(total, start_epoch * steps_per_epoch + start_step + max(0, max_steps - step))


def short_of_max_steps(max_steps: int | None, step: int, epochs: str) -> str | None:
    """Why a run ended before its --max-steps (None if it did not): --max-steps only stops a run
    early, as in every cdfv-train task; the epochs are the run's length (a schedule spans them),
    so a run whose epochs end first says so instead of stopping short without a word."""
    if max_steps is None or step >= max_steps:
        return None
    return (f"--max-steps {max_steps} not reached: the run's epochs ({epochs}) ended at step {step}; --max-steps only "
            f"stops a run early, so give more --epochs to train longer")


def figure_lines(last: dict[str, dict[str, Any]]) -> list[str]:
    """The closing summary's figures, one line per phase and split; a validation figure with the
    faces and identities it comes from and its interval, and a word on what that interval misses."""
    lines = []
    for name, v in last.items():
        line = f"  {name}: " + " ".join(f"{m} {v[m]:.4f}" for m in ("loss", "acc", "cos") if m in v)
        if "acc_low" in v:
            line += f" (95% CI {v['acc_low']:.2f}-{v['acc_high']:.2f})"
        if "faces" in v:
            line += f" on {v['faces']} faces" + (f" of {v['identities']} identities" if "identities" in v else "")
        lines.append(line)
    if any("acc_low" in v for v in last.values()):
        lines.append("  (the interval counts faces as independent; faces of one identity are alike, so with few identities "
                     "the true uncertainty is wider)")
    return lines


def autocast(ctx: Context, cfg: TrainConfig) -> torch.autocast:
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cfg.amp and ctx.device.type == "cuda")


def rank_zero_lock(out: Path) -> ContextManager[bool]:
    """The output directory's lock (cdfv.outlock), taken by rank 0 of a torchrun job, the one rank
    that writes there (true for it); other ranks wait on rank 0 at their first barrier."""
    return output_lock(out) if int(os.environ.get("RANK", "0")) == 0 else nullcontext(False)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Runs the configured phases while holding the output directory; returns the closing summary
    (also out/summary.json)."""
    with rank_zero_lock(Path(cfg.out)) as held:
        if held:
            remove_stale_temporaries(Path(cfg.out))
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict[str, Any]:
    # ---- setup ----------------------------------------------------------------------------
    ctx = setup_context(cfg.device)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    board = tensorboard_dir(cfg.tensorboard, out / "tensorboard")
    if ctx.main:
        start_run_directory(out, ckpt_path, cfg.resume)
    shard_set = open_shard_set(cfg.shards, cfg.root, damage=cfg.damaged)
    probe = probe_input(shard_set, cfg.damaged)
    arch = resolve_arch(cfg.arch, probe, cfg.phase, cfg.junction)
    check_inputs(arch, probe, shard_set, cfg.augment)
    val_set = open_shard_set(cfg.val_shards, cfg.root, damage=cfg.damaged) if cfg.val_shards else None
    if val_set is not None:
        val_probe = probe_input(val_set, cfg.damaged)
        check_inputs(arch, val_probe, val_set, cfg.augment)
        if val_probe.channels != probe.channels:
            raise ShardSetError(f"--val-shards {val_set.name!r} has {val_probe.channels} channels, the training set {probe.channels}")
    resume = load_checkpoint(ckpt_path, RESUME_KEYS) if cfg.resume else None
    if resume is not None:
        if (resume["arch"], resume["in_channels"]) != (arch, probe.channels):
            raise ValueError(f"--resume {ckpt_path}: checkpoint is {resume['arch']} on M={resume['in_channels']}, data/arch give {arch} on M={probe.channels}")
        changes = check_resume_config(ckpt_path, {**resume["config"], "data": resume.get("data")},
                                      {**asdict(cfg), "data": data_identity(shard_set, val_set)}, cfg.allow_change)
        history = resume.get("config_changes", []) + ([{"step": resume["step"], "changed": changes}] if changes else [])
    transplant = cfg.phase == "transplant"
    distill = cfg.phase == "distill" or transplant
    labelled = bool(shard_set.identities) and spec.LABEL in shard_set.members
    if distill and not probe.teacher_dim:
        need, make = ((f"dlib's embeddings and maps (members {spec.TEACHER}, {spec.teacher_map(cfg.junction)})",
                       f"cdfv-prep teacher --model dlib --maps {cfg.junction}") if transplant else
                      (f"a teacher's embeddings (member {spec.TEACHER})", "cdfv-prep teacher"))
        raise ShardSetError(f"{shard_set.directory}: --phase {cfg.phase} needs {need}; make them with `{make}` before encoding")
    if not distill and not labelled:
        raise ShardSetError(f"{shard_set.directory}: {shard_set.name!r} holds no identity labels; the thesis recipe needs them "
                            f"(train it with --phase distill on a teacher's embeddings)")
    in_channels = probe.channels if probe.kind == "latent" else None
    # distillation: the FC is the embedding, as wide as the teacher's; otherwise phase 1's identity classifier
    if transplant:
        if cfg.init:
            raise ValueError(f"--init {cfg.init}: --phase transplant takes dlib's own weights for its tail")
        model = seeded(cfg.seed, lambda: transplant_model(shard_set, probe, cfg))
    else:
        model = seeded(cfg.seed, lambda: build_model(
            arch, in_channels=in_channels, num_classes=None if distill else len(shard_set.identities),
            embedding_dim=probe.teacher_dim if distill else cfg.embedding_dim, width=cfg.width))
    if cfg.init and resume is None:
        load_init(model, arch, cfg.init)
    model.to(ctx.device)
    if ctx.device.type == "cuda" and cfg.amp:
        model.to(memory_format=torch.channels_last)
    aug_gen = torch.Generator().manual_seed(cfg.seed)
    log = MetricsLog(out / "metrics.jsonl", ctx.main, resume["step"] if resume else None, board)
    started, steps_total = time.time(), 0
    history = history if resume is not None else []
    damage_log = out / "damaged.tsv"
    step = resume["step"] if resume else 0
    phases = PHASES[cfg.phase]
    done = phases[: phases.index(resume["phase"])] if resume else ()
    n_train = 0

    for phase in phases:
        if phase in done:
            continue
        # ---- phase setup ----------------------------------------------------------------------
        epochs = phase_epochs(cfg, arch, phase)
        common = dict(seed=cfg.seed, rank=ctx.rank, world=ctx.world, shuffle_buffer=cfg.shuffle_buffer,
                      damage_policy=cfg.damaged, damage_log=damage_log)
        if phase in ("distill", "transplant"):
            with_identities = labelled and cfg.identity_weight > 0
            head = seeded(cfg.seed + 2, lambda: ArcFace(probe.teacher_dim, len(shard_set.identities), cfg.arcface_s, cfg.arcface_m)
                          ) if with_identities else None
            head = head.to(ctx.device) if head else None
            task = (TransplantTask(model, head, cfg.identity_weight, cfg.map_weight, frozen_tail=cfg.tail_lr == 0,
                                   centre=teacher_mean(shard_set, Damage(cfg.damaged)) if cfg.centre else None).to(ctx.device)
                    if transplant else DistillTask(model, head, cfg.identity_weight))
            train_stream = ShardStream(shard_set, batch_size=cfg.batch_size, shuffle=True, labels=with_identities, teacher=probe.teacher_dim,
                                       teacher_map=spec.teacher_map(cfg.junction) if transplant else None, **common)
            val_stream = None
            if val_set is not None:
                per_rank = val_set.num_samples // ctx.world
                val_stream = ShardStream(val_set, batch_size=max(1, min(cfg.batch_size, per_rank)), shuffle=False, labels=False,
                                         teacher=probe.teacher_dim, **common)
            lr, scheduler_on = cfg.lr_distill, False
        elif phase == "classify":
            task: nn.Module = ClassifyTask(model)
            train_stream = ShardStream(shard_set, batch_size=cfg.batch_size, shuffle=True, **common)
            val_stream = None
            if val_set is not None:
                per_rank = val_set.num_samples // ctx.world
                val_stream = ShardStream(val_set, batch_size=max(1, min(cfg.batch_size, per_rank)), shuffle=False, **common)
            lr, scheduler_on = cfg.lr_classify, False
        else:
            labels = scan_labels(shard_set, Damage(cfg.damaged))
            train_keep, val_keep, n_train, n_val = identity_split(labels, cfg.val_fraction, cfg.seed)
            seeded(cfg.seed + 1, lambda: replace_head(model, cfg.embedding_dim))
            head = seeded(cfg.seed + 2, lambda: ArcFace(cfg.embedding_dim, n_train, cfg.arcface_s, cfg.arcface_m))
            task = ArcFaceTask(model, head.to(ctx.device))
            train_stream = ShardStream(shard_set, batch_size=cfg.batch_size, shuffle=True, keep=train_keep,
                                       counts=kept_counts(labels, train_keep), **common)
            val_counts = kept_counts(labels, val_keep)
            val_batch = max(1, min(cfg.batch_size, sum(val_counts) // ctx.world))
            val_stream = None
            if n_val >= MIN_VAL_IDENTITIES:
                val_stream = ShardStream(shard_set, batch_size=val_batch, shuffle=False, keep=val_keep, counts=val_counts, **common)
            elif ctx.main:
                logger.warning("arcface: the validation split holds %d identit%s (fewer than %d): too few for a figure that "
                               "means anything, so none is reported and the learning-rate plateau follows the epoch's "
                               "training loss", n_val, "y" if n_val == 1 else "ies", MIN_VAL_IDENTITIES)
            lr, scheduler_on = cfg.lr_arcface, True
        params = [p for p in task.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": params}]
        if transplant and cfg.tail_lr > 0:  # the tail fine-tuned at its own, smaller rate
            tail = {id(p) for p in model.tail_parameters()}
            groups = [{"params": [p for p in params if id(p) not in tail]},
                      {"params": [p for p in params if id(p) in tail], "lr": lr * cfg.tail_lr}]
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience) if scheduler_on else None
        if phase in ("distill", "transplant"):  # stepped every step
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * train_stream.steps)
        start_epoch, start_step = 0, 0
        epoch_train = [0.0, 0.0]  # the epoch's training loss sum and count so far (checkpointed: a resume steps alike)
        if resume is not None and resume["phase"] == phase:
            model.load_state_dict(resume["model"])
            if resume["head"] is not None:
                task.head.load_state_dict(resume["head"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            restore_rng(resume["rng"], aug_gen)
            start_epoch, start_step = resume["epoch"], resume["step_in_epoch"]
            epoch_train = list(resume.get("epoch_train", [0.0, 0.0]))
            resume = None
        runner = task
        if ctx.world > 1:
            runner = nn.parallel.DistributedDataParallel(task, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

        def checkpoint(epoch: int, step_in_epoch: int) -> None:
            if ctx.main:
                save_checkpoint(ckpt_path, {
                    "config": asdict(cfg), "arch": arch, "in_channels": probe.channels, "phase": phase,
                    "epoch": epoch, "step_in_epoch": step_in_epoch, "step": step,
                    "model": model.state_dict(), "head": task.head.state_dict() if task.head is not None else None,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                    "rng": rng_state(aug_gen), "n_train_identities": n_train, "config_changes": history,
                    "data": data_identity(shard_set, val_set), "epoch_train": list(epoch_train),
                })
            if ctx.world > 1:
                torch_dist.barrier()

        # ---- the loop ---------------------------------------------------------------------
        with progress.bar(phase_total(epochs, train_stream.steps, start_epoch, start_step, step, cfg.max_steps), phase,
                          unit="step", initial=start_epoch * train_stream.steps + start_step,
                          enabled=ctx.main and cfg.progress) as bar:
            for epoch in range(start_epoch, epochs):
                train_stream.set_epoch(epoch, start_step)
                loader = make_loader(train_stream, cfg.workers, ctx.device.type == "cuda")
                task.train()
                sums: dict[str, torch.Tensor] = {}  # batch sums since the last log: loss, count and the task's own
                tick = time.time()
                for step_in_epoch, (x, y, t) in enumerate(loader, start=start_step):
                    x = prepare_train(x.to(ctx.device, non_blocking=True), train_stream.kind, cfg.augment, aug_gen)
                    y, t = y.to(ctx.device, non_blocking=True), t.to(ctx.device, non_blocking=True)
                    if ctx.device.type == "cuda" and cfg.amp:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with autocast(ctx, cfg):
                        loss, batch_sums = runner(x, y, t)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if phase in ("distill", "transplant"):
                        scheduler.step()
                    step, steps_total = step + 1, steps_total + 1
                    for name, value in {"loss": loss.detach() * len(y), "count": torch.tensor(float(len(y)), device=ctx.device),
                                        **batch_sums}.items():
                        sums[name] = sums.get(name, 0.0) + value.float()
                    bar.update(1)
                    last_of_epoch = step_in_epoch + 1 == train_stream.steps
                    stopping = cfg.max_steps is not None and step >= cfg.max_steps
                    if step % cfg.log_every == 0 or last_of_epoch or stopping:
                        totals = dict(zip(sums, ctx.all_sum([float(v) for v in sums.values()])))
                        epoch_train[0] += totals["loss"]
                        epoch_train[1] += totals["count"]
                        means = {name: totals[name] / totals["count"] for name in totals if name != "count"}
                        elapsed = time.time() - tick
                        log.write({"phase": phase, "split": "train", "epoch": epoch, "step": step, **means,
                                   "lr": optimizer.param_groups[0]["lr"], "samples_per_s": totals["count"] / max(elapsed, 1e-9)})
                        bar.set_postfix({"epoch": f"{epoch + 1}/{epochs}", **{name: f"{v:.3f}" for name, v in means.items()}})
                        sums = {}
                        tick = time.time()
                    if stopping:
                        checkpoint(epoch, step_in_epoch + 1)
                        return finish(cfg, ctx, log, model, arch, shard_set, step, steps_total, started, stopped=True, exported=False)
                start_step = 0
                if val_stream is not None:
                    metrics = (evaluate_classify(task, val_stream, ctx, cfg) if phase == "classify"
                               else evaluate_distill(task, val_stream, ctx, cfg) if phase in ("distill", "transplant")
                               else evaluate_arcface(task, val_stream, n_val, ctx, cfg))
                    log.write({"phase": phase, "split": "val", "epoch": epoch, "step": step, **metrics,
                               "lr": optimizer.param_groups[0]["lr"]})
                    if scheduler_on:
                        scheduler.step(metrics["loss"])
                elif scheduler_on:
                    scheduler.step(epoch_train[0] / max(1.0, epoch_train[1]))
                epoch_train = [0.0, 0.0]
                checkpoint(epoch + 1, 0)

    # ---- export -------------------------------------------------------------------------------
    exported = "arcface" in phases or distill
    if exported and ctx.main:
        recipe = {"phases": list(phases), "epochs": {p: phase_epochs(cfg, arch, p) for p in phases}, "seed": cfg.seed,
                  "batch_size": cfg.batch_size * ctx.world}
        if distill:
            recipe.update(teacher=shard_set.meta.get("teacher"), identity_weight=cfg.identity_weight if labelled else 0.0,
                          lr=cfg.lr_distill, schedule="cosine")
        if transplant:
            recipe.update(junction=cfg.junction, map_weight=cfg.map_weight, tail_lr=cfg.tail_lr, adapter_width=cfg.adapter_width,
                          centre=cfg.centre)
        info = embedding_info(model, arch, untrained=False, train_shards=describe(shard_set), recipe=recipe)
        save_embedding_model(out / "model.pt", model, info)
    return finish(cfg, ctx, log, model, arch, shard_set, step, steps_total, started, stopped=False, exported=exported)


def finish(cfg: TrainConfig, ctx: Context, log: MetricsLog, model: FaceResNet, arch: str, shard_set: ShardSet,
           step: int, steps_run: int, started: float, *, stopped: bool, exported: bool) -> dict[str, Any]:
    """The closing summary: logged and written to out/summary.json by rank 0."""
    out = Path(cfg.out)
    log.close()
    if ctx.world > 1:
        torch_dist.barrier()  # every rank's damage log lines are written
    damaged = damage_summary(out / "damaged.tsv", settle=ctx.main)
    summary = {
        "arch": arch, "shards": shard_set.name, "phase": cfg.phase, "steps": step, "steps_this_run": steps_run,
        "seconds": round(time.time() - started, 1), "stopped_early": stopped, "max_steps": cfg.max_steps,
        "skipped_samples": damaged["damaged_samples_lost"], "damaged": damaged["damaged"],
        "checkpoint": str(out / "checkpoint.pt"), "model": str(out / "model.pt") if exported else None,
        "world": ctx.world, "device": str(ctx.device), "last": log.last,
        "tensorboard": str(log.board.log_dir) if log.board is not None else None,
        "provenance": provenance(),
    }
    if ctx.main:
        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
        short = short_of_max_steps(cfg.max_steps, step, ", ".join(f"{p} {phase_epochs(cfg, arch, p)}" for p in PHASES[cfg.phase]))
        if short:
            logger.warning(short)
        lines = [f"cdfv-train: {arch} on {shard_set.name}, {step} steps ({steps_run} this run) in {summary['seconds']} s"]
        lines += figure_lines(log.last)
        lines.append(f"  damaged samples skipped: {damaged['damaged_samples_lost']}"
                     + (f" (listed in {out / 'damaged.tsv'})" if damaged["damaged"] else ""))
        lines.append(f"  model: {summary['model']}" if exported else f"  checkpoint: {summary['checkpoint']}")
        lines.append(f"  tensorboard: {tensorboard_note(summary['tensorboard'], cfg.tensorboard)}")
        logger.info("\n".join(lines))
    return summary
