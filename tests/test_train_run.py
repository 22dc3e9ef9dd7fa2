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


# ---- what a run tells its user: summaries on stdout and in summary.json, why it stopped, how sure a figure is ----

def image_set(root: Path, per_shard: tuple[int, ...] = (6, 6)) -> Path:
    """A small image shard set of noise faces (2 identities) in shards of the given sizes."""
    import numpy as np

    from cdfv import shards
    from cdfv.shards import spec

    writer, n = shards.ShardSetWriter(root / "img", "img"), 0
    for chunk, count in enumerate(per_shard):
        samples = []
        for _ in range(count):
            face = np.random.default_rng(n).integers(0, 256, (224, 224, 3), dtype=np.uint8)
            samples.append({"__key__": f"id{n % 2}__img{n:03d}", spec.IMAGE: face, spec.LABEL: n % 2})
            n += 1
        writer.write(chunk, samples)
    shards.write_index(root / "img", "img", "image", [spec.IMAGE, spec.LABEL], ["id0", "id1"], {})
    return root / "img"


def codec_cli(*args: str):
    from click.testing import CliRunner

    from cdfv.trainer.cli import main

    return CliRunner().invoke(main, ["--task", "codec", "--untrained-codec", "--batch-size", "4", "--patch", "64",
                                     "--workers", "0", "--no-tensorboard", *args])


def test_codec_run_prints_and_writes_its_summary_and_says_why_it_stopped_short(tmp_path: Path) -> None:
    """`cdfv-train --task codec --max-steps 5` over one epoch of 3 steps: the summary on stdout (so
    `> log` keeps it) and in summary.json, with provenance, and a warning that the epochs ended first."""
    image_set(tmp_path)
    result = codec_cli("--shards", str(tmp_path / "img"), "--max-steps", "5", "--out", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["stopped_early"] is False and summary["max_steps"] == 5
    assert summary["skipped_samples"] == 0 and summary["provenance"] == provenance()
    assert ("--max-steps 5 not reached: the run's epochs (1 of 3 steps) ended at step 3; --max-steps only stops a run "
            "early, so give more --epochs to train longer") in result.stderr
    again = codec_cli("--shards", str(tmp_path / "img"), "--max-steps", "2", "--out", str(tmp_path / "d"))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["stopped_early"] is True and "not reached" not in again.stderr


def test_codec_run_counts_every_sample_a_truncated_shard_loses(tmp_path: Path) -> None:
    """`--damaged skip` on a shard cut inside its 3rd sample: the samples after the cut and the cut
    one are each lost; summary.json counts them all (not one entry per shard) and lists each loss."""
    import tarfile

    from cdfv.shards import Damage, open_shard_set

    directory = image_set(tmp_path)
    shard = sorted(directory.glob("*.tar"))[1]
    with tarfile.open(shard) as tar:
        cut = [m for m in tar.getmembers() if m.name.endswith(".png")][2]
    shard.write_bytes(shard.read_bytes()[: cut.offset_data + 100])
    readable = len(list(open_shard_set(directory, damage="skip").samples(damage=Damage("skip"))))
    assert readable < 12
    result = codec_cli("--shards", str(directory), "--damaged", "skip", "--out", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["skipped_samples"] == 12 - readable
    assert summary["damaged"] and all(line.startswith(str(shard)) for line in summary["damaged"])
    assert any("ends early" in line for line in summary["damaged"])
    assert f"damaged samples skipped: {12 - readable} (listed in" in result.stderr


def test_face_run_short_of_max_steps_says_why(shard_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    summary = train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(tmp_path / "run"), phase="classify",
                                classify_epochs=1, max_steps=10, **TINY))
    assert summary["steps"] == 6 and summary["stopped_early"] is False
    assert "--max-steps 10 not reached: the run's epochs (classify 1) ended at step 6" in caplog.text


def test_accuracy_interval_is_wilsons() -> None:
    from cdfv.trainer.train import accuracy_interval

    assert accuracy_interval(37, 40) == pytest.approx((0.8014, 0.9742), abs=1e-4)  # p = 0.925, n = 40
    assert accuracy_interval(4, 4) == pytest.approx((0.5101, 1.0), abs=1e-4)  # 4 of 4 is far from a sure 1.0


def test_validation_figures_come_with_their_sample_and_interval(shard_root: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="cdfv")
    out = tmp_path / "run"
    summary = train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(out), val_shards="latents-heldout",
                                phase="classify", classify_epochs=1, **TINY))
    (val,) = records(out, "classify", "val")
    assert (val["faces"], val["identities"]) == (32, 8)  # 4 held-out photos of each of the 8 identities
    assert 0 <= val["acc_low"] <= val["acc"] <= val["acc_high"] <= 1 and val["acc_high"] - val["acc_low"] > 0.2
    assert summary["last"]["classify/val"]["faces"] == 32
    closing = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("cdfv-train: cresnet39"))
    assert (f"classify/val: loss {val['loss']:.4f} acc {val['acc']:.4f} (95% CI {val['acc_low']:.2f}-{val['acc_high']:.2f}) "
            f"on 32 faces of 8 identities") in closing
    assert "faces of one identity are alike" in closing


def test_arcface_validation_scores_a_face_against_its_identity_without_it() -> None:
    """Random embeddings of 10 identities x 4 faces carry no identity: scored against centroids
    that hold the face itself they reached accuracy 1.0; without it they are at chance (0.1)."""
    import torch.nn.functional as F

    from cdfv.trainer.train import centroid_cosines

    emb = F.normalize(torch.randn(40, 512, generator=torch.Generator().manual_seed(0)))
    lab = torch.arange(10).repeat(4)
    sums = torch.zeros(10, 512).index_add_(0, lab, emb)
    counts = torch.zeros(10).index_add_(0, lab, torch.ones(40))
    assert ((emb @ F.normalize(sums).T).argmax(1) == lab).float().mean() == 1.0  # the centroid holding the face
    cosine, scored = centroid_cosines(emb, lab, sums, counts)
    assert scored.all() and (cosine.argmax(1) == lab).float().mean() < 0.3
    counts[3] = 1  # an identity with one face has no other face to be compared with
    assert centroid_cosines(emb, lab, sums, counts)[1].sum() == 36


def test_arcface_validation_record_names_its_sample(shard_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(out), classify_epochs=1, arcface_epochs=1,
                      val_fraction=0.7, embedding_dim=16, **TINY))
    (val,) = records(out, "arcface", "val")
    # the training photos of the held-out identities (12 each) in whole batches of 16: the faces scored, not the split's
    assert val["identities"] >= 5 and val["faces"] == 12 * val["identities"] // 16 * 16
    assert val["acc_low"] <= val["acc"] <= val["acc_high"]
