"""The project's one reader of weight files: safetensors, or a torch file through ``torch.load(weights_only=True)``.

Torch files may hold, beside tensors and plain containers, the few objects that released training scripts pickled
next to their weights (``RELEASED_CHECKPOINT_GLOBALS``: a metrics recorder with numpy arrays, an
``argparse.Namespace``). torch's weights-only unpickler builds each of them as an inert :class:`PickledObject`
stand-in that keeps the decoded state and runs nothing; any other global in a file is refused, naming it.

Every route that reads weights goes through here: the model loader (``logoformer-eval``, ``-predict``, ``-train
--checkpoint``), ``stem_weights=``, ``logoformer-hub export``, and the manifest's checked download. Nothing here
imports model code, so the model may import it.
"""
import hashlib
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from timm.models import clean_state_dict

from ..cli import extra_file_flag
from ..errors import UserError

__all__ = [
    'EMA_ENTRIES', 'MODEL_ENTRIES', 'PickledObject', 'RELEASED_CHECKPOINT_GLOBALS', 'WEIGHT_DTYPES', 'WeightsFileError',
    'add_extra_weights', 'check_weights', 'checkpoint_entries', 'file_sha256', 'read_checkpoint',
    'read_safetensors', 'read_state_dict',
    'unwrap_checkpoint']

PathLike = Union[str, os.PathLike]
_logger = logging.getLogger(__name__)

# the floating dtypes weights are read in (cast to the model's exactly); integer tensors are the model's buffers
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class WeightsFileError(UserError, RuntimeError):
    """A weight file that cannot be used: not readable (truncated, corrupt, not safetensors) or with unusable values."""


class PickledObject:
    """Inert stand-in for an object a training script pickled beside its weights: it keeps the state the weights-only
    unpickler decoded (tensors, numbers, strings, containers, other stand-ins) and runs no code of the original class."""

    pickled_name: str = ''

    def __new__(cls, *args: Any, **kwargs: Any) -> 'PickledObject':
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f'<stand-in for {self.pickled_name}>'


def _stand_in(pickled_name: str) -> type:
    return type(pickled_name.rsplit('.', 1)[-1], (PickledObject,), {'pickled_name': pickled_name})


def _reconstruct(cls: type, *args: Any) -> PickledObject:
    """numpy's ``_reconstruct(ndarray, shape, dtype)``: an inert array stand-in, no numpy code runs."""
    return cls(*args)


