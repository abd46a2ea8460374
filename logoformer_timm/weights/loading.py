"""The one model loader of every command: a model name, a checkpoint file or folder, or published / Hub weights.

:func:`create_model` builds the model (``logoformer-train``, ``logoformer-eval``); :func:`load_model` adds what
inference needs (``logoformer-predict``, the ONNX / torch.export command, the Python API): exactly one weights
source, a clip-model check, precision and ``torch.compile``. :func:`label_names` is the one rule for class names.
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn as nn

from ..cli import extra_file_flag
from ..device import resolve_device
from ..models import PretrainedWeightsError, checkpoint_filter_of, list_clip_models
from .filtering import CheckpointMismatchError
from .files import WeightsFileError, add_extra_weights, read_state_dict
from .inference import prepare_for_inference

__all__ = [
    'check_checkpoint_path', 'create_model', 'load_model', 'label_names', 'check_clip_model', 'classes_of_weights',
    'declared_num_classes', 'RANDOM_INIT_SEED']

_logger = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0  # random-init weights are seeded, so the same input always gives the same (meaningless) output


def label_names(model: nn.Module) -> List[str]:
    """The class names: the pretrained cfg's ``label_names`` when it has one per class, else the indices "0", "1", ..."""
    names = list((getattr(model, 'pretrained_cfg', None) or {}).get('label_names') or ())
    return names if len(names) == model.num_classes else [str(i) for i in range(model.num_classes)]


def check_clip_model(model: nn.Module) -> None:
    """Raise ``ValueError`` unless ``model`` takes clips (has ``num_frames``, ``img_size`` and ``input_layout``)."""
    missing = [a for a in ('num_frames', 'img_size', 'input_layout') if not hasattr(model, a)]
    if missing:
        name = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
        raise ValueError(f'{name} is not a clip model (it has no {", ".join(missing)}); use one of '
                         f'{", ".join(list_clip_models())}.')


def _check_model_name(name: Optional[str]) -> None:
    if name and name.startswith('hf-hub:'):
        return  # timm resolves (and reports) Hub ids itself
    if not name or not timm.is_model(name):
        raise ValueError(f'Unknown model {name!r}; clip models: {", ".join(list_clip_models())}.')


def _extra_weight_files(model_name: str) -> Dict[str, str]:
    """The extra weights files ``model_name``'s class declares (``{overlay key: state-dict prefix}``)."""
    return getattr(type(timm.create_model(model_name, device='meta')), 'extra_weight_files', {})


def _from_folder(model_name: Optional[str], folder: str, **kwargs: Any) -> nn.Module:
    """A model folder with ``config.json`` (a training checkpoint or a ``logoformer-hub`` export), via timm's ``local-dir:``."""
    config = os.path.join(folder, 'config.json')
    if not os.path.isfile(config):
        raise ValueError(
            f'{folder!r} is a folder without config.json; pass a weights file (with --model), or a model folder '
            f'(a training run\'s last/ or best/, or a logoformer-hub export).')
    with open(config, encoding='utf-8') as f:
        arch = json.load(f).get('architecture')
    if model_name is not None and arch != model_name:
        raise ValueError(f'--model {model_name} does not match the folder {folder!r}, which holds {arch!r}.')
    _check_model_name(arch)
    return timm.create_model(f'local-dir:{folder}', pretrained=True, **kwargs)


