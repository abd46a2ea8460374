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
from typing import Dict, Optional, Union

import torch

from ..errors import UserError
from .files import check_weights, read_safetensors

__all__ = ['HUB_ORG', 'WEIGHTS_FILENAME', 'PublishedWeights', 'PUBLISHED', 'WeightsChecksumError', 'find_published',
           'load_published']

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


class WeightsChecksumError(UserError, RuntimeError):
    """A downloaded weight file whose sha256 differs from the manifest's."""


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
