"""The identity term of codec training (trainer/identity.py) on real CelebA faces: the
reconstruction's chip is cut as dlib cuts the original's, the term is zero where the codec is
perfect and its gradient reaches the codec, and `cdfv-train --task codec --id-weight` trains with
it and refuses what it cannot read."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from cdfv.eval.dlib_arch import load_dlib_resnet
from cdfv.eval.facemodels import dlib_model_files, load_face_model
from cdfv.pipeline.coding import pad_face
from cdfv.shards import open_shard_set
from cdfv.trainer.cli import main as train_cli
from cdfv.trainer.codec_train import pad_faces
from cdfv.trainer.identity import IdentityLoss, chips_of
from cdfv.trainer.transplant import teacher_mean

from prep_helpers import CODEC_ARGS, celeba_images, invoke_ok, link_dataset


@pytest.fixture(scope="module")
def taught(celeba_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """faces/ of 2 CelebA identities x 4 photos, and faces-dlib/: dlib's embeddings, level2 maps
    and chip transforms of them."""
    root = tmp_path_factory.mktemp("identity")
    photos = link_dataset(celeba_images(celeba_root, 2, 4), root / "photos")
    invoke_ok("run", "--dataset", "folder", "--root", photos, "--outputs", "faces", "--off-centre", "largest", "--out", root)
    invoke_ok("teacher", "--model", "dlib", "--input", "faces", "--name", "faces-dlib", "--maps", "level2", "--out", root)
    return root


@pytest.fixture(scope="module")
def batch(taught: Path) -> tuple[torch.Tensor, list[dict]]:
    samples = list(open_shard_set("faces-dlib", taught).samples())
    faces = torch.from_numpy(np.stack([s["png"] for s in samples])).permute(0, 3, 1, 2)
    return faces, samples


def targets(samples: list[dict], junction: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(teacher embeddings, face -> chip transforms, teacher maps at the junction or None)."""
    embeddings = torch.from_numpy(np.stack([s["teacher.npy"] for s in samples]))
    chips = torch.tensor([s["json"]["teacher"]["chip"] for s in samples], dtype=torch.float32)
    maps = torch.from_numpy(np.stack([s[f"teacher-{junction}.npy"].astype(np.float32) for s in samples])) if junction else None
    return embeddings, chips, maps


def test_dlib_teacher_stores_chip_transforms_without_maps(taught: Path) -> None:
    invoke_ok("teacher", "--model", "dlib", "--input", "faces", "--name", "faces-dlib-plain", "--out", taught)
    plain = open_shard_set("faces-dlib-plain", taught)
    assert not any(m.startswith("teacher-") for m in plain.members)
    mapped = {s["__key__"]: s["json"]["teacher"]["chip"] for s in open_shard_set("faces-dlib", taught).samples()}
    for s in plain.samples():
        assert s["json"]["teacher"]["chip"] == mapped[s["__key__"]]


def test_the_reconstructions_chip_is_dlibs_chip_of_the_face(batch: tuple[torch.Tensor, list[dict]]) -> None:
    """The differentiable warp of the padded picture gives dlib's own get_face_chip to 1 grey level
    at the 99th percentile away from the border (where dlib interpolates a little differently)."""
    faces, samples = batch
    dlib = load_face_model("dlib")
    pictures = [np.ascontiguousarray(s["png"]) for s in samples]
    expected = dlib.chips(pictures, dlib.shapes(pictures, [np.array(s["json"]["align"]["landmarks"]) for s in samples]))
    transforms = torch.tensor([s["json"]["teacher"]["chip"] for s in samples], dtype=torch.float32)
    chips = chips_of(pad_faces(faces), transforms).round().permute(0, 2, 3, 1).numpy()
    for chip, want in zip(chips, expected):
        assert np.percentile(np.abs(chip - want.astype(np.float64))[5:-5, 5:-5], 99) <= 1


