"""The clip a model expects, read from its pretrained config and constructor arguments."""
from typing import Any, Dict

import torch.nn as nn

from .protocol import get_test_protocol

__all__ = ['resolve_video_data_config']


def resolve_video_data_config(model: nn.Module) -> Dict[str, Any]:
    """The keyword arguments of :class:`ClipTransform` for ``model`` (timm's ``resolve_data_config`` for clips).

    ``input_size`` is ``(C, T, H, W)``; the test transform defaults to the DFER protocol's resize only
    (``crop_pct=1.0, crop_mode='squash'``) where the pretrained cfg does not say otherwise. ``test_protocol`` is
    the cfg's :class:`~logoformer_timm.data.TestProtocol` (None where it names none), fitted to the model's clip:
    a model built for other frames or another size than its protocol's, or normalised by another mean / std, gets
    the protocol changed to them (and marked as not its authors').
    """
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    mean, std = tuple(cfg.get('mean', (0.,) * model.in_chans)), tuple(cfg.get('std', (1.,) * model.in_chans))
    protocol = get_test_protocol(cfg.get('test_protocol'))
    if protocol is not None:  # the model's own normalisation too: a fine-tuned model's cfg may have changed it
        protocol = protocol.fit_clip(model.num_frames, tuple(model.img_size)).replace(mean=mean, std=std)
    return dict(
        input_size=(model.in_chans, model.num_frames, *model.img_size),
        interpolation=cfg.get('interpolation') or 'bilinear',
        mean=mean,
        std=std,
        crop_pct=cfg.get('crop_pct') or 1.0,
        crop_mode=cfg.get('crop_mode') or 'squash',
        input_layout=model.input_layout,
        test_protocol=protocol,
    )
