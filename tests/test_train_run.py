"""Short real training runs on CPU: both phases on latents, ResNet50 on images, resume, codec."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_train_fixtures import celeba_faces, shard_root  # noqa: F401  (session fixtures)
from cdfv.provenance import provenance
from cdfv.trainer.checkpoint import load_checkpoint
from cdfv.trainer.export import load_embedding_model
from cdfv.trainer.train import TrainConfig, train

TINY = dict(width=4, batch_size=16, workers=0, progress=False, log_every=1)


def records(run: Path, phase: str, split: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["phase"] == phase and r["split"] == split]


def epoch_loss(rows: list[dict], epoch: int) -> float:
    losses = [r["loss"] for r in rows if r["epoch"] == epoch]
    return sum(losses) / len(losses)


def test_latent_run_both_phases_exports_embedding_model(shard_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(out), val_shards="latents-heldout",
                                classify_epochs=6, arcface_epochs=2, embedding_dim=32, lr_classify=0.02, **TINY))
    assert summary["arch"] == "cresnet39" and summary["skipped_samples"] == 0
    classify = records(out, "classify")
    assert epoch_loss(classify, 5) < epoch_loss(classify, 0)
    arcface = records(out, "arcface")
    assert len(arcface) == 2 * (96 * 7 // 8 // 16) and arcface[0]["lr"] == 0.005
    # 8 identities leave 1 for validation: too few to mean anything, so no validation figure (the
    # plateau scheduler follows the training loss instead)
    assert not records(out, "arcface", "val")
    model, info = load_embedding_model(out / "model.pt")
    assert info["input_kind"] == "latent" and info["in_channels"] == 192 and info["untrained"] is False
    assert info["train_shards"]["name"] == "latents-train"
    emb = model(torch.randint(-3, 4, (3, 192, 14, 14)).float())
    assert emb.shape == (3, 32)


def test_resume_matches_uninterrupted_run(shard_root: Path, tmp_path: Path) -> None:
    base = dict(shards="latents-train", root=str(shard_root), classify_epochs=2, arcface_epochs=1,
                embedding_dim=16, **{**TINY, "workers": 2})
    train(TrainConfig(out=str(tmp_path / "whole"), **base))
    train(TrainConfig(out=str(tmp_path / "parts"), max_steps=4, **base))  # mid-epoch of phase 1
    train(TrainConfig(out=str(tmp_path / "parts"), max_steps=13, resume=True, **base))  # into phase 2
    train(TrainConfig(out=str(tmp_path / "parts"), resume=True, **base))
    whole, parts = load_checkpoint(tmp_path / "whole" / "checkpoint.pt"), load_checkpoint(tmp_path / "parts" / "checkpoint.pt")
    assert (parts["phase"], parts["epoch"], parts["step"]) == (whole["phase"], whole["epoch"], whole["step"]) == ("arcface", 1, 17)
    for key in ("model", "head"):
        for name, value in whole[key].items():
            assert torch.equal(value, parts[key][name]), name
    assert torch.equal(whole["rng"]["augment"], parts["rng"]["augment"])


def test_resnet50_on_images_lowers_loss(shard_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "img"
    train(TrainConfig(shards="faces-train", root=str(shard_root), out=str(out), phase="classify", classify_epochs=8,
                      lr_classify=0.01, **TINY))
    rows = records(out, "classify")
    # epochs of 5 batches are noisy (one epoch's loss moves by 0.1 with the thread count): halves, not single epochs
    first, last = (sum(epoch_loss(rows, e) for e in half) / 4 for half in (range(4), range(4, 8)))
    assert rows[0]["samples_per_s"] > 0 and last < first
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch"] == "resnet50" and summary["provenance"] == provenance()


def test_codec_training_lowers_rd_loss_and_loads_back(shard_root: Path, tmp_path: Path) -> None:
    from compressai.losses import RateDistortionLoss

    from cdfv.pipeline.codecs import CodecSpec, load_codec
    from cdfv.shards import open_shard_set
    from cdfv.trainer.codec_train import LAMBDAS, CodecTrainConfig, pad_faces, train_codec

    spec = CodecSpec("bmshj2018-hyperprior", 1)
    faces = [s["png"] for s, _ in zip(open_shard_set(shard_root / "faces-heldout").samples(), range(4))]
    x = pad_faces(torch.from_numpy(__import__("numpy").stack(faces)).permute(0, 3, 1, 2))
    criterion = RateDistortionLoss(lmbda=LAMBDAS["mse"][0])

    def rd(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return criterion(model.train()(x), x)["loss"].item()

    torch.manual_seed(0)
    before = rd(load_codec(spec, untrained=True)[0])
    summary = train_codec(CodecTrainConfig(shards="faces-train", root=str(shard_root), out=str(tmp_path / "codec"),
                                           untrained=True, batch_size=4, max_steps=10, workers=0, progress=False))
    trained, weights_id = load_codec(spec, weights=Path(summary["saved"]))
    assert weights_id.startswith("file:codec.pt")
    torch.manual_seed(0)
    assert rd(trained) < before


def test_codec_training_resumes_to_the_same_weights(shard_root: Path, tmp_path: Path) -> None:
    from cdfv.trainer.codec_train import CodecTrainConfig, train_codec

    def run(out: Path, max_steps: int, resume: bool = False) -> dict:
        return train_codec(CodecTrainConfig(shards="faces-train", root=str(shard_root), out=str(out), untrained=True,
                                            batch_size=4, max_steps=max_steps, workers=0, progress=False, resume=resume))

    whole = run(tmp_path / "whole", 5)
    run(tmp_path / "split", 2)  # stopped mid-epoch, checkpointed
    resumed = run(tmp_path / "split", 5, resume=True)
    assert whole["steps"] == resumed["steps"] == 5
    a = torch.load(whole["saved"], weights_only=True)["state_dict"]
    b = torch.load(resumed["saved"], weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_classifier_beats_chance_on_held_out_latents(shard_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "long"
    train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(out), val_shards="latents-heldout",
                      phase="classify", classify_epochs=12, lr_classify=0.02, **{**TINY, "width": 8}))
    val = records(out, "classify", "val")
    assert max(r["acc"] for r in val[-3:]) > 1 / 8 + 0.05  # 8 identities: chance is 0.125


def test_cli_trains_from_shard_name(shard_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cdfv.trainer.cli import main

    monkeypatch.setenv("CDFV_SHARDS", str(shard_root))
    result = CliRunner().invoke(main, ["--shards", "latents-train", "--epochs", "1", "--width", "4", "--batch-size", "16",
                                       "--workers", "0", "--embedding-dim", "8", "--out", str(tmp_path / "cli"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert load_embedding_model(tmp_path / "cli" / "model.pt")[1]["arch"] == "cresnet39"
