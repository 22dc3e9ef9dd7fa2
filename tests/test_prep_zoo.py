"""The rest of CompressAI's pretrained zoo (bmshj2018-factorized, mbt2018-mean, mbt2018,
cheng2020-anchor): names, qualities and latent channels against the models CompressAI builds, and
small untrained codecs on real LFW faces coding exactly as CompressAI's own compress/decompress."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from cdfv.pipeline import cli, rangecoding
from cdfv.pipeline.align import prealigned
from cdfv.pipeline.codecs import METRICS, ZOO, CodecSpec, load_codec
from cdfv.pipeline.coding import CodecEngine, Encoded, crop_latent, pad_face, store_latent, to_pictures, to_tensor
from cdfv.pipeline.images import read_image
from cdfv.shards import spec as S

from prep_helpers import invoke_ok, link_dataset, samples, view1_images

# M per quality as README.md's "Supported codecs" table states it.
LATENT_CHANNELS = {
    "bmshj2018-factorized": {**dict.fromkeys(range(1, 6), 192), **dict.fromkeys(range(6, 9), 320)},
    "bmshj2018-hyperprior": {**dict.fromkeys(range(1, 6), 192), **dict.fromkeys(range(6, 9), 320)},
    "mbt2018-mean": {**dict.fromkeys(range(1, 5), 192), **dict.fromkeys(range(5, 9), 320)},
    "mbt2018": {**dict.fromkeys(range(1, 5), 192), **dict.fromkeys(range(5, 9), 320)},
    "cheng2020-anchor": {**dict.fromkeys(range(1, 4), 128), **dict.fromkeys(range(4, 7), 192)},
    "cheng2020-attn": {**dict.fromkeys(range(1, 4), 128), **dict.fromkeys(range(4, 7), 192)},
}
# Small versions of the new architectures (CompressAI's constructor arguments: (N, M), or (N,) for cheng2020).
SMALL = {"bmshj2018-factorized": (8, 16), "mbt2018-mean": (8, 16), "mbt2018": (8, 16), "cheng2020-anchor": (16,)}


def test_zoo_is_compressais_pretrained_zoo():
    from compressai.zoo.image import cfgs, model_urls

    assert set(ZOO) == set(model_urls) == set(LATENT_CHANNELS)
    for name, entry in ZOO.items():
        assert entry.qualities == tuple(sorted(cfgs[name]))
        for metric in METRICS:
            assert sorted(model_urls[name][metric]) == list(entry.qualities)
            spec = CodecSpec(name, entry.qualities[-1], metric)
            assert spec.url == model_urls[name][metric][spec.quality]
            assert spec.cache_path.name == spec.url.rsplit("/", 1)[1]
    assert [n for n, e in ZOO.items() if e.integer_latent] == ["bmshj2018-hyperprior"]
    assert [n for n, e in ZOO.items() if e.autoregressive] == ["mbt2018", "cheng2020-anchor", "cheng2020-attn"]


def test_latent_channels_match_the_models_compressai_builds():
    from compressai.zoo.image import cfgs, model_architectures

    built: dict[tuple, tuple[int, int]] = {}  # qualities sharing a config share the model: build each once
    for name, entry in ZOO.items():
        for q in entry.qualities:
            key = (name, cfgs[name][q])
            if key not in built:
                model = model_architectures[name](*cfgs[name][q])
                analysis = [m for m in model.g_a.modules() if isinstance(m, nn.Conv2d)][-1]
                synthesis = next(m for m in model.g_s.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
                built[key] = analysis.out_channels, synthesis.in_channels
            assert CodecSpec(name, q).latent_channels == LATENT_CHANNELS[name][q] == built[key][0] == built[key][1], (name, q)


@pytest.mark.parametrize("name, quality, message", [
    ("bmshj2018-factorized-relu", 1, "unknown codec 'bmshj2018-factorized-relu'"),  # no published weights
    ("mbt2018", 9, "mbt2018 has qualities 1..8, not 9"),
    ("mbt2018-mean", 0, "mbt2018-mean has qualities 1..8, not 0"),
    ("bmshj2018-factorized", 9, "bmshj2018-factorized has qualities 1..8, not 9"),
    ("cheng2020-anchor", 7, "cheng2020-anchor has qualities 1..6, not 7"),
])
def test_codec_spec_refuses_what_the_zoo_lacks(name, quality, message):
    with pytest.raises(ValueError, match=message):
        CodecSpec(name, quality)


def test_weights_of_another_latent_width_are_refused(tmp_path):
    from compressai.models import FactorizedPrior

    path = tmp_path / "small.pth"
    torch.save(FactorizedPrior(8, 16).state_dict(), path)
    message = "small.pth: a codec with M = 16 latent channels, but bmshj2018-factorized q1 has M = 192"
    with pytest.raises(ValueError, match=message):
        load_codec(CodecSpec("bmshj2018-factorized", 1), weights=path)


@pytest.mark.parametrize("name", ["bmshj2018-factorized", "mbt2018-mean", "mbt2018", "cheng2020-anchor", "cheng2020-attn"])
def test_autoregressive_codecs_code_on_the_cpu_others_on_the_device(name):
    from compressai.zoo.image import model_architectures

    small = model_architectures[name](*SMALL.get(name, (8,)))
    engine = CodecEngine(CodecSpec(name, 1), small, torch.device("meta"))  # meta: where the model goes, no arithmetic
    assert engine.device_type == ("cpu" if ZOO[name].autoregressive else "meta")
    assert not engine.split and engine.pool is None


def test_only_the_scale_hyperprior_gets_coder_processes(monkeypatch):
    """Other codecs code inside CompressAI's compress/decompress: a pool would only be spawned and left idle."""
    spawned = []
    monkeypatch.setattr(rangecoding, "CoderPool", lambda *args: spawned.append(args))  # records, spawns nothing
    for name in ("bmshj2018-factorized", "mbt2018-mean", "bmshj2018-hyperprior"):
        with cli.open_codec(cli.CodecOptions(name, (1,), "mse", None, True, 0, False, "cpu", 2), 1) as codec:
            assert codec.engine.pool is None
    assert [args[1] for args in spawned] == [2]  # the scale hyperprior's, with the 2 workers asked for


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The autoregressive coders' per-position operations are tiny: on two shared cores a second
    thread only waits (10x slower seen here under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class Coded:
    """A small untrained codec, three faces coded by it and CompressAI's own results on them, once
    per module: the autoregressive coders loop per latent position (about 0.1 s to encode and
    0.6 s to decode a face even at this size)."""

    spec: CodecSpec
    engine: CodecEngine
    faces: list[np.ndarray]
    encoded: list[Encoded]
    y_hat: np.ndarray  # the engine's entropy-decoded latents of all three, decoded together
    compressed: list[dict]  # CompressAI's compress() of each face alone
    fed: list[torch.Tensor]  # the y_hat CompressAI's decompress() feeds g_s, per face
    x_hat: list[torch.Tensor]  # CompressAI's decompress() output, per face


@pytest.fixture(scope="module")
def faces(lfw_root, lfw_meta):
    """Three real 224x224 faces (LFW pictures resized and padded) as 256x256 codec inputs."""
    return [pad_face(prealigned(read_image(p))[0]) for p in view1_images(lfw_root, lfw_meta, 3)]


@pytest.fixture(scope="module", params=list(SMALL))
def coded(request, faces) -> Coded:
    """Random weights give |y| < 0.5, which rounds to all zeros: the analysis output is scaled x40
    so real symbols are coded. The factorized prior's medians start at 0; trained ones are not
    integers, so they are moved off the integers to code round(y - median) + median as trained."""
    with one_thread():
        return _code(request.param, faces)


def _code(name: str, faces: list[np.ndarray]) -> Coded:
    from compressai.zoo.image import model_architectures

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_architectures[name](*SMALL[name])
    with torch.no_grad():
        model.g_a[-1].weight.mul_(40.0)
        model.g_a[-1].bias.mul_(40.0)
        if name == "bmshj2018-factorized":
            model.entropy_bottleneck.quantiles[:, 0, 1] += torch.linspace(0.1, 0.9, model.M)
    model.update(force=True)
    spec = CodecSpec(name, 1)
    engine = CodecEngine(spec, model.eval(), torch.device("cpu"))
    encoded = engine.encode(faces)
    y_hat = engine.entropy_decode([(e.strings, e.shape) for e in encoded])
    compressed, fed, x_hat = [], [], []
    hook = model.g_s.register_forward_pre_hook(lambda _m, args: fed.append(args[0].clone()))
    try:
        with torch.inference_mode():
            for face in faces:
                compressed.append(model.compress(to_tensor([face], torch.device("cpu"))))
                x_hat.append(model.decompress(compressed[-1]["strings"], compressed[-1]["shape"])["x_hat"])
    finally:
        hook.remove()
    return Coded(spec, engine, faces, encoded, y_hat, compressed, fed, x_hat)


def test_bitstreams_equal_compressai_compress(coded):
    factorized = coded.spec.name == "bmshj2018-factorized"
    for e, reference in zip(coded.encoded, coded.compressed):
        assert e.strings == [s[0] for s in reference["strings"]]
        assert e.shape == tuple(reference["shape"]) == ((16, 16) if factorized else (4, 4))  # y grid, else z grid
        assert len(e.strings) == (1 if factorized else 2) and len(e.strings[0]) > 1000
        assert e.y_hat is None  # no fast path: y_hat comes from entropy decoding


def test_entropy_decoded_latent_is_what_decompress_feeds_the_synthesis(coded):
    y_hat = coded.y_hat
    assert y_hat.shape == (3, 16, 16, 16) and y_hat.dtype == np.float32
    np.testing.assert_array_equal(y_hat, torch.cat(coded.fed).numpy())  # decoded as a batch, equal to each alone
    with torch.inference_mode():
        y = torch.cat([coded.engine.model.g_a(to_tensor([f], torch.device("cpu"))) for f in coded.faces]).numpy()
    assert np.abs(y_hat - y).max() <= 0.5 + 1e-4  # y_hat = round(y - mu) + mu: the encoder's own y, quantised
    assert (np.abs(y_hat) > 0.5).mean() > 0.05  # real symbols, not all zeros
    assert not np.array_equal(np.round(y_hat), y_hat)  # float valued: a mean or median is added back
    if coded.spec.name == "bmshj2018-factorized":
        medians = coded.engine.model.entropy_bottleneck.quantiles[:, 0, 1].detach().numpy()[None, :, None, None]
        np.testing.assert_array_equal(y_hat, np.round(y - medians) + medians)


def test_reconstruction_equals_compressai_decompress(coded):
    for i, x_hat in enumerate(coded.x_hat):
        with one_thread():  # as decompress ran: a convolution's last bits depend on the thread count
            picture = coded.engine.reconstruct(coded.y_hat[i : i + 1])[0]
        assert picture.shape == (256, 256, 3) and picture.dtype == np.uint8
        np.testing.assert_array_equal(picture, to_pictures(x_hat)[0])


def test_latents_are_stored_as_float32_and_crop_to_14(coded):
    stored = store_latent(coded.y_hat[0], coded.spec)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, coded.y_hat[0])
    crop, box = crop_latent(stored)
    assert crop.shape == (16, 14, 14) and box == [1, 1, 14, 14]


