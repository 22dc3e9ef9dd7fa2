"""The cdfv-prep command line end to end on real LFW View 1 and CelebA pictures with an untrained
bmshj2018 q1 codec: every stage one by one, the streaming `run`, parts merged by `index`."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cdfv import shards
from cdfv.shards import spec as S

from prep_helpers import (
    CODEC_ARGS, by_key, celeba_images, invoke, invoke_ok, link_dataset, load_npy, payload_of, raw_members, samples,
    tar_files, view1_images,
)

CHUNKS, BATCH = ("--chunk-size", "2"), ("--batch-size", "2")  # chunks: stages that cut inputs; batches: stages that batch


@pytest.fixture(scope="module")
def lfw6(lfw_root, lfw_meta, tmp_path_factory):
    """Six LFW View 1 pictures in the LFW layout (links)."""
    return link_dataset(view1_images(lfw_root, lfw_meta, 6), tmp_path_factory.mktemp("lfw6"))


@pytest.fixture(scope="module")
def chain(lfw6, tmp_path_factory):
    """Every stage one by one into `out`; the summaries by stage."""
    out = tmp_path_factory.mktemp("stages")
    data = ("--dataset", "lfw", "--root", lfw6, "--out", out, *CHUNKS)
    runs = {
        "detect": invoke_ok("detect", *data),
        "align": invoke_ok("align", *data),
        "encode": invoke_ok("encode", "--out", out, *BATCH, *CODEC_ARGS),
        "entropy-decode": invoke_ok("entropy-decode", "--out", out, *BATCH, *CODEC_ARGS),
        "crop-latent": invoke_ok("crop-latent", "--out", out, "--quality", "1"),
        "crop-full": invoke_ok("crop-latent", "--out", out, "--quality", "1", "--full", "--name", "latents-uncropped-q1"),
        "decode": invoke_ok("decode", "--out", out, *BATCH, *CODEC_ARGS),
        "shard": invoke_ok("shard", "latents-q1", "--out", out, "--name", "latents-packed", "--chunk-size", "4",
                           "--members", "latent.npy,cls"),
    }
    return out, runs


@pytest.fixture(scope="module")
def stream(lfw6, tmp_path_factory):
    """The streaming `run` of the same pictures: faces, latents with bits, decoded faces."""
    out = tmp_path_factory.mktemp("stream")
    summary = invoke_ok("run", "--dataset", "lfw", "--root", lfw6, "--out", out, *CHUNKS, *BATCH, *CODEC_ARGS,
                        "--outputs", "faces,latents,decoded", "--with-bits")
    return out, summary


def test_every_stage_processes_all_six_pictures(chain):
    out, runs = chain
    assert runs["detect"]["images"] == 6
    for stage in ("detect", "align", "encode", "entropy-decode", "crop-latent", "crop-full", "decode"):
        assert runs[stage]["inputs"] == 6 and runs[stage]["rejects"] == 0, stage
    assert runs["detect"]["counters"] == {"status_ok": 6}
    assert runs["detect"]["chunks"] == 3  # chunk size 2


def test_detections_parquet_has_a_face_with_landmarks_per_picture(chain, lfw6):
    out, _ = chain
    rows = pq.read_table(out / "detections" / "detections-p000of001-000000.parquet").to_pylist()
    rows += [r for f in sorted((out / "detections").glob("detections-*.parquet"))[1:] for r in pq.read_table(f).to_pylist()]
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert all(len(r["landmarks"]) == 5 and (r["width"], r["height"]) == (250, 250) for r in rows)
    assert {r["source"] for r in rows} == {f"{p.parent.name}/{p.name}" for p in lfw6.glob("*/*.jpg")}


def test_faces_are_224_rgb_with_labels_from_sorted_identities(chain, lfw6):
    out, _ = chain
    ss = shards.open_shard_set(out / "faces")
    assert ss.kind == "image" and ss.num_samples == 6 and [s.samples for s in ss.shards] == [2, 2, 2]
    assert ss.identities == sorted(p.name for p in lfw6.iterdir())
    for s in samples(out / "faces"):
        assert s[S.IMAGE].shape == (224, 224, 3) and s[S.IMAGE].dtype == np.uint8
        assert ss.identities[s[S.LABEL]] == s[S.META]["identity"]
        assert s["__key__"] == f"{s[S.META]['identity']}__{Path(s[S.META]['source']).stem}"
        assert s[S.META]["detection"]["status"] == "ok" and s[S.META]["align"]["method"] == "thesis"
        eyes = s[S.META]["align"]["landmarks"][:2]
        assert abs(eyes[0][1] - eyes[1][1]) <= 1.0


def test_encoded_rate_is_the_bitstream_payload(chain):
    out, _ = chain
    ss = shards.open_shard_set(out / "encoded-q1")
    assert ss.kind == "bitstream" and ss.num_samples == 6
    for s in samples(out / "encoded-q1"):
        strings, shape = S.unpack_bitstream(s[S.BITSTREAM])
        rate = s[S.META]["rate"]
        assert rate["bytes"] == sum(len(x) for x in strings) == payload_of(s[S.BITSTREAM])
        assert rate["string_bytes"] == [len(x) for x in strings]
        assert rate["bpp"] == pytest.approx(8 * rate["bytes"] / (224 * 224))
        assert rate["bpp_coded"] == pytest.approx(8 * rate["bytes"] / (256 * 256))
        assert shape == (4, 4)


def test_index_records_the_untrained_codec(chain):
    out, _ = chain
    for name in ("encoded-q1", "latents-full-q1", "latents-q1", "decoded-q1"):
        index = json.loads((out / name / "index.json").read_text())
        assert index["num_samples"] == 6 and sum(e["samples"] for e in index["shards"]) == 6
        assert index["meta"]["untrained"] is True, name
        assert index["meta"]["codec"]["weights"] == "untrained:seed0", name
        assert index["meta"]["codec"]["name"] == "bmshj2018-hyperprior" and index["meta"]["codec"]["quality"] == 1


def test_latents_are_int16_full_and_cropped(chain):
    out, _ = chain
    full = by_key(out / "latents-full-q1")
    cropped = by_key(out / "latents-q1")
    uncropped = by_key(out / "latents-uncropped-q1")
    assert set(full) == set(cropped) == set(uncropped) and len(full) == 6
    for key, s in full.items():
        y = s[S.LATENT]
        assert y.dtype == np.int16 and y.shape == (192, 16, 16)
        assert s[S.META]["latent"]["source"] == "entropy-decoded"
        assert cropped[key][S.LATENT].shape == (192, 14, 14)
        np.testing.assert_array_equal(cropped[key][S.LATENT], y[:, 1:15, 1:15])
        assert cropped[key][S.META]["latent"]["crop"] == [1, 1, 14, 14]
        np.testing.assert_array_equal(uncropped[key][S.LATENT], y)
        assert cropped[key][S.LABEL] == s[S.LABEL]


def test_decoded_faces_carry_quality_against_the_originals(chain):
    out, _ = chain
    originals = by_key(out / "faces")
    for key, s in by_key(out / "decoded-q1").items():
        assert s[S.IMAGE].shape == (224, 224, 3)
        q = s[S.META]["quality"]
        ref = originals[key][S.IMAGE].astype(float)
        mse = ((ref - s[S.IMAGE].astype(float)) ** 2).mean()
        assert q["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-6)
        assert 0 < q["ms_ssim"] <= 1


def test_shard_repacks_with_chosen_members(chain):
    out, runs = chain
    ss = shards.open_shard_set(out / "latents-packed")
    assert ss.members == ["cls", "latent.npy"] and [s.samples for s in ss.shards] == [4, 2]
    packed = samples(out / "latents-packed")
    assert [s["__key__"] for s in packed] == [s["__key__"] for s in samples(out / "latents-q1")]
    assert all({k for k in s if not k.startswith("__")} == {"cls", "latent.npy"} for s in packed)


def test_real_shards_open_with_tar_and_webdataset(chain):
    import webdataset as wds

    out, _ = chain
    url = shards.open_shard_set(out / "latents-q1").urls[0]
    listing = subprocess.run(["tar", "-tf", url], capture_output=True, text=True, check=True).stdout.split()
    assert listing[0] == S.CHECKSUMS and len(listing) == 7
    assert all(n.endswith((".cls", ".json", ".latent.npy")) for n in listing[1:])
    raw = list(wds.WebDataset([url], shardshuffle=False, empty_check=False))
    assert len(raw) == 2 and load_npy(raw[0]["latent.npy"]).shape == (192, 14, 14)


def test_index_command_rebuilds_the_same_index(chain):
    out, _ = chain
    before = json.loads((out / "latents-q1" / "index.json").read_text())
    result = invoke("index", out / "latents-q1")
    assert result.exit_code == 0 and "3 shards, 6 samples" in result.stdout
    after = json.loads((out / "latents-q1" / "index.json").read_text())
    assert {k: v for k, v in after.items() if k != "created"} == {k: v for k, v in before.items() if k != "created"}


def test_stream_run_equals_the_stages_bit_for_bit(chain, stream):
    out, _ = chain
    run_out, summary = stream
    assert summary["inputs"] == 6 and summary["rejects"] == 0
    for ext in ("png", "cls"):
        assert raw_members(run_out / "faces", ext) == raw_members(out / "faces", ext)
    assert raw_members(run_out / "latents-q1", "latent.npy") == raw_members(out / "latents-q1", "latent.npy")
    assert raw_members(run_out / "latents-q1", "cls") == raw_members(out / "latents-q1", "cls")
    assert raw_members(run_out / "latents-q1", "bits") == raw_members(out / "encoded-q1", "bits")
    assert raw_members(run_out / "decoded-q1", "png") == raw_members(out / "decoded-q1", "png")


def test_stream_faces_equal_the_align_stage_faces_whole(chain, stream):
    out, _ = chain
    run_out, _ = stream
    assert all("codec" not in s[S.META] and "rate" not in s[S.META] for s in samples(run_out / "faces"))
    assert tar_files(run_out / "faces") == tar_files(out / "faces")


def test_stream_bits_give_the_recorded_rate(stream):
    run_out, summary = stream
    total = 0
    for s in samples(run_out / "latents-q1"):
        n = payload_of(s[S.BITSTREAM])
        assert s[S.META]["rate"]["bytes"] == n
        assert s[S.META]["rate"]["bpp"] == 8 * n / (224 * 224)
        assert s[S.LATENT].dtype == np.int16 and s[S.LATENT].shape == (192, 14, 14)
        assert s[S.META]["latent"]["source"] in ("fast-path", "fast-path-verified")
        total += n
    assert summary["counters"]["bytes bmshj2018-hyperprior-mse-q1"] == total
    assert summary["mean_bpp"] == {"bmshj2018-hyperprior-mse-q1": round(8 * total / (224 * 224) / 6, 4)}
    index = json.loads((run_out / "latents-q1" / "index.json").read_text())
    assert index["members"] == sorted(["bits", "cls", "json", "latent.npy"])
    assert index["meta"]["untrained"] is True and index["meta"]["codec"]["weights"] == "untrained:seed0"


def test_full_latent_and_no_fast_path_run(lfw6, tmp_path, chain):
    out, _ = chain
    invoke_ok("run", "--dataset", "lfw", "--root", lfw6, "--out", tmp_path, *CHUNKS, *BATCH, *CODEC_ARGS, "--full-latent", "--no-fast-path")
    got = raw_members(tmp_path / "latents-q1", "latent.npy")
    assert got == raw_members(out / "latents-full-q1", "latent.npy")
    meta = samples(tmp_path / "latents-q1")[0][S.META]["latent"]
    assert meta["shape_full"] == [192, 16, 16] and meta["source"] == "entropy-decoded"


def test_decoding_with_other_weights_is_refused(chain):
    out, _ = chain
    other_seed = [a if a != "--untrained" else "--untrained" for a in CODEC_ARGS] + ["--seed", "1"]
    result = invoke("entropy-decode", "--out", out, *other_seed, "--name", "never-written")
    assert result.exit_code != 0
    assert "weights untrained:seed0" in result.output and "weights untrained:seed1" in result.output
    assert not (out / "never-written").exists()
    result = invoke("decode", "--out", out, "--codec", "bmshj2018-hyperprior", "--quality", "2", "--untrained",
                    "--device", "cpu", "--input", "encoded-q1", "--name", "never-written")
    assert result.exit_code != 0 and "encoded with bmshj2018-hyperprior q1" in result.output


def test_parts_written_apart_merge_with_index(lfw6, tmp_path):
    whole = tmp_path / "whole"
    invoke_ok("run", "--dataset", "lfw", "--root", lfw6, "--out", whole, *CHUNKS, *BATCH, *CODEC_ARGS)
    machine = {i: tmp_path / f"machine{i}" for i in range(2)}
    for i, out in machine.items():
        s = invoke_ok("run", "--dataset", "lfw", "--root", lfw6, "--out", out, *CHUNKS, *BATCH, *CODEC_ARGS, "--part", f"{i}/2")
        assert s["inputs"] == 3
    merged = machine[0] / "latents-q1"
    tars = list((machine[1] / "latents-q1").glob("*.tar"))
    for tar in tars:
        shutil.copy(tar, merged)
    assert shards.open_shard_set(merged).num_samples == 3  # not merged until the index is rebuilt
    result = invoke("index", merged)  # the shards alone: their run records are missing
    assert result.exit_code == 1 and "shards of part p001of002 have no run record (run-p001of002.json)" in result.output
    for path in (machine[1] / "latents-q1").iterdir():  # the whole directory, as the README says
        if path.name != "index.json":
            shutil.copy(path, merged)
    result = invoke("index", merged)
    assert result.exit_code == 0, result.output
    ss = shards.open_shard_set(merged)
    assert ss.num_samples == 6 and len(ss.urls) == 4
    keys = [s["__key__"] for s in samples(merged)]
    assert len(keys) == len(set(keys))
    assert raw_members(merged, "latent.npy") == raw_members(whole / "latents-q1", "latent.npy")


def test_parts_run_into_one_directory(lfw6, tmp_path):
    for i in range(2):
        invoke_ok("run", "--dataset", "lfw", "--root", lfw6, "--out", tmp_path, *CHUNKS, *BATCH, *CODEC_ARGS, "--part", f"{i}/2")
    invoke_ok_index = invoke("index", tmp_path / "latents-q1")
    assert invoke_ok_index.exit_code == 0
    keys = [s["__key__"] for s in samples(tmp_path / "latents-q1")]
    assert len(keys) == 6 == len(set(keys))


def test_celeba_photos_through_run(celeba_root, tmp_path):
    root = link_dataset(celeba_images(celeba_root, 2, 2), tmp_path / "celeba")
    out = tmp_path / "out"
    summary = invoke_ok("run", "--dataset", "folder", "--root", root, "--out", out, *CHUNKS, *BATCH, *CODEC_ARGS,
                        "--outputs", "faces,latents", "--no-face", "whole")
    assert summary["inputs"] == 4 and summary["rejects"] == 0
    faces = by_key(out / "faces")
    assert set(faces) == {f"{p.parent.name}__{p.stem}" for p in root.glob("*/*")}
    for s in faces.values():
        assert s[S.IMAGE].shape == (224, 224, 3)
        assert s[S.META]["detection"]["status"] in ("ok", "no_face")
    assert all(s[S.LATENT].shape == (192, 14, 14) for s in samples(out / "latents-q1"))


def test_anchor_writes_a_decoded_set_like_the_learned_codecs(chain):
    out, _ = chain
    summary = invoke_ok("anchor", "--out", out, *BATCH, "--codec", "jpeg", "--value", "30")
    faces = by_key(out / "faces")
    decoded = by_key(out / "decoded-jpeg-quality30")
    assert summary["written"] == {"decoded-jpeg-quality30": 6} and set(decoded) == set(faces)
    index = shards.open_shard_set(out / "decoded-jpeg-quality30").index
    assert index["kind"] == "image" and index["meta"]["variant"] == "decoded"
    assert index["meta"]["codec"] == {"name": "jpeg", "parameter": "quality", "value": 30.0}
    for key, s in decoded.items():
        meta = s[S.META]
        assert s[S.IMAGE].shape == (224, 224, 3) and s[S.LABEL] == faces[key][S.LABEL]
        assert meta["rate"]["bpp"] == pytest.approx(8 * meta["rate"]["bytes"] / (224 * 224))
        assert meta["rate"]["bytes"] < meta["rate"]["container_bytes"]
        assert 20 < meta["quality"]["psnr"] < 60 and 0 < meta["quality"]["ms_ssim"] <= 1


def test_anchor_matches_the_rate_of_a_learned_codec_set(chain):
    out, _ = chain
    target = float(np.mean([s[S.META]["rate"]["bpp"] for s in samples(out / "decoded-q1", (S.META,))]))
    summary = invoke_ok("anchor", "--out", out, *BATCH, "--codec", "jpeg2000", "--match", "decoded-q1", "--name", "j2k")
    match = summary["rate_match"]
    assert match["target_bpp"] == pytest.approx(target)
    assert match["within_5pct"] and abs(match["achieved_mean_bpp"] - target) <= 0.05 * target
    assert shards.open_shard_set(out / "j2k").meta["rate_match"]["target_bpp"] == pytest.approx(target)


def test_anchor_needs_exactly_one_way_to_set_the_rate(chain):
    out, _ = chain
    result = invoke("anchor", "--out", out, "--codec", "jpeg", "--value", "30", "--target-bpp", "0.3")
    assert result.exit_code != 0 and "exactly one of --value, --target-bpp, --match" in result.output
    result = invoke("anchor", "--out", out, "--codec", "jpeg", "--target-bpp", "0.01")
    assert result.exit_code != 0 and "jpeg" in result.output


def test_index_refuses_parts_made_with_other_weights(lfw6, tmp_path):
    machine = {i: tmp_path / f"machine{i}" for i in range(2)}
    for i, out in machine.items():
        invoke_ok("run", "--dataset", "lfw", "--root", lfw6, "--out", out, *CHUNKS, *BATCH, *CODEC_ARGS, "--seed", str(i), "--part", f"{i}/2")
    merged = machine[0] / "latents-q1"
    for path in (machine[1] / "latents-q1").iterdir():
        if path.name != "index.json":
            shutil.copy(path, merged)
    before = (merged / "index.json").read_bytes()
    result = invoke("index", merged)
    assert result.exit_code == 1 and "part p001of002 was made differently from part p000of002" in result.output
    assert "untrained:seed0" in result.output and "untrained:seed1" in result.output
    assert (merged / "index.json").read_bytes() == before  # nothing merged
