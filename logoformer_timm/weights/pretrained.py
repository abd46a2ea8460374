"""Pretrained weights a model is built with: ``pretrained=True`` (published weights checked against the manifest
before use; load errors name the source) and ``stem_weights=`` (ResNet-18 weights for the stem); the clip models'
pretrained cfg (timm's, with the frame count) and the one build route of every clip model.
"""
import dataclasses
import os
import pickle
from functools import partial
from typing import Any, Callable, Dict, Optional, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs
from timm.models._builder import resolve_pretrained_cfg

from ..cli import EXTRA_WEIGHT_FILES
from ..errors import UserError
from . import manifest
from .files import add_extra_weights, read_state_dict
from .filtering import CheckpointMismatchError

__all__ = [
    'ClipPretrainedCfg', 'PretrainedWeightsError', 'PretrainedWeightsUnavailableError', 'build_clip_model',
    'build_model_with_pretrained_weights', 'check_tag_classes', 'clip_default_cfgs', 'read_resnet_state_dict']


@dataclasses.dataclass
class ClipPretrainedCfg(PretrainedCfg):
    """timm's pretrained cfg with what a clip model needs beside it: ``input_size`` is one frame's ``(C, H, W)``,
    ``num_frames`` the clip's frame count, and the evaluation's protocol and checkpoint entry. A release the user
    downloads from ``origin_url`` counts as weights (``has_weights``), so ``timm.list_pretrained()`` lists it;
    ``pretrained=True`` without the file raises, naming the page."""

    num_frames: Optional[int] = None

    # the test-time protocol: a name in logoformer_timm.data.TEST_PROTOCOLS, or a dict of its fields
    test_protocol: Optional[Union[str, Dict[str, Any]]] = None
    # the entry of a training container that holds the model ('model', 'model_ema', ...; None: files.py's rule)
    checkpoint_entry: Optional[str] = None

    @property
    def has_weights(self) -> bool:
        """A url, file or Hub id (timm's rule), or the download page of the authors' own file."""
        return bool(super().has_weights or self.origin_url)


