"""Every seed's network as data, and the builders that turn that data into layers.

Four families cover the seeds:
- `linear`: one fully connected layer (seed 000's linear model).
- `mlp`: fully connected hidden layers with ReLU and dropout (seed 000's NN).
- `convpool`: conv -> max-pool blocks, then fully connected layers (LeNet-5 of seed 001,
  seed 000's CNN, the classic PyTorch example and seed 003's own variant of it).
- `convnet`: a list of tokens, as torchvision writes VGG (seeds 002 and 004):
    16      3x3 conv to 16 channels, then ReLU, BatchNorm and dropout as switched
    16k1    the same block with a 1x1 kernel; `16p1` with padding 1 (kernel and padding combine)
    s32     a depthwise-separable block to 32 channels: a 3x3 conv per input channel, then a 1x1
            conv to 32, then ReLU, BatchNorm and dropout as a conv block (`s32p1`, `s32k5` as above);
            a 3x3 block from 32 to 32 channels costs 9*32 + 32*32 = 1,312 weights instead of 9,216,
            so a parameter budget buys wider layers
    m32     the same pair as MobileNet writes it: ReLU and BatchNorm (as the block orders them)
            after the per-channel conv too, not only after the 1x1 (`s32` has nothing between them,
            as Xception); 2 more parameters per input channel, and one more nonlinearity per block
    t8      1x1 "transition" conv to 8 channels, nothing after it
    M       2x2 max-pool
    GAP     global average pooling
    H       the head: a conv to the classes, covering the whole remaining feature map
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

import torch
from torch import nn

from hpo import schema, usermodel
from hpo.errors import ConfigError
from hpo.schema import require

MNIST_SHAPE, MNIST_CLASSES = (1, 28, 28), 10  # the defaults: what every seed trained on
BLOCKS = ("conv", "sep", "msep")  # the token kinds that are conv blocks: a conv (or a separable pair), ReLU, BatchNorm, dropout
SEPARABLE = {"s": "sep", "m": "msep"}  # token prefix -> kind
TOKEN = re.compile(r"^(?:(?P<transition>t)(?P<t_width>\d+)|(?P<separable>[sm])?(?P<width>\d+)(?:k(?P<kernel>\d+))?(?:p(?P<padding>\d+))?)$")


@dataclass(frozen=True)
class Linear:
    family: Literal["linear"] = "linear"


@dataclass(frozen=True)
class MLP:
    family: Literal["mlp"] = "mlp"
    hidden: tuple[int, ...] = (128,)
    dropout: float = 0.0  # after each hidden layer

    def __post_init__(self):
        require(all(h >= 1 for h in self.hidden), "hidden", "every hidden size must be >= 1")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ConvPool:
    family: Literal["convpool"] = "convpool"
    convs: tuple[int, ...] = (6, 16)  # output channels of each conv; each is followed by a 2x2 max-pool
    kernel: int = 5
    conv_activation: bool = True      # ReLU after each pooled conv (seed 000's CNN has none)
    conv_dropout: float = 0.0         # Dropout2d on every conv but the first (the classic example's conv2_drop)
    fc: tuple[int, ...] = (120, 84)   # hidden fully connected sizes before the 10 outputs
    dropout: float = 0.0              # after each hidden fully connected layer
    flat_dropout: float = 0.0         # Dropout on the flattened conv features, before the first fc (seed 003's net)
    fc_activation: bool = True        # ReLU after each hidden fc layer (seed 003's net has none: fc 50 is linear)

    def __post_init__(self):
        require(len(self.convs) >= 1 and all(c >= 1 for c in self.convs), "convs", "needs at least one width >= 1")
        require(self.kernel >= 1, "kernel", "must be >= 1")
        require(all(h >= 1 for h in self.fc), "fc", "every size must be >= 1")
        for key in ("conv_dropout", "dropout", "flat_dropout"):
            require(0 <= getattr(self, key) < 1, key, f"must be in [0, 1), got {getattr(self, key)}")


@dataclass(frozen=True)
class ConvNet:
    family: Literal["convnet"] = "convnet"
    layers: tuple[Union[int, str], ...] = (8, 16, "t8", "M", 16, 16, 16, "GAP", "H")
    kernel: int = 3           # default kernel of a conv block
    batchnorm: bool = True
    # conv-BN-ReLU instead of the seeds' usual conv-ReLU-BN: for every conv block, or a list with
    # one true/false per conv block in order (seed 002's MnistNet_3 mixes the two)
    bn_first: Union[bool, tuple[bool, ...]] = False
    dropout: float = 0.0      # after every conv block
    bias: bool = False

    def __post_init__(self):
        require(self.kernel >= 1, "kernel", "must be >= 1")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(len(self.layers) >= 1 and self.layers[-1] == "H", "layers", "must end with the head token H")
        convs = 0
        for i, token in enumerate(self.layers):
            kind, *_ = parse_token(token, self.kernel, f"layers.{i}")
            require(kind != "H" or i == len(self.layers) - 1, f"layers.{i}", "H (the head) must be the last token")
            convs += kind in BLOCKS
        if isinstance(self.bn_first, tuple):
            require(len(self.bn_first) == convs, "bn_first",
                    f"has {len(self.bn_first)} values but layers has {convs} conv blocks; give one true/false "
                    "per conv block (not for t, M, GAP or H), or a single true/false for all")

    def block_bn_first(self, index: int) -> bool:
        """Whether conv block `index` (counting conv blocks only) is conv-BN-ReLU."""
        return self.bn_first[index] if isinstance(self.bn_first, tuple) else self.bn_first


ModelSpec = Union[Linear, MLP, ConvPool, ConvNet, usermodel.ModuleModel]
FAMILIES: dict[str, type] = {"linear": Linear, "mlp": MLP, "convpool": ConvPool, "convnet": ConvNet}


def parse_token(token: int | str, default_kernel: int, key: str) -> tuple[str, int, int, int]:
    """(kind, width, kernel, padding) of one convnet token; kind is conv, sep, msep, t, M, GAP or H."""
    if isinstance(token, int) and not isinstance(token, bool):
        require(token >= 1, key, f"a conv width must be >= 1, got {token}")
        return "conv", token, default_kernel, 0
    if token in ("M", "GAP", "H"):
        return token, 0, 0, 0
    match = TOKEN.match(str(token))
    require(match is not None, key, f"unknown layer token {token!r}; use a width (16, 16k1, 16p1), s<width> or m<width> "
                                    "(separable, plain or MobileNet's), "
                                    "t<width>, M, GAP or H")
    if match["transition"]:
        require(int(match["t_width"]) >= 1, key, "a transition width must be >= 1")
        return "t", int(match["t_width"]), 1, 0
    width = int(match["width"])
    require(width >= 1, key, f"a conv width must be >= 1, got {token!r}")
    kind = SEPARABLE[match["separable"]] if match["separable"] else "conv"
    return kind, width, int(match["kernel"] or default_kernel), int(match["padding"] or 0)


def with_width(token: int | str, width: int) -> int | str:
    """`token` with its channel width replaced (16k1 -> 12k1, t8 -> t12): what a width search sets."""
    if isinstance(token, int):
        return width
    if isinstance(width, str) and TOKEN.fullmatch(width):  # a whole token chosen (t4, s24p1): the layer it names
        return width
    match = TOKEN.match(str(token))
    if match is None:
        raise ConfigError("", f"layer {token!r} has no width to set")
    if match["transition"]:
        return f"t{width}"
    kernel = f"k{match['kernel']}" if match["kernel"] else ""
    padding = f"p{match['padding']}" if match["padding"] else ""
    return (match["separable"] or "") + f"{width}{kernel}{padding}"


# ----------------------------------------------------------------- presets

# name -> (where it comes from, the seed's parameter count, the spec)
PRESETS: dict[str, tuple[str, int, dict]] = {
    "linear": ("seed 000 (linear regression)", 7_850, {"family": "linear"}),
    "mlp": ("seed 000 (NN, 128 hidden)", 101_770, {"family": "mlp", "hidden": [128]}),
    "cnn": ("seed 000's PyTorch script", 1_111_946,
            {"family": "convpool", "convs": [32, 64], "kernel": 5, "conv_activation": False,
             "fc": [1024], "dropout": 0.5}),
    "lenet5": ("seed 001 (Flux model-zoo LeNet-5)", 44_426,
               {"family": "convpool", "convs": [6, 16], "kernel": 5, "fc": [120, 84]}),
    "classic": ("the PyTorch MNIST example (pytorch/examples until Dec 2018)", 21_840,
                {"family": "convpool", "convs": [10, 20], "kernel": 5, "conv_dropout": 0.5,
                 "fc": [50], "dropout": 0.5}),
    "classic003": ("seed 003 (its own variant of the classic example)", 21_840,
                   {"family": "convpool", "convs": [10, 20], "kernel": 5, "flat_dropout": 0.5,
                    "fc": [50], "fc_activation": False}),
    "mnistnet1": ("seed 002 (MnistNet_1)", 8_620,
                  {"family": "convnet", "layers": [8, 16, 16, "t8", "M", 8, 8, 16, "10k1", "H"],
                   "batchnorm": False, "dropout": 0.0}),
    "mnistnet2": ("seed 002 (MnistNet_2)", 7_416,
                  {"family": "convnet", "layers": [8, 16, "t8", "M", 16, 16, 16, "GAP", "H"], "dropout": 0.05}),
    "mnistnet3": ("seed 002 (MnistNet_3)", 6_544,
                  {"family": "convnet", "layers": [8, 16, "t8", "M", 12, 16, 16, "GAP", "H"],
                   "bn_first": [True, True, False, False, False], "dropout": 0.01}),
    "netv3": ("seed 004 (NetV3)", 13_808,
              {"family": "convnet", "layers": [16, 32, "t10", "M", 16, 16, 16, "16p1", "GAP", "H"], "dropout": 0.1}),
}


def resolve(data: dict, prefix: str = "model") -> dict:
    """A model section as a full family dict: a `preset` expands, other keys override it."""
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a mapping with 'preset' or 'family', got {schema.describe(data)}")
    data = dict(data)
    if "preset" in data:
        name = data.pop("preset")
        if not isinstance(name, str) or name not in PRESETS:
            raise ConfigError(f"{prefix}.preset", f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        base = dict(PRESETS[name][2])
        if "family" in data and data["family"] != base["family"]:
            raise ConfigError(f"{prefix}.family", f"preset {name!r} is a {base['family']}, not a {data['family']}")
        data = {**base, **data}
    family = data.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ConfigError(f"{prefix}.family" if "family" in data else prefix,
                          f"unknown model family {family!r}; give a preset ({', '.join(PRESETS)}) "
                          f"or a family ({', '.join(FAMILIES)}) by its key, as in "
                          "{family: convnet, layers: [8, M, 16, GAP, H]} or {family: mlp, hidden: [128]}")
    return data


def parse_model(data: dict, prefix: str = "model") -> ModelSpec:
    if isinstance(data, dict) and "module" in data:  # the user's own factory (hpo.usermodel)
        return usermodel.parse(data, prefix)
    resolved = resolve(data, prefix)
    return schema.parse(FAMILIES[resolved["family"]], resolved, prefix)


# ----------------------------------------------------------------- shapes and builders

Shape = tuple[int, int, int]  # channels, height, width of one input image


def _convpool_sides(spec: ConvPool, h: int, w: int):
    """The feature map's (height, width) after each conv + 2x2 max-pool block."""
    for _ in spec.convs:
        h, w = (h - spec.kernel + 1) // 2, (w - spec.kernel + 1) // 2
        yield h, w


