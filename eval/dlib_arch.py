"""dlib's face-recognition network (dlib_face_recognition_resnet_model_v1) as a torch module, for
counting its multiply-accumulates: dlib's network is C++, not a torch module, so Table 7's count
needs a replica. It is built and run on the meta device only (shapes, no arithmetic, no weights).

The architecture is the one dlib's dnn_face_recognition_ex.cpp and its Python binding define: a
150x150 RGB chip; con 32 7x7 stride 2, affine, relu, max_pool 3x3 stride 2; residual levels of
3 x 32, 4 x 64, 3 x 128, 3 x 256 and 1 x 256 filters, the first block of every level after the first
downsampling (its first 3x3 con at stride 2, its shortcut a 2x2 stride-2 average pool); then
avg_pool_everything and fc_no_bias 128. Two dlib rules shape it: a con or pool pads kernel // 2 at
stride 1 and nothing at any other stride (150 -> 72 -> 35 -> 17 -> 8 -> 3 -> 1), and add_prev adds
tensors of different sizes over the larger of each dimension, the smaller zero-padded: the
shortcut's extra channels meet zeros, and where a stride-2 con and its average pool disagree
(8 -> 3 against 8 -> 4) the block's output takes the pool's 4x4. The affine layers (per-channel
scale and shift, free in the count like batch norms) are left out.

`dat_layers` reads the layer shapes that dlib serialised into the .dat file itself, so the replica
is checked against the trained network, not against a description of it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from cdfv.trainer.macs import count_macs

CHIP = 150  # side of the face chip dlib cuts and feeds its network
# (filters, residual blocks) per level, input side first; every level but the first opens downsampling
LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))
EMBEDDING_DIM = 128


@dataclass(frozen=True)
class Layer:
    """One counted or shape-setting layer as dlib serialises it: `con`, `max_pool`, `avg_pool`
    (kernel (0, 0): avg_pool_everything) or `fc`; filters/inputs are a con's output and input
    channels or an fc's outputs and inputs."""

    kind: str
    filters: int = 0
    inputs: int = 0
    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    bias: bool = False


def dlib_padding(kernel: int, stride: int) -> int:
    """dlib's default padding of con_ and the pools: kernel // 2 at stride 1, none otherwise."""
    return kernel // 2 if stride == 1 else 0


def _con(inputs: int, filters: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(inputs, filters, kernel, stride, dlib_padding(kernel, stride))


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger of each dimension, each tensor zero-padded at the end
    of its channels, rows and columns."""
    size = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, size[3] - t.shape[3], 0, size[2] - t.shape[2], 0, size[1] - t.shape[1]))

    return grow(a) + grow(b)


class Residual(nn.Module):
    """dlib's ares (downsample False) or ares_down: con 3x3 (stride 2 when downsampling), relu,
    con 3x3; plus the input, or its 2x2 stride-2 average pool; relu."""

    def __init__(self, inputs: int, filters: int, downsample: bool) -> None:
        super().__init__()
        self.con1 = _con(inputs, filters, 3, 2 if downsample else 1)
        self.con2 = _con(filters, filters, 3, 1)
        self.shortcut = nn.AvgPool2d(2, 2, dlib_padding(2, 2)) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(add_zero_padded(self.con2(F.relu(self.con1(x))), self.shortcut(x)))


class DlibResNet(nn.Module):
    """The replica (module docstring); modules are registered in dlib's serialisation order."""

    def __init__(self) -> None:
        super().__init__()
        self.con = _con(3, 32, 7, 2)
        self.max_pool = nn.MaxPool2d(3, 2, dlib_padding(3, 2))
        blocks, inputs = [], 32
        for level, (filters, count) in enumerate(LEVELS):
            for i in range(count):
                blocks.append(Residual(inputs, filters, downsample=level > 0 and i == 0))
                inputs = filters
        self.blocks = nn.Sequential(*blocks)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inputs, EMBEDDING_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.max_pool(F.relu(self.con(x))))
        return self.fc(self.avg_pool(x).flatten(1))


def replica_layers(model: DlibResNet) -> list[Layer]:
    """The replica's layers as dlib would serialise them."""
    layers = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            layers.append(Layer("con", m.out_channels, m.in_channels, m.kernel_size, m.stride, m.padding, m.bias is not None))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = m.kernel_size, m.stride, m.padding
            layers.append(Layer("max_pool" if isinstance(m, nn.MaxPool2d) else "avg_pool", kernel=(k, k), stride=(s, s), padding=(p, p)))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            layers.append(Layer("avg_pool"))  # avg_pool_everything: dlib writes a 0x0 window at stride 1
        elif isinstance(m, nn.Linear):
            layers.append(Layer("fc", m.out_features, m.in_features, bias=m.bias is not None))
    return layers


