"""The paper's three networks, each ending in a 640-d vector -> L2-normalisation -> linear.

Every model is a `ProbedNet`: an ordered list of named stages (the paper's layer names, Figure 2)
followed by the last fully connected layer. The last two stages are `embedding_raw` (the 640-d
vector) and `embedding` (that vector L2-normalised: the point on the hyper-sphere that the last
layer sees, and the vector the authors' k-NN reads as `net['embedding_layer']`). `model(x)` gives
logits; `model.features(x, layers)` gives the features of any named layers from one forward pass,
4-D maps reduced by global average pooling.

Architectures follow the authors' TensorFlow code (giladcohen/tensorflow_TB):
- mlp640: flatten -> fc 640 + ReLU = embedding_raw -> L2-normalise = embedding -> fc.
- lenet: conv 5x5x32 (same) + ReLU -> max-pool 2 -> conv 5x5x64 + ReLU -> max-pool 2 -> flatten ->
  fc 640 + ReLU = embedding_raw -> L2-normalise = embedding -> fc. Glorot-uniform initialisation.
- wrn: the TensorFlow-models CIFAR ResNet with pre-activation units (BN, leaky ReLU 0.1, 3x3 conv,
  twice), (depth-4)/6 units per group, widths 16k/32k/64k, strides 1/2/2, and where the width changes
  an average-pool + channel zero-padding shortcut (no 1x1 convolution); then BN, leaky ReLU, global
  average pooling = embedding_raw (64k = 640 dims for k = 10) -> L2-normalise = embedding -> fc.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError
from .names import EMBED_DIM as EMBED, MODELS, WRN_DEPTH_RULE, wrn_depth_ok


class L2Normalize(nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=1)


class ProbedNet(nn.Module):
    """Named stages ending in `embedding_raw` -> `embedding` (L2-normalised), then the last fully
    connected layer."""

    def __init__(self, stages: dict[str, nn.Module], embed_dim: int, num_classes: int):
        super().__init__()
        self.stages = nn.ModuleDict({**stages, "embedding": L2Normalize()})
        self.fc = nn.Linear(embed_dim, num_classes)

    @property
    def layer_names(self) -> list[str]:
        return list(self.stages.keys())

    def forward(self, x):
        for stage in self.stages.values():
            x = stage(x)
        return self.fc(x)

    def features(self, x, layers=("embedding",), logits: bool = False) -> dict[str, torch.Tensor]:
        """{layer: (B, D)} for the named layers (4-D maps globally average pooled), and
        'logits' when asked, from one forward pass."""
        layers = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in layers if n not in self.stages]
        if unknown:
            raise ConfigError(f"unknown layer {unknown[0]!r}; this model has {self.layer_names}")
        out, last = {}, (self.layer_names[-1] if logits else
                         max(layers, key=self.layer_names.index, default=None))
        for name, stage in self.stages.items():
            x = stage(x)
            if name in layers:
                out[name] = x.mean((2, 3)) if x.ndim == 4 else x
            if name == last:
                break
        if logits:
            out["logits"] = self.fc(x)
        return out


def _glorot(module: nn.Module):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def mlp640(in_shape, num_classes: int) -> ProbedNet:
    c, h, w = in_shape
    net = ProbedNet({"embedding_raw": nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, EMBED), nn.ReLU())},
                    EMBED, num_classes)
    _glorot(net)
    return net


def lenet(in_shape, num_classes: int) -> ProbedNet:
    c, h, w = in_shape
    stages = {
        "conv1": nn.Sequential(nn.Conv2d(c, 32, 5, padding=2), nn.ReLU()),
        "pool1": nn.MaxPool2d(2),
        "conv2": nn.Sequential(nn.Conv2d(32, 64, 5, padding=2), nn.ReLU()),
        "pool2": nn.MaxPool2d(2),
        "embedding_raw": nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), EMBED), nn.ReLU()),
    }
    net = ProbedNet(stages, EMBED, num_classes)
    _glorot(net)
    return net


class WideUnit(nn.Module):
    """Pre-activation residual unit (TF-models `_residual`)."""

    def __init__(self, cin: int, cout: int, stride: int, activate_before_residual: bool, slope: float):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.activate_before_residual = activate_before_residual
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.slope = slope

    def forward(self, x):
        act = F.leaky_relu(self.bn1(x), self.slope)
        shortcut = act if self.activate_before_residual else x
        y = self.conv1(act)
        y = self.conv2(F.leaky_relu(self.bn2(y), self.slope))
        if self.cin != self.cout:  # avg-pool with the unit's stride, zero-pad the new channels
            if self.stride > 1:
                shortcut = F.avg_pool2d(shortcut, self.stride, self.stride)
            pad = self.cout - self.cin
            shortcut = F.pad(shortcut, (0, 0, 0, 0, pad // 2, pad - pad // 2))
        return y + shortcut


class _Head(nn.Module):
    def __init__(self, c: int, slope: float):
        super().__init__()
        self.bn, self.slope = nn.BatchNorm2d(c), slope

    def forward(self, x):
        return F.leaky_relu(self.bn(x), self.slope).mean((2, 3))


def wrn(in_shape, num_classes: int, depth: int = 28, width: int = 10, slope: float = 0.1) -> ProbedNet:
    if not wrn_depth_ok(depth):
        raise ConfigError(f"Wide-ResNet depth must be {WRN_DEPTH_RULE}, got {depth!r}")
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"Wide-ResNet width must be a positive integer, got {width!r}")
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]
    stages = {"init_conv": nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False)}
    for g, stride in zip((1, 2, 3), (1, 2, 2)):
        for u in range(n):
            cin = widths[g - 1] if u == 0 else widths[g]
            stages[f"unit_{g}_{u}"] = WideUnit(cin, widths[g], stride if u == 0 else 1,
                                               activate_before_residual=(g == 1 and u == 0), slope=slope)
    stages["embedding_raw"] = _Head(widths[3], slope)
    net = ProbedNet(stages, widths[3], num_classes)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu", a=slope)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def build_model(name: str, in_shape, num_classes: int, **kwargs) -> ProbedNet:
    """Build 'mlp640', 'lenet' or 'wrn' (kwargs: depth, width; None = the default) for inputs (C, H, W)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    builders = {"mlp640": mlp640, "lenet": lenet, "wrn": wrn}
    if name not in builders:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if name != "wrn" and kwargs:
        raise ConfigError(f"model {name!r} takes no options, got {sorted(kwargs)}")
    return builders[name](tuple(in_shape), num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
