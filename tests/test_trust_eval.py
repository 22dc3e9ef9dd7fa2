"""cdfv-eval as an adversary and a new user meet it (issue 25): a latent model is never scored on
latents other than those it was trained on without saying so, a full disk never leaves scores of
one run beside the report of another, a report never holds a run twice, and a file that is not a
model says what it is."""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure

from cdfv import shards
from cdfv.eval.cli import main
from cdfv.eval.scores import read_scores
from cdfv.safe_load import load_torch_file
from cdfv.shards import spec as S
from cdfv.trainer.export import embedding_info, export_untrained, save_embedding_model
from cdfv.trainer.models import build_model

M = 8  # latent channels of the toy sets
KEYS = [f"id{i % 4}__img{i:03d}" for i in range(12)]
Q1 = {"name": "bmshj2018-hyperprior", "quality": 1, "metric": "mse", "weights": "file:codec-q1.pt:sha256-aaaa", "untrained": False}


def latent_set(root: Path, name: str, codec: dict, seed: int = 0) -> str:
    """A 12-sample latent set of 4 identities coded (its meta says) by `codec`."""
    writer = shards.ShardSetWriter(root / name, name)
    rng = np.random.default_rng(seed)
    writer.write(0, [{"__key__": key, S.LATENT: rng.integers(-6, 7, (M, 14, 14)).astype(np.int16), S.LABEL: i % 4,
                      S.META: {"key": key, "rate": {"bpp": 0.1 + 0.01 * codec["quality"]}}} for i, key in enumerate(KEYS)])
    shards.write_index(root / name, name, "latent", [S.LATENT, S.LABEL, S.META], [f"id{i}" for i in range(4)],
                       {"variant": "latent", "codec": codec})
    return name


def trained_model(path: Path, codec: dict, arch: str = "cresnet39") -> Path:
    """A latent model whose info says it was trained on a set coded by `codec` (as cdfv-train records it)."""
    torch.manual_seed(0)
    model = build_model(arch, in_channels=M, width=4, embedding_dim=8)
    train_shards = {"name": "latents-celeba", "directory": "/runs/latents-celeba", "kind": "latent", "num_samples": 96,
                    "meta": {"variant": "latent", "codec": codec}}
    save_embedding_model(path, model, embedding_info(model, arch, untrained=False, train_shards=train_shards))
    return path


