"""RetinaFace with a MobileNet-0.25 backbone: a face detector with five landmarks, written for this package.

The architecture and the shipped weights are those of biubug6's Pytorch_Retinaface (MIT, ``mobilenet0.25_Final.pth``,
WIDER FACE val easy / medium / hard 90.58 / 87.94 / 73.96 % as reported in its README). Per pyramid level
(strides 8, 16, 32) the network predicts, for each of two anchors per position, a face score, four box deltas and
ten landmark deltas; :mod:`logoformer_timm.faces.detect` turns them into boxes and landmarks.

Input: ``(B, 3, H, W)`` float, BGR channel order with the per-channel mean (104, 117, 123) subtracted and no
scaling (:func:`normalize_frames`), the ``cv2.imread`` input the weights were trained on. Outputs, anchors ordered
level by level, then row, column and anchor (the order of :func:`logoformer_timm.faces.detect.anchor_priors`):
box deltas ``(B, A, 4)``, class logits ``(B, A, 2)`` (background, face) and landmark deltas ``(B, A, 10)``.
"""
import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention import rearrange  # einops, one node under torch.fx tracing

__all__ = ['RetinaFace', 'checkpoint_filter_fn', 'load_retinaface', 'normalize_frames', 'fuse_batchnorm',
           'WEIGHTS_PATH', 'BGR_MEAN']

WEIGHTS_PATH = Path(__file__).resolve().parent / 'weights' / 'retinaface_mobilenet0.25.safetensors'
BGR_MEAN = (104., 117., 123.)  # subtracted from B, G, R as in the authors' training and test code


class ConvNormAct(nn.Sequential):
    """Convolution (no bias), batch norm and an optional leaky ReLU (``negative_slope=None``: no activation)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 negative_slope: Optional[float] = 0.):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        if negative_slope is not None:
            self.act = nn.LeakyReLU(negative_slope, inplace=True)


class DepthwiseSeparable(nn.Sequential):
    """MobileNet-v1 block: 3x3 depthwise then 1x1 pointwise convolution, each with batch norm and leaky ReLU 0.1."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, stride, groups=in_chs, negative_slope=0.1)
        self.pw = ConvNormAct(in_chs, out_chs, 1, negative_slope=0.1)


class MobileNetV1(nn.Module):
    """MobileNet-v1 at width 0.25, cut into the three stages whose outputs (strides 8, 16, 32) feed the FPN."""

    def __init__(self, width: int = 8):
        super().__init__()
        w = width
        self.stage1 = nn.Sequential(
            ConvNormAct(3, w, 3, 2, negative_slope=0.1), DepthwiseSeparable(w, 2 * w),
            DepthwiseSeparable(2 * w, 4 * w, 2), DepthwiseSeparable(4 * w, 4 * w),
            DepthwiseSeparable(4 * w, 8 * w, 2), DepthwiseSeparable(8 * w, 8 * w))
        self.stage2 = nn.Sequential(
            DepthwiseSeparable(8 * w, 16 * w, 2), *[DepthwiseSeparable(16 * w, 16 * w) for _ in range(5)])
        self.stage3 = nn.Sequential(DepthwiseSeparable(16 * w, 32 * w, 2), DepthwiseSeparable(32 * w, 32 * w))
        self.out_chs = (8 * w, 16 * w, 32 * w)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        return c3, c4, self.stage3(c4)


class FPN(nn.Module):
    """Feature pyramid: 1x1 lateral projections, top-down nearest upsampling and a 3x3 merge on the two finer levels."""

    def __init__(self, in_chs: Sequence[int], out_chs: int):
        super().__init__()
        slope = 0.1 if out_chs <= 64 else 0.  # the authors' rule: leaky ReLU for narrow pyramids
        self.lateral = nn.ModuleList([ConvNormAct(c, out_chs, 1, negative_slope=slope) for c in in_chs])
        self.merge = nn.ModuleList([ConvNormAct(out_chs, out_chs, 3, negative_slope=slope) for _ in in_chs[:-1]])

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        p3, p4, p5 = [lateral(f) for lateral, f in zip(self.lateral, feats)]
        p4 = self.merge[1](p4 + F.interpolate(p5, size=p4.shape[-2:], mode='nearest'))
        p3 = self.merge[0](p3 + F.interpolate(p4, size=p3.shape[-2:], mode='nearest'))
        return p3, p4, p5