@pytest.mark.parametrize("junction", [None, "level2"])
def test_the_identity_term_is_zero_on_the_original_and_its_gradient_lowers_it(batch: tuple[torch.Tensor, list[dict]],
                                                                             junction: str | None) -> None:
    faces, samples = batch
    net = load_dlib_resnet(dlib_model_files()[0])
    teacher = targets(samples, junction)
    loss_fn = IdentityLoss(net, "cos", junction, 1.0)
    exact, parts = loss_fn(pad_faces(faces), *teacher)
    assert exact.item() < 5e-3 and parts["id_cos"] > 0.995  # the original face is its own teacher (chip to 1 grey level)
    gen = torch.Generator().manual_seed(0)
    noisy = (pad_faces(faces) + 0.15 * torch.randn(pad_faces(faces).shape, generator=gen)).clamp(0, 1).requires_grad_(True)
    optimiser = torch.optim.Adam([noisy], lr=2e-3)
    before, _ = loss_fn(noisy, *teacher)
    for _ in range(8):
        loss, _ = loss_fn(noisy, *teacher)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after, _ = loss_fn(noisy, *teacher)
    assert before.item() > 10 * exact.item() and after.item() < 0.7 * before.item()
    assert all(p.grad is None for p in net.parameters())  # dlib stays frozen


def test_the_centred_distance_reads_the_teacher_mean(taught: Path, batch: tuple[torch.Tensor, list[dict]]) -> None:
    faces, samples = batch
    net = load_dlib_resnet(dlib_model_files()[0])
    with pytest.raises(ValueError, match="teacher embeddings' mean"):
        IdentityLoss(net, "centred")
    from cdfv.shards import Damage

    centre = teacher_mean(open_shard_set("faces-dlib", taught), Damage("error"))
    exact, parts = IdentityLoss(net, "centred", centre=centre)(pad_faces(faces), *targets(samples, None))
    assert exact.item() < 0.05 and parts["id_cos"] > 0.995


def train(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(train_cli, ["--task", "codec", "--device", "cpu", "--workers", "0", *map(str, args)])
    return result.exit_code, result.output


def test_codec_training_with_the_identity_term_logs_it_and_refuses_what_it_cannot_read(taught: Path, tmp_path: Path) -> None:
    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--eb-init-scale", "0.1",
                         "--batch-size", "4", "--max-steps", "2", "--id-weight", "10", "--id-map", "level2",
                         "--out", tmp_path / "run")
    assert code == 0, output
    records = [json.loads(line) for line in (tmp_path / "run" / "codec-metrics.jsonl").read_text().splitlines()]
    assert records and all(0 < r["id_cos"] <= 1 and r["id_map"] > 0 for r in records)
    assert (tmp_path / "run" / "codec.pt").is_file()
    refusals = [
        (("--shards", "faces"), "needs dlib's embeddings"),
        (("--shards", "faces-dlib", "--id-map", "level0"), "teacher --model dlib --maps level0"),
        (("--shards", "faces-dlib", "--patch", "128"), "--patch crops the faces"),
    ]
    for extra, message in refusals:
        code, output = train("--root", taught, "--untrained-codec", "--max-steps", "1", "--id-weight", "1", *extra,
                             "--out", tmp_path / "refused")
        assert code == 2 and message in output, output
    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--id-map", "level2",
                         "--out", tmp_path / "refused")
    assert code == 2 and "give --id-weight too" in output, output


def save_level2_student(path: Path, quality: int = 1) -> None:
    """dlib's level2 tail with a fresh adapter, filed as trained on bmshj2018-hyperprior latents."""
    from cdfv.trainer.archs import transplant_arch
    from cdfv.trainer.export import embedding_info, save_embedding_model
    from cdfv.trainer.transplant import build_transplant

    torch.manual_seed(0)
    student = build_transplant(192, "level2", [[0.6, 0.0, 5.0], [0.0, 0.6, 10.0]])
    student.copy_teacher(load_dlib_resnet(dlib_model_files()[0]))
    codec = {"name": "bmshj2018-hyperprior", "quality": quality, "metric": "mse", "weights": "untrained:seed0", "untrained": True}
    save_embedding_model(path, student, embedding_info(student, transplant_arch("level2"), untrained=False,
                                                       train_shards={"name": "latents", "meta": {"codec": codec}}))