def pairs_file(path: Path, first: int = 0) -> Path:
    rows = [f"{KEYS[i]},{KEYS[i + 4]},1" for i in range(first, first + 4)] + \
           [f"{KEYS[i]},{KEYS[i + 1]},0" for i in range(first, first + 4)]
    path.write_text("probe,reference,label\n" + "\n".join(rows) + "\n")
    return path


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def one_line_error(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """Latent sets of the model's own codec and quality, of another quality, of another codec and of
    other codec weights, and a model trained on q1 latents."""
    latent_set(tmp_path, "latents-q1", Q1)
    latent_set(tmp_path, "latents-q3", {**Q1, "quality": 3, "weights": "file:codec-q3.pt:sha256-bbbb"})
    latent_set(tmp_path, "mbt-q1", {**Q1, "name": "mbt2018-mean", "weights": "compressai-zoo:mbt2018-mean-1.pth.tar"})
    latent_set(tmp_path, "latents-q1-retrained", {**Q1, "weights": "file:codec-q1.pt:sha256-cccc"})
    latent_set(tmp_path, "latents-q1-unrecorded", {k: v for k, v in Q1.items() if k != "weights"})
    trained_model(tmp_path / "transplant-q1.pt", Q1)
    pairs_file(tmp_path / "pairs.csv")
    return tmp_path


def score(toy: Path, spec: str, *extra) -> tuple[int, str]:
    return invoke("--pairs", toy / "pairs.csv", "--root", toy, "--compressed", spec, "--bootstrap", 0, "--device", "cpu",
                  *extra, "--out", toy / "results")


# ---------------------------------------------------------------- item 1: the latents a model was trained on


@pytest.mark.parametrize("other, differs", [
    ("latents-q3", "bmshj2018-hyperprior-mse q3 latents (codec weights file:codec-q3.pt:sha256-bbbb)"),
    ("mbt-q1", "mbt2018-mean-mse q1 latents (codec weights compressai-zoo:mbt2018-mean-1.pth.tar)"),
    ("latents-q1-retrained", "bmshj2018-hyperprior-mse q1 latents (codec weights file:codec-q1.pt:sha256-cccc)"),
])
def test_a_model_on_other_latents_than_it_was_trained_on_is_refused_naming_both(toy: Path, other: str, differs: str) -> None:
    model = toy / "transplant-q1.pt"
    code, out = score(toy, f"{model}={other}")
    error = one_line_error(out)
    assert code == 1 and f"--compressed {model} was trained on bmshj2018-hyperprior-mse q1 latents (codec weights " \
                         f"file:codec-q1.pt:sha256-aaaa), but shard set '{other}' holds {differs}" in error
    assert "--allow-latent-mismatch" in error
    assert not (toy / "results" / "scores").exists() or not list((toy / "results" / "scores").iterdir())


@pytest.mark.parametrize("own", ["latents-q1", "latents-q1-unrecorded"])
def test_a_model_on_its_own_latents_is_scored(toy: Path, own: str) -> None:
    """Its codec, metric and quality, and its weights where the set records them."""
    code, out = score(toy, f"{toy / 'transplant-q1.pt'}={own}")
    assert code == 0, out
    (scores,) = (toy / "results" / "scores").glob("*.parquet")
    assert "latent_mismatch" not in read_scores(scores)[1]
    assert "other latents than trained on" not in (toy / "results" / "report" / "metrics.md").read_text()


def test_a_mismatch_the_user_means_is_recorded_and_marked_in_the_report(toy: Path) -> None:
    code, out = score(toy, f"{toy / 'transplant-q1.pt'}=latents-q3", "--allow-latent-mismatch")
    assert code == 0, out
    scores = toy / "results" / "scores" / "cresnet39_bmshj2018-hyperprior-mse_q3.parquet"
    said = read_scores(scores)[1]["latent_mismatch"]
    assert "trained on bmshj2018-hyperprior-mse q1 latents" in said and "'latents-q3' holds bmshj2018-hyperprior-mse q3" in said
    report = toy / "results" / "report"
    row = next(line for line in (report / "metrics.md").read_text().splitlines() if line.startswith("| cresnet39_"))
    assert "cresnet39_bmshj2018-hyperprior-mse_q3 (other latents than trained on)" in row
    assert f"scored with --allow-latent-mismatch: {said}" in (report / "metrics.md").read_text()
    deltas = (report / "metrics.md").read_text().split("## Bjontegaard deltas")[1]
    assert "| cresnet39 compressed bmshj2018-hyperprior-mse (other latents than trained on) |" in deltas
    bd_rows = list(csv.DictReader(io.StringIO((report / "bd.csv").read_text())))  # the tables a script reads say it too
    assert bd_rows and all(r["latent_mismatch"] == "True" for r in bd_rows)
    assert all(r["latent_mismatch"] is True for r in json.loads((report / "bd.json").read_text())["rows"])
    (entry,) = json.loads((report / "metrics.json").read_text())
    assert entry["latent_mismatch"] == said
    assert "latent_mismatch" in (report / "metrics.csv").read_text().splitlines()[0]


def test_a_latent_model_on_an_image_set_is_told_so_not_of_an_unrecorded_codec(toy: Path) -> None:
    writer = shards.ShardSetWriter(toy / "faces", "faces")
    writer.write(0, [{"__key__": key, S.IMAGE: np.zeros((224, 224, 3), np.uint8), S.META: {"key": key}} for key in KEYS])
    shards.write_index(toy / "faces", "faces", "image", [S.IMAGE, S.META], [f"id{i}" for i in range(4)], {"variant": "original"})
    code, out = score(toy, f"{toy / 'transplant-q1.pt'}=faces")
    error = one_line_error(out)
    assert code == 1 and "shard set 'faces' holds images but model" in error and "takes latents" in error, error


def test_complexity_reads_the_training_latents_through_the_same_function(toy: Path) -> None:
    """One implementation of "what latents was this model trained on" (facemodels.trained_latents)."""
    from cdfv.eval import complexity, facemodels

    assert complexity.trained_latents is facemodels.trained_latents
    info = torch.load(toy / "transplant-q1.pt", weights_only=True)["info"]
    assert facemodels.trained_latents(info) == Q1


def test_two_runs_of_one_name_are_refused_before_scoring(toy: Path) -> None:
    export_untrained(toy / "a.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8)
    export_untrained(toy / "b.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8, seed=1)
    code, out = score(toy, f"{toy / 'a.pt'}=latents-q1", "--compressed", f"{toy / 'b.pt'}=latents-q1")
    assert code == 2 and "are both run cresnet39_bmshj2018-hyperprior-mse_q1" in out
    assert str(toy / "a.pt") in out and str(toy / "b.pt") in out
    assert not list((toy / "results" / "scores").glob("*.parquet"))


# ---------------------------------------------------------------- item 4: a full disk over an earlier run


@pytest.fixture
def earlier(toy: Path) -> Path:
    """An earlier run's --out: two runs (q1, q3) on the first pairs file."""
    export_untrained(toy / "u.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8)
    code, out = score(toy, f"{toy / 'u.pt'}=latents-q1", "--compressed", f"{toy / 'u.pt'}=latents-q3")
    assert code == 0, out
    pairs_file(toy / "pairs.csv", first=2)  # the next run: another pairs file at the same path
    return toy / "results"


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file of a run's --out but its lock (which names its last holder)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".cdfv-lock"}


def leftovers(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if re.search(r"\.(tmp|old)", p.name)]


def test_a_full_disk_in_the_report_keeps_the_earlier_scores_and_report(earlier: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = earlier.parent
    before = snapshot(earlier)
    real = Figure.savefig

    def full(fig: Figure, path, **kwargs) -> None:
        if Path(path).name == "roc.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", full)
    code, out = score(toy, f"{toy / 'u.pt'}=latents-q1", "--compressed", f"{toy / 'u.pt'}=latents-q3")
    error = one_line_error(out)
    assert code == 1 and f"{earlier / 'report' / 'roc.png'}: No space left on device" in error
    assert f"{earlier / 'report'} is left as it was" in error
    assert (f"{earlier / 'scores'} is left as it was (this run's cresnet39_bmshj2018-hyperprior-mse_q1.parquet, "
            f"cresnet39_bmshj2018-hyperprior-mse_q3.parquet not kept)") in error
    assert snapshot(earlier) == before  # the earlier run whole: not new scores beside its report
    assert leftovers(earlier) == []


def test_a_full_disk_in_the_scores_keeps_the_earlier_run(earlier: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second scores file does not fit: the first, already written, is not put in place either."""
    toy = earlier.parent
    before = snapshot(earlier)
    real, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, out = score(toy, f"{toy / 'u.pt'}=latents-q1", "--compressed", f"{toy / 'u.pt'}=latents-q3")
    error = one_line_error(out)
    assert code == 1 and f"{earlier / 'scores' / 'cresnet39_bmshj2018-hyperprior-mse_q3.parquet'}: No space left on device" in error
    assert f"{earlier / 'scores'} is left as it was" in error and f"{earlier / 'report'} is left as it was" in error
    assert snapshot(earlier) == before
    assert leftovers(earlier) == []


def test_a_run_over_an_earlier_one_replaces_its_scores_and_report_together(earlier: Path) -> None:
    toy = earlier.parent
    before = snapshot(earlier)
    code, out = score(toy, f"{toy / 'u.pt'}=latents-q1", "--compressed", f"{toy / 'u.pt'}=latents-q3")
    assert code == 0, out
    after = snapshot(earlier)
    assert set(after) == set(before) and all(after[k] != before[k] for k in after if k.endswith((".parquet", "metrics.csv")))
    assert leftovers(earlier) == []


def test_a_run_on_another_pairs_file_that_would_leave_earlier_scores_beside_its_own_is_refused(earlier: Path) -> None:
    """The earlier run scored q1 and q3 on the first pairs file; this one scores q1 alone on the
    second: q3's scores would stay beside it, and `cdfv-eval report scores/*.parquet` then fails."""
    toy = earlier.parent
    before = snapshot(earlier)
    code, out = score(toy, f"{toy / 'u.pt'}=latents-q1")
    error = one_line_error(out)
    assert code == 2 and f"{earlier / 'scores'} holds an earlier run's scores of another pairs file" in error
    assert "cresnet39_bmshj2018-hyperprior-mse_q3.parquet on pairs.csv (sha256 " in error
    assert "_q1.parquet on" not in error  # the run's own file is replaced, not left
    assert snapshot(earlier) == before
    pairs_file(toy / "pairs.csv")  # the earlier pairs again: q3's scores may stay beside q1's new ones
    code, out = score(toy, f"{toy / 'u.pt'}=latents-q1")
    assert code == 0, out


def test_a_killed_runs_earlier_scores_are_put_back(earlier: Path) -> None:
    """A kill while the report was written leaves the earlier files aside: the next run puts them back first."""
    from cdfv.atomic import atomic_files

    scores = earlier / "scores"
    name = "cresnet39_bmshj2018-hyperprior-mse_q1.parquet"
    earlier_bytes = (scores / name).read_bytes()
    dead = 2 ** 22 + 12345  # above the default pid_max: no process has it
    os.rename(scores / name, scores / f".{name}.old-{dead}-0badc0de")
    (scores / name).write_bytes(b"the killed run's")
    (scores / f".other.parquet.tmp-{dead}-0badc0de").write_bytes(b"half")
    with atomic_files(scores, {}) as written:
        assert written == []
    assert (scores / name).read_bytes() == earlier_bytes and leftovers(earlier) == []


# ---------------------------------------------------------------- item 5: messages


def test_a_text_file_named_pt_says_what_it_is(toy: Path) -> None:
    fake = toy / "model.pt"
    fake.write_text("this is not a model\n")
    code, out = score(toy, f"{fake}=latents-q1")
    error = one_line_error(out)
    assert code == 1 and f"{fake}: not a cdfv-model file: a text file, not a PyTorch file" in error
    assert not re.search(r"\w+Error", error.removeprefix("Error")), error  # no internal exception's name


@pytest.mark.parametrize("content, said", [
    (b"", "the file is empty"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(64), "another kind of file, not a PyTorch file"),
    ("cut", "a damaged or truncated PyTorch file"),
], ids=["empty", "binary", "truncated"])
def test_files_torch_cannot_load_are_named_by_what_they_are(tmp_path: Path, content, said: str) -> None:
    path = tmp_path / "weights.pt"
    if content == "cut":
        torch.save({"w": torch.zeros(100)}, path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(ValueError) as failure:
        load_torch_file(path, "PyTorch weights file")
    assert str(failure.value).startswith(f"{path}: not a PyTorch weights file: {said}")
    assert not re.search(r"\w+Error", str(failure.value))


@pytest.fixture
def scored(earlier: Path) -> list[Path]:
    return sorted((earlier / "scores").glob("*.parquet"))


def test_report_refuses_one_scores_file_twice(scored: list[Path], tmp_path: Path) -> None:
    again = tmp_path / "again.parquet"
    os.symlink(scored[0], again)
    for twice in ([scored[0], scored[0]], [scored[0], again]):
        code, out = invoke("report", *twice, "--bootstrap", 0, "--out", tmp_path / "report")
        assert code == 1 and f"{twice[1]}: the same scores file as {twice[0]}, given twice" in one_line_error(out)
    assert not (tmp_path / "report").exists()


def test_report_refuses_two_models_under_one_run_name(scored: list[Path], tmp_path: Path) -> None:
    toy = scored[0].parent.parent.parent
    pairs_file(toy / "pairs.csv")  # the pairs the earlier run was scored on
    export_untrained(toy / "other.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8, seed=1)
    code, out = invoke("--pairs", toy / "pairs.csv", "--root", toy, "--compressed", f"{toy / 'other.pt'}=latents-q1",
                       "--bootstrap", 0, "--device", "cpu", "--out", tmp_path / "other")
    assert code == 0, out
    (other,) = (tmp_path / "other" / "scores").glob("*q1.parquet")
    shutil.copy(other, tmp_path / "renamed.parquet")  # a file name does not make it another run
    code, out = invoke("report", scored[0], tmp_path / "renamed.parquet", "--bootstrap", 0, "--out", tmp_path / "report")
    error = one_line_error(out)
    assert code == 1 and "run cresnet39_bmshj2018-hyperprior-mse_q1 again" in error
    assert str(scored[0]) in error and str(tmp_path / "renamed.parquet") in error


def test_the_reproduction_scores_each_student_on_the_latents_it_was_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What cdfv-reproduce would run (recorded, not run): every --compressed MODEL=SET names the
    latent set its model's cdfv-train read, and both the CelebA and the LFW latents come from one
    codec weights pattern, so cdfv-eval's latent check passes and is never needed there."""
    import cdfv.reproduction.cli as cli
    import cdfv.reproduction.plan as plan
    from cdfv.reproduction.steps import Steps

    from test_reproduce import a_data_folder

    ran: list[tuple[str, list[str]]] = []

    def record(steps: Steps, group: object, prog: str, args: list) -> None:
        argv = [str(a) for a in args]
        ran.append((prog, argv))
        Path(argv[argv.index("--out") + 1]).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(Steps, "command", record)
    monkeypatch.setattr(cli, "write_summary", lambda *args: {})
    monkeypatch.setattr(plan, "training_rate", lambda celeba, faces, weights, q: {"bpp": 0.1})  # read from latents not made here
    data = a_data_folder(tmp_path / "data")
    result = CliRunner().invoke(cli.main, ["--data", str(data), "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    trained = {argv[argv.index("--out") + 1]: argv[argv.index("--shards") + 1]
               for prog, argv in ran if prog == "cdfv-train" and "--task" not in argv}
    # a jointly trained student learns on its own codec's latents, which the codec's run codes as it trains
    trained.update({argv[argv.index("--out") + 1]: f"latents-{argv[argv.index('--variant') + 1]}-q{argv[argv.index('--quality') + 1]}"
                    for prog, argv in ran if prog == "cdfv-train" and "--student" in argv})
    coded = [argv for prog, argv in ran if prog == "cdfv-prep" and "--outputs" in argv and "latents" in argv[argv.index("--outputs") + 1]]
    mse = [argv for argv in coded if argv[argv.index("--weights") + 1].endswith("codec-q{quality}/codec.pt")]
    assert len(mse) == 2 and {"celeba", "lfw"} == {Path(argv[argv.index("--out") + 1]).name for argv in mse}  # one pattern
    assert len(coded) == 3  # and the joint codec's LFW latents, which its own student reads
    compressed = [argv[i + 1] for prog, argv in ran if prog == "cdfv-eval" for i, a in enumerate(argv) if a == "--compressed"]
    pairs = [spec.partition("=") for spec in compressed if "=" in spec]
    assert pairs and all(trained[str(Path(model).parent)] == latents for model, _, latents in pairs)
