"""The project's one reader of weight files: safetensors, or a torch file through ``torch.load(weights_only=True)``.

Every route that reads weights goes through here: the model loader (``logoformer-eval``, ``-predict``, ``-train
--checkpoint``), ``stem_weights=``, ``logoformer-hub export``, and the manifest's checked download. Nothing here
imports model code, so the model may import it.
"""
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from timm.models import clean_state_dict

__all__ = [
    'WeightsFileError', 'check_weights', 'file_sha256', 'read_checkpoint', 'read_safetensors', 'read_state_dict',
    'unwrap_checkpoint']

PathLike = Union[str, os.PathLike]


class WeightsFileError(RuntimeError):
    """A weight file that cannot be used: not readable (truncated, corrupt, not safetensors) or with unusable values."""


def file_sha256(path: PathLike) -> str:
    """Lowercase hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def read_safetensors(data: bytes, name: PathLike) -> Dict[str, torch.Tensor]:
    """Deserialize safetensors bytes; a corrupt or truncated file raises :class:`WeightsFileError` naming it."""
    try:
        return load_safetensors_bytes(data)
    except SafetensorError as e:
        raise WeightsFileError(f'{name} is not a readable safetensors file (truncated or corrupt?): {e}') from None


def check_weights(
        weights: Mapping[str, Any], source: PathLike, reference: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Refuse NaN / Inf values, and integer tensors where ``reference`` (the model's state dict) has floating point.

    Every loading route calls it: :func:`read_checkpoint`, the manifest loader and ``checkpoint_filter_fn``.
    Integer buffers of the model itself (BatchNorm ``num_batches_tracked``) load as they are.
    """
    def listing(keys):
        return ', '.join(keys[:6]) + (f', ... ({len(keys)} in all)' if len(keys) > 6 else '')

    tensors = {k: v for k, v in weights.items() if torch.is_tensor(v)}
    non_finite = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise WeightsFileError(
            f'{source} holds NaN or Inf values in {listing(non_finite)}; such weights give meaningless outputs. '
            f'Use a checkpoint saved before training diverged.')
    integer = [f'{k} ({v.dtype})' for k, v in tensors.items()
               if reference is not None and k in reference and reference[k].is_floating_point()
               and not (v.is_floating_point() or v.is_complex())]
    if integer:
        raise WeightsFileError(
            f'{source} holds integer tensors where the model has floating point ones: {listing(integer)}; '
            f'weights are never cast from integers, so these are not the trained values.')


def unwrap_checkpoint(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The weights inside a training checkpoint (EMA first, as timm does), without DDP / compile prefixes."""
    for container in ('state_dict_ema', 'model_ema', 'state_dict', 'model'):
        if isinstance(checkpoint.get(container), dict):
            return clean_state_dict(checkpoint[container])
    return clean_state_dict(checkpoint)


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a checkpoint file as saved (containers kept); its weights are checked for NaN / Inf on the way."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f'Checkpoint not found: {path}')
    if path.suffix == '.safetensors':
        checkpoint = read_safetensors(path.read_bytes(), path)
        check_weights(checkpoint, path)
        return checkpoint
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise WeightsFileError(
            f'{path} cannot be read as a weights-only torch checkpoint (corrupt, truncated, or it pickles objects '
            f'other than tensors and plain containers, which are never unpickled): {e}') from None
    if not isinstance(checkpoint, dict):
        raise WeightsFileError(f'{path} holds a {type(checkpoint).__name__}, not a state dict.')
    check_weights(unwrap_checkpoint(checkpoint), path)
    return checkpoint


def read_state_dict(path: PathLike) -> Dict[str, Any]:
    """The weights of a checkpoint file or model folder (its ``model.safetensors``), unwrapped (see above)."""
    if os.path.isdir(path):
        path = os.path.join(path, 'model.safetensors')
    return unwrap_checkpoint(read_checkpoint(path))
