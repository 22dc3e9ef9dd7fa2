"""A small real run: LFW View 1 images made into original, decoded and latent shard sets with an
untrained codec, untrained tiny models, through the cdfv-eval command to scores and report."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from cdfv.eval.cli import main
from cdfv.eval.protocol import read_pairs
from cdfv.eval.scores import read_scores
from cdfv.pipeline.codecs import CodecSpec, load_codec
from cdfv.pipeline.images import read_image
from cdfv.pipeline.quality import ms_ssim_rgb, psnr
from cdfv.provenance import describe, provenance
from cdfv.shards import ShardSetWriter, open_shard_set, spec, write_index

PAIRS_EACH = 5  # same-person and different-person pairs taken from pairsDevTest.txt
CODEC = {"name": "bmshj2018-hyperprior", "quality": 1, "metric": "mse", "untrained": True}


def _faces(lfw_root: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """LFW 250x250 images resized to the 224x224 face size (a stand-in for alignment)."""
    out = {}
    for key in keys:
        name, stem = key.split("__")
        out[key] = cv2.resize(read_image(lfw_root / name / f"{stem}.jpg"), (224, 224), interpolation=cv2.INTER_AREA)
    return out


def _write_set(root: Path, name: str, kind: str, samples: list[dict], meta: dict, identities: list[str]) -> Path:
    writer = ShardSetWriter(root / name, name)
    writer.write(0, samples)
    members = sorted({m for s in samples for m in s if m != "__key__"})
    write_index(root / name, name, kind, members, identities, meta)
    return root / name


@pytest.fixture(scope="module")
def lfw_run(lfw_root: Path, lfw_meta: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("eval-run")
    lines = (lfw_meta / "pairsDevTest.txt").read_text().splitlines()
    half = int(lines[0])
    pairs_file = tmp / "pairsDevTest-small.txt"
    pairs_file.write_text("\n".join([str(PAIRS_EACH), *lines[1 : 1 + PAIRS_EACH], *lines[1 + half : 1 + half + PAIRS_EACH]]) + "\n")
    pairs = read_pairs(pairs_file)
    keys = sorted({k for p in pairs for k in (p.probe, p.reference)})
    faces = _faces(lfw_root, keys)
    identities = sorted({k.split("__")[0] for k in keys})
    codec, _ = load_codec(CodecSpec("bmshj2018-hyperprior", 1), untrained=True)
    with torch.no_grad():  # random g_a gives |y| < 0.5, all zeros once rounded: scale it to code real symbols
        codec.g_a[-1].weight.mul_(40.0)
        codec.g_a[-1].bias.mul_(40.0)
    codec.update(force=True)
    x = torch.stack([torch.from_numpy(faces[k]).permute(2, 0, 1).float() / 255 for k in keys])
    x = torch.nn.functional.pad(x, (16,) * 4)  # 224 -> 256, zeros, as the pipeline pads
    with torch.inference_mode():
        y_hat = torch.round(codec.g_a(x))
        strings = codec.compress(x)["strings"]
        decoded_faces = (codec.g_s(y_hat).clamp(0, 1)[:, :, 16:240, 16:240] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    original, decoded, latents = [], [], []
    for i, key in enumerate(keys):
        base = {"__key__": key, spec.LABEL: identities.index(key.split("__")[0])}
        rate = {"bpp": 8.0 * sum(len(s[i]) for s in strings) / spec.FACE_PIXELS}
        face = decoded_faces[i]
        quality = {"psnr": psnr(faces[key], face), "ms_ssim": ms_ssim_rgb(faces[key], face)}
        original.append({**base, spec.IMAGE: faces[key], spec.META: {"key": key}})
        decoded.append({**base, spec.IMAGE: face, spec.META: {"key": key, "rate": rate, "quality": quality}})
        latent = y_hat[i, :, 1:15, 1:15].to(torch.int16).numpy()  # 16 -> 14 centre crop
        latents.append({**base, spec.LATENT: latent, spec.META: {"key": key, "rate": rate}})
    sets = {
        "faces": _write_set(tmp, "faces", "image", original, {"variant": "original", "untrained": False}, identities),
        "decoded": _write_set(tmp, "decoded-q1", "image", decoded, {"variant": "decoded", "codec": CODEC, "untrained": True}, identities),
        "latents": _write_set(tmp, "latents-q1", "latent", latents, {"variant": "latent", "codec": CODEC, "untrained": True}, identities),
        # the faces set without one probe image: a pair whose face is missing
        "faces_short": _write_set(tmp, "faces-short", "image", original[1:], {"variant": "original"}, identities),
    }
    from cdfv.trainer.export import export_untrained

    export_untrained(tmp / "resnet50.pt", "resnet50", width=8, embedding_dim=32)
    export_untrained(tmp / "cresnet39.pt", "cresnet39", in_channels=192, width=8, embedding_dim=32)
    return {"tmp": tmp, "lfw_root": lfw_root, "pairs_file": pairs_file, "pairs": pairs, "keys": keys, "dropped": original[0]["__key__"], **sets}


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output + (repr(result.exception) if result.exit_code else "")


def test_run_all_modes_scores_and_report(lfw_run: dict) -> None:
    out = lfw_run["tmp"] / "results"
    code, output = _invoke([
        "--pairs", lfw_run["pairs_file"], "--faces", lfw_run["faces"], "--image-model", lfw_run["tmp"] / "resnet50.pt",
        "--decoded", lfw_run["decoded"], "--compressed", f"{lfw_run['tmp'] / 'cresnet39.pt'}={lfw_run['latents']}",
        "--bootstrap", "30", "--batch-size", "8", "--out", out,
    ])
    assert code == 0, output
    files = sorted((out / "scores").glob("*.parquet"))
    assert [f.stem for f in files] == ["cresnet39_bmshj2018-hyperprior-mse_q1", "resnet50_bmshj2018-hyperprior-mse_q1", "resnet50_original"]
    n = 2 * PAIRS_EACH
    for path in files:
        table, meta = read_scores(path)
        rows = table.to_pylist()
        assert len(rows) == n and [r["pair"] for r in rows] == list(range(n))
        assert [r["label"] for r in rows] == [True] * PAIRS_EACH + [False] * PAIRS_EACH
        assert [r["probe_key"] for r in rows] == [p.probe for p in lfw_run["pairs"]]
        assert all(-1.0 - 1e-6 <= r["score"] <= 1.0 + 1e-6 and not r["missing"] for r in rows)
        assert {r["fold"] for r in rows} == {-1}
        assert meta["missing_pairs"] == 0 and meta["missing_policy"] == "error"
        assert meta["model"]["untrained"] is True
    by_mode = {read_scores(f)[1]["mode"]: read_scores(f)[0].to_pylist() for f in files}
    assert all(math.isnan(r["probe_bpp"]) for r in by_mode["original"])
    assert all(r["probe_bpp"] > 0 and math.isfinite(r["probe_psnr"]) for r in by_mode["decoded"])
    assert all(r["probe_bpp"] > 0 and r["codec"] == "bmshj2018-hyperprior-mse" and r["quality"] == 1.0 for r in by_mode["compressed"])
    # the original anchor embeds each distinct image once; decoded references reuse those embeddings
    assert read_scores(files[2])[1]["embedded_images"] == len(lfw_run["keys"])
    report = out / "report"
    for name in ("metrics.csv", "metrics.md", "metrics.json", "metrics_vs_bpp.png", "roc.png", "score_histograms.png", "quality_vs_bpp.png"):
        assert (report / name).stat().st_size > 0, name
    with open(report / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(0.0 <= float(r["auc"]) <= 1.0 and r["pairs"] == str(n) for r in rows)
    assert "TAR@FAR=1e-3 [95% CI]" in (report / "metrics.md").read_text()
    # what made the figures: the scoring software in each scores file and metrics row, the report's in its header
    assert (report / "metrics.md").read_text().startswith(f"Pairs: {Path(lfw_run['pairs_file']).name} (sha256 ")
    assert f"Made by {describe()}." in (report / "metrics.md").read_text().splitlines()[0]
    assert all(row["provenance"] == {"scores": provenance(), "report": provenance()}
               for row in json.loads((report / "metrics.json").read_text()))
    assert all(read_scores(f)[1]["provenance"] == provenance() for f in files)


def test_scores_match_an_independent_recomputation(lfw_run: dict) -> None:
    """The original anchor's scores, recomputed from the model and the JPEG files directly."""
    from cdfv.trainer.export import load_embedding_model

    out = lfw_run["tmp"] / "recompute"
    code, output = _invoke(["--pairs", lfw_run["pairs_file"], "--faces", lfw_run["faces"], "--image-model",
                            lfw_run["tmp"] / "resnet50.pt", "--bootstrap", "0", "--out", out])
    assert code == 0, output
    scores = pq.read_table(out / "scores" / "resnet50_original.parquet").column("score").to_pylist()
    model, _ = load_embedding_model(lfw_run["tmp"] / "resnet50.pt")
    for i in (0, len(scores) - 1):
        pair = lfw_run["pairs"][i]
        faces = _faces(lfw_run["lfw_root"], [pair.probe, pair.reference])
        batch = torch.from_numpy(np.stack([faces[pair.probe], faces[pair.reference]])).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            emb = model(batch)
        assert scores[i] == pytest.approx(float(torch.cosine_similarity(emb[0], emb[1], dim=0)), abs=1e-5)