def _convnet_walk(spec: ConvNet, h: int, w: int):
    """Each convnet token parsed, with the feature map's (height, width) after it."""
    for i, token in enumerate(spec.layers):
        kind, width, kernel, padding = parse_token(token, spec.kernel, f"layers.{i}")
        if kind == "M":
            h, w = h // 2, w // 2
        elif kind == "GAP":
            h, w = 1, 1
        elif kind in BLOCKS:
            h, w = h - kernel + 1 + 2 * padding, w - kernel + 1 + 2 * padding
        yield i, token, (kind, width, kernel, padding), (h, w)


def check_shape(spec: ModelSpec, shape: Shape = MNIST_SHAPE, prefix: str = "model", *,
                classes: int = MNIST_CLASSES) -> None:
    """Raise ConfigError where `spec`'s conv stack shrinks a `shape` image to nothing.

    Apart from the dataclasses' own checks because the answer depends on the dataset."""
    _, height, width = shape
    if isinstance(spec, usermodel.ModuleModel):
        usermodel.check(spec, shape, classes, prefix)
    elif isinstance(spec, ConvPool):
        for h, w in _convpool_sides(spec, height, width):
            require(min(h, w) >= 1, f"{prefix}.convs", f"{len(spec.convs)} conv+pool blocks of kernel {spec.kernel} "
                                                       f"shrink {height}x{width} to nothing")
    elif isinstance(spec, ConvNet):
        for i, token, _, (h, w) in _convnet_walk(spec, height, width):
            require(min(h, w) >= 1, f"{prefix}.layers.{i}",
                    f"the feature map shrinks to nothing at {token!r} (input {height}x{width})")


