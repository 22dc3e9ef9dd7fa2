"""dlib through cdfv beside dlib's own pipeline on LFW View 1, and the face box cdfv gives dlib's
landmark predictor (issue 16).

    python benchmarks/dlib_view1.py table --lfw /work/shared/data/lfw
    python benchmarks/dlib_view1.py compare --scores view1.npz
    python benchmarks/dlib_view1.py calibrate --lfw /work/shared/data/lfw --pictures 1200

table: the pairs of a View 1 file (--pairs, default pairsDevTrain.txt, where a choice between the rows
is made; pairsDevTest.txt only with --reported-pairs) scored by
  (a) dlib's own pipeline: its HOG frontal-face detector (upsampled once) on the original LFW picture,
      the detection nearest the centre, shape_predictor_5, compute_face_descriptor (dlib's C++);
  (b) cdfv's dlib on thesis-aligned faces with its former box, one fixed rectangle for every face;
  (c) cdfv's dlib on thesis-aligned faces, the box placed by each face's stored landmarks (cdfv now);
  (d) as (c) on similarity-aligned faces (the ArcFace template warp);
  (e) as (b) and (c) with each thesis-aligned face's own box from dlib's HOG detector (the landmark box
      where HOG finds none): what the landmark-placed box stands in for, as HOG does not exist for
      decoded faces;
cdfv's faces are detected and aligned as cdfv-prep does it (RetinaFace, thesis 5.4 or similarity).
(b)-(d) run the torch port, (a) dlib's C++; the port is also run on (a)'s chips, and the largest score
difference between the two over every pair is reported. Columns: TAR@FAR=1e-3 and 1e-2 (with 500
impostor pairs, the share of genuine scores above the highest and the 6th highest impostor score;
95 % percentile bootstrap intervals, cdfv.eval.metrics), accuracy (10-fold cross-validated, pair i in fold i mod 10: View 1 has no folds), AUC, and the
pictures each pipeline found no face in (their pairs score -1, a rejection).

compare: each row of a table's --scores file against row (c), cdfv's dlib as it is: the difference in
TAR@FAR=1e-3 and 1e-2 with its 95 % paired bootstrap interval (the same resampled pairs for both rows,
genuine and impostor pairs resampled separately, 1,000 replicates).

calibrate: DLIB_BOX_CENTRE and DLIB_BOX_SIDE of cdfv.eval.facemodels from pairsDevTrain.txt (people
disjoint from pairsDevTest.txt): the first N distinct pictures detected and thesis-aligned, dlib's
HOG detector run on each aligned face, its box (nearest the centre) mapped into the frame of the
ArcFace template (scaled to 224) by the similarity taking the face's landmarks onto the template;
the medians of the box centres and sides.

Single-threaded (torch, onnxruntime and dlib on one core); the table takes about 15 minutes.
`--scores FILE.npz` also keeps every row's pair scores.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from cdfv.eval.facemodels import (
    ARCFACE_TEMPLATE, DlibFaceModel, DlibNativeFaceModel, dlib_model_files, dlib_rectangle, similarity_transform,
)
from cdfv.eval.metrics import bootstrap_intervals, kfold_accuracy, point_metrics
from cdfv.eval.development import development_pairs
from cdfv.eval.protocol import Pair, read_pairs
from cdfv.pipeline.align import align
from cdfv.pipeline.detect import RetinaFaceOnnx, detect
from cdfv.pipeline.images import read_image

FORMER_BOX = (29, 36, 201, 219)  # cdfv's box before issue 16, inclusive, in every 224x224 thesis-aligned face
FOLDS = 10
BATCH = 32
ROWS = {
    "a": "dlib's own pipeline (HOG detector + 5-point chip on the original picture, dlib's C++)",
    "b": "cdfv dlib, thesis-aligned faces, one fixed box (before)",
    "c": "cdfv dlib, thesis-aligned faces, box from each face's landmarks",
    "d": "cdfv dlib, similarity-aligned faces, box from each face's landmarks",
    "e": "cdfv dlib, thesis-aligned faces, each face's own HOG box",
}


def picture_path(lfw: Path, key: str) -> Path:
    name, stem = key.split("__")
    return lfw / "deepfunneled" / name / f"{stem}.jpg"


def nearest_centre(boxes: Any, width: int, height: int) -> Any | None:
    """The dlib rectangle whose centre is nearest the picture's (LFW centres the labelled face)."""
    return min(boxes, key=lambda r: np.hypot(r.center().x - width / 2, r.center().y - height / 2), default=None)