# ---------------------------------------------------------------- the .dat file

# A serialised std::string is its length (a dlib integer) then its bytes: layer details open with
# their version string, here the versions dlib has written for these layers.
_LAYER = re.compile(rb"\x01[\x04-\x0a](con_[45]|max_pool_2|avg_pool_2|fc_2)")
_INPUT = b"\x01\x15input_rgb_image_sized"


class _Reader:
    """dlib's serialisation: integers as a control byte (byte count, 0x80 if negative) then the
    bytes little-endian; floats as two integers (mantissa, exponent); tensors (version 2) as
    version, num_samples, k, nr, nc, then raw little-endian float32 values; alias tensors as
    version, num_samples, k, nr, nc."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def int(self) -> int:
        control = self.data[self.pos]
        n = control & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if control & 0x80 else value

    def ints(self, n: int) -> list[int]:
        return [self.int() for _ in range(n)]

    def tensor_size(self) -> int:
        """Skips a tensor's values; returns its element count."""
        version, *dims = self.ints(5)
        if version != 2:
            raise ValueError(f"tensor serialisation version {version}, this reader knows 2")
        size = dims[0] * dims[1] * dims[2] * dims[3]
        self.pos += 4 * size
        return size


def dat_layers(path: Path) -> tuple[int, list[Layer]]:
    """(input chip side, layers in forward order) of a dlib network file, read from the
    serialised layer details: con_ (params, filters, nr, nc, strides, paddings, the filters' alias
    tensor), the pools (nr, nc, strides, paddings) and fc_ (outputs, inputs, params)."""
    data = Path(path).read_bytes()
    start = data.find(_INPUT)
    if start < 0:
        raise ValueError(f"{path}: no input_rgb_image_sized layer: not a dlib face-recognition network file")
    reader = _Reader(data, start + len(_INPUT))
    reader.ints(6)  # the per-channel mean, three floats
    rows, cols = reader.ints(2)
    if rows != cols:
        raise ValueError(f"{path}: a {rows}x{cols} input; dlib's recognition networks take square chips")
    layers, end = [], 0
    try:
        for match in _LAYER.finditer(data):
            if match.start() < end:  # inside the last con's values
                continue
            kind = match.group(1).decode().rsplit("_", 1)[0]
            reader.pos = match.end()
            if kind == "con":
                params = reader.tensor_size()
                filters, nr, nc, sy, sx, py, px = reader.ints(7)
                _, n, k, fr, fc = reader.ints(5)
                if (n, fr, fc) != (filters, nr, nc) or params not in (n * k * fr * fc, n * k * fr * fc + n):
                    raise ValueError(f"con_ at byte {match.start()}: filters {n}x{k}x{fr}x{fc} do not fit its {params} parameters")
                layers.append(Layer("con", n, k, (nr, nc), (sy, sx), (py, px), bias=params > n * k * fr * fc))
                end = reader.pos
            elif kind in ("max_pool", "avg_pool"):
                nr, nc, sy, sx, py, px = reader.ints(6)
                layers.append(Layer(kind, kernel=(nr, nc), stride=(sy, sx), padding=(py, px)))
            else:
                outputs, inputs = reader.ints(2)
                params = reader.tensor_size()
                if params not in (outputs * inputs, outputs * (inputs + 1)):
                    raise ValueError(f"fc_ at byte {match.start()}: {params} parameters for {inputs} -> {outputs}")
                layers.append(Layer("fc", outputs, inputs, bias=params != outputs * inputs))
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: unreadable dlib layer details ({e})") from e
    return rows, layers


def check_replica(path: Path) -> None:
    """Refuses a .dat whose network is not the one the replica counts (another dlib model)."""
    chip, layers = dat_layers(path)
    with torch.device("meta"):
        expected = replica_layers(DlibResNet())
    if chip != CHIP:
        raise ValueError(f"{path}: a {chip}x{chip} input chip; the replica of dlib's ResNet takes {CHIP}x{CHIP}")
    for i, (got, want) in enumerate(zip(layers, expected)):
        if got != want:
            raise ValueError(f"{path}: layer {i} is {got}, dlib's face-recognition ResNet v1 has {want}: another network")
    if len(layers) != len(expected):
        raise ValueError(f"{path}: {len(layers)} layers, dlib's face-recognition ResNet v1 has {len(expected)}")


def descriptor_macs(path: Path) -> int:
    """MACs of dlib's descriptor on one 150x150 chip, after checking that the .dat holds the network
    the replica counts. The 5-point landmark fit and the chip extraction are not counted."""
    check_replica(path)
    with torch.device("meta"):
        model = DlibResNet()
    return count_macs(model, (3, CHIP, CHIP))