def test_compressed_scores_match_an_independent_recomputation(lfw_run: dict) -> None:
    """Compressed-domain scores differ between pairs and equal the model's cosine on the stored latents."""
    from cdfv.trainer.export import load_embedding_model

    out = lfw_run["tmp"] / "recompute-latents"
    code, output = _invoke(["--pairs", lfw_run["pairs_file"], "--compressed", f"{lfw_run['tmp'] / 'cresnet39.pt'}={lfw_run['latents']}",
                            "--bootstrap", "0", "--out", out])
    assert code == 0, output
    scores = pq.read_table(out / "scores" / "cresnet39_bmshj2018-hyperprior-mse_q1.parquet").column("score").to_pylist()
    assert np.std(scores) > 1e-3
    latents = {s["__key__"]: s[spec.LATENT] for s in open_shard_set(lfw_run["latents"]).samples()}
    model, _ = load_embedding_model(lfw_run["tmp"] / "cresnet39.pt")
    for i in (0, len(scores) - 1):
        pair = lfw_run["pairs"][i]
        batch = torch.from_numpy(np.stack([latents[pair.probe], latents[pair.reference]])).float()
        with torch.inference_mode():
            emb = model(batch)
        assert scores[i] == pytest.approx(float(torch.cosine_similarity(emb[0], emb[1], dim=0)), abs=1e-5)