def test_the_students_loss_reaches_the_encoder_through_the_rounding() -> None:
    from cdfv.pipeline.codecs import CodecSpec, load_codec
    from cdfv.trainer.joint import LatentTap

    codec, _ = load_codec(CodecSpec("bmshj2018-hyperprior", 1), untrained=True)
    codec.train()
    tap = LatentTap(codec)
    codec(torch.rand(2, 3, 256, 256))
    latents = tap.student_input(14)
    assert latents.shape == (2, 192, 14, 14)
    torch.testing.assert_close(latents.detach(), torch.round(tap.y.detach())[..., 1:15, 1:15])  # what cdfv-prep stores
    (latents * torch.randn(latents.shape)).sum().backward()  # any loss of the rounded latents
    assert codec.g_a[0].weight.grad.abs().sum() > 0 and codec.g_s[0].weight.grad is None


def test_joint_training_writes_a_codec_and_its_student_filed_under_that_codec(taught: Path, tmp_path: Path) -> None:
    from cdfv.pipeline.codecs import weights_file_id

    save_level2_student(tmp_path / "student-q1.pt")
    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--batch-size", "4", "--max-steps", "2",
                         "--student", tmp_path / "student-q1.pt", "--id-weight", "5", "--id-map", "level2", "--out", tmp_path / "run")
    assert code == 0, output
    record = json.loads((tmp_path / "run" / "codec-metrics.jsonl").read_text().splitlines()[0])
    assert record["student_loss"] > 0 and -1 <= record["student_centred_cos"] <= 1 and record["id_cos"] > 0
    model = load_face_model(tmp_path / "run" / "student.pt")
    codec = model.info["train_shards"]["meta"]["codec"]
    assert (codec["name"], codec["quality"], codec["variant"]) == ("bmshj2018-hyperprior", 1, "joint")  # cdfv-eval pairs it
    # with its codec's latents (latents-joint-q1), whose meta records the variant
    assert codec["weights"] == weights_file_id(tmp_path / "run" / "codec.pt")
    assert model.info["joint"]["steps"] == 2 and model.info["started_from"] != model.info["model_id"]
    # cdfv-eval scores the student on latents its codec coded (a set filed under the codec's variant), also by a
    # renamed copy of the codec's file, and on no others
    from cdfv.eval.evaluate import latent_mismatch

    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "run" / "codec.pt", tmp_path / "copy" / "renamed.pt")
    for weights, out in ((tmp_path / "run" / "codec.pt", "coded"), (tmp_path / "copy" / "renamed.pt", "coded-copy")):
        invoke_ok("run", "--input", taught / "faces", "--outputs", "latents", "--weights", weights, "--quality", "1",
                  "--device", "cpu", "--out", tmp_path / out)
        assert latent_mismatch("student", model.info, open_shard_set("latents-joint-q1", tmp_path / out)) is None
    invoke_ok("run", "--input", taught / "faces", "--outputs", "latents", *CODEC_ARGS, "--out", tmp_path / "plain")
    with pytest.raises(ValueError, match="but shard set 'latents-q1' holds bmshj2018-hyperprior-mse q1 latents"):
        latent_mismatch("student", model.info, open_shard_set("latents-q1", tmp_path / "plain"))

    save_level2_student(tmp_path / "student-q3.pt", quality=3)
    for extra, message in [
        (("--student", tmp_path / "student-q3.pt"), "trained on bmshj2018-hyperprior-mse q3 latents (codec weights "
                                                    "untrained:seed0), not on the start codec's bmshj2018-hyperprior-mse q1"),
        (("--student", tmp_path / "student-q1.pt", "--seed", "1"),  # an adapter of another codec's latents of that quality
         "not on the start codec's bmshj2018-hyperprior-mse q1 latents (codec weights untrained:seed1)"),
        (("--student", tmp_path / "run" / "student.pt", "--codec-weights", tmp_path / "run" / "codec.pt", "--batch-size", "4"),
         None),
        (("--student", tmp_path / "student-q1.pt", "--codec", "cheng2020-attn"), "rounds about predicted means"),
    ]:
        start = () if "--codec-weights" in extra else ("--untrained-codec",)
        code, output = train("--shards", "faces-dlib", "--root", taught, *start, "--max-steps", "1", *extra,
                             "--out", tmp_path / ("again" if message is None else "refused"))
        if message is None:  # a second round of joint training, from the first's codec and student
            assert code == 0, output
        else:
            assert code == 2 and message in output, output
    invoke_ok("teacher", "--model", "dlib", "--input", "faces", "--name", "faces-dlib-l0", "--maps", "level0", "--out", taught)
    code, output = train("--shards", "faces-dlib-l0", "--root", taught, "--untrained-codec", "--max-steps", "1",
                         "--student", tmp_path / "student-q1.pt", "--out", tmp_path / "refused")
    assert code == 2 and "--maps level2" in output, output


