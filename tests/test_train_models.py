"""Model shapes, MAC counts against thesis Table 7, the export file, VGGFace2 weight loading."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cdfv.trainer.export import export_untrained, load_embedding_model, save_embedding_model, embedding_info
from cdfv.trainer.macs import count_macs
from cdfv.trainer.models import build_model
from cdfv.trainer.vggface2_weights import load_vggface2_weights


@pytest.mark.parametrize("m", [128, 192, 320])
def test_latent_model_shapes(m: int) -> None:
    x = torch.randn(2, m, 14, 14)
    for arch in ("cresnet39", "cresnet50"):
        assert build_model(arch, in_channels=m, width=8)(x).shape == (2, 2048)
        assert build_model(arch, in_channels=m, num_classes=11, width=8)(x).shape == (2, 11)


def test_resnet50_shapes_and_caffe_layout() -> None:
    model = build_model("resnet50", num_classes=8631, width=8)
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 8631)
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert model.maxpool.ceil_mode and model.maxpool.padding == 0


@pytest.mark.parametrize("arch,shape,gmac", [
    ("resnet50", (3, 224, 224), 3.89), ("cresnet39", (192, 14, 14), 2.36), ("cresnet39", (320, 14, 14), 2.38),
])
def test_gmacs_match_thesis_table7(arch: str, shape: tuple[int, ...], gmac: float) -> None:
    model = build_model(arch, in_channels=shape[0] if arch != "resnet50" else None)
    assert count_macs(model, shape) / 1e9 == pytest.approx(gmac, rel=0.02)


def test_count_macs_charges_transposed_conv_at_output() -> None:
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 2, 5, stride=2, padding=2, output_padding=1), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 16 * 16, 3))
    assert count_macs(net, (4, 8, 8)) == 16 * 16 * 2 * 4 * 25 + 512 * 3


def test_export_roundtrip_raw_inputs(tmp_path) -> None:
    model = build_model("resnet50", width=8, embedding_dim=32).eval()
    info = embedding_info(model, "resnet50", untrained=True, train_shards={"name": "faces", "meta": {}})
    save_embedding_model(tmp_path / "m.pt", model, info)
    loaded, got = load_embedding_model(tmp_path / "m.pt")
    x = torch.rand(2, 3, 224, 224) * 255
    assert not loaded.training
    assert torch.equal(loaded(x), model(x))
    assert got["input_kind"] == "image" and got["input_size"] == 224 and got["embedding_dim"] == 32
    # the RGB mean lives inside the module: a mean-coloured image gives the same output as zeros in
    # a model without normalisation
    assert torch.allclose(loaded.normalize(torch.tensor([131.0912, 103.8827, 91.4953]).view(1, 3, 1, 1)), torch.zeros(1, 3, 1, 1))


def test_untrained_export_and_foreign_file(tmp_path) -> None:
    info = export_untrained(tmp_path / "u.pt", "cresnet39", in_channels=320, width=8)
    model, got = load_embedding_model(tmp_path / "u.pt")
    assert got == info and got["untrained"] is True and got["in_channels"] == 320
    assert model(torch.randn(1, 320, 14, 14)).shape == (1, 2048)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a cdfv-model file"):
        load_embedding_model(tmp_path / "other.pt")


def test_vggface2_pickle_loads_with_bgr_flip(tmp_path) -> None:
    source = build_model("resnet50", num_classes=8631, width=8)
    weights = {k: v.numpy().copy() for k, v in source.state_dict().items()
               if not k.startswith("normalize") and not k.endswith("num_batches_tracked")}
    with open(tmp_path / "resnet50_ft_weight.pkl", "wb") as f:
        pickle.dump(weights, f, protocol=2)
    target = build_model("resnet50", num_classes=8631, width=8)
    loaded = load_vggface2_weights(target, tmp_path / "resnet50_ft_weight.pkl")
    assert "layer1.0.downsample.0.weight" in loaded and "fc.weight" in loaded
    assert torch.equal(target.conv1.weight, source.conv1.weight.flip(1))  # BGR file, RGB model
    assert torch.equal(target.layer4[2].bn3.running_var, source.layer4[2].bn3.running_var)
    c50 = build_model("cresnet50", in_channels=192, width=8)
    names = load_vggface2_weights(c50, tmp_path / "resnet50_ft_weight.pkl", include_fc=False)
    assert not any(n.startswith(("conv1", "bn1", "fc")) for n in names)
    assert torch.equal(c50.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert np.array_equal(c50.layer1[0].conv1.weight.detach().numpy(), weights["layer1.0.conv1.weight"])


def test_cli_untrained_export_and_clear_error(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from cdfv.trainer.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["--untrained", "--arch", "cresnet39", "--in-channels", "192", "--width", "8",
                                  "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert load_embedding_model(tmp_path / "demo" / "model.pt")[1]["untrained"] is True
    monkeypatch.setenv("CDFV_SHARDS", str(tmp_path))
    result = runner.invoke(main, ["--shards", "latents-q6", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "no shard set 'latents-q6'" in result.output
