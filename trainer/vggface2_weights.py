"""Loading cydonia999/VGGFace2-pytorch's converted Caffe ResNet50 weights.

Those files (resnet50_ft_weight.pkl, resnet50_scratch_weight.pkl) are a pickled dict of numpy
arrays named like our modules (conv1.weight, bn1.running_mean, layer1.0.downsample.0.weight,
fc.weight, ...). The Caffe model reads BGR images; our models read RGB, so the first conv's
input channels are reversed on load.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

BGR_INPUT = "conv1.weight"  # the only tensor that sees colour channels


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what a dict of numpy arrays is made of; any other global a pickle names (the
    way a pickle runs code) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a weight file holds only numpy arrays")
        return super().find_class(module, name)


def read_vggface2_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The name -> array dict of a VGGFace2-pytorch weight file (Python 2 pickle, latin1), read
    without executing anything the file might contain."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            weights = _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such weight file") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: not a VGGFace2-pytorch weight pickle ({e})") from e
    if not isinstance(weights, dict) or not all(isinstance(v, np.ndarray) for v in weights.values()):
        raise ValueError(f"{path}: expected a dict of numpy arrays")
    odd = next((name for name, v in weights.items() if v.dtype.kind not in "biuf"), None)
    if odd is not None:  # an object or string array is no weight, and torch cannot take it
        raise ValueError(f"{path}: {odd} is a numpy array of {weights[odd].dtype} values, not numbers")
    return weights


def load_vggface2_weights(model: nn.Module, path: str | Path, include_fc: bool = True) -> list[str]:
    """Copies the matching tensors into `model` and returns their names: all of ResNet50, or
    cResNet50's four stages (its stem differs, so conv1/bn1 load only when conv1's shape agrees).
    fc loads when `include_fc` and its shape agree (the same 8631-identity head)."""
    weights = read_vggface2_pickle(path)
    own = model.state_dict()
    stem_ok = BGR_INPUT in own and BGR_INPUT in weights and own[BGR_INPUT].shape == weights[BGR_INPUT].shape
    loaded = []
    for name, array in weights.items():
        if name not in own:
            continue
        if name.startswith(("conv1.", "bn1.")) and not stem_ok:
            continue
        if name.startswith("fc.") and (not include_fc or own[name].shape != array.shape):
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if name == BGR_INPUT:
            tensor = tensor.flip(1)
        if own[name].shape != tensor.shape:
            raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model wants {tuple(own[name].shape)}")
        with torch.no_grad():
            own[name].copy_(tensor)
        loaded.append(name)
    if not loaded:
        raise ValueError(f"{path}: no tensor name matches the model")
    return loaded
