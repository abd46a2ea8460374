"""The models a benchmark runs: timm names, wildcards and ``name[k=v]`` labels, and the torchvision /
transformers peers, built with random weights for a clip size."""
import ast
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from .config import NUM_CLASSES, BenchmarkError

__all__ = ['ModelSpec', 'parse_model_kwargs', 'PEER_NAMES', 'PEER_SETS', 'DFER_PEERS', 'peer_specs', 'resolve_models',
           'build_model', 'joint_twin', 'protocol_clip']


@dataclass
class ModelSpec:
    """A model to benchmark: a timm name with kwargs, or a peer from torchvision / transformers."""
    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    source: str = 'timm'
    peer: bool = False  # added by --peers: a clip it cannot take is reported and skipped, not an error

    @property
    def label(self) -> str:
        if not self.kwargs:
            return self.name
        return f'{self.name}[{",".join(f"{k}={_format_value(v)}" for k, v in self.kwargs.items())}]'


def _format_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ','.join(str(v) for v in value)
    return str(value)


def parse_model_kwargs(items: Sequence[str]) -> Dict[str, Any]:
    """Parse ``k=v`` strings: Python literals (``2``, ``0.1``, ``True``, ``(2,4,4)``), ``a,b`` lists, else strings."""
    out = {}
    for item in items:
        key, sep, text = item.partition('=')
        if not sep or not key.strip():
            raise BenchmarkError(f'--model-kwargs expects key=value items, got {item!r} (e.g. block_types=joint).')
        out[key.strip()] = _parse_value(text.strip())
    return out


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if ',' in text:
        return tuple(_parse_value(part.strip()) for part in text.split(',') if part.strip())
    return text


def _hf_builders() -> Dict[str, Callable[[int, int], nn.Module]]:
    import transformers as hf

    def build(config_cls, model_cls, **extra):
        return lambda frames, size: _HFVideo(model_cls(config_cls(
            image_size=size, num_frames=frames, num_labels=NUM_CLASSES, **extra)))

    return {
        'transformers/vivit': build(hf.VivitConfig, hf.VivitForVideoClassification),
        'transformers/videomae': build(hf.VideoMAEConfig, hf.VideoMAEForVideoClassification),
        'transformers/timesformer': build(hf.TimesformerConfig, hf.TimesformerForVideoClassification),
    }


