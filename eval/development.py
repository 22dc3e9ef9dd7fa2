"""Choices on development pairs only. LFW's View 1 keeps pairsDevTrain for choosing models and
recipes and pairsDevTest (and View 2's pairs.txt) for reporting them; a curve that picks a weight,
a step count or a photo count must read the first, or the report that scores the second was tuned
on its own pairs. The curve tools share this guard and record which pairs file each figure read.

DecodedPairs is the decoded anchor of cdfv-eval on such pairs, held in memory for a codec still in
training: the probe of each pair decoded, the reference original, dlib as the face model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cdfv.shards import ShardSet, spec

from .metrics import point_metrics
from .protocol import Pair, pairs_sha256, read_pairs

REPORTED_PAIRS = ("pairsDevTest.txt", "pairs.txt")  # the files cdfv-reproduce reports on
# the same files by content (LFW's own, as umass-vis-lfw publishes them), so a renamed copy is one too
REPORTED_SHA256 = {"7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c": "pairsDevTest.txt",
                   "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592": "pairs.txt"}


def development_pairs(path: Path, allow_reported: bool = False, limit: int | None = None) -> tuple[list[Pair], dict[str, Any]]:
    """The pairs of a development pairs file (the first `limit` same-person and `limit` other
    pairs, if given) and the record of which file they are; a file the reports score is refused
    unless `allow_reported` says the figure is a report's, not a choice's."""
    digest = pairs_sha256(path)
    reported = path.name in REPORTED_PAIRS or digest in REPORTED_SHA256
    if reported and not allow_reported:
        copy = f" (LFW's {REPORTED_SHA256[digest]} by its content)" if path.name not in REPORTED_PAIRS else ""
        raise ValueError(f"{path}: a pairs file the reports score{copy}; choose on development pairs (LFW View 1's "
                         f"pairsDevTrain.txt), or say that this figure is a report's (--reported-pairs)")
    pairs = read_pairs(path)
    if limit is not None:
        pairs = [p for p in pairs if p.label][:limit] + [p for p in pairs if not p.label][:limit]
    record = {"pairs_file": str(path), "pairs_sha256": digest, "pairs": len(pairs),
              "same": sum(p.label for p in pairs), "role": "report" if reported else "development"}
    return pairs, record


def pair_samples(keys: set[str], faces: ShardSet) -> dict[str, dict[str, Any]]:
    """The samples (face and json) of `keys` in an image set, read in one pass; refused, naming
    the first, where the set lacks any."""
    found = {s["__key__"]: s for s in faces.samples((spec.IMAGE, spec.META)) if s["__key__"] in keys}
    missing = sorted(keys - set(found))
    if missing:
        raise ValueError(f"{faces.directory}: {len(missing)} faces the pairs name are not in the set "
                         f"(first: {missing[0]}); make it from the pairs file's images")
    return found


class DecodedPairs:
    """dlib's verification of decoded probes against original references on `pairs`, with the
    faces (and their stored landmarks, which dlib's chips are cut by) read once from `faces`."""

    def __init__(self, pairs: list[Pair], faces: ShardSet, model: Any) -> None:
        keys = {p.probe for p in pairs} | {p.reference for p in pairs}
        found = pair_samples(keys, faces)
        self.pairs, self.model = pairs, model
        self.probes = sorted({p.probe for p in pairs})
        self.faces = {k: found[k][spec.IMAGE] for k in keys}
        self.metas = {k: {"key": k, **found[k][spec.META]} for k in keys}
        references = sorted({p.reference for p in pairs})
        self.references = dict(zip(references, self.embed(references, [self.faces[k] for k in references])))
        self.labels = np.array([p.label for p in pairs], dtype=int)

    def embed(self, keys: list[str], faces: list[np.ndarray]) -> np.ndarray:
        return self.model.embed(np.stack(faces), [self.metas[k] for k in keys])

    def probe_faces(self) -> list[np.ndarray]:
        """The distinct probes' original faces, in `probes` order: what the codec codes."""
        return [self.faces[k] for k in self.probes]

    def pair_scores(self, decoded: list[np.ndarray]) -> np.ndarray:
        """Each pair's cosine with the probes replaced by `decoded` (in `probes` order), in pairs
        order: what a paired comparison of two codecs on the same pairs resamples."""
        probes = dict(zip(self.probes, self.embed(self.probes, decoded)))
        return np.array([float(probes[p.probe] @ self.references[p.reference]) for p in self.pairs])

    def score(self, decoded: list[np.ndarray]) -> dict[str, float]:
        """TAR@FAR, EER and AUC with the probes replaced by `decoded` (in `probes` order)."""
        return point_metrics(self.labels, self.pair_scores(decoded))

    def original(self) -> dict[str, float]:
        """The same figures with the original probes: the ceiling a codec is measured against."""
        return self.score(self.probe_faces())
