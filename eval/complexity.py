"""Complexity per solution as thesis 6.4.1 / Table 7 defines it, for the thesis-size untrained
architectures or for the actual models of a run.

Operations: MACs of one face's path, counted by cdfv.trainer.macs.count_macs (Conv2d, Linear and
ConvTranspose2d; GDN/IGDN, pooling, norms and activations free, as the JPEG AI counting tool the
thesis used does). A decoded or compressed face is entropy-decoded first, which runs the codec's
hyper-decoder h_s on z (4x4 for a 256x256 picture) for y's scales: its MACs are in both counts of
those rows (bmshj2018 q1: 0.188 GMAC as Table 7 counts, 0.089 done); Table 7 itself starts after
entropy decoding. Then:
- original anchor: the image model on one face (ResNet50 on 3x224x224; dlib's descriptor network on
  its 150x150 chip, counted on the torch module of eval/dlib_arch.py, checked against the .dat, for
  the port and dlib-native alike, its 5-point landmark fit and chip extraction not counted; an ONNX
  model's Conv/Gemm/MatMul nodes on its crop, the landmark warp not counted);
- decoded anchor: the codec's synthesis transform g_s on the full (M, 16, 16) latent grid (-> 256x256)
  plus the image model on the 224x224 face;
- compressed domain: the latent model on (M, 14, 14).
Two counts per solution, differing only in the transposed convolutions of g_s (and h_s): `table7`
charges them at their OUTPUT resolution, as Table 7 does (bmshj2018 q1: g_s 9.65 GMAC, 13.5 with
ResNet50, 13.7 with h_s, Table 7's 13.55); `true` charges them at their input resolution, the
multiplications actually done (a quarter: g_s 2.41, 6.3 with ResNet50, 6.4 with h_s). Ratios
between solutions should use `true`; `table7` is for comparing with the thesis. Counting IGDN (a 1x1 N->N mix per pixel) would add 0.35 GMAC at q1. g_s is counted
from its architecture, which trained weights do not change (load_codec builds the same one). The
embedding model is counted as exported (with its 2048-d embedding FC). kMAC/px divides by the
224*224 pixels of the stored face, whatever crop the model cuts from it.

Time: ms per batch of 64 pairs (128 faces) for the whole verification of the batch, with input
preparation as the thesis includes it, from stored inputs on the host:
- original: both faces 8-bit -> the image model (a model.pt: float on the device; dlib: landmark
  fit and chip on the CPU, the descriptor network on the device, or with dlib-native on the CPU;
  ONNX: warp and normalisation on the host, the network on its provider);
- decoded: probe y_hat -> g_s -> clamp, 8-bit rounding, 16 px border removed -> the image model (a
  model.pt takes the decoded face on the device, dlib and ONNX as an 8-bit host picture); the
  reference face as in the original anchor;
- compressed: both y_hat grids centre-cropped 16 -> 14 -> float on the device -> latent model;
then the 64 cosine scores. Alignment is excluded everywhere: this project aligns before encoding.
That is the thesis's convention, which starts from entropy-decoded latents. Entropy decoding is
timed beside it, per face, in the same run, device, batch size, repeats and warm-up
(ENTROPY_NOTE), by the pipeline's own path, and charged per pair for the faces each path decodes:
the decoded anchor its probe, the compressed domain both faces (ms_per_pair_with_entropy).
Timed faces are random pictures with thesis-alignment metadata (ArcFace template landmarks): every
model does the same work whatever the pixels are. Range decoding's work follows the bits, so the
entropy-decoded faces are coded demo faces (entropy_step).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cdfv import progress
from cdfv.pipeline.codecs import CodecSpec
from cdfv.shards.spec import CODED_SIZE, FACE_PIXELS, FACE_SIZE
from cdfv.trainer.macs import TransposedAt, count_macs

from .facemodels import (ARCFACE_TEMPLATE, DlibModel, DlibNativeFaceModel, Embedder, FaceModel, OnnxFaceModel, same_latents,
                         trained_latents)
from .markdown import cell, table

if TYPE_CHECKING:
    from cdfv.pipeline.coding import CodecEngine

LATENT_GRID = CODED_SIZE // 16  # 16x16 y_hat of a 256x256 picture (the zoo's codecs downsample x16)
BORDER = (CODED_SIZE - FACE_SIZE) // 2  # zero padding around the 224x224 face
THESIS_QUALITIES = (1, 3, 6, 8)
THESIS_CODEC = "bmshj2018-hyperprior"
UNTRAINED_CODEC = "untrained:architecture"  # g_s with random weights: the MACs and time of trained ones


def codec_architecture(codec: CodecSpec) -> nn.Module:
    """The codec with random weights: the architecture CompressAI's zoo builds for this name and
    quality (cdfv.pipeline.codecs.load_codec builds the same one and also its entropy tables, seconds
    of work that counting, and timing g_s, do not need)."""
    from compressai.zoo.image import cfgs, model_architectures

    return model_architectures[codec.name](*cfgs[codec.name][codec.quality]).eval()


def synthesis_transform(codec: CodecSpec) -> nn.Module:
    """The codec's g_s with random weights, for counting and timing."""
    return codec_architecture(codec).g_s