class _HFVideo(nn.Module):
    """A transformers video classifier taking ``(B, C, T, H, W)`` like every other model here."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x.transpose(1, 2)).logits  # transformers wants (B, T, C, H, W)


TORCHVISION_PEERS = ('r3d_18', 'r2plus1d_18', 'swin3d_t')
TRANSFORMERS_PEERS = ('vivit', 'videomae', 'timesformer')
PEER_NAMES = tuple(f'torchvision/{n}' for n in TORCHVISION_PEERS) + tuple(
    f'transformers/{n}' for n in TRANSFORMERS_PEERS)
# the DFER zoo: LOGO-Former's peers with released weights (timm models); S2D counted with its landmark network
DFER_PEERS = ('former_dfer', 'mae_dfer', 'dfer_clip', 's2d')
PEER_SETS = ('all', 'dfer', 'video')


def peer_specs(peer_set: str = 'all') -> Tuple[List[ModelSpec], List[str]]:
    """The peers of ``peer_set`` ('dfer': the DFER zoo; 'video': torchvision / transformers video models; 'all'),
    random weights, and a message per peer that is missing."""
    specs, missing = [], []
    if peer_set in ('all', 'dfer'):
        for name in DFER_PEERS:
            if timm.is_model(name):
                specs.append(ModelSpec(name, peer=True))
            else:
                missing.append(f'{name}: not registered with timm (import logoformer_timm)')
    for name in PEER_NAMES if peer_set in ('all', 'video') else ():
        package = name.split('/')[0]
        try:
            __import__(package)
        except ImportError:
            missing.append(f'{name}: {package} is not installed (pip install "logoformer-timm[bench]")')
            continue
        specs.append(ModelSpec(name, source=package, peer=True))
    return specs, missing


def _split_label(label: str) -> Tuple[str, Dict[str, Any]]:
    """``name[k=v,k2=a,b]`` (the labels the harness prints) -> (name, kwargs)."""
    if not label.endswith(']') or '[' not in label:
        return label, {}
    name, inner = label[:-1].split('[', 1)
    items = []
    for piece in inner.split(','):  # a piece without '=' continues the previous value (local_window=2,4,4)
        if '=' in piece or not items:
            items.append(piece)
        else:
            items[-1] += ',' + piece
    return name, parse_model_kwargs(items)


def resolve_models(patterns: Sequence[str], model_kwargs: Optional[Dict[str, Any]] = None) -> List[ModelSpec]:
    """Registered timm names or wildcards (``logoformer_*``) and peer names, each with ``model_kwargs``.

    ``name[k=v,...]`` (as printed in the results) gives one model its own kwargs on top of ``model_kwargs``.
    """
    specs = []
    for label in patterns:
        pattern, own_kwargs = _split_label(label)
        model_kwargs_here = {**(model_kwargs or {}), **own_kwargs}
        peers = fnmatch.filter(PEER_NAMES, pattern)
        names = timm.list_models(pattern) if any(c in pattern for c in '*?[') else (
            [pattern] if pattern in timm.list_models() else [])
        if peers:
            specs += [ModelSpec(n, dict(model_kwargs_here), source=n.split('/')[0]) for n in peers]
        if names:
            specs += [ModelSpec(n, dict(model_kwargs_here)) for n in names]
        if not peers and not names:
            raise BenchmarkError(
                f'no model matches {pattern!r}: give a registered timm name or wildcard (e.g. logoformer_*) '
                f'or a peer ({", ".join(PEER_NAMES)}).')
    return specs


def build_model(spec: ModelSpec, num_frames: int, img_size: int, device: Any = 'cpu') -> nn.Module:
    """Build ``spec`` for ``num_frames`` x ``img_size`` clips with random weights on ``device``."""
    if spec.source == 'timm':
        try:
            return timm.create_model(
                spec.name, num_frames=num_frames, img_size=img_size, device=device, **spec.kwargs)
        except TypeError as e:
            raise BenchmarkError(f'cannot build {spec.label}: {e} (is it a video model taking num_frames?)') from e
        except (ValueError, RuntimeError, AssertionError) as e:  # a --model-kwargs value the model cannot take
            raise BenchmarkError(f'cannot build {spec.label}: {e}. Check its --model-kwargs.') from None
    if spec.source == 'torchvision':
        import torchvision.models.video as tv_video
        with torch.device(device):
            return getattr(tv_video, spec.name.split('/')[1])(weights=None, num_classes=NUM_CLASSES, **spec.kwargs)
    if spec.source == 'transformers':
        if spec.kwargs:
            raise BenchmarkError(f'--model-kwargs are not supported for the peer {spec.name}.')
        with torch.device(device):
            return _hf_builders()[spec.name](num_frames, img_size)
    raise BenchmarkError(f'unknown model source {spec.source!r}')


def protocol_clip(spec: ModelSpec) -> Optional[Tuple[int, int]]:
    """(frames, size) of the clip a timm model's own protocol takes (its defaults with ``spec.kwargs``); None for a
    peer from another library, which has no protocol of its own here."""
    if spec.source != 'timm':
        return None
    model = timm.create_model(spec.name, device='meta', **spec.kwargs)  # nothing is allocated
    frames, size = getattr(model, 'num_frames', None), getattr(model, 'img_size', None)
    if frames is None or size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height != width:
        raise BenchmarkError(f'{spec.label} takes {height}x{width} clips; the benchmark measures square ones.')
    return frames, height


def joint_twin(spec: ModelSpec) -> Optional[ModelSpec]:
    """The same model with ``block_types=joint`` (full space-time attention); None if it already is."""
    if spec.kwargs.get('block_types') in ('joint', ('joint',)):
        return None
    return ModelSpec(spec.name, {**spec.kwargs, 'block_types': 'joint'}, spec.source)