def batches(keys: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def scores_of(pairs: list[Pair], emb: dict[str, np.ndarray]) -> np.ndarray:
    """Cosine per pair; -1 (a rejection) where a picture has no embedding."""
    return np.array([float(emb[p.probe] @ emb[p.reference]) if p.probe in emb and p.reference in emb else -1.0 for p in pairs])


def table(lfw: Path, scores_file: Path | None, pairs_name: str, reported: bool) -> None:
    import dlib

    pairs, _ = development_pairs(lfw / "meta" / pairs_name, reported)
    keys = sorted({k for p in pairs for k in (p.probe, p.reference)})
    detector = RetinaFaceOnnx(providers=["CPUExecutionProvider"])
    hog = dlib.get_frontal_face_detector()
    port, native = DlibFaceModel("cpu"), DlibNativeFaceModel(workers=1)
    former = dlib.rectangle(*FORMER_BOX)
    emb: dict[str, dict[str, np.ndarray]] = {row: {} for row in (*ROWS, "a-port")}
    seconds = {"a": 0.0, "a-port": 0.0}
    no_hog = 0  # thesis-aligned faces where HOG finds no face: row (e) takes the landmark box
    for chunk in batches(keys, BATCH):
        pictures = {k: read_image(picture_path(lfw, k)) for k in chunk}
        # (a) dlib's own pipeline on the original picture
        found = {}
        for k, rgb in pictures.items():
            box = nearest_centre(hog(rgb, 1), rgb.shape[1], rgb.shape[0])
            if box is not None:
                found[k] = port.predictor(rgb, box)
        start = time.perf_counter()
        for k, shape in found.items():
            vector = np.asarray(native.recogniser.compute_face_descriptor(pictures[k], shape, num_jitters=0, padding=0.25))
            emb["a"][k] = vector / np.linalg.norm(vector)
        seconds["a"] += time.perf_counter() - start
        start = time.perf_counter()
        if found:
            chips = port.chips([pictures[k] for k in found], list(found.values()))
            emb["a-port"].update(zip(found, port.descriptors(chips)))
        seconds["a-port"] += time.perf_counter() - start
        # (b)-(d) cdfv: RetinaFace, alignment as cdfv-prep stores it
        detections = {k: detect(detector, rgb).as_dict() for k, rgb in pictures.items()}
        ok = [k for k in chunk if detections[k]["status"] == "ok"]
        if not ok:
            continue
        for row, method in (("c", "thesis"), ("d", "similarity")):
            aligned = [align(pictures[k], detections[k], method) for k in ok]
            faces = np.stack([face for face, _ in aligned])
            emb[row].update(zip(ok, port.embed(faces, [{"key": k, "align": meta} for k, (_, meta) in zip(ok, aligned)])))
            if method == "thesis":
                shapes = [port.predictor(face, former) for face in faces]
                emb["b"].update(zip(ok, port.descriptors(port.chips(list(faces), shapes))))
                boxes = [nearest_centre(hog(face, 0), face.shape[1], face.shape[0]) for face in faces]
                no_hog += sum(box is None for box in boxes)
                boxes = [box or dlib.rectangle(*dlib_rectangle(np.array(meta["landmarks"]))) for box, (_, meta) in zip(boxes, aligned)]
                shapes = [port.predictor(face, box) for face, box in zip(faces, boxes)]
                emb["e"].update(zip(ok, port.descriptors(port.chips(list(faces), shapes))))
        print(f"{keys.index(chunk[-1]) + 1}/{len(keys)} pictures", file=sys.stderr, flush=True)

    labels = np.array([p.label for p in pairs])
    folds = np.array([p.index % FOLDS for p in pairs])
    print(f"LFW View 1 {pairs_name}: {labels.sum()} same-person and {(~labels).sum()} different-person pairs, "
          f"{len(keys)} pictures; measured {datetime.date.today().isoformat()} with dlib {dlib.__version__}, "
          f"torch {torch.__version__}, one CPU thread\n")
    print("| pipeline | TAR@FAR=1e-3 (95 % CI) | TAR@FAR=1e-2 (95 % CI) | accuracy | AUC | pictures without a face |")
    print("|---|---|---|---|---|---|")
    kept = {}
    for row, label in ROWS.items():
        kept[row] = scores = scores_of(pairs, emb[row])
        m, ci = point_metrics(labels, scores), bootstrap_intervals(labels, scores)
        accuracy, _ = kfold_accuracy(labels, scores, folds)
        tar = [f"{m[k]:.3f} ({ci[k][0]:.3f}-{ci[k][1]:.3f})" for k in ("tar_at_far_1e-3", "tar_at_far_1e-2")]
        print(f"| ({row}) {label} | {tar[0]} | {tar[1]} | {accuracy:.4f} | {m['auc']:.4f} | {len(keys) - len(emb[row])} |")
    if scores_file is not None:
        np.savez(scores_file, labels=labels, **kept)
    gap = np.abs(scores_of(pairs, emb["a"]) - scores_of(pairs, emb["a-port"])).max()
    faces = len(emb["a"])
    print(f"\n(e): HOG found no face in {no_hog} thesis-aligned faces, which took the landmark box.")
    print(f"dlib-native and the torch port on (a)'s chips: largest score difference over the {len(pairs)} pairs "
          f"{gap:.1e}; descriptor {1e3 * seconds['a'] / faces:.0f} ms a face (dlib's C++, chip included) against "
          f"{1e3 * seconds['a-port'] / faces:.0f} ms (chip + torch port, batches of up to {BATCH})")


def compare(scores_file: Path, replicates: int = 1000, seed: int = 0) -> None:
    kept = dict(np.load(scores_file))
    labels = kept.pop("labels")
    genuine, impostor = np.nonzero(labels)[0], np.nonzero(~labels)[0]
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([rng.choice(genuine, len(genuine)), rng.choice(impostor, len(impostor))]) for _ in range(replicates)]
    names = ("tar_at_far_1e-3", "tar_at_far_1e-2")
    print(f"{scores_file}: each row minus (c), 95 % paired bootstrap intervals ({replicates} replicates)\n")
    print("| rows | TAR@FAR=1e-3 | TAR@FAR=1e-2 |")
    print("|---|---|---|")
    for row in sorted(set(kept) - {"c"}):
        cells = []
        for name in names:
            delta = [point_metrics(labels[d], kept[row][d])[name] - point_metrics(labels[d], kept["c"][d])[name] for d in draws]
            point = point_metrics(labels, kept[row])[name] - point_metrics(labels, kept["c"])[name]
            cells.append(f"{point:+.3f} ({np.percentile(delta, 2.5):+.3f} to {np.percentile(delta, 97.5):+.3f})")
        print(f"| ({row}) - (c) | {' | '.join(cells)} |")


