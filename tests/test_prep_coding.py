"""Learned-codec coding with small untrained codecs on real LFW faces: real bitstreams equal to
CompressAI's own, entropy-decoded latents equal to the encoder's, storage dtypes and crops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cdfv.pipeline.align import prealigned
from cdfv.pipeline.codecs import CodecSpec, WeightsUnavailable, load_codec, save_codec
from cdfv.pipeline.coding import CodecEngine, crop_latent, pad_face, store_latent, to_tensor, unpad_face
from cdfv.pipeline.images import read_image

from prep_helpers import untrained_codec, view1_images


@pytest.fixture(scope="module")
def faces(lfw_root, lfw_meta):
    """Three real 224x224 faces (LFW pictures resized and padded) as 256x256 codec inputs."""
    return [pad_face(prealigned(read_image(p))[0]) for p in view1_images(lfw_root, lfw_meta, 3)]


@pytest.fixture(scope="module")
def bmshj():
    return untrained_codec()


def test_entropy_decoded_latent_equals_the_fast_path(bmshj, faces):
    encoded = bmshj.engine.encode(faces)
    decoded = bmshj.engine.entropy_decode([(e.strings, e.shape) for e in encoded])
    assert decoded.shape == (3, 192, 16, 16)
    for e, y in zip(encoded, decoded):
        assert e.y_hat.shape == (192, 16, 16)
        np.testing.assert_array_equal(y, e.y_hat)
        assert np.array_equal(np.round(y), y)  # bmshj2018: y_hat = round(y)


def test_bitstreams_equal_compressai_compress(bmshj, faces):
    encoded = bmshj.engine.encode(faces)
    with torch.inference_mode():
        reference = bmshj.engine.model.compress(to_tensor(faces, torch.device("cpu")))
    y_strings, z_strings = reference["strings"]
    assert [e.strings for e in encoded] == [[y, z] for y, z in zip(y_strings, z_strings)]
    assert all(e.shape == tuple(reference["shape"]) for e in encoded)


def test_reconstruction_equals_compressai_decompress(bmshj, faces):
    encoded = bmshj.engine.encode(faces[:2])
    y_hat = bmshj.engine.entropy_decode([(e.strings, e.shape) for e in encoded])
    pictures = bmshj.engine.reconstruct(y_hat)
    with torch.inference_mode():
        x_hat = bmshj.engine.model.decompress([[e.strings[0] for e in encoded], [e.strings[1] for e in encoded]], encoded[0].shape)["x_hat"]
    expected = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert pictures[0].shape == (256, 256, 3) and pictures[0].dtype == np.uint8
    np.testing.assert_array_equal(np.stack(pictures), expected)
    assert unpad_face(pictures[0]).shape == (224, 224, 3)


def test_untrained_codecs_are_reproducible_from_their_seed():
    a, id_a = load_codec(CodecSpec("bmshj2018-hyperprior", 1), untrained=True, seed=0)
    b, _ = load_codec(CodecSpec("bmshj2018-hyperprior", 1), untrained=True, seed=0)
    c, id_c = load_codec(CodecSpec("bmshj2018-hyperprior", 1), untrained=True, seed=1)
    assert (id_a, id_c) == ("untrained:seed0", "untrained:seed1")
    w = "g_a.0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_store_latent_is_int16_for_bmshj_and_refuses_lossy_casts():
    spec = CodecSpec("bmshj2018-hyperprior", 1)
    y = np.array([[[1.0, -3.0], [0.0, 250.0]]], np.float32)
    stored = store_latent(y, spec)
    assert stored.dtype == np.int16 and stored.tolist() == [[[1, -3], [0, 250]]]
    with pytest.raises(ValueError, match="not int16-representable"):
        store_latent(y + 0.5, spec)
    with pytest.raises(ValueError, match="not int16-representable"):
        store_latent(np.full((1, 1, 1), 40000.0, np.float32), spec)
    assert store_latent(y + 0.25, CodecSpec("cheng2020-attn", 1)).dtype == np.float32


def test_crop_latent_takes_the_centre():
    y = np.arange(2 * 16 * 16).reshape(2, 16, 16)
    crop, box = crop_latent(y)
    assert crop.shape == (2, 14, 14) and box == [1, 1, 14, 14]
    np.testing.assert_array_equal(crop, y[:, 1:15, 1:15])
    full, box = crop_latent(y, None)
    assert full.shape == (2, 16, 16) and box == [0, 0, 16, 16]
    with pytest.raises(ValueError, match="cannot crop a 16x16 latent to 20x20"):
        crop_latent(y, 20)


def test_pad_face_places_the_face_in_the_middle_of_256():
    face = np.full((224, 224, 3), 9, np.uint8)
    padded = pad_face(face)
    assert padded.shape == (256, 256, 3)
    assert (padded[16:240, 16:240] == 9).all() and padded[:16].sum() == 0 and padded[:, 240:].sum() == 0
    np.testing.assert_array_equal(unpad_face(padded), face)
    with pytest.raises(ValueError, match="faces must be 224x224, got 250x250"):
        pad_face(np.zeros((250, 250, 3), np.uint8))


def test_codec_spec_and_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="bmshj2018-hyperprior has qualities 1..8, not 9"):
        CodecSpec("bmshj2018-hyperprior", 9)
    with pytest.raises(ValueError, match="unknown codec 'jpeg'"):
        CodecSpec("jpeg", 1)
    spec = CodecSpec("bmshj2018-hyperprior", 1)
    with pytest.raises(ValueError, match="exclude each other"):
        load_codec(spec, weights=tmp_path / "w.pth", untrained=True)
    with pytest.raises(FileNotFoundError, match="w.pth: no such file"):
        load_codec(spec, weights=tmp_path / "w.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailable, match="--weights FILE"):
        load_codec(spec)


def test_saved_codec_loads_back_with_a_file_weights_id(tmp_path, bmshj, faces):
    path = tmp_path / "codec.pth"
    save_codec(path, bmshj.engine.model, bmshj.spec)
    model, weights_id = load_codec(bmshj.spec, weights=path)
    assert weights_id.startswith("file:codec.pth:sha256-")
    with torch.inference_mode():
        x = to_tensor(faces[:1], torch.device("cpu"))
        assert model.compress(x)["strings"] == bmshj.engine.model.compress(x)["strings"]
    with pytest.raises(ValueError, match="holds bmshj2018-hyperprior q1, asked for bmshj2018-hyperprior q2"):
        load_codec(CodecSpec("bmshj2018-hyperprior", 2), weights=path)


@pytest.mark.slow  # the autoregressive coder loops per latent position: about 20-50 s on two cores
def test_cheng2020_entropy_decoded_latent_drives_its_decoder(faces):
    cheng = untrained_codec("cheng2020-attn", 1)
    e = cheng.engine.encode(faces[:1])[0]
    assert e.y_hat is None  # no fast path for the autoregressive codec
    y_hat = cheng.engine.entropy_decode([(e.strings, e.shape)])
    assert y_hat.shape == (1, 128, 16, 16)
    stored = store_latent(y_hat[0], cheng.spec)
    assert stored.dtype == np.float32
    with torch.inference_mode():
        x_hat = cheng.engine.model.decompress([[e.strings[0]], [e.strings[1]]], e.shape)["x_hat"]
    expected = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(cheng.engine.reconstruct(stored[None])[0], expected[0])


@pytest.fixture(scope="module")
def lively():
    """An untrained bmshj2018 q1 whose analysis output is scaled x40: random weights give |y| < 0.5,
    which rounds to all zeros and never reaches a scale-table boundary; this one codes real symbols."""
    spec = CodecSpec("bmshj2018-hyperprior", 1)
    model, _ = load_codec(spec, untrained=True)
    with torch.no_grad():
        model.g_a[-1].weight.mul_(40.0)
        model.g_a[-1].bias.mul_(40.0)
    model.update(force=True)
    return CodecEngine(spec, model, torch.device("cpu"))


def test_non_trivial_latents_decode_exactly_whatever_the_batching(lively, faces):
    """Regression: the scale indexes once depended on the z tensor's memory layout (channels-last
    after a permute), which flipped an index and derailed the range decoder for a picture."""
    encoded = lively.encode(faces)
    fast = np.stack([e.y_hat for e in encoded])
    assert (fast != 0).mean() > 0.05 and len(np.unique(fast)) > 3
    together = lively.entropy_decode([(e.strings, e.shape) for e in encoded])
    one_by_one = np.concatenate([lively.entropy_decode([(e.strings, e.shape)]) for e in encoded])
    np.testing.assert_array_equal(together, fast)
    np.testing.assert_array_equal(one_by_one, fast)


def test_non_trivial_bitstreams_equal_compressai_per_picture(lively, faces):
    for face in faces:
        ours = lively.encode([face])[0]
        with torch.inference_mode():
            reference = lively.model.compress(to_tensor([face], torch.device("cpu")))
        assert ours.strings == [reference["strings"][0][0], reference["strings"][1][0]]


def test_scale_indexes_do_not_depend_on_memory_layout(lively, faces):
    with torch.inference_mode():
        z = lively.model.h_a(lively.model.g_a(to_tensor(faces, torch.device("cpu"))).abs())
        symbols = torch.round(z - lively.model.entropy_bottleneck._get_medians()).int().numpy()
    channels_last = np.ascontiguousarray(symbols.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert not channels_last.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(lively.scale_indexes(channels_last), lively.scale_indexes(np.ascontiguousarray(symbols)))