def test_a_frozen_student_stays_as_trained_while_the_encoder_learns_to_feed_it(taught: Path, tmp_path: Path) -> None:
    """--freeze-student: the written student has the given one's weights, its BatchNorm statistics
    those of the new latents, filed under the new codec; the encoder still learns from its loss."""
    from cdfv.pipeline.codecs import CodecSpec, load_codec
    from cdfv.trainer.export import load_embedding_model

    save_level2_student(tmp_path / "student-q1.pt")
    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--batch-size", "4", "--max-steps", "2",
                         "--student", tmp_path / "student-q1.pt", "--freeze-student", "--out", tmp_path / "run")
    assert code == 0, output
    given, _ = load_embedding_model(tmp_path / "student-q1.pt")
    written, info = load_embedding_model(tmp_path / "run" / "student.pt")
    for name, tensor in given.named_parameters():
        torch.testing.assert_close(dict(written.named_parameters())[name], tensor, rtol=0, atol=0, msg=name)
    counts = {n: (int(b), int(dict(written.named_buffers())[n])) for n, b in given.named_buffers() if n.endswith("num_batches_tracked")}
    assert counts and all(after == before + 2 for before, after in counts.values()), counts  # two batches' statistics taken
    assert info["joint"]["frozen"] is True and info["train_shards"]["meta"]["codec"]["variant"] == "joint"
    start, _ = load_codec(CodecSpec("bmshj2018-hyperprior", 1), untrained=True)
    trained, _ = load_codec(CodecSpec("bmshj2018-hyperprior", 1), weights=tmp_path / "run" / "codec.pt", any_quality=True)
    assert not torch.equal(start.g_a[0].weight, trained.g_a[0].weight)
    record = json.loads((tmp_path / "run" / "codec-metrics.jsonl").read_text().splitlines()[0])
    assert record["student_loss"] > 0