def clip_default_cfgs(cfgs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """timm's ``generate_default_cfgs`` for 'arch.tag' cfgs of clip models (:class:`ClipPretrainedCfg`)."""
    return generate_default_cfgs({k: v if isinstance(v, PretrainedCfg) else ClipPretrainedCfg(**v) for k, v in cfgs.items()})


def build_clip_model(model_cls: Callable[..., nn.Module], variant: str, pretrained: bool, **kwargs) -> nn.Module:
    """``build_model_with_cfg`` (or, with ``pretrained``, :func:`build_model_with_pretrained_weights`) for a clip
    model; a cfg given as a dict (a ``local-dir:`` or ``hf-hub:`` config.json) keeps the clip fields."""
    if isinstance(kwargs.get('pretrained_cfg'), dict):
        kwargs['pretrained_cfg'] = ClipPretrainedCfg(**kwargs['pretrained_cfg'])
    # a second weights file the model is built from (S2D's landmark network): not a cfg field, read with the file
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    extra_files = {k: overlay.pop(k) for k in EXTRA_WEIGHT_FILES if k in overlay}
    if extra_files:
        kwargs['pretrained_cfg_overlay'] = overlay
    if pretrained:
        return build_model_with_pretrained_weights(model_cls, variant, extra_files=extra_files, **kwargs)
    if extra_files:
        raise PretrainedWeightsError(
            f'{variant}: {", ".join(extra_files)} given without pretrained=True; the extra weights files load '
            f'together with the model\'s own (file=...).')
    return build_model_with_cfg(model_cls, variant, False, **kwargs)


class PretrainedWeightsUnavailableError(UserError, RuntimeError):
    """``pretrained=True`` for a LOGO-Former name that has no published weights."""


class PretrainedWeightsError(UserError, RuntimeError):
    """Pretrained weights that could not be read or do not fit the model; the message names the source."""


def _check_weights_exist(variant: str, cfg: PretrainedCfg) -> None:
    name = variant if not cfg.tag else f'{variant}.{cfg.tag}'
    if cfg.origin_url and not (cfg.file or cfg.state_dict or cfg.hf_hub_id or cfg.url):
        # weights released by other authors, outside the Hub: the user downloads the file, we read it as distributed
        raise PretrainedWeightsUnavailableError(
            f'The weights of {name!r} are the authors\' own release and are not on the Hub: download the file '
            f'({cfg.description}) from {cfg.origin_url} and pass it as timm.create_model({name!r}, pretrained=True, '
            f"pretrained_cfg_overlay=dict(file='path/to/the/downloaded/file')).")
    if not cfg.has_weights and not cfg.state_dict:
        raise PretrainedWeightsUnavailableError(
            f'No pretrained weights are published for {name!r} yet, so pretrained=True cannot load any '
            f'(random weights are never returned silently). To load a local checkpoint use '
            f"timm.create_model({variant!r}, pretrained=True, pretrained_cfg_overlay=dict(file='path/to/model.safetensors')) "
            f"or timm.create_model('local-dir:path/to/folder', pretrained=True); for random init use pretrained=False.")


def _describe_source(cfg: PretrainedCfg) -> str:
    if cfg.source == 'local-dir':
        return f'local-dir:{cfg.file}'
    if cfg.file:  # also where a caller gave the file's state_dict already read
        return f'file {cfg.file}'
    if cfg.state_dict:
        return 'the state_dict given in the pretrained cfg'
    if cfg.hf_hub_id:
        return f'hf-hub:{cfg.hf_hub_id} ({cfg.hf_hub_filename or "model.safetensors or pytorch_model.bin"})'
    return f'url {cfg.url}'


def _for_loading(model_cls: Callable[..., nn.Module], **kwargs) -> nn.Module:
    model = model_cls(**kwargs)
    # timm's documented switch that turns off its own stem adaptation: checkpoint_filter_fn does it instead
    model._traits = {'first_conv': None}
    return model


def check_tag_classes(weights: Dict[str, torch.Tensor], variant: str, tag: str, classifier: str = 'head') -> None:
    """Weights loaded as the tag ``variant.tag`` must have its class count (its label set): else a
    :class:`CheckpointMismatchError` names the tags of ``variant`` that fit, or the untagged name and num_classes."""
    import timm
    from timm.models import get_pretrained_cfg
    head = weights.get(f'{classifier}.weight')
    tag_classes = get_pretrained_cfg(f'{variant}.{tag}').num_classes
    if not torch.is_tensor(head) or head.shape[0] == tag_classes:
        return
    classes = head.shape[0]
    fits = [name for name in timm.list_models(f'{variant}.*', include_tags=True)
            if get_pretrained_cfg(name).num_classes == classes]
    fix = (f'the tag that fits: {", ".join(fits)}' if fits else
           f'name the architecture without a tag ({variant}) with num_classes={classes}')
    raise CheckpointMismatchError(
        f'the weights\' classifier has {classes} classes but {variant}.{tag} is a {tag_classes}-class tag (its '
        f'label set); use {fix}.')


def _checking_tag_classes(filter_fn: Callable, variant: str, tag: str) -> Callable:
    """``filter_fn`` followed by :func:`check_tag_classes` (the model's cfg names its classifier)."""
    def filter_and_check(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
        weights = filter_fn(state_dict, model) if filter_fn is not None else state_dict
        check_tag_classes(weights, variant, tag, model.pretrained_cfg.get('classifier') or 'head')
        return weights
    return filter_and_check


def build_model_with_pretrained_weights(
        model_cls: Callable[..., nn.Module], variant: str, extra_files: Optional[Dict[str, str]] = None, **kwargs,
) -> nn.Module:
    """timm's ``build_model_with_cfg`` with pretrained weights that must exist; load errors name their source.

    A tag named explicitly (``NAME.TAG``) holds weights of its own class count (:func:`check_tag_classes`).
    ``extra_files`` (``{overlay key: path}``, keys the class declares in ``extra_weight_files``) are read and merged
    into the weights of ``file=`` or ``state_dict=`` (:func:`~.files.add_extra_weights`).
    """
    if isinstance(kwargs.get('pretrained_cfg'), str):  # timm passes the tag of 'NAME.TAG' here
        kwargs['pretrained_filter_fn'] = _checking_tag_classes(
            kwargs.get('pretrained_filter_fn'), variant, kwargs['pretrained_cfg'])
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get('pretrained_cfg'), pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    _check_weights_exist(variant, cfg)
    source = _describe_source(cfg)
    published = None if cfg.state_dict or cfg.file else manifest.find_published(cfg.hf_hub_id)
    if published is not None:
        # verified before timm sees a single tensor; timm then filters, adapts the head and loads strictly
        state_dict = manifest.load_published(published, cache_dir=kwargs.get('cache_dir'), hf_hub_id=cfg.hf_hub_id)
        kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {}, state_dict=state_dict)
    try:
        if extra_files and not (cfg.state_dict or cfg.file and cfg.source != 'local-dir'):
            raise PretrainedWeightsError(
                f'{variant}: {", ".join(extra_files)} go with the model\'s own file (file=...); {source} holds '
                f'every network already.')
        state_dict = cfg.state_dict
        if cfg.file and not cfg.state_dict and cfg.source != 'local-dir':
            # a local file goes through the project's one reader (allow-listed unpickler), never timm's torch.load,
            # and its one rule for the entry of a training container that holds the model
            state_dict = read_state_dict(cfg.file, entry=getattr(cfg, 'checkpoint_entry', None))
        if extra_files:
            state_dict = add_extra_weights(
                state_dict, extra_files, getattr(model_cls, 'extra_weight_files', {}), variant)
        if state_dict is not cfg.state_dict:
            kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {}, state_dict=state_dict)
        model = build_model_with_cfg(partial(_for_loading, model_cls), variant, True, **kwargs)
    except (CheckpointMismatchError, OSError, RuntimeError, SafetensorError, pickle.UnpicklingError, EOFError) as e:
        if isinstance(e, (PretrainedWeightsError, manifest.WeightsChecksumError)):
            raise
        raise PretrainedWeightsError(f'{variant} with pretrained weights from {source}: {e}') from e
    for module in (model, getattr(model, 'model', None)):  # the model, and the one inside a features wrapper
        if module is not None:
            module.pretrained_cfg.pop('state_dict', None)  # do not keep a second copy of the weights alive
            module._traits['first_conv'] = cfg.first_conv
    return model


def read_resnet_state_dict(source: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """ResNet-18 weights from a checkpoint file (the project's one reader) or a timm model name (downloads)."""
    if os.path.isfile(source):
        return {k.removeprefix('stem.'): v for k, v in read_state_dict(source).items()}
    if os.sep in str(source) or str(source).endswith(('.pth', '.pt', '.bin', '.safetensors')):
        raise FileNotFoundError(f'stem_weights file not found: {source}')
    import timm  # a timm model name, e.g. 'resnet18.a1_in1k'
    return timm.create_model(str(source), pretrained=True, num_classes=0).state_dict()
