"""The manifest of published LOGO-Former weights: the single source of the ``arch.tag`` pretrained configs.

One :class:`PublishedWeights` entry per tag. ``hub/export.py`` prints the entry to add here after an export;
the entry's ``sha256`` is checked against the downloaded ``model.safetensors`` before any tensor is used.

Nothing is published yet (no DFEW / FERV39K training has been run by this project), so ``PUBLISHED`` is empty
and ``pretrained=True`` on a registry name raises ``PretrainedWeightsUnavailableError``.
"""
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

__all__ = [
    'HUB_ORG', 'WEIGHTS_FILENAME', 'PublishedWeights', 'PUBLISHED', 'WeightsChecksumError', 'WeightsFileError',
    'find_published', 'file_sha256', 'load_published', 'read_safetensors', 'check_weights']

HUB_ORG = 'logoformer-timm'
WEIGHTS_FILENAME = 'model.safetensors'
_SHA256 = re.compile(r'[0-9a-f]{64}')


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file: where it lives, its checksum, and what it was measured to do."""
    arch: str  # registered model name, e.g. 'logoformer_base'
    tag: str  # pretrained tag, e.g. 'dfew_fold1'
    sha256: str  # of model.safetensors, lowercase hex
    dataset: str  # training dataset, e.g. 'DFEW'
    fold: Optional[Union[int, str]]  # cross-validation fold, None for a fixed split
    uar: Optional[float]  # measured unweighted average recall (fraction), None if not evaluated
    war: Optional[float]  # measured weighted average recall (fraction), None if not evaluated
    license: str
    recipe: str  # how the weights were trained: command line or URL of the recipe
    num_classes: int = 7

    def __post_init__(self):
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f'{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}.')
        if not self.tag or '.' in self.tag:
            raise ValueError(f'{self.arch}: tag must be non-empty and contain no ".", got {self.tag!r}.')

    @property
    def name(self) -> str:
        return f'{self.arch}.{self.tag}'

    @property
    def hf_hub_id(self) -> str:
        return f'{HUB_ORG}/{self.name}'


# 'arch.tag' -> entry. Shipped empty: nothing is published yet.
PUBLISHED: Dict[str, PublishedWeights] = {}


def _repo_key(hf_hub_id: str) -> str:
    # the Hub resolves repo ids case-insensitively and serves any revision: neither may dodge the check
    return hf_hub_id.split('@', 1)[0].strip().strip('/').lower()


def find_published(hf_hub_id: Optional[str]) -> Optional[PublishedWeights]:
    """The manifest entry of the repo ``hf_hub_id`` names, whatever its letter case or ``@revision``, or None."""
    if not hf_hub_id:
        return None
    return next((entry for entry in PUBLISHED.values() if _repo_key(entry.hf_hub_id) == _repo_key(hf_hub_id)), None)


class WeightsChecksumError(RuntimeError):
    """A downloaded weight file whose sha256 differs from the manifest's."""


class WeightsFileError(RuntimeError):
    """A weight file that cannot be used: not readable (truncated, corrupt, not safetensors) or with unusable values."""


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """Lowercase hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def read_safetensors(data: bytes, name: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Deserialize safetensors bytes; a corrupt or truncated file raises :class:`WeightsFileError` naming it."""
    try:
        return load_safetensors_bytes(data)
    except SafetensorError as e:
        raise WeightsFileError(f'{name} is not a readable safetensors file (truncated or corrupt?): {e}') from None


def check_weights(
        weights: Mapping[str, Any], source: Union[str, os.PathLike],
        reference: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Refuse NaN / Inf values, and integer tensors where ``reference`` (the model's state dict) has floating point.

    Every loading route calls it: the project's checkpoint reader, the manifest loader and ``checkpoint_filter_fn``.
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


def load_published(
        entry: PublishedWeights, cache_dir: Optional[Union[str, os.PathLike]] = None,
        hf_hub_id: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Download (or reuse from the Hub cache) a published file, verify its sha256, then deserialize it.

    ``hf_hub_id`` is the spelling asked for (another letter case, an ``@revision``); whatever revision it names,
    its bytes must have the manifest's sha256.
    """
    from timm.models._hub import download_from_hf  # timm's Hub download: hf_hub_download, library_name='timm'
    path = download_from_hf(hf_hub_id or entry.hf_hub_id, WEIGHTS_FILENAME, cache_dir=cache_dir)
    data = Path(path).read_bytes()  # hash and deserialize the same bytes: nothing unverified is ever parsed
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise WeightsChecksumError(
            f'{path} ({WEIGHTS_FILENAME} of {hf_hub_id or entry.hf_hub_id}) has sha256 {digest}, but the manifest of published '
            f'weights expects {entry.sha256} for {entry.name!r}. Nothing was loaded. Delete the cached file to '
            f'download it again; if the mismatch persists the file on the Hub is not the published one.')
    weights = read_safetensors(data, path)
    check_weights(weights, path)
    return weights