def test_development_pairs_refuse_reported_files_and_score_as_cdfv_eval_does(taught: Path, tmp_path: Path,
                                                                             shared_data: Path) -> None:
    """DecodedPairs with the original probes gives cdfv-eval's original anchor on the same pairs."""
    from cdfv.eval.cli import main as evaluate
    from cdfv.eval.development import DecodedPairs, development_pairs

    keys = sorted(s["__key__"] for s in open_shard_set("faces", taught).samples(("json",)))
    same = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :] if a.split("__")[0] == b.split("__")[0]]
    other = [(a, b) for a in keys[:4] for b in keys[4:]]
    pairs_file = tmp_path / "pairsDevTrain.csv"
    pairs_file.write_text("probe,reference,label\n" + "".join(f"{a},{b},{int(label)}\n" for pairs, label in
                                                            ((same, True), (other, False)) for a, b in pairs))
    for name in ("pairsDevTest.txt", "pairs.txt"):
        (tmp_path / name).write_bytes(pairs_file.read_bytes())
        with pytest.raises(ValueError, match="a pairs file the reports score"):
            development_pairs(tmp_path / name)
    assert development_pairs(tmp_path / "pairsDevTest.txt", allow_reported=True)[1]["role"] == "report"
    for name in ("pairsDevTest.txt", "pairs.txt"):  # LFW's own files renamed: reported pairs by their content
        lfw = shared_data / "lfw" / "meta" / name
        (tmp_path / f"dev-{name}").write_bytes(lfw.read_bytes())
        with pytest.raises(ValueError, match=f"a pairs file the reports score \\(LFW's {name} by its content\\)"):
            development_pairs(tmp_path / f"dev-{name}")
        assert development_pairs(tmp_path / f"dev-{name}", allow_reported=True)[1]["role"] == "report"
    assert development_pairs(shared_data / "lfw" / "meta" / "pairsDevTrain.txt")[1]["role"] == "development"
    pairs, record = development_pairs(pairs_file, limit=3)
    assert record["pairs"] == 6 and record["same"] == 3 and record["role"] == "development" and len(record["pairs_sha256"]) == 64
    pairs, _ = development_pairs(pairs_file)
    scorer = DecodedPairs(pairs, open_shard_set("faces", taught), load_face_model("dlib"))
    ours, per_pair = scorer.original(), scorer.pair_scores(scorer.probe_faces())
    result = CliRunner().invoke(evaluate, ["run", "--pairs", pairs_file, "--root", taught, "--faces", "faces", "--image-model",
                                           "dlib", "--device", "cpu", "--bootstrap", "0", "--out", tmp_path / "eval"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads((tmp_path / "eval" / "report" / "metrics.json").read_text()) if r["mode"] == "original")
    for metric in ("tar_at_far_1e-2", "eer", "auc"):
        assert ours[metric] == pytest.approx(row[metric], abs=1e-9)
    scores = pq.read_table(next((tmp_path / "eval" / "scores").glob("*original*.parquet"))).to_pydict()
    assert scores["score"] == pytest.approx(per_pair.tolist(), abs=1e-6)  # pair for pair, in the pairs file's order


def test_an_identity_curve_scores_the_decoded_development_probes_at_each_point(taught: Path, tmp_path: Path) -> None:
    from cdfv.eval.development import DecodedPairs
    from cdfv.eval.protocol import Pair
    from cdfv.trainer.codec_curve import Curve, read_curve
    from cdfv.trainer.codec_train import CodecTrainConfig, train_codec

    keys = sorted(s["__key__"] for s in open_shard_set("faces", taught).samples(("json",)))
    pairs = [Pair(i, -1, a, b, a.split("__")[0] == b.split("__")[0]) for i, (a, b) in enumerate(zip(keys, keys[1:] + keys[:1]))]
    scorer = DecodedPairs(pairs, open_shard_set("faces", taught), load_face_model("dlib"))
    cfg = CodecTrainConfig(shards="faces-dlib", root=str(taught), out=str(tmp_path / "curve" / "run"), untrained=True,
                           eb_init_scale=0.1, batch_size=4, max_steps=2, workers=0, progress=False, identity_weight=5.0)
    train_codec(cfg, Curve(tmp_path / "curve", cfg, [], every=2, total=2, header={}, pairs=scorer))
    [row] = read_curve(tmp_path / "curve" / "curve.csv")
    assert row["step"] == 2 and 0 <= row["dlib_tar_at_far_1e-2"] <= 1 and 0 <= row["dlib_auc"] <= 1 and row["bpp"] > 0
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 0


def test_the_rate_steer_raises_the_rate_weight_above_its_target_and_lowers_it_below() -> None:
    from cdfv.trainer.codec_train import RateSteer

    steer = RateSteer(0.12)
    for _ in range(35):
        steer.update(0.132)  # 10 % above
    assert steer.weight == pytest.approx(2.0, rel=0.02)
    slow = RateSteer(0.12, gain=0.05)
    for _ in range(140):
        slow.update(0.132)
    assert slow.weight == pytest.approx(2.0, rel=0.02)
    with pytest.raises(ValueError, match="--rate-gain 0: must be a positive number"):
        RateSteer(0.12, gain=0)
    for _ in range(2000):
        steer.update(0.06)
    assert steer.weight == 0.01  # clamped
    for target in (0, -0.1, float("nan"), float("inf")):  # nan would hold the weight at its floor without a word
        with pytest.raises(ValueError, match="must be a positive number of bits per pixel"):
            RateSteer(target)


@pytest.mark.parametrize("extra, message", [
    (("--id-weight", "nan"), "--id-weight nan: a loss weight must be a finite number, 0 or more"),
    (("--id-weight", "inf"), "--id-weight inf: a loss weight must be"),
    (("--id-weight", "-1"), "--id-weight -1: a loss weight must be"),
    (("--id-weight", "1", "--id-map", "level2", "--id-map-weight", "-2"), "--id-map-weight -2: a loss weight must be"),
    (("--student-weight", "-1"), "--student-weight -1: a loss weight must be"),
    (("--id-map-weight", "3"), "give --id-weight too"),  # a weight of a term the run does not have
    (("--student-weight", "2"), "--student-weight weighs a student's loss: give --student too"),
    (("--freeze-student",), "--freeze-student keeps a student as trained: give --student too"),
])
def test_codec_training_refuses_loss_weights_it_cannot_mean(taught: Path, tmp_path: Path, extra: tuple[str, ...],
                                                            message: str) -> None:
    """A negative weight rewards a worse identity or map; a weight without its term was ignored."""
    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--max-steps", "1", *extra,
                         "--out", tmp_path / "refused")
    assert code == 2 and message in output, output
    assert not (tmp_path / "refused" / "codec.pt").exists()