def _from_file(model_name: Optional[str], path: str, checkpoint_entry: Optional[str] = None,
               extra_files: Optional[Dict[str, str]] = None, **kwargs: Any) -> nn.Module:
    """A bare weights file: the architecture comes from ``model_name``, the class count from the file's classifier;
    a training container's model entry by the one rule of :func:`~logoformer_timm.weights.files.unwrap_checkpoint`;
    ``extra_files`` (``{overlay key: path}``: S2D's landmark network) merged in."""
    if not model_name:
        raise ValueError('Pass --model NAME (e.g. logoformer_small) for a weights file, or a checkpoint folder that '
                         'holds config.json.')
    _check_model_name(model_name)
    weights = read_state_dict(path, checkpoint_entry)
    if extra_files:
        weights = add_extra_weights(weights, extra_files, _extra_weight_files(model_name), model_name)
    try:
        num_classes, cfg_classes = classes_of_weights(model_name, weights, **kwargs)
    except CheckpointMismatchError as e:
        raise PretrainedWeightsError(f'{model_name} with the weights of {path}: {e}') from None
    # timm's own loader (filter, strict load) on the weights this reader read; the cfg keeps the file's classifier
    overlay = dict(state_dict=weights, num_classes=num_classes)
    if num_classes != cfg_classes:  # the cfg's label names belong to another label set
        overlay['label_names'] = None
    try:
        return timm.create_model(
            model_name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs)
    except PretrainedWeightsError as e:  # name the file, not the in-memory state dict it was read into
        cause = e.__cause__ or e
        if isinstance(cause, WeightsFileError):
            raise WeightsFileError(f'{path}: {cause}') from None
        raise PretrainedWeightsError(f'{model_name} with the weights of {path}: {cause}') from None