# The globals, beyond tensors and containers, that released DFER checkpoints pickle, each mapped to an inert
# stand-in: Former-DFER's training script saves its ``__main__.RecorderMeter`` (numpy loss / accuracy arrays,
# pickled under numpy 1 or 2 module names); MAE-DFER saves its ``argparse.Namespace`` of arguments.
RELEASED_CHECKPOINT_GLOBALS = (
    [(_stand_in(name), name) for name in (
        '__main__.RecorderMeter', 'argparse.Namespace', 'numpy.ndarray', 'numpy.dtype')]
    + [(_reconstruct, f'{module}.multiarray._reconstruct') for module in ('numpy.core', 'numpy._core')])


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with the released checkpoints' stand-ins; anything else is refused by name."""
    try:
        with torch.serialization.safe_globals(RELEASED_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        unsafe = _globals_outside_allow_list(path, str(e))
        if unsafe:
            raise WeightsFileError(
                f'{path} pickles {", ".join(unsafe)}, which is not on the allow-list of weight files (tensors, '
                f'containers and {", ".join(name for _, name in RELEASED_CHECKPOINT_GLOBALS)}): it is never '
                f'unpickled; re-save the weights with safetensors or as a plain state dict.') from None
        # torch's message explains weights_only at length; its last clause is the actual reason
        reason = ' '.join(str(e).split()).rsplit('WeightsUnpickler error:', 1)[-1].split(' Check the documentation')[0].strip()[:200]
        raise WeightsFileError(
            f'{path} cannot be read as a weights-only torch checkpoint (corrupt or truncated?): {reason}') from None


def _globals_outside_allow_list(path: Path, load_error: str) -> List[str]:
    """The globals of ``path`` that are not allowed: all of them for a zip checkpoint, else the one torch named."""
    allowed = {name for _, name in RELEASED_CHECKPOINT_GLOBALS}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a legacy (non-zip) pickle: torch's error names the first refused global
        names = re.findall(r'GLOBAL (\S+) was not an allowed global', load_error)[:1]
    return [name for name in names if name not in allowed]


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
    """Refuse tensors of an unsupported dtype (complex, float8: any float not in ``WEIGHT_DTYPES``), NaN / Inf
    values, and integer tensors where ``reference`` (the model's state dict) has floating point.

    Every loading route calls it: :func:`read_checkpoint`, the manifest loader and ``checkpoint_filter_fn``.
    Integer buffers of the model itself (BatchNorm ``num_batches_tracked``) load as they are.
    """
    def listing(keys):
        return ', '.join(keys[:6]) + (f', ... ({len(keys)} in all)' if len(keys) > 6 else '')

    tensors = {k: v for k, v in weights.items() if torch.is_tensor(v)}
    unsupported = [f'{k} ({v.dtype})' for k, v in tensors.items()
                   if v.dtype not in WEIGHT_DTYPES and (v.is_floating_point() or v.is_complex())]
    if unsupported:  # complex or float8: a cast would drop the imaginary part or keep 3 bits of mantissa
        raise WeightsFileError(
            f'{source} holds tensors of a dtype weights are never read from: {listing(unsupported)}; weights must '
            f'be {", ".join(str(d).removeprefix("torch.") for d in WEIGHT_DTYPES)} (integer buffers aside).')
    non_finite = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise WeightsFileError(
            f'{source} holds NaN or Inf values in {listing(non_finite)}; such weights give meaningless outputs. '
            f'Use a checkpoint saved before training diverged.')
    integer = [f'{k} ({v.dtype})' for k, v in tensors.items()
               if reference is not None and k in reference and reference[k].is_floating_point()
               and not v.is_floating_point()]
    if integer:
        raise WeightsFileError(
            f'{source} holds integer tensors where the model has floating point ones: {listing(integer)}; '
            f'weights are never cast from integers, so these are not the trained values.')


# The one rule for which entry of a training container is the model, on every route (the Python API, every
# command, the export): the trained model itself, as each official evaluation loads it (MAE-DFER's ``model``,
# ``--model_key model|module``; Former-DFER's ``state_dict``) and as timm's validate.py does without --use-ema;
# an EMA entry only when it is the only one, or when asked for (``entry=``, ``--checkpoint-entry``).
MODEL_ENTRIES = ('model', 'state_dict', 'module')
EMA_ENTRIES = ('model_ema', 'state_dict_ema')


def checkpoint_entries(checkpoint: Mapping[str, Any]) -> List[str]:
    """The entries of a training container that hold weights, in the order of the rule (model first, then EMA)."""
    return [name for name in MODEL_ENTRIES + EMA_ENTRIES if isinstance(checkpoint.get(name), dict)]


def unwrap_checkpoint(checkpoint: Dict[str, Any], entry: Optional[str] = None, source: PathLike = 'the checkpoint',
                      ) -> Dict[str, Any]:
    """The weights inside a training checkpoint, without DDP / compile prefixes: ``entry`` when given, else the
    first of :data:`MODEL_ENTRIES` then :data:`EMA_ENTRIES`; a file with a model and an EMA entry logs which it took.
    A plain state dict is returned as it is (an ``entry`` it does not have raises)."""
    entries = checkpoint_entries(checkpoint)
    if entry is not None:
        if entry not in entries:
            held = ', '.join(entries) or 'none (it is a plain state dict)'
            raise WeightsFileError(
                f'{source} has no entry {entry!r} holding weights; its entries: {held}. Drop --checkpoint-entry or '
                f'name one of them.')
        return clean_state_dict(checkpoint[entry])
    if not entries:
        return clean_state_dict(checkpoint)
    if len(entries) > 1 and any(e in EMA_ENTRIES for e in entries):
        other = next(e for e in entries[1:] if (e in EMA_ENTRIES) != (entries[0] in EMA_ENTRIES))
        _logger.warning(
            "%s holds %s: using '%s' (the model its authors' evaluation loads); pass --checkpoint-entry %s "
            "(Python: pretrained_cfg_overlay=dict(checkpoint_entry='%s')) for the other",
            source, ' and '.join(f"'{e}'" for e in entries), entries[0], other, other)
    return clean_state_dict(checkpoint[entries[0]])


def _holds_safetensors(path: Path) -> bool:
    """Whether a file's content is safetensors, whatever its name: a little-endian u64 header length that fits the
    file, then the JSON header's ``{`` (a torch file starts with a zip's ``PK`` or a pickle's ``0x80``)."""
    with open(path, 'rb') as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b'{' and 8 + int.from_bytes(head[:8], 'little') <= path.stat().st_size


def _torch_file_kind(path: Path) -> Optional[str]:
    """What a torch file is, by its content (a zip archive holding ``data.pkl``, or a pickle stream); else None."""
    with open(path, 'rb') as f:
        head = f.read(2)
    if head == b'PK' and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith('data.pkl') for name in archive.namelist()):
                return 'torch checkpoint (torch.save\'s zip archive of a pickle)'
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return 'torch pickle file (the legacy torch.save format)'
    return None


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a checkpoint file as saved (containers kept): safetensors by its content (any name) or suffix, else a
    weights-only torch file; its weights are checked (:func:`check_weights`) on the way."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f'Checkpoint not found: {path}')
    if path.suffix.lower() == '.safetensors' or _holds_safetensors(path):
        kind = None if _holds_safetensors(path) else _torch_file_kind(path)
        if kind:  # not truncated safetensors: another format under the suffix, never unpickled as a safetensors file
            raise WeightsFileError(
                f'{path} is named .safetensors but is a {kind}, not safetensors; rename it to .pth to read it as one '
                f'(torch.load with weights_only=True), or convert it to safetensors.')
        checkpoint = read_safetensors(path.read_bytes(), path)
        check_weights(checkpoint, path)
        return checkpoint
    checkpoint = _torch_load(path)
    if not isinstance(checkpoint, dict):
        raise WeightsFileError(f'{path} holds a {type(checkpoint).__name__}, not a state dict.')
    for entry in checkpoint_entries(checkpoint) or [None]:
        check_weights(unwrap_checkpoint(checkpoint, entry, path), path)
    return checkpoint