def build(spec: ModelSpec, *, shape: Shape = MNIST_SHAPE, classes: int = MNIST_CLASSES) -> nn.Module:
    """A freshly initialized network for `spec`, taking [B, C, H, W] images of `shape` to [B, classes] logits."""
    if isinstance(spec, usermodel.ModuleModel):
        return usermodel.build(spec, shape, classes)
    check_shape(spec, shape)
    channels, height, width = shape
    if isinstance(spec, Linear):
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, classes))
    if isinstance(spec, MLP):
        return nn.Sequential(nn.Flatten(), *_dense(channels * height * width, spec.hidden, spec.dropout, classes))
    if isinstance(spec, ConvPool):
        return _convpool(spec, shape, classes)
    if isinstance(spec, ConvNet):
        return _convnet(spec, shape, classes)
    raise TypeError(f"not a model spec: {spec!r}")


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on a CPU. There `nn.Dropout` draws one random number per
    activation through a serial Bernoulli kernel: five dropout layers took 14 of the budget-8k
    net's 35 ms per step on the 2-core dev machine (BENCHMARKS.md). This draws 64 random bits per
    8 activations and drops an activation where its byte is below round(256 p): the rate moves to
    the nearest 1/256 (0.05 becomes 0.0508; below 1/512 nothing is dropped; from 0.998 on, 255/256),
    and the kept values are scaled by 256 / (256 - round(256 p)), so the expectation is unchanged.
    Elsewhere (a GPU, where the Bernoulli kernel is fast and graph-safe) and in eval mode it is
    nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu":
            return super().forward(x)
        return byte_dropout(x, self.p)