def synthesis_macs(codec: CodecSpec, transposed_at: TransposedAt) -> int:
    """MACs of the codec's g_s on one full latent grid, traced on the meta device (shapes only);
    transposed convolutions charged at their input (done) or output (Table 7) resolution."""
    return count_macs(synthesis_transform(codec).to("meta"), (codec.latent_channels, LATENT_GRID, LATENT_GRID), transposed_at)


def hyperdecoder_macs(codec: CodecSpec, transposed_at: TransposedAt) -> int:
    """MACs of the codec's hyper-decoder h_s on the z of one 256x256 picture (z's grid traced
    through h_a on the meta device: 4x4 for the zoo's codecs): entropy decoding runs it for every
    face, since its output sets y's scales (and means); 0 for a codec without one."""
    model = codec_architecture(codec).to("meta")
    if not hasattr(model, "h_s"):
        return 0
    with torch.no_grad():
        z = model.h_a(torch.zeros((1, codec.latent_channels, LATENT_GRID, LATENT_GRID), device="meta"))
    return count_macs(model.h_s, tuple(z.shape[1:]), transposed_at)


def kmac_per_pixel(macs: int) -> float:
    return macs / FACE_PIXELS / 1e3


def onnx_macs(path: Path, side: int) -> int:
    """MACs of an ONNX face model on one side x side RGB crop: Conv (output elements x C_in/groups
    x kh x kw), Gemm and MatMul (output elements x the inner dimension), shapes from ONNX shape
    inference with a batch of 1; other nodes are free, as in count_macs."""
    import onnx

    model = onnx.load(str(path))
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    data = next(i for i in model.graph.input if i.name not in weights)
    for dim, value in zip(data.type.tensor_type.shape.dim, (1, 3, side, side)):
        dim.dim_value = value  # replaces a symbolic batch (or side) so every shape becomes a number
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*graph.value_info, *graph.output, *graph.input)}
    shapes.update(weights)
    macs = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out, a, b = (shapes.get(name) for name in (node.output[0], node.input[0], node.input[1]))
        if not out or not a or not b or 0 in out:
            raise ValueError(f"{path}: the shapes of {node.op_type} node {node.name!r} are not inferable; its MACs cannot be counted")
        if node.op_type == "Conv":
            inner = math.prod(b[1:])
        elif node.op_type == "Gemm":
            inner = a[0] if any(x.name == "transA" and x.i for x in node.attribute) else a[1]
        else:
            inner = a[-1]
        macs += math.prod(out) * inner
    return macs


