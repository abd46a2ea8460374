"""The frozen MobileFaceNet landmark trunk S2D reads facial-landmark features from.

S2D (MSA-LMC/S2D, ``landmark/mobilefacenet.py``) runs a MobileFaceNet trained for 68-point landmark detection on
every normalised frame (resized bilinearly with ``align_corners=True`` to 112 x 112) and keeps its ``conv_4`` map:
128 channels at stride 8 (14 x 14). Only the layers up to ``conv_4`` are built here; the official network computes
the rest (``conv_45`` to the landmark regressor) and discards it, so the features are the same.

The module names are those of the authors' landmark file (``mobilefacenet_model_best.pth.tar``): its entries load
under this module's prefix as they are. The trunk is frozen: its weights are buffers (no gradient, no optimiser
state, still in the state dict) and its BatchNorms always use their running statistics, in ``train()`` too.
"""
from typing import Tuple

import torch
import torch.nn as nn

__all__ = ['MobileFaceNetTrunk', 'LANDMARK_STRIDE', 'LANDMARK_CHANS', 'landmark_input_size']

LANDMARK_STRIDE = 8  # conv_4's stride: three stride-2 layers
LANDMARK_CHANS = 128  # conv_4's channels


class ConvBn(nn.Module):
    """Conv (no bias), BatchNorm, then PReLU (``act=True``) or nothing (a linear bottleneck)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        self.prelu = nn.PReLU(out_chs, **dd) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expansion to ``hidden``, 3x3 depthwise conv, 1x1 linear projection; an identity
    shortcut when ``residual``."""

    def __init__(self, in_chs: int, out_chs: int, hidden: int, stride: int = 1, residual: bool = False,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.residual = residual
        self.conv = ConvBn(in_chs, hidden, **dd)
        self.conv_dw = ConvBn(hidden, hidden, 3, stride, groups=hidden, **dd)
        self.project = ConvBn(hidden, out_chs, act=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    """``depth`` residual bottlenecks at one width (the file's ``model.{i}`` keys)."""

    def __init__(self, chs: int, depth: int, hidden: int, device=None, dtype=None):
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(chs, chs, hidden, residual=True, device=device, dtype=dtype)
                                     for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _freeze_as_buffers(module: nn.Module) -> None:
    """Turn every parameter of ``module`` into a buffer of the same name (frozen weights, kept in the state dict)."""
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            del sub._parameters[name]
            sub.register_buffer(name, param.detach())


class MobileFaceNetTrunk(nn.Module):
    """MobileFaceNet up to ``conv_4``: frames ``(N, 3, H, W)`` to landmark features ``(N, 128, H / 8, W / 8)``."""

    def __init__(self, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv1 = ConvBn(3, 64, 3, 2, **dd)
        self.conv2_dw = ConvBn(64, 64, 3, groups=64, **dd)
        self.conv_23 = DepthWise(64, 64, 128, stride=2, **dd)
        self.conv_3 = Residual(64, 4, 128, **dd)
        self.conv_34 = DepthWise(64, 128, 256, stride=2, **dd)
        self.conv_4 = Residual(128, 6, 256, **dd)
        _freeze_as_buffers(self)
        self.init_weights()
        super().train(False)

    def init_weights(self) -> None:
        """The official init (Kaiming-normal convolutions, unit BatchNorms, PReLU 0.25): a stand-in until the
        authors' landmark weights are loaded."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.fill_(1.)
                    module.bias.zero_()
                    module.running_mean.zero_()
                    module.running_var.fill_(1.)
                    module.num_batches_tracked.zero_()
                elif isinstance(module, nn.PReLU):
                    module.weight.fill_(0.25)

    def train(self, mode: bool = True) -> 'MobileFaceNetTrunk':
        """Frozen: always in eval mode (BatchNorm running statistics), as the official ``model2.eval()``."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_23(self.conv2_dw(self.conv1(x)))
        return self.conv_4(self.conv_34(self.conv_3(x)))


def landmark_input_size(grid_size: Tuple[int, int]) -> Tuple[int, int]:
    """The frame size whose landmark map matches a ``grid_size`` token grid (112 for ViT-B/16's 14 x 14)."""
    return grid_size[0] * LANDMARK_STRIDE, grid_size[1] * LANDMARK_STRIDE