def calibrate(lfw: Path, count: int) -> None:
    import dlib

    keys = []
    for p in read_pairs(lfw / "meta" / "pairsDevTrain.txt"):
        keys += [k for k in (p.probe, p.reference) if k not in keys]
    keys = keys[:count]
    detector = RetinaFaceOnnx(providers=["CPUExecutionProvider"])
    hog = dlib.get_frontal_face_detector()
    template = ARCFACE_TEMPLATE * 2.0
    centres, sides, missed = [], [], 0
    for key in keys:
        rgb = read_image(picture_path(lfw, key))
        det = detect(detector, rgb).as_dict()
        if det["status"] != "ok":
            missed += 1
            continue
        face, meta = align(rgb, det, "thesis")
        box = nearest_centre(hog(face, 0), face.shape[1], face.shape[0])
        if box is None:
            missed += 1
            continue
        to_template = similarity_transform(np.array(meta["landmarks"]), template)
        scale = float(np.hypot(*to_template[:, 0]))
        centre = np.array([box.left() + box.right() + 1, box.top() + box.bottom() + 1]) / 2.0  # continuous pixels
        centres.append(to_template[:, :2] @ centre + to_template[:, 2])
        sides.append(scale * (box.width() + box.height()) / 2.0)
    centre, side = np.median(centres, axis=0), float(np.median(sides))
    print(f"{len(centres)} of {len(keys)} pairsDevTrain.txt pictures ({missed} without a RetinaFace or HOG face); "
          f"dlib {dlib.__version__}, {dlib_model_files()[1].name}")
    print(f"DLIB_BOX_CENTRE = ({centre[0]:.1f}, {centre[1]:.1f})")
    print(f"DLIB_BOX_SIDE = {side:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("table", "compare", "calibrate"))
    parser.add_argument("--lfw", type=Path, help="LFW folder with deepfunneled/ and meta/ (View 1 pair files)")
    parser.add_argument("--pairs", default="pairsDevTrain.txt",
                        help="table: the View 1 pairs file in meta/ (a choice between the rows reads pairsDevTrain.txt)")
    parser.add_argument("--reported-pairs", action="store_true", help="table: allow pairsDevTest.txt (a report's figure)")
    parser.add_argument("--pictures", type=int, default=1200, help="calibrate: distinct pairsDevTrain.txt pictures")
    parser.add_argument("--scores", type=Path, help="table: also write every row's pair scores (and labels) to this .npz; "
                                                      "compare: the file to read")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what == "compare":
        if args.scores is None:
            parser.error("compare needs --scores FILE.npz (written by table --scores)")
        compare(args.scores)
    elif args.lfw is None:
        parser.error(f"{args.what} needs --lfw")
    elif args.what == "table":
        try:
            development_pairs(args.lfw / "meta" / args.pairs, args.reported_pairs)  # a reported or malformed file: one line
        except ValueError as e:
            parser.error(str(e))
        table(args.lfw, args.scores, args.pairs, args.reported_pairs)
    else:
        calibrate(args.lfw, args.pictures)


if __name__ == "__main__":
    main()