def timing_metas(n: int) -> list[dict[str, Any]]:
    """The json of n thesis-aligned faces whose landmarks sit on the ArcFace template scaled to the
    224x224 face: what dlib and ONNX models read (align.landmarks)."""
    landmarks = (ARCFACE_TEMPLATE * (FACE_SIZE / 112.0)).tolist()
    return [{"key": f"timing-{i}", "align": {"method": "thesis", "landmarks": landmarks}} for i in range(n)]


def decode_faces(synthesis: nn.Module, latents: np.ndarray, device: torch.device) -> torch.Tensor:
    """Decoded-anchor probe preparation: y_hat (N, M, 16, 16) -> g_s -> 8-bit-rounded RGB 0..255
    (N, 3, 224, 224), the padding border removed, as the stored decoded faces are made."""
    y_hat = torch.from_numpy(np.ascontiguousarray(latents)).to(device, non_blocking=True).float()
    picture = synthesis(y_hat).clamp_(0.0, 1.0).mul_(255.0).round_()
    return picture[..., BORDER : BORDER + FACE_SIZE, BORDER : BORDER + FACE_SIZE]


def cosine_pairs(probe: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scores of aligned rows of two normalised embedding batches."""
    return (probe * reference).sum(dim=1)


def embed_stored(model: FaceModel, raw: np.ndarray, metas: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Embeddings of stored inputs, input preparation included: a model.pt's on its device, the
    others' on the host."""
    if isinstance(model, Embedder):
        return model(raw)
    return torch.from_numpy(model.embed(raw, metas))


def embed_decoded(model: FaceModel, faces: torch.Tensor, metas: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Embeddings of decoded faces (N, 3, 224, 224, 8-bit values as float where g_s left them): a
    model.pt takes them there; dlib and ONNX models take 8-bit host pictures, as stored."""
    if isinstance(model, Embedder):
        return model.embed_prepared(faces)
    pictures = faces.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return torch.from_numpy(model.embed(pictures, metas))


def pair_step(mode: str, model: FaceModel, batch_pairs: int, synthesis: nn.Module | None = None, seed: int = 0,
              *, latent_channels: int | None = None) -> Callable[[], torch.Tensor]:
    """A closure that verifies one batch of pairs from host-side stored inputs (random content:
    timing does not depend on it). `model` is the image model (original, decoded) or the latent
    model.pt (compressed); decoded mode also takes the codec's g_s and its M (CodecSpec.latent_channels)."""
    rng = np.random.default_rng(seed)
    if mode == "compressed":
        if not isinstance(model, Embedder) or model.kind != "latent":
            raise ValueError(f"compressed mode needs a latent model.pt, not {model.info['model_id']} ({model.kind})")
        shape = (2, batch_pairs, model.info["in_channels"], LATENT_GRID, LATENT_GRID)
        grids = rng.integers(-8, 8, size=shape, dtype=np.int16)
        return lambda: cosine_pairs(model(grids[0]), model(grids[1]))
    if mode not in ("original", "decoded"):
        raise ValueError(f"mode must be original, decoded or compressed, not {mode!r}")
    if model.kind != "image":
        raise ValueError(f"{mode} mode needs an image model, not {model.info['model_id']} ({model.kind})")
    metas = timing_metas(batch_pairs)
    faces = rng.integers(0, 256, size=(2, batch_pairs, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    if mode == "original":
        return lambda: cosine_pairs(embed_stored(model, faces[0], metas), embed_stored(model, faces[1], metas))
    if synthesis is None or latent_channels is None:
        raise ValueError("decoded mode needs the codec's synthesis transform and its latent channels")
    device = next(synthesis.parameters()).device
    y_hat = rng.integers(-8, 8, size=(batch_pairs, latent_channels, LATENT_GRID, LATENT_GRID), dtype=np.int16)

    @torch.inference_mode()
    def step() -> torch.Tensor:
        probe = embed_decoded(model, decode_faces(synthesis, y_hat, device), metas)
        return cosine_pairs(probe, embed_stored(model, faces[1], metas))

    return step


def entropy_step(engine: CodecEngine, faces: int, seed: int = 0) -> Callable[[], np.ndarray]:
    """A closure that entropy-decodes `faces` bitstreams by the pipeline's own path
    (CodecEngine.entropy_decode: z and y range-decoded on the CPU, the hyper-decoder's scales on the
    engine's device one picture at a time, which keeps them bit-exact). The bitstreams are demo faces
    (pipeline.demodata, cut to 224x224 and padded as faces are) coded once here by the engine's codec:
    range decoding's time follows the bits, which random pixels would inflate."""
    from cdfv.pipeline.coding import pad_face
    from cdfv.pipeline.demodata import SIZE, demo_pictures

    cut = (SIZE - FACE_SIZE) // 2
    pictures = [pad_face(np.ascontiguousarray(picture[cut : cut + FACE_SIZE, cut : cut + FACE_SIZE]))
                for _, _, picture in demo_pictures(math.ceil(faces / 8), 8, seed)][:faces]
    streams = [(e.strings, e.shape) for e in engine.encode(pictures)]
    return lambda: engine.entropy_decode(streams)


@dataclass(frozen=True)
class Timing:
    ms_per_batch: float
    ms_per_batch_std: float
    batch_pairs: int
    repeats: int

    @property
    def ms_per_pair(self) -> float:
        return self.ms_per_batch / self.batch_pairs

    @property
    def pairs_per_s(self) -> float:
        return 1e3 * self.batch_pairs / self.ms_per_batch


def time_step(step: Callable[[], Any], device: torch.device, batch_pairs: int,
              repeats: int = 50, warmup: int = 5, advance: Callable[[int], object] = lambda n: None) -> Timing:
    """Mean and spread of `repeats` timed batches after `warmup` untimed ones; on CUDA each batch
    is closed by a synchronisation so the time covers the kernels, not their launch. `advance(1)`
    after each batch, outside the timed span (a progress bar)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
        advance(1)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
        advance(1)
    spread = statistics.stdev(times) if len(times) > 1 else 0.0
    return Timing(statistics.fmean(times), spread, batch_pairs, repeats)


# ---------------------------------------------------------------- the report's models and rows


@dataclass(frozen=True)
class ReportModel:
    """A face model of the report: named by `arch` and `model_id`, counted as `macs` per face (None:
    not counted, `note` says why), timed as `model` (None: counted only)."""

    arch: str
    model_id: str
    macs: int | None
    model: FaceModel | None = None
    note: str | None = None


@dataclass(frozen=True)
class ReportCodec:
    """A codec quality of the report: its weights' id, the g_s that is timed and the engine whose
    entropy decoding is timed (None: counted only)."""

    spec: CodecSpec
    weights_id: str = UNTRAINED_CODEC
    synthesis: nn.Module | None = None
    engine: CodecEngine | None = None


@dataclass(frozen=True)
class TimingPlan:
    """Table 7's protocol: `repeats` batches of `batch_pairs` pairs after `warmup` untimed ones."""

    device: torch.device
    batch_pairs: int = 64
    repeats: int = 50
    warmup: int = 5


def model_macs(model: nn.Module, channels: int, side: int) -> int:
    """MACs of one embedding model on one channels x side x side input."""
    return count_macs(model, (channels, side, side))


def thesis_model(arch: str, in_channels: int | None = None, timed: FaceModel | None = None) -> ReportModel:
    """A thesis-size (width 64) untrained architecture, counted on the meta device (counting needs
    shapes, not arithmetic); `timed` is the model that stands for it in the time columns."""
    from cdfv.trainer.archs import INPUT_KIND, INPUT_SIZE
    from cdfv.trainer.models import build_model

    with torch.device("meta"):
        model = build_model(arch, in_channels=in_channels)
    channels = 3 if INPUT_KIND[arch] == "image" else in_channels
    return ReportModel(arch, f"untrained:{arch}", model_macs(model, channels, INPUT_SIZE[arch]), timed)


def report_model(model: FaceModel) -> ReportModel:
    """A loaded face model counted as it is (module docstring: what each kind's count covers)."""
    info = model.info
    if isinstance(model, Embedder):
        channels = 3 if model.kind == "image" else info["in_channels"]
        return ReportModel(info["arch"], info["model_id"], model_macs(model.model, channels, model.side), model)
    if isinstance(model, DlibModel):
        from .dlib_arch import CHIP, descriptor_macs

        return ReportModel(info["arch"], info["model_id"], descriptor_macs(Path(info["weights"][0])), model,
                           f"dlib's descriptor network on its {CHIP}x{CHIP} chip (the torch module of eval/dlib_arch.py, "
                           f"checked against the .dat); the 5-point landmark fit and the chip extraction are not counted")
    if isinstance(model, OnnxFaceModel):
        try:
            macs = onnx_macs(Path(info["weights"][0]), model.side)
        except ImportError:
            return ReportModel(info["arch"], info["model_id"], None, model,
                               "MACs not counted: reading the ONNX graph needs the onnx package (pip install onnx)")
        return ReportModel(info["arch"], info["model_id"], macs, model,
                           f"the ONNX graph's Conv/Gemm/MatMul nodes on its {model.side}x{model.side} crop; the landmark warp is not counted")
    raise TypeError(f"no MAC count for {type(model).__name__}")


def latent_qualities(info: Mapping[str, Any], name: str, qualities: Sequence[int], codec: str) -> list[int]:
    """The report's qualities a latent model belongs to: those whose M is its input channels, narrowed
    to the codec quality of its training latents when its info records them (train_shards.meta.codec)."""
    m = info["in_channels"]
    fits = [q for q in qualities if CodecSpec(codec, q).latent_channels == m]
    trained_on = trained_latents(info)
    if trained_on:
        label = f"{trained_on.get('name')} q{trained_on.get('quality')}"
        if trained_on.get("name") != codec:
            raise ValueError(f"{name}: trained on {label} latents; this report is for --codec {codec}")
        if trained_on.get("quality") not in qualities:
            raise ValueError(f"{name}: trained on {label} latents, a quality not among --qualities {','.join(map(str, qualities))}")
        fits = [q for q in fits if q == trained_on["quality"]]
    if not fits:
        have = ", ".join(f"q{q} M={CodecSpec(codec, q).latent_channels}" for q in qualities)
        raise ValueError(f"{name}: a latent model for M = {m} channels; no quality of the report fits ({codec}: {have})")
    return fits


def latents_codec(info: Mapping[str, Any], codecs: Sequence[ReportCodec], quality: int) -> CodecSpec:
    """The report's codec of a latent model at `quality`: the one whose weights (and variant) made
    its training latents, else the first of that quality (a model that records no weights, or
    codecs counted without theirs)."""
    at = [c for c in codecs if c.spec.quality == quality]
    trained = trained_latents(info)
    for c in at if trained else ():
        meta = {"name": c.spec.name, "metric": c.spec.metric, "quality": c.spec.quality, "variant": c.spec.variant,
                "weights": None if c.weights_id == UNTRAINED_CODEC else c.weights_id}
        if meta["weights"] and trained.get("weights") and same_latents(trained, meta):
            return c.spec
    return at[0].spec


# Faces per pair each path entropy-decodes: the decoded anchor its probe (its reference is an
# original face), the compressed domain both faces, the original anchor none.
ENTROPY_FACES = {"original": 0, "decoded": 1, "compressed": 2}


def _row(solution: str, mode: str, quality: int | None, model_id: str, codec_weights: str | None,
         macs_table7: int | None, macs_true: int | None, hyper: Mapping[str, int]) -> dict[str, Any]:
    """A row of one face's MACs: the face model's (and g_s's) and the hyper-decoder's, `hyper` (h_s
    charged at "output" and "input"), added in both counts."""
    row = {"solution": solution, "mode": mode, "quality": quality, "model_id": model_id, "codec_weights": codec_weights,
           "macs_table7": None if macs_table7 is None else macs_table7 + hyper["output"],
           "macs_true": None if macs_true is None else macs_true + hyper["input"],
           "macs_hyper_table7": hyper["output"], "macs_hyper_true": hyper["input"]}
    for count in ("table7", "true"):
        macs = row[f"macs_{count}"]
        row[f"gmac_{count}"] = None if macs is None else macs / 1e9
        row[f"kmac_per_px_{count}"] = None if macs is None else kmac_per_pixel(macs)
    return row


def codec_solution(spec: CodecSpec) -> str:
    """A codec as a solution's name shows it: the zoo name, and a variant trained here (id, joint)."""
    return spec.name + (f"-{spec.variant}" if spec.variant else "")


def solutions(image: ReportModel, codecs: Sequence[ReportCodec], latents: Sequence[tuple[CodecSpec, ReportModel]],
              timing: TimingPlan | None = None) -> list[dict[str, Any]]:
    """Table 7's rows: the original anchor, the decoded anchor per codec (each variant) and quality
    (h_s, g_s and the image model), and each latent model with the codec of its latents (h_s and
    the latent model); operations both ways (module docstring) and, with `timing`, ms per batch and
    per pair of every row's verification step, each codec's entropy decoding per face, and the time
    per pair with the entropy decoding of the faces the path decodes (ENTROPY_FACES)."""
    hyper = {c.spec: {at: hyperdecoder_macs(c.spec, at) for at in ("output", "input")} for c in codecs}
    rows, steps, row_codecs = [], [], []
    rows.append(_row(f"{image.arch}_original", "original", None, image.model_id, None, image.macs, image.macs,
                     {"output": 0, "input": 0}))  # original faces are not entropy-decoded
    steps.append(lambda: pair_step("original", image.model, timing.batch_pairs))
    row_codecs.append(None)
    for codec in codecs:
        spec = codec.spec
        total = {at: None if image.macs is None else synthesis_macs(spec, at) + image.macs for at in ("output", "input")}
        rows.append(_row(f"{image.arch}_{codec_solution(spec)}_q{spec.quality}", "decoded", spec.quality, image.model_id,
                         codec.weights_id, total["output"], total["input"], hyper[spec]))
        steps.append(lambda codec=codec: pair_step("decoded", image.model, timing.batch_pairs, codec.synthesis,
                                                   latent_channels=codec.spec.latent_channels))
        row_codecs.append(spec)
    for spec, latent in latents:
        rows.append(_row(f"{latent.arch}_{codec_solution(spec)}_q{spec.quality}", "compressed", spec.quality, latent.model_id,
                         None, latent.macs, latent.macs, hyper[spec]))
        steps.append(lambda latent=latent: pair_step("compressed", latent.model, timing.batch_pairs))
        row_codecs.append(spec)
    if timing is not None:
        batches = timing.warmup + timing.repeats
        with progress.bar((len(codecs) + len(rows)) * batches, "timing", unit="batch") as bar:
            entropy = {}  # ms per face, and its spread, of each codec's entropy decoding
            for codec in codecs:
                bar.set_postfix(solution=f"entropy decoding {codec_solution(codec.spec)}_q{codec.spec.quality}")
                t = time_step(entropy_step(codec.engine, timing.batch_pairs), timing.device, timing.batch_pairs,
                              timing.repeats, timing.warmup, bar.update)
                entropy[codec.spec] = (t.ms_per_batch / timing.batch_pairs, t.ms_per_batch_std / timing.batch_pairs)
            for row, make_step, spec in zip(rows, steps, row_codecs):
                bar.set_postfix(solution=row["solution"])
                t = time_step(make_step(), timing.device, timing.batch_pairs, timing.repeats, timing.warmup, bar.update)
                faces = ENTROPY_FACES[row["mode"]]
                per_face, spread = entropy[spec] if faces else (None, None)
                row.update({"ms_per_batch": t.ms_per_batch, "ms_per_batch_std": t.ms_per_batch_std, "ms_per_pair": t.ms_per_pair,
                            "pairs_per_s": t.pairs_per_s, "batch_pairs": t.batch_pairs, "repeats": t.repeats,
                            "entropy_ms_per_face": per_face, "entropy_ms_per_face_std": spread, "entropy_faces_per_pair": faces,
                            "ms_per_pair_with_entropy": t.ms_per_pair + faces * (per_face or 0.0)})
    return rows


def thesis_solutions_macs(qualities: tuple[int, ...] = THESIS_QUALITIES, codec: str = THESIS_CODEC) -> list[dict[str, Any]]:
    """Operations of Table 7's solutions with full-size untrained models: ResNet50, g_s + ResNet50
    and cResNet39 per quality."""
    specs = [CodecSpec(codec, q) for q in qualities]
    latents = [(s, thesis_model("cresnet39", s.latent_channels)) for s in specs]
    return solutions(thesis_model("resnet50"), [ReportCodec(s) for s in specs], latents)


def untrained_embedder(arch: str, device: torch.device, in_channels: int | None = None, width: int = 64,
                       precision: str = "fp32") -> Embedder:
    """An embedder with random weights: timing depends on the architecture, not the weights."""
    from cdfv.trainer.export import embedding_info
    from cdfv.trainer.models import build_model

    model = build_model(arch, in_channels=in_channels, width=width).to(device)
    return Embedder(model, embedding_info(model, arch, untrained=True, train_shards=None), device, precision=precision)


def complexity_report(qualities: Sequence[int] = THESIS_QUALITIES, codec: str = THESIS_CODEC, image_model: str | None = None,
                      compressed: Sequence[str | Path] = (), codec_weights: str | Sequence[str] | None = None,
                      timing: TimingPlan | None = None, width: int = 64, precision: str = "fp32") -> tuple[list[dict], list[str]]:
    """Table 7 for the models of a run, or the thesis-size untrained ones where none is given:
    (rows, notes). `image_model` is dlib, dlib-native, FILE.onnx or an image model.pt (default: ResNet50);
    `compressed` latent model.pt files, each reported at its qualities (latent_qualities; default:
    cResNet39 per quality) with the codec whose weights made its training latents; `codec_weights`
    weights file patterns with {quality} for the timed g_s, one codec each (a variant trained here,
    an identity or joint codec, is named by its variant; the first is the codec of latent models
    that record no weights; default: the untrained architecture). `width` and `precision` build the
    timed untrained models."""
    from cdfv.pipeline.codecs import load_codec, with_variant
    from cdfv.pipeline.coding import CodecEngine

    from .facemodels import load_face_model

    specs = [CodecSpec(codec, q) for q in qualities]
    device = timing.device if timing else torch.device("cpu")
    patterns = [codec_weights] if isinstance(codec_weights, str) else list(codec_weights or ()) or [None]
    codecs = []
    for pattern, spec in ((pattern, spec) for pattern in patterns for spec in specs):
        path = None if pattern is None else Path(pattern.replace("{quality}", str(spec.quality)))
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"--codec-weights {path}: no such file (weights of {spec.label})")
        if path is None and not timing:
            codecs.append(ReportCodec(spec))
            continue
        spec = with_variant(spec, path)
        model, weights_id = load_codec(spec, weights=path, untrained=path is None)
        if not timing:
            codecs.append(ReportCodec(spec, weights_id))
            continue
        engine = CodecEngine(spec, model, device)  # first: an autoregressive codec's engine keeps it on the CPU
        codecs.append(ReportCodec(spec, weights_id, model.g_s.to(device).eval(), engine))
    if image_model is None:
        timed = untrained_embedder("resnet50", device, width=width, precision=precision) if timing else None
        image = thesis_model("resnet50", timed=timed)
    else:
        loaded = load_face_model(image_model, device, precision=precision)
        if loaded.kind != "image":
            raise ValueError(f"--image-model {image_model}: a latent model; the anchors need an image model")
        image = report_model(loaded)
    latents = []
    if not compressed:
        for spec in specs:
            timed = untrained_embedder("cresnet39", device, spec.latent_channels, width, precision) if timing else None
            latents.append((spec, thesis_model("cresnet39", spec.latent_channels, timed)))
    for path in compressed:
        loaded = load_face_model(path, device, precision=precision)
        if loaded.kind != "latent":
            raise ValueError(f"--compressed {path}: an image model; --compressed takes latent models")
        latent = report_model(loaded)
        latents += [(latents_codec(loaded.info, codecs, q), latent) for q in latent_qualities(loaded.info, str(path), qualities, codec)]
    try:
        rows = solutions(image, codecs, latents, timing)
    finally:
        if isinstance(image.model, DlibNativeFaceModel):
            image.model.close()
    notes = ["table7: transposed convolutions charged at their output resolution, as thesis Table 7 (inflates g_s 4x); "
             "true: at their input resolution, the multiplications done; kMAC/px per pixel of the 224x224 face"]
    hyper = {r["quality"]: (r["macs_hyper_table7"], r["macs_hyper_true"]) for r in rows if r["mode"] == "decoded"}
    notes.append("operations per face; a decoded or compressed face includes the hyper-decoder h_s its entropy decoding runs: "
                 + ", ".join(f"q{q} {t7 / 1e9:.3f} / {true / 1e9:.3f} GMAC (table7 / true)" for q, (t7, true) in hyper.items())
                 + ("; the context model it runs position by position is not counted" if specs[0].entry.autoregressive else ""))
    notes += [f"{m.arch}: {m.note}" for m in {id(m): m for m in [image, *(lat for _, lat in latents)]}.values() if m.note]
    if timing:
        notes.append(ENTROPY_NOTE.format(faces=timing.batch_pairs))
        untrained = f", width {width} for the untrained models" if image_model is None or not compressed else ""
        notes.append(f"device {timing.device}, {precision}{untrained}, {timing.batch_pairs} pairs/batch, "
                     f"{timing.repeats} repeats after {timing.warmup} warm-up")
        if isinstance(image.model, DlibNativeFaceModel):
            notes.append(f"dlib-native runs on the CPU, its batches split over {image.model.workers} worker processes")
        elif isinstance(image.model, DlibModel):
            notes.append(f"dlib: landmark fit and chip on the CPU, the descriptor network on {timing.device}")
    return rows, notes


ENTROPY_NOTE = (
    "entropy_ms_per_face: z and y range-decoded and the hyper-decoder run (one picture at a time: bit-exact scales) by the "
    "pipeline's CodecEngine.entropy_decode, the range coder on the CPU in this process, on {faces} demo faces coded by the "
    "row's codec_weights, in batches of {faces} faces with the same repeats and warm-up; ms_per_pair is the thesis's "
    "convention (verification after entropy decoding), ms_per_pair_with_entropy adds the entropy decoding of the faces each "
    "path decodes: the decoded path its probe (1 a pair, then g_s; the reference is an original face), the compressed path "
    "both faces (2 a pair), the original path none")

TABLE_COLUMNS = ("solution", "gmac_table7", "gmac_true", "kmac_per_px_table7", "kmac_per_px_true", "ms_per_batch",
                 "ms_per_batch_std", "ms_per_pair", "entropy_ms_per_face", "ms_per_pair_with_entropy", "model_id", "codec_weights")


# places per column prefix: GMAC to a million MACs (Table 7 gives 2)
DECIMALS = {"gmac": 3, "kmac": 1, "ms": 1, "entropy_ms": 1}


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table rounded by DECIMALS (the CSV keeps every digit); an operation
    count that could not be made reads n/c."""
    columns = [c for c in TABLE_COLUMNS if c in rows[0]]
    decimals = {c: next((d for prefix, d in DECIMALS.items() if c.startswith(prefix)), None) for c in columns}
    missing = {c: "n/c" if c.startswith(("gmac", "kmac")) else "" for c in columns}
    return "\n".join(table(columns, [[cell(row[c], decimals[c], missing[c]) for c in columns] for row in rows]))
