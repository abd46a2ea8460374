"""The clip a model expects, read from its pretrained config and constructor arguments."""
from typing import Any, Dict

import torch.nn as nn

__all__ = ['resolve_video_data_config']


def resolve_video_data_config(model: nn.Module) -> Dict[str, Any]:
    """Return ``input_size`` as ``(C, T, H, W)`` plus mean, std, interpolation and label names for a LOGO-Former."""
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    return dict(
        input_size=(model.in_chans, model.num_frames, *model.img_size),
        input_layout=model.input_layout,
        mean=tuple(cfg.get('mean', (0.,) * model.in_chans)),
        std=tuple(cfg.get('std', (1.,) * model.in_chans)),
        interpolation=cfg.get('interpolation', 'bilinear'),
        crop_pct=cfg.get('crop_pct', 1.0),
        label_names=tuple(cfg.get('label_names') or ()),
    )