def classes_of_weights(model_name: str, weights: Dict[str, Any], **kwargs: Any) -> Tuple[int, int]:
    """(classes of ``weights``' classifier, classes of ``model_name``'s cfg): ``weights`` may be in any format the
    architecture's checkpoint filter reads (an official release's keys too); it runs on a meta-device build."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ('device', 'pretrained_cfg_overlay')}
    model = timm.create_model(model_name, device='meta', **kwargs)
    cfg = model.pretrained_cfg
    head = checkpoint_filter_of(model)(weights, model).get(f'{cfg.get("classifier") or "head"}.weight')
    return (head.shape[0] if torch.is_tensor(head) else 0), cfg.get('num_classes', model.num_classes)


def declared_num_classes(
        model_name: Optional[str], checkpoint: Optional[str] = None, pretrained: bool = False) -> Optional[int]:
    """The class count of the weights :func:`create_model` would load, known without reading a tensor: a model
    folder's ``config.json``, a safetensors file's classifier shape (its header), a published tag's cfg; None where
    only the weights can tell (a torch file) or the loader will report a problem."""
    from safetensors import SafetensorError, safe_open
    from timm.models import get_pretrained_cfg
    try:
        if checkpoint is not None and os.path.isdir(checkpoint):
            with open(os.path.join(checkpoint, 'config.json'), encoding='utf-8') as f:
                return int(json.load(f)['num_classes'])
        if checkpoint is None:
            return get_pretrained_cfg(model_name).num_classes if pretrained and model_name else None
        with safe_open(checkpoint, 'pt') as f:
            return int(f.get_slice(f'{get_pretrained_cfg(model_name).classifier}.weight').get_shape()[0])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, SafetensorError):
        return None


def check_checkpoint_path(checkpoint: str) -> None:
    """Raise ``FileNotFoundError`` naming ``--checkpoint`` when the path does not exist."""
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(
            f'--checkpoint {checkpoint}: no such file or folder. Checkpoint not found: pass a .safetensors or '
            f'.pth file, or a model folder (a training run\'s last/ or best/, or a logoformer-hub export).')


def create_model(
        model_name: Optional[str] = None,
        checkpoint: Optional[str] = None,
        pretrained: bool = False,
        num_classes: Optional[int] = None,
        new_head: bool = False,
        checkpoint_entry: Optional[str] = None,
        extra_files: Optional[Dict[str, str]] = None,
        **kwargs: Any,
) -> nn.Module:
    """A model from a name (``pretrained`` for its published weights), a weights file, or a model folder.

    A folder with ``config.json`` is loaded with timm's ``local-dir:``; a file needs ``model_name`` and keeps its
    own classifier; ``hf-hub:ORG/NAME`` names are timm's. ``kwargs`` (None values dropped) go to
    ``timm.create_model``. Trained weights keep their classifier: a ``num_classes`` that differs from it raises,
    unless ``new_head`` (fine-tuning) asks for a fresh classifier, which is logged. ``checkpoint_entry`` names the
    entry of a training container file to load (``model_ema``, ...; default: the model entry); ``extra_files``
    (``{'landmark_file': path}``, the commands' ``--landmark-checkpoint``) the second files a model is built from.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    extra_files = {k: v for k, v in (extra_files or {}).items() if v is not None}
    if extra_files and (checkpoint is None or os.path.isdir(checkpoint)):
        flags = ', '.join(extra_file_flag(k) for k in extra_files)
        raise ValueError(f'{flags} goes with --checkpoint FILE (the authors\' fine-tuned file); '
                         f'{"a model folder holds every network" if checkpoint else "pass --checkpoint FILE"}.')
    if checkpoint_entry is not None and (checkpoint is None or os.path.isdir(checkpoint)):
        raise ValueError(f'--checkpoint-entry {checkpoint_entry} names an entry of a checkpoint file (.pth / .pt); '
                         f'{"a model folder holds one model" if checkpoint else "pass --checkpoint FILE"}.')
    if checkpoint is not None:
        check_checkpoint_path(checkpoint)
        if os.path.isdir(checkpoint):
            model = _from_folder(model_name, checkpoint, **kwargs)
        else:
            model = _from_file(model_name, checkpoint, checkpoint_entry, extra_files, **kwargs)
        source = checkpoint
    elif pretrained:
        _check_model_name(model_name)
        model, source = timm.create_model(model_name, pretrained=True, **kwargs), f'{model_name} (pretrained)'
    else:  # random init: the head is new anyway
        if not model_name:
            raise ValueError('Pass --model NAME (e.g. logoformer_small), --checkpoint or --pretrained.')
        _check_model_name(model_name)
        return timm.create_model(model_name, **kwargs, **({} if num_classes is None else dict(num_classes=num_classes)))
    if num_classes is not None and num_classes != model.num_classes:
        if not new_head:
            raise ValueError(
                f'{source} was trained for {model.num_classes} classes but --num-classes {num_classes} was given. '
                f'Evaluation never replaces a trained classifier: drop --num-classes, or pass weights trained for '
                f'{num_classes} classes.')
        _logger.warning('%s: its classifier for %d classes is replaced by a new, untrained one for %d classes '
                        '(fine-tuning)', source, model.num_classes, num_classes)
        model.reset_classifier(num_classes)
    return model


def load_model(
        name: Optional[str] = None,
        checkpoint: Optional[str] = None,
        pretrained: bool = False,
        random_init: bool = False,
        device: str = 'cpu',
        precision: str = 'fp32',
        compile: bool = False,
        checkpoint_entry: Optional[str] = None,
        extra_files: Optional[Dict[str, str]] = None,
) -> Tuple[nn.Module, str]:
    """A clip model ready for inference, and where its weights came from (``'checkpoint:PATH'`` ...).

    Exactly one of ``checkpoint`` (a safetensors / ``.pth`` file, read with ``weights_only=True``, or a model
    folder), ``pretrained`` and ``random_init`` (seeded) says where the weights come from. A file is read as
    ``name`` (default ``logoformer_base``); a folder names its own architecture. ``precision`` ('fp32', 'bf16',
    'fp16') and ``compile`` give the fast path (:func:`~logoformer_timm.weights.inference.prepare_for_inference`);
    ``checkpoint_entry`` and ``extra_files`` as for :func:`create_model`.
    """
    if sum((checkpoint is not None, pretrained, random_init)) != 1:
        raise ValueError(
            'Say where the weights come from: --checkpoint PATH (a .safetensors/.pth file or a model folder), '
            '--pretrained (published weights), or --random-init (meaningless predictions, for testing the '
            'pipeline only). No weights are published yet, so you need a checkpoint of your own.')
    if checkpoint is None or not os.path.isdir(checkpoint):
        name = name or 'logoformer_base'
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)  # the same meaningless weights on every run
            model = create_model(name)
    else:
        model = create_model(name, checkpoint, pretrained, checkpoint_entry=checkpoint_entry, extra_files=extra_files)
    check_clip_model(model)
    weights = f'checkpoint:{checkpoint}' if checkpoint is not None else 'pretrained' if pretrained else 'random-init'
    return prepare_for_inference(model.to(resolve_device(device)), precision, compile), weights