def test_codec_training_at_a_rate_target_records_the_rate_weight(taught: Path, tmp_path: Path) -> None:
    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--batch-size", "4", "--max-steps", "2",
                         "--id-weight", "5", "--rate-target", "0.05", "--out", tmp_path / "run")
    assert code == 0, output
    record = json.loads((tmp_path / "run" / "codec-metrics.jsonl").read_text().splitlines()[0])
    assert record["rate_weight"] == 1.0
    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--max-steps", "1", "--patch", "128",
                         "--rate-target", "0.05", "--out", tmp_path / "refused")
    assert code == 2 and "--patch trains on crops" in output, output


def test_a_resumed_codec_run_takes_a_rate_target_and_refuses_a_student_joining_it(taught: Path, tmp_path: Path) -> None:
    """--allow-change lets a resume add a rate target (its weight starts at 1, as a new run's) but
    not a student, whose steps the checkpoint's optimiser never held; both raised a traceback."""
    run = ("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--batch-size", "4", "--id-weight", "1",
           "--out", tmp_path / "run")
    code, output = train(*run, "--max-steps", "1")
    assert code == 0, output
    code, output = train(*run, "--max-steps", "2", "--rate-target", "0.05", "--resume", "--allow-change", "rate_target,max_steps")
    assert code == 0, output
    state = torch.load(tmp_path / "run" / "codec-checkpoint.pt", weights_only=True)
    assert state["rate_weight"] != 1.0 and state["rate_measure"] == "coded"
    old_steer = tmp_path / "old-steer"  # a run from when the steer held the noisy estimate: its weight means another thing
    old_steer.mkdir()
    torch.save({**{k: v for k, v in state.items() if k != "rate_measure"}, "config": {**state["config"], "out": str(old_steer)}},
               old_steer / "codec-checkpoint.pt")
    code, output = train(*run[:-1], old_steer, "--max-steps", "3", "--rate-target", "0.05", "--resume",
                         "--allow-change", "max_steps")
    assert code == 2 and "held on the training loss's noisy estimate" in output and "start a new --out" in output, output
    save_level2_student(tmp_path / "student.pt")
    code, output = train(*run, "--max-steps", "3", "--rate-target", "0.05", "--student", tmp_path / "student.pt",
                         "--variant", "id", "--resume", "--allow-change", "max_steps,student,variant")
    assert code == 2 and "the run trained without a student; one cannot join or leave a run midway" in output, output