def byte_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    drop = min(round(256 * p), 255)  # a rate of 0.998 or more: 255/256, not a division by zero
    if drop == 0:
        return x
    n = x.numel()
    bits = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-2**63, None)  # every byte uniform
    keep = (bits.view(torch.uint8)[:n].view(x.shape) >= drop).to(x.dtype).mul_(256 / (256 - drop))
    return x * keep


def _dense(features: int, hidden: tuple[int, ...], dropout: float, classes: int, *,
           activation: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(features, size)] + ([nn.ReLU(inplace=True)] if activation else [])
        if dropout:
            layers.append(Dropout(dropout))
        features = size
    return layers + [nn.Linear(features, classes)]


def _convpool(spec: ConvPool, shape: Shape, classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels, h, w = shape
    for i, (width, (h, w)) in enumerate(zip(spec.convs, _convpool_sides(spec, h, w))):
        layers.append(nn.Conv2d(channels, width, spec.kernel))
        if i > 0 and spec.conv_dropout:
            layers.append(nn.Dropout2d(spec.conv_dropout))
        layers.append(nn.MaxPool2d(2))
        if spec.conv_activation:
            layers.append(nn.ReLU(inplace=True))
        channels = width
    layers.append(nn.Flatten())
    if spec.flat_dropout:
        layers.append(Dropout(spec.flat_dropout))
    return nn.Sequential(*layers, *_dense(channels * h * w, spec.fc, spec.dropout, classes,
                                          activation=spec.fc_activation))


def _convnet(spec: ConvNet, shape: Shape, classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels, h, w = shape
    conv_index = 0
    for _, _, (kind, width, kernel, padding), (h, w) in _convnet_walk(spec, h, w):
        if kind == "M":
            layers.append(nn.MaxPool2d(2))
        elif kind == "GAP":
            layers.append(nn.AdaptiveAvgPool2d(1))
        elif kind == "H":  # a conv covering the whole remaining map (H leaves the size as it was)
            layers += [nn.Conv2d(channels, classes, (h, w), bias=spec.bias), nn.Flatten()]
        elif kind == "t":
            layers.append(nn.Conv2d(channels, width, 1, bias=spec.bias))
            channels = width
        else:
            bn_first = spec.block_bn_first(conv_index)
            if kind in ("sep", "msep"):  # depthwise, then pointwise
                block = [nn.Conv2d(channels, channels, kernel, padding=padding, groups=channels, bias=spec.bias)]
                if kind == "msep":  # MobileNet: the depthwise conv's own ReLU and BatchNorm (Xception: none)
                    block += _relu_norm(channels, spec.batchnorm, bn_first)
                block.append(nn.Conv2d(channels, width, 1, bias=spec.bias))
            else:
                block = [nn.Conv2d(channels, width, kernel, padding=padding, bias=spec.bias)]
            block += _relu_norm(width, spec.batchnorm, bn_first)
            conv_index += 1
            if spec.dropout:
                block.append(Dropout(spec.dropout))
            layers += block
            channels = width
    return nn.Sequential(*layers)


def _relu_norm(channels: int, batchnorm: bool, bn_first: bool) -> list[nn.Module]:
    """What follows a conv in a block: ReLU then BatchNorm (the seeds' usual order), or BN first."""
    norm = [nn.BatchNorm2d(channels)] if batchnorm else []
    relu = [nn.ReLU(inplace=True)]
    return norm + relu if bn_first else relu + norm


def count_params(model: nn.Module) -> int:
    """Every parameter the model holds, trainable or frozen: what the budget caps and every count
    shows (a frozen layer is still part of the net's size)."""
    return sum(p.numel() for p in model.parameters())


def spec_params(spec: ModelSpec, *, shape: Shape = MNIST_SHAPE, classes: int = MNIST_CLASSES) -> int:
    """Parameter count of `spec`, built on the meta device: no memory, no initialization."""
    with torch.device("meta"):
        return count_params(build(spec, shape=shape, classes=classes))


def describe(spec: ModelSpec, *, shape: Shape = MNIST_SHAPE, classes: int = MNIST_CLASSES) -> str:
    """A short human line for a spec, e.g. 'convnet 8-16-t8-M-16-16-16-GAP-H bn drop=0.05'."""
    if isinstance(spec, usermodel.ModuleModel):
        return usermodel.describe(spec)
    inputs = shape[0] * shape[1] * shape[2]
    drop = f" drop={spec.dropout:g}" if getattr(spec, "dropout", 0) else ""
    if isinstance(spec, Linear):
        return f"linear {inputs}-{classes}"
    if isinstance(spec, MLP):
        return f"mlp {inputs}-" + "-".join(map(str, spec.hidden)) + f"-{classes}{drop}"
    if isinstance(spec, ConvPool):
        act = "" if spec.conv_activation else " (no conv ReLU)"
        linear_fc = "" if spec.fc_activation or not spec.fc else " (no fc ReLU)"
        flat = f" flat_drop={spec.flat_dropout:g}" if spec.flat_dropout else ""
        return (f"convpool {'-'.join(map(str, spec.convs))} k{spec.kernel}{act} fc "
                + "-".join(map(str, spec.fc + (classes,))) + linear_fc + flat + drop)
    return "convnet " + "-".join(map(str, spec.layers)) + (" bn" if spec.batchnorm else "") + drop