def test_framed_bitstream_round_trips(coded):
    for e in coded.encoded:
        blob = S.pack_bitstream(e.strings, e.shape)
        strings, shape = S.unpack_bitstream(blob)
        assert (strings, shape) == (e.strings, e.shape)
        assert len(blob) == 9 + 4 * len(e.strings) + S.payload_bytes(strings)
    last = coded.encoded[-1]
    unpacked = S.unpack_bitstream(S.pack_bitstream(last.strings, last.shape))
    with one_thread():
        np.testing.assert_array_equal(coded.engine.entropy_decode([unpacked])[0], coded.y_hat[-1])


def test_run_stores_a_factorized_codecs_float_latents_and_single_string(lfw_root, lfw_meta, tmp_path):
    """The factorized prior end to end through `cdfv-prep run`: one string per face (no z), its
    y grid as the framed shape, float32 latents, sets named after the codec."""
    data = link_dataset(view1_images(lfw_root, lfw_meta, 3), tmp_path / "lfw")
    out = tmp_path / "out"
    summary = invoke_ok("run", "--dataset", "lfw", "--root", data, "--out", out, "--no-detect", "--codec", "bmshj2018-factorized",
                        "--quality", "1", "--untrained", "--device", "cpu", "--outputs", "latents,decoded", "--with-bits")
    assert summary["rejects"] == 0
    latents = samples(out / "latents-bmshj2018-factorized-mse-q1")
    assert len(latents) == 3 and len(samples(out / "decoded-bmshj2018-factorized-mse-q1")) == 3
    for s in latents:
        assert s[S.LATENT].dtype == np.float32 and s[S.LATENT].shape == (192, 14, 14)
        strings, shape = S.unpack_bitstream(s[S.BITSTREAM])
        assert len(strings) == 1 and shape == (16, 16)
        assert s[S.META]["rate"]["string_bytes"] == [len(strings[0])] and s[S.META]["codec"]["name"] == "bmshj2018-factorized"