def test_an_identity_codec_is_a_codec_of_its_own_in_sets_runs_and_reports(taught: Path, tmp_path: Path) -> None:
    """Its weights file names its variant; cdfv-prep files its sets under it and cdfv-eval its runs,
    so they never merge with the plain codec's."""
    from cdfv.eval.cli import main as evaluate
    from cdfv.pipeline.codecs import CodecSpec, with_variant
    from cdfv.pipeline.naming import set_name

    code, output = train("--shards", "faces-dlib", "--root", taught, "--untrained-codec", "--eb-init-scale", "0.1", "--batch-size",
                         "4", "--max-steps", "1", "--id-weight", "5", "--out", tmp_path / "id")
    assert code == 0, output
    spec = with_variant(CodecSpec("bmshj2018-hyperprior", 1), tmp_path / "id" / "codec.pt")
    assert spec.variant == "id" and spec.label == "bmshj2018-hyperprior-mse-id-q1" and set_name("latents", spec) == "latents-id-q1"
    assert set_name("decoded", CodecSpec("cheng2020-attn", 2, variant="joint")) == "decoded-cheng2020-attn-mse-joint-q2"
    with pytest.raises(ValueError, match="codec variant"):
        CodecSpec("bmshj2018-hyperprior", 1, variant="Id Codec")
    invoke_ok("run", "--input", "faces", "--quality", "1", "--weights", tmp_path / "id" / "codec.pt", "--outputs",
              "latents,decoded", "--device", "cpu", "--out", taught)
    decoded = open_shard_set("decoded-id-q1", taught)
    assert decoded.meta["codec"]["variant"] == "id" and open_shard_set("latents-id-q1", taught).num_samples == decoded.num_samples
    keys = sorted(s["__key__"] for s in decoded.samples(("json",)))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("probe,reference,label\n" + "".join(f"{a},{b},{int(a[:5] == b[:5])}\n" for a, b in zip(keys, keys[1:])))
    result = CliRunner().invoke(evaluate, ["run", "--pairs", pairs, "--root", taught, "--faces", "faces", "--image-model", "dlib",
                                           "--decoded", "decoded-id-q1", "--no-original", "--device", "cpu", "--bootstrap", "0",
                                           "--out", tmp_path / "eval"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval" / "scores" / "dlib-resnet-v1_bmshj2018-hyperprior-mse-id_q1.parquet").is_file()
    training = torch.load(tmp_path / "id" / "codec.pt", weights_only=True)["training"]
    assert training["identity"]["weight"] == 5 and training["steps"] == 1 and training["shards"] == "faces-dlib"


def test_a_latent_model_matches_a_renamed_copy_of_its_codec_but_not_another_variant() -> None:
    from cdfv.eval.facemodels import same_latents

    trained = {"name": "bmshj2018-hyperprior", "metric": "mse", "quality": 1, "weights": "file:codec.pt:sha256-abc"}
    assert same_latents(trained, {**trained, "weights": "file:codec-q1-copy.pt:sha256-abc"})
    assert not same_latents(trained, {**trained, "weights": "file:codec.pt:sha256-abd"})
    assert not same_latents(trained, {**trained, "variant": "id"})
    assert same_latents({**trained, "variant": "id"}, {**trained, "variant": "id"})
