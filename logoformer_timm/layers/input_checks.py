"""What LOGO-Former accepts: constructor sizes (checked before any parameter is allocated) and input clips
(:func:`check_clip`, not traced by FX), with the bounds and layouts they allow.
"""
import numbers
from typing import Any, Optional, Sequence, Tuple

import torch
from timm.layers import register_notrace_function

from .stem import STEM_STRIDE

__all__ = [
    'INPUT_LAYOUTS', 'MAX_IMG_SIZE', 'MAX_NUM_FRAMES', 'PIXEL_RANGE_WARN_ABOVE', 'check_choice', 'check_clip',
    'check_finite_pixels', 'check_heads', 'check_img_size', 'check_int']

INPUT_LAYOUTS = ('BCTHW', 'BTCHW')
MAX_NUM_FRAMES = 1024  # bounds checked before any parameter is allocated (a config.json could ask for more)
MAX_IMG_SIZE = 4096
PIXEL_RANGE_WARN_ABOVE = 10.  # a [0, 1] clip never gets here; a 0-255 one nearly always does


def check_int(name: str, value: Any, low: int, high: Optional[int] = None) -> int:
    """``value`` as an int in ``[low, high]``, else a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
            high is not None and value > high):
        bounds = f'>= {low}' if high is None else f'from {low} to {high}'
        raise ValueError(f'{name} must be an int {bounds}, got {value!r}.')
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``; else a ValueError naming the argument and the choices."""
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}.')
    return value


def check_heads(widths: Sequence[Tuple[str, int, int]]) -> None:
    """Each ``(name, width, heads)``: ``heads`` must divide the layer ``width``; else a ValueError naming it."""
    for name, width, heads in widths:
        if width % heads:
            raise ValueError(f'{name}={heads} must divide the layer width {width}.')


def check_img_size(img_size: Any) -> Tuple[int, int]:
    """``img_size`` (int or (H, W)) as ``(H, W)``: multiples of the stem stride up to ``MAX_IMG_SIZE``."""
    sizes = tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, img_size)
    if len(sizes) != 2:
        raise ValueError(f'img_size must be an int or (H, W), got {img_size!r}.')
    sizes = tuple(check_int('img_size', s, STEM_STRIDE, MAX_IMG_SIZE) for s in sizes)
    if any(s % STEM_STRIDE for s in sizes):
        raise ValueError(f'img_size {sizes} must be a multiple of the stem stride {STEM_STRIDE}.')
    return sizes


def check_finite_pixels(clips: torch.Tensor) -> None:
    """Raise a ValueError when a batch of clips holds NaN or Inf values. The commands check every batch; a model's
    ``forward`` does not (it would cost a pass over the input), so it turns such a clip into NaN logits."""
    if not bool(torch.isfinite(clips).all()):
        raise ValueError(
            'a clip holds NaN or Inf pixel values, which give meaningless predictions: check the frames, and the '
            'mean / std of the model\'s config.')


@register_notrace_function  # reason: branches on the clip's shape and dtype
def check_clip(
        x: torch.Tensor,
        in_chans: int,
        input_layout: str,
        num_frames: int,
        img_size: Tuple[int, int],
        dynamic_img_size: bool,
        param_dtype: torch.dtype,
        model_name: str = 'LogoFormer',
        value_range: str = 'RGB values in [0, 1]',
) -> None:
    """Raise a ValueError (TypeError for a dtype or a list / numpy array) naming the problem and the fix when ``x``
    is not a valid clip for ``model_name`` (which expects ``value_range``). Values are not checked (see
    :func:`check_finite_pixels`)."""
    if not torch.is_tensor(x):
        convert = 'torch.from_numpy(x)' if type(x).__module__ == 'numpy' else 'torch.tensor(x)'
        raise TypeError(
            f'{model_name} expects a torch.Tensor clip, got a {type(x).__module__}.{type(x).__qualname__}: convert '
            f'it with {convert} (then .float() / 255 for 0-255 pixels).')
    layout = input_layout
    if x.ndim != 5:
        hint = ' For a single clip add the batch dim: x.unsqueeze(0).' if x.ndim == 4 else ''
        raise ValueError(
            f'{model_name} expects a 5-D clip tensor in layout {layout} (input_layout={layout!r}), '
            f'got {x.ndim}-D shape {tuple(x.shape)}.{hint}')
    c_dim, t_dim = (1, 2) if layout == 'BCTHW' else (2, 1)
    batch, chans, frames, height, width = x.shape[0], x.shape[c_dim], x.shape[t_dim], x.shape[3], x.shape[4]
    if chans != in_chans:
        other = 'BTCHW' if layout == 'BCTHW' else 'BCTHW'
        hint = (f' The shape looks like {other}: pass input_layout={other!r} or permute the input.'
                if x.shape[t_dim] == in_chans else
                f' Build the model with in_chans={chans} to adapt the stem.')
        raise ValueError(
            f'Expected {in_chans} channels at dim {c_dim} of a {layout} clip, got shape {tuple(x.shape)}.{hint}')
    if batch == 0:
        raise ValueError(f'Empty batch: got shape {tuple(x.shape)}; pass at least one clip.')
    if frames < 1:
        raise ValueError(f'A clip needs at least one frame, got shape {tuple(x.shape)} ({layout}).')
    if height % STEM_STRIDE or width % STEM_STRIDE or height < STEM_STRIDE or width < STEM_STRIDE:
        problem = 'is smaller than' if min(height, width) < STEM_STRIDE else 'is not divisible by'
        raise ValueError(
            f'Resolution {height}x{width} {problem} the stem stride {STEM_STRIDE}; '
            f'resize the clip to a multiple of {STEM_STRIDE} (e.g. {img_size[0]}x{img_size[1]}).')
    if not dynamic_img_size and (frames, height, width) != (num_frames, *img_size):
        raise ValueError(
            f'This model was built for {num_frames} frames at {img_size[0]}x{img_size[1]}, '
            f'got {frames} frames at {height}x{width}. Build it with num_frames={frames}, '
            f'img_size=({height}, {width}), or with dynamic_img_size=True to resample the position embeddings '
            f'on the fly.')
    if not x.is_floating_point():
        raise TypeError(
            f'{model_name} expects a float clip with {value_range}, got dtype {x.dtype}. '
            f'Convert it with clip.float() / 255' + ('.' if value_range.endswith('[0, 1]') else ', then normalise it.'))
    if x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f'The clip is {x.dtype} but the model is {param_dtype}. Convert the clip with clip.to({param_dtype}), '
            f'or the model with model.to({x.dtype}), or run under torch.autocast.')