def test_missing_face_policies(lfw_run: dict) -> None:
    base = ["--pairs", lfw_run["pairs_file"], "--faces", lfw_run["faces_short"], "--image-model",
            lfw_run["tmp"] / "resnet50.pt", "--bootstrap", "0"]
    affected = sum(lfw_run["dropped"] in (p.probe, p.reference) for p in lfw_run["pairs"])
    code, output = _invoke([*base, "--out", lfw_run["tmp"] / "missing-error"])
    assert code != 0 and f"{affected} of {2 * PAIRS_EACH} pairs lack a face" in output and lfw_run["dropped"] in output
    code, output = _invoke([*base, "--missing", "skip", "--out", lfw_run["tmp"] / "missing-skip"])
    assert code == 0, output
    assert f"{affected} missing (skip)" in output
    table, meta = read_scores(lfw_run["tmp"] / "missing-skip" / "scores" / "resnet50_original.parquet")
    assert table.num_rows == 2 * PAIRS_EACH and meta["missing_pairs"] == affected
    assert sum(math.isnan(v) for v in table.column("score").to_pylist()) == affected
    with open(lfw_run["tmp"] / "missing-skip" / "report" / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert row["missing"] == str(affected) and row["scored"] == str(2 * PAIRS_EACH - affected)


def test_flip_images_only(lfw_run: dict) -> None:
    out = lfw_run["tmp"] / "flip"
    code, output = _invoke(["--pairs", lfw_run["pairs_file"], "--faces", lfw_run["faces"], "--image-model",
                            lfw_run["tmp"] / "resnet50.pt", "--flip", "--bootstrap", "0", "--out", out])
    assert code == 0, output
    _, meta = read_scores(out / "scores" / "resnet50_original.parquet")
    assert meta["flip"] is True
    code, output = _invoke(["--pairs", lfw_run["pairs_file"], "--compressed",
                            f"{lfw_run['tmp'] / 'cresnet39.pt'}={lfw_run['latents']}", "--flip", "--out", out])
    assert code != 0 and "mirrored latent grid is not the latent of the mirrored face" in output


def test_mode_refuses_wrong_sets(lfw_run: dict) -> None:
    code, output = _invoke(["--pairs", lfw_run["pairs_file"], "--faces", lfw_run["decoded"], "--image-model",
                            lfw_run["tmp"] / "resnet50.pt", "--out", lfw_run["tmp"] / "wrong"])
    assert code != 0 and "original mode needs original probe faces" in output
    code, output = _invoke(["--pairs", lfw_run["pairs_file"], "--compressed",
                            f"{lfw_run['tmp'] / 'resnet50.pt'}={lfw_run['latents']}", "--out", lfw_run["tmp"] / "wrong"])
    assert code != 0 and "holds latents but model" in output
    code, output = _invoke(["--pairs", lfw_run["pairs_file"], "--decoded", lfw_run["decoded"], "--out", lfw_run["tmp"] / "wrong"])
    assert code != 0 and "need both --faces" in output


def test_report_command(lfw_run: dict) -> None:
    scores = sorted((lfw_run["tmp"] / "results" / "scores").glob("*.parquet"))
    if not scores:
        pytest.skip("needs test_run_all_modes_scores_and_report's output")
    code, output = _invoke(["report", *scores, "--bootstrap", "20", "--out", lfw_run["tmp"] / "report2"])
    assert code == 0, output
    assert "resnet50_original (untrained)" in output
