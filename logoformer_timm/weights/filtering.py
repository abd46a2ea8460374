"""``checkpoint_filter_fn``: LOGO-Former weights adapted to a model (containers, input size, ``in_chans``, earlier
formats), or :class:`CheckpointMismatchError` when they belong to another architecture or configuration.
"""
from typing import Any, Dict, List, Tuple, Union

import torch
import torch.nn as nn
from timm.models import adapt_input_conv

from ..layers import resample_spatial_pos_embed, resample_temporal_pos_embed
from .files import check_weights, unwrap_checkpoint

__all__ = ['CheckpointMismatchError', 'check_same_architecture', 'checkpoint_filter_fn']

_CLASSIFIER_PREFIX = 'head.'


class CheckpointMismatchError(ValueError):
    """Weights whose keys or shapes do not fit the model (another architecture or configuration)."""


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Adapt a LOGO-Former checkpoint to ``model``; raise :class:`CheckpointMismatchError` if it is another architecture.

    Unwraps ``state_dict_ema`` / ``model_ema`` / ``state_dict`` / ``model`` containers and ``module.`` /
    ``_orig_mod.`` prefixes, resamples the position embeddings to the model's frames and resolution, and adapts
    ``stem.conv1`` to ``model.in_chans`` from the channel count of the weight itself. The classifier is left as
    it is: timm's loader drops it when ``num_classes`` differs.

    Earlier checkpoint formats are converted here, and only here (``tests/data/state_dict_format.json`` freezes
    the current one): the global-attention summary was a depthwise Conv3d, weight ``(C, 1, kt, kh, kw)``; it is
    now ``WindowSummary``, weight ``(C, kt*kh*kw)`` with the window taken in (t, h, w) row-major order.
    """
    state_dict = unwrap_checkpoint(state_dict)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith('.summary.weight') and torch.is_tensor(value) and value.ndim == 5:
            value = value.flatten(1)  # depthwise Conv3d (C, 1, kt, kh, kw) -> (C, kt*kh*kw)
        if key in target and torch.is_tensor(value) and value.ndim == target[key].ndim:
            if key == 'pos_embed_spatial':
                value = resample_spatial_pos_embed(value, model.grid_size[1:])
            elif key == 'pos_embed_temporal':
                value = resample_temporal_pos_embed(value, model.grid_size[0])
            elif key == 'stem.conv1.weight' and value.shape[1] != model.in_chans:
                # timm's loader adapts from the cfg's declared channels; the weight's own count is the truth
                value = adapt_input_conv(model.in_chans, value, base_chans=value.shape[1])
        out[key] = value
    check_same_architecture(out, target)
    check_weights(out, 'the weights', target)
    return out


def _shape(value: Any) -> Union[Tuple[int, ...], str]:
    return tuple(value.shape) if torch.is_tensor(value) else f'a {type(value).__name__}, not a tensor'


def check_same_architecture(
        state_dict: Dict[str, Any],
        target: Dict[str, torch.Tensor],
        model_name: str = 'LOGO-Former',
        hint: str = 'variant, embed_dim, depth, block_types, qkv_bias, mlp_ratio',
        classifier_prefix: str = _CLASSIFIER_PREFIX,
) -> None:
    """Raise :class:`CheckpointMismatchError` listing missing, unexpected and misshapen keys (the classifier aside:
    timm's loader handles another class count); ``hint`` names the constructor arguments that decide the keys."""
    def listing(keys: List[str]) -> str:
        return ', '.join(keys[:8]) + (f', ... ({len(keys)} in all)' if len(keys) > 8 else '')

    body = [k for k in target if not k.startswith(classifier_prefix)]
    missing = [k for k in body if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target and not k.startswith(classifier_prefix)]
    wrong_shape = [
        f'{k} {_shape(state_dict[k])} != {tuple(target[k].shape)}' for k in body
        if k in state_dict and _shape(state_dict[k]) != tuple(target[k].shape)]
    if missing or unexpected or wrong_shape:
        problems = [f'{name}: {listing(keys)}' for name, keys in (
            ('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', wrong_shape)) if keys]
        raise CheckpointMismatchError(
            f'the weights do not fit this {model_name}: ' + '; '.join(problems) + '. They belong to another '
            f'architecture or configuration: build the model they were trained as ({hint}).')