def read_state_dict(path: PathLike, entry: Optional[str] = None) -> Dict[str, Any]:
    """The weights of a checkpoint file or model folder (its ``model.safetensors``), unwrapped (see above)."""
    if os.path.isdir(path):
        path = os.path.join(path, 'model.safetensors')
    return unwrap_checkpoint(read_checkpoint(path), entry, path)


def add_extra_weights(
        weights: Dict[str, Any], files: Mapping[str, PathLike], prefixes: Mapping[str, str], model_name: str,
) -> Dict[str, Any]:
    """``weights`` with the weights of each extra file under its state-dict prefix.

    A model made of two released networks (S2D: the fine-tuned model and its landmark network) declares its extra
    files as ``{pretrained_cfg_overlay key: state-dict prefix}`` (``prefixes``, the class's
    ``extra_weight_files``); ``files`` maps those keys to paths. Each file is read by this module's one reader (its
    model entry unwrapped). A key the model does not declare, or weights that already hold the prefix (an export
    holds both networks), raise :class:`WeightsFileError`.
    """
    for key, path in files.items():
        if key not in prefixes:
            declared = ', '.join(f'{k} ({extra_file_flag(k)})' for k in prefixes) or 'none'
            raise WeightsFileError(
                f'{model_name} is built from one weights file: drop {key} / {extra_file_flag(key)} (the extra files '
                f'it takes: {declared}).')
        prefix = prefixes[key]
        if any(k.startswith(prefix) for k in weights):
            raise WeightsFileError(
                f'the weights hold {prefix}* already (an export holds both networks): drop {key} / '
                f'{extra_file_flag(key)} {path}.')
        if not os.path.isfile(path):
            raise WeightsFileError(f'{extra_file_flag(key)} {path}: no such file ({key} of {model_name}).')
        weights = {**weights, **{prefix + k: v for k, v in read_state_dict(path).items()}}
    return weights