class SSH(nn.Module):
    """Single-stage context module: 3x3, 5x5 and 7x7 receptive fields (stacked 3x3 convolutions), concatenated."""

    def __init__(self, chs: int):
        super().__init__()
        slope = 0.1 if chs <= 64 else 0.
        self.conv3 = ConvNormAct(chs, chs // 2, negative_slope=None)
        self.conv5_1 = ConvNormAct(chs, chs // 4, negative_slope=slope)
        self.conv5_2 = ConvNormAct(chs // 4, chs // 4, negative_slope=None)
        self.conv7_2 = ConvNormAct(chs // 4, chs // 4, negative_slope=slope)
        self.conv7_3 = ConvNormAct(chs // 4, chs // 4, negative_slope=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.conv5_1(x)
        out = torch.cat([self.conv3(x), self.conv5_2(c5), self.conv7_3(self.conv7_2(c5))], dim=1)
        return F.relu(out)


class RetinaFace(nn.Module):
    """RetinaFace (MobileNet-0.25): backbone, FPN, one SSH per level, and 1x1 class / box / landmark heads."""

    def __init__(self, width: int = 8, fpn_chs: int = 64, num_anchors: int = 2, num_landmarks: int = 5):
        super().__init__()
        self.num_anchors = num_anchors
        self.backbone = MobileNetV1(width)
        self.fpn = FPN(self.backbone.out_chs, fpn_chs)
        self.ssh = nn.ModuleList([SSH(fpn_chs) for _ in range(3)])
        self.class_head = nn.ModuleList([nn.Conv2d(fpn_chs, num_anchors * 2, 1) for _ in range(3)])
        self.box_head = nn.ModuleList([nn.Conv2d(fpn_chs, num_anchors * 4, 1) for _ in range(3)])
        self.landmark_head = nn.ModuleList([nn.Conv2d(fpn_chs, num_anchors * 2 * num_landmarks, 1)
                                            for _ in range(3)])

    def _flatten(self, heads: nn.ModuleList, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        # channels are anchor-major (anchor, value); anchors run row, column, anchor within a level
        return torch.cat([rearrange(head(f), 'b (a c) h w -> b (h w a) c', a=self.num_anchors)
                          for head, f in zip(heads, feats)], dim=1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Box deltas ``(B, A, 4)``, class logits ``(B, A, 2)``, landmark deltas ``(B, A, 10)``."""
        feats = [ssh(f) for ssh, f in zip(self.ssh, self.fpn(self.backbone(x)))]
        return (self._flatten(self.box_head, feats), self._flatten(self.class_head, feats),
                self._flatten(self.landmark_head, feats))


def normalize_frames(frames: torch.Tensor, bgr: bool = True) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB frames (uint8 or float, 0-255) to the network's input: float32 BGR minus :data:`BGR_MEAN`.

    ``bgr=False`` keeps the RGB order (the mistake of a caller who forgets the conversion; measured, never a default).
    """
    x = frames.contiguous()
    x = x[:, [2, 1, 0]] if bgr else x  # channel order on the (small) input dtype: cheaper than a float flip
    return x.float().sub_(torch.tensor(BGR_MEAN, device=x.device).view(1, 3, 1, 1))


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode batch norm of ``model``'s :class:`ConvNormAct` into its convolution, in place (inference)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    for module in model.modules():
        if isinstance(module, ConvNormAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


# The authors' names (biubug6/Pytorch_Retinaface) to this module's, applied in order by checkpoint_filter_fn.
_RENAMES = (
    (r'^body\.', 'backbone.'),
    (r'^(backbone\.stage1\.0)\.0\.', r'\1.conv.'), (r'^(backbone\.stage1\.0)\.1\.', r'\1.bn.'),
    (r'^(backbone\.stage\d\.\d+)\.0\.', r'\1.dw.conv.'), (r'^(backbone\.stage\d\.\d+)\.1\.', r'\1.dw.bn.'),
    (r'^(backbone\.stage\d\.\d+)\.3\.', r'\1.pw.conv.'), (r'^(backbone\.stage\d\.\d+)\.4\.', r'\1.pw.bn.'),
    (r'^fpn\.output(\d)\.', lambda m: f'fpn.lateral.{int(m.group(1)) - 1}.'),
    (r'^fpn\.merge(\d)\.', lambda m: f'fpn.merge.{int(m.group(1)) - 1}.'),
    (r'^ssh(\d)\.', lambda m: f'ssh.{int(m.group(1)) - 1}.'),
    (r'\.conv3X3\.', '.conv3.'), (r'\.conv5X5_(\d)\.', r'.conv5_\1.'), (r'\.conv7[xX]7_(\d)\.', r'.conv7_\1.'),
    (r'^(fpn|ssh)(\..*)\.0\.weight$', r'\1\2.conv.weight'),
    (r'^(fpn|ssh)(\..*)\.1\.(weight|bias|running_mean|running_var|num_batches_tracked)$', r'\1\2.bn.\3'),
    (r'^ClassHead\.(\d)\.conv1x1\.', r'class_head.\1.'), (r'^BboxHead\.(\d)\.conv1x1\.', r'box_head.\1.'),
    (r'^LandmarkHead\.(\d)\.conv1x1\.', r'landmark_head.\1.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map the authors' state_dict (``body.stage1.0.0.weight``, ``ClassHead.0.conv1x1.weight``, ...) to this module."""
    if any(k.startswith('module.') for k in state_dict):  # saved from DataParallel
        state_dict = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    if not any(k.startswith(('body.', 'ClassHead.')) for k in state_dict):
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_retinaface(path: Union[str, Path, None] = None, device: Union[str, torch.device] = 'cpu') -> RetinaFace:
    """The network with the shipped weights (or a safetensors ``path``), in eval mode on ``device``."""
    from safetensors.torch import load_file
    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(f'RetinaFace weights not found at {path}: reinstall logoformer-timm '
                                f'(the file ships in the package) or pass the path of a safetensors copy')
    model = RetinaFace()
    model.load_state_dict(checkpoint_filter_fn(load_file(str(path))), strict=True)
    return model.eval().to(device)
