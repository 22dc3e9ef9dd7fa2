"""Transplanted students (trainer/transplant.py): an adapter from latents to a junction of dlib's
network, dlib's own tail after it; the model file, its MAC count, and --init of cResNet39 from a
ResNet50."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cdfv.eval.complexity import model_macs
from cdfv.eval.dlib_arch import CHIP, JUNCTIONS, DlibResNet, load_dlib_resnet
from cdfv.eval.facemodels import dlib_model_files, load_face_model
from cdfv.trainer.export import embedding_info, save_embedding_model
from cdfv.trainer.macs import count_macs
from cdfv.trainer.models import build_model
from cdfv.trainer.train import load_init
from cdfv.trainer.archs import transplant_arch
from cdfv.trainer.transplant import build_transplant, sampling_grid

M = 192
# a face -> chip transform that maps the 224 face exactly onto the 150 chip
WHOLE_FACE = [[CHIP / 224, 0.0, 0.5 * CHIP / 224 - 0.5], [0.0, CHIP / 224, 0.5 * CHIP / 224 - 0.5]]


@pytest.fixture(scope="module")
def dlib_net() -> DlibResNet:
    return load_dlib_resnet(dlib_model_files()[0])


@pytest.mark.parametrize("junction", list(JUNCTIONS))
def test_each_junction_is_the_map_after_its_level_and_the_student_makes_it(dlib_net: DlibResNet, junction: str) -> None:
    channels, side = JUNCTIONS[junction]
    assert dlib_net.junction_map(torch.zeros(1, 3, CHIP, CHIP), junction).shape == (1, channels, side, side)
    student = build_transplant(M, junction, WHOLE_FACE, adapter_width=16)
    latents = torch.randn(2, M, 14, 14)
    assert student.adapter(latents).shape == (2, channels, side, side)
    assert student(latents).shape == (2, 128)
    with pytest.raises(ValueError, match="unknown junction 'level3'"):
        build_transplant(M, "level3", WHOLE_FACE)


@pytest.mark.parametrize("junction", list(JUNCTIONS))
def test_the_tail_is_dlibs_and_gives_dlibs_descriptor_from_dlibs_own_map(dlib_net: DlibResNet, junction: str) -> None:
    student = build_transplant(M, junction, WHOLE_FACE, adapter_width=16)
    student.copy_teacher(dlib_net)
    first = len(dlib_net.blocks) - len(student.tail)
    for own, theirs in zip(student.tail, dlib_net.blocks[first:], strict=True):
        for (name, a), (_, b) in zip(own.state_dict().items(), theirs.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    assert torch.equal(student.fc.weight, dlib_net.fc.weight)
    chips = torch.rand(3, 3, CHIP, CHIP, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        expected = dlib_net(chips)
        got = student.from_map(dlib_net.junction_map(chips, junction))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_the_fixed_resampling_follows_the_chip_transform() -> None:
    """Where the chip is the whole face, junction cell j's centre is at the same fraction of the
    latent as of the chip; doubling the chip's scale (the chip on the face's centre half) halves
    the span around the centre."""
    side = 17
    grid = sampling_grid(WHOLE_FACE, side)[0]
    centres = (np.arange(side) + 0.5) / side * 2 - 1
    np.testing.assert_allclose(grid[0, :, 0].numpy(), centres, atol=1e-5)  # x along a row
    np.testing.assert_allclose(grid[:, 0, 1].numpy(), centres, atol=1e-5)  # y down a column
    zoom = [[2 * CHIP / 224, 0.0, -CHIP / 2 + CHIP / 224 - 0.5], [0.0, 2 * CHIP / 224, -CHIP / 2 + CHIP / 224 - 0.5]]
    np.testing.assert_allclose(sampling_grid(zoom, side)[0, 0, :, 0].numpy(), centres / 2, atol=1e-5)


def test_a_transplant_model_file_loads_scores_and_counts_adapter_and_tail(dlib_net: DlibResNet, tmp_path: Path) -> None:
    student = build_transplant(M, "level2", WHOLE_FACE, adapter_width=16)
    student.copy_teacher(dlib_net)
    student.eval()
    path = tmp_path / "model.pt"
    save_embedding_model(path, student, embedding_info(student, transplant_arch("level2"), untrained=False, train_shards=None))
    loaded = load_face_model(path)
    assert loaded.info["arch"] == "dlib-transplant-level2" and loaded.info["input_size"] == 14 and loaded.info["embedding_dim"] == 128
    latents = np.random.default_rng(0).integers(-6, 7, (4, M, 16, 16)).astype(np.int16)  # stored 16x16: centre-cropped
    with torch.no_grad():
        expected = torch.nn.functional.normalize(student(torch.from_numpy(latents[:, :, 1:15, 1:15]).float()), dim=1)
    np.testing.assert_allclose(loaded.embed(latents, [{}] * 4), expected.numpy(), atol=1e-5)
    adapter = count_macs(student.adapter, (M, 14, 14))
    tail = count_macs(torch.nn.Sequential(*student.tail), (128, 8, 8)) + student.fc.in_features * student.fc.out_features
    assert model_macs(loaded.model, M, 14) == adapter + tail


def test_cresnet39_stages_start_from_a_resnet50_and_a_wrong_file_is_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet50", num_classes=10, width=8)
    state = resnet.state_dict()
    torch.save(state, tmp_path / "resnet50.pth")  # a plain state dict, as torchvision saves one
    student = build_model("cresnet39", in_channels=M, embedding_dim=128, width=8)
    fresh = {n: t.clone() for n, t in student.state_dict().items()}
    taken = load_init(student, "cresnet39", str(tmp_path / "resnet50.pth"))
    own = student.state_dict()
    assert {n.split(".")[0] for n in taken} == {"layer2", "layer3", "layer4"}
    for name in taken:
        assert torch.equal(own[name], state[name]), name
    for name in ("layer2.0.conv1.weight", "layer2.0.downsample.0.weight"):  # read M channels, not 256: the adapter
        assert name not in taken and torch.equal(own[name], fresh[name])
    wrong = tmp_path / "wide.pth"
    torch.save(build_model("resnet50", num_classes=10, width=16).state_dict(), wrong)
    with pytest.raises(ValueError) as refused:
        load_init(student, "cresnet39", str(wrong))
    message = str(refused.value)
    assert str(wrong) in message and "does not fit the model's trunk" in message and "\n" not in message
