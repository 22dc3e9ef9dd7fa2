"""Codec training options for a small budget (lr schedule, entropy-bottleneck start, padding mask)
and the learning-curve tool that measures them against JPEG."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from test_train_fixtures import celeba_faces, shard_root, write_set  # noqa: F401  (session fixtures)
from prep_helpers import invoke_ok, samples
from cdfv.pipeline.codecs import CodecSpec, load_codec
from cdfv.shards import make_key
from cdfv.trainer.codec_train import CodecTrainConfig, face_mask, lr_at, masked_mse, narrow_entropy_bottleneck, pad_faces, train_codec

SPEC = CodecSpec("bmshj2018-hyperprior", 1)


def test_cosine_schedule_runs_from_lr_to_the_final_fraction() -> None:
    assert lr_at(0, 100, 1e-3, "constant") == lr_at(99, 100, 1e-3, "constant") == 1e-3
    assert lr_at(0, 101, 1e-3, "cosine", 0.01) == pytest.approx(1e-3)
    assert lr_at(50, 101, 1e-3, "cosine", 0.01) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert lr_at(100, 101, 1e-3, "cosine", 0.01) == pytest.approx(1e-5)
    assert lr_at(500, 101, 1e-3, "cosine", 0.01) == pytest.approx(1e-5)  # past the end: stays at the floor
    lrs = [lr_at(s, 101, 1e-3, "cosine") for s in range(101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError, match="lr schedule"):
        lr_at(0, 10, 1e-3, "step")


def test_the_mask_covers_the_face_and_the_masked_mse_ignores_the_padding() -> None:
    x = pad_faces(torch.full((2, 3, 224, 224), 128, dtype=torch.uint8))
    mask = face_mask(x)
    assert mask.shape == (2, 1, 256, 256) and mask.sum().item() == 2 * 224 * 224
    assert mask[0, 0, 15, 100] == 0 and mask[0, 0, 16, 16] == 1 and mask[0, 0, 239, 239] == 1 and mask[0, 0, 240, 100] == 0
    in_padding = x.clone()
    in_padding[..., :16, :] = 1.0  # wrong only where the padding is
    assert masked_mse(in_padding, x, mask).item() == 0.0
    assert torch.nn.functional.mse_loss(in_padding, x).item() > 0
    in_face = x + 0.1 * mask  # every face sample off by 0.1
    assert masked_mse(in_face, x, mask).item() == pytest.approx(0.01)
    assert torch.nn.functional.mse_loss(in_face, x).item() == pytest.approx(0.01 * 224**2 / 256**2)


def test_a_narrow_entropy_bottleneck_makes_a_fresh_codecs_z_cheap_and_codes_as_before(celeba_faces) -> None:  # noqa: F811
    faces = [f for fs in celeba_faces.values() for f in fs[:1]][:4]
    x = pad_faces(torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2))

    def z_bytes(model: torch.nn.Module) -> int:
        model.update(force=True)
        with torch.no_grad():
            return sum(len(s) for s in model.compress(x)["strings"][1])

    default = load_codec(SPEC, untrained=True)[0]
    narrow = load_codec(SPEC, untrained=True)[0]
    narrow_entropy_bottleneck(narrow, 0.1, seed=0)
    assert narrow.state_dict().keys() == default.state_dict().keys()
    assert narrow.entropy_bottleneck.quantiles[0, 0].tolist() == pytest.approx([-0.1, 0.0, 0.1])
    assert z_bytes(narrow) < z_bytes(default) / 3  # CompressAI's init_scale 10: ~1,400 bytes a face for z near 0
    with pytest.raises(ValueError, match="positive"):
        narrow_entropy_bottleneck(narrow, 0.0, seed=0)


def test_training_follows_the_schedule_and_refuses_options_that_do_not_apply(shard_root: Path, tmp_path: Path) -> None:  # noqa: F811
    base = dict(shards="faces-train", root=str(shard_root), batch_size=2, patch=64, workers=0, progress=False, log_every=1)
    train_codec(CodecTrainConfig(out=str(tmp_path / "run"), untrained=True, max_steps=5, lr=1e-3, lr_schedule="cosine",
                                 eb_init_scale=0.1, mask_padding=True, **base))
    rows = [json.loads(line) for line in (tmp_path / "run" / "codec-metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(s, 5, 1e-3, "cosine") for s in range(5)])
    assert all(math.isfinite(r["loss"]) for r in rows)
    with pytest.raises(ValueError, match="--eb-init-scale"):
        train_codec(CodecTrainConfig(out=str(tmp_path / "w"), weights=str(tmp_path / "run" / "codec.pt"), eb_init_scale=0.1,
                                     max_steps=1, **base))
    with pytest.raises(ValueError, match="--mask-padding"):
        train_codec(CodecTrainConfig(out=str(tmp_path / "m"), untrained=True, metric="ms-ssim", mask_padding=True, max_steps=1,
                                     **base))


def test_resuming_keeps_the_schedule_and_accepts_checkpoints_older_than_the_options(shard_root: Path, tmp_path: Path) -> None:  # noqa: F811
    from cdfv.trainer.checkpoint import load_checkpoint, save_checkpoint

    base = dict(shards="faces-train", root=str(shard_root), out=str(tmp_path / "run"), untrained=True, batch_size=2, patch=64,
                workers=0, progress=False)
    train_codec(CodecTrainConfig(max_steps=2, lr_schedule="cosine", **base))
    with pytest.raises(ValueError, match="--allow-change max_steps"):  # the cosine would jump back up
        train_codec(CodecTrainConfig(max_steps=4, lr_schedule="cosine", resume=True, **base))
    ckpt = tmp_path / "run" / "codec-checkpoint.pt"
    state = load_checkpoint(ckpt)
    for option in ("lr_schedule", "lr_final", "aux_lr", "eb_init_scale", "mask_padding"):
        state["config"].pop(option)  # as written before these options existed
    state["config"]["max_steps"] = 2
    save_checkpoint(ckpt, {k: v for k, v in state.items() if k != "format"})
    assert train_codec(CodecTrainConfig(max_steps=3, resume=True, **base))["steps"] == 3


def test_jpeg_is_matched_to_the_rate_or_reported_unreachable(celeba_faces) -> None:  # noqa: F811
    from cdfv.pipeline.conventional import get_codec
    from cdfv.trainer.codec_curve import jpeg_at

    faces = [fs[0] for fs in celeba_faces.values()][:4]
    point = jpeg_at(faces, 0.5)
    assert abs(point["jpeg_bpp"] / 0.5 - 1) <= 0.05
    coded = get_codec("jpeg").code(faces[0], point["jpeg_quality"])
    assert coded.bpp == pytest.approx(point["jpeg_bpp"], rel=0.5) and 15 < point["jpeg_psnr"] < 50
    assert point["jpeg_matched"] == 1 and "jpeg_note" not in point
    low = jpeg_at(faces, 0.01)  # below JPEG's headers: its lowest rate, quality 1, flagged
    assert low["jpeg_matched"] == 0 and low["jpeg_quality"] == 1 and low["jpeg_bpp"] > 0.05
    assert "outside the reachable" in low["jpeg_note"]


def test_the_curve_reports_what_cdfv_prep_measures_for_the_saved_codec(shard_root: Path, celeba_faces, tmp_path: Path) -> None:  # noqa: F811
    from cdfv.pipeline.stages import sample_faces
    from cdfv.shards import open_shard_set
    from cdfv.trainer.codec_curve import Curve, read_curve

    prep = tmp_path / "prep"  # held-out faces as cdfv-prep stores them (png with its json)
    held = [{"__key__": make_key(name, "0015"), "png": fs[-1], "json": {"key": make_key(name, "0015"), "source": name, "align": {}}}
            for name, fs in sorted(celeba_faces.items())[:4]]
    write_set(prep, "held", "image", held, sorted(celeba_faces)[:4], 1)
    cfg = CodecTrainConfig(shards="faces-train", root=str(shard_root), out=str(tmp_path / "curve" / "run"), untrained=True,
                           eb_init_scale=0.1, batch_size=2, patch=64, max_steps=3, workers=0, progress=False)
    faces = sample_faces(open_shard_set("held", str(prep)), 4)
    curve = Curve(tmp_path / "curve", cfg, faces, every=2, total=3, header={"test": True})
    train_codec(cfg, curve)
    rows = read_curve(tmp_path / "curve" / "curve.csv")
    assert [r["step"] for r in rows] == [2, 3]
    assert json.loads((tmp_path / "curve" / "curve.json").read_text())["test"] is True
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 0
    with open(tmp_path / "curve" / "curve.csv") as f:
        assert list(csv.DictReader(f))[0].keys() >= {"psnr", "bpp", "jpeg_psnr", "z_bytes"}
    # the last point is the saved codec: cdfv-prep codes the same faces to the same rate and PSNR
    invoke_ok("run", "--input", "held", "--out", prep, "--quality", "1", "--weights", cfg.out + "/codec.pt",
              "--outputs", "decoded", "--device", "cpu")
    metas = [s["json"] for s in samples(prep / "decoded-q1", ("json",))]
    assert len(metas) == len(faces) == 4
    assert np.mean([m["rate"]["bpp"] for m in metas]) == pytest.approx(curve.rows[-1]["bpp"], rel=1e-9)
    assert np.mean([m["quality"]["psnr"] for m in metas]) == pytest.approx(curve.rows[-1]["psnr"], rel=1e-9)


@pytest.mark.parametrize("name", ["pairsDevTest.txt", "pairs.txt"])
def test_the_curve_tool_refuses_a_reported_pairs_file_in_one_line(tmp_path: Path, name: str, capsys: pytest.CaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from cdfv.trainer import codec_curve

    pairs = tmp_path / name
    pairs.write_text("probe,reference,label\na,b,1\na,c,0\n")
    monkeypatch.setattr("sys.argv", ["codec_curve.py", "--pairs", str(pairs), "--out", str(tmp_path / "curve")])
    with pytest.raises(SystemExit) as exit_:
        codec_curve.main()
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.count("\n") == 1, error  # not a traceback
    assert f"codec_curve.py: error: {pairs}: a pairs file the reports score" in error and "--reported-pairs" in error
    assert not (tmp_path / "curve").exists()
