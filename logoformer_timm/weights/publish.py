"""Export a training checkpoint to a Hugging Face Hub repo folder; :mod:`.verify` checks such a folder against its
checkpoint and pushes it, :mod:`.card` holds its model card and metrics schema.
"""
import errno
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from timm.layers import to_2tuple
from timm.models import create_model, get_pretrained_cfg, save_for_hf

from .card import load_eval_metrics, model_card
from .files import PathLike, WeightsFileError, add_extra_weights, file_sha256, read_checkpoint, unwrap_checkpoint
from ..cli import check_output_dir
from ..errors import UserError
from .manifest import HUB_ORG, WEIGHTS_FILENAME
from ..models import REPORTED_RESULTS, PretrainedWeightsError, list_clip_models
from .filtering import CheckpointMismatchError
from .loading import classes_of_weights

__all__ = [
    'REPO_FILES', 'HubFolderError', 'ExportResult', 'export_folder']

REPO_FILES = (WEIGHTS_FILENAME, 'config.json', 'README.md')  # exactly what a published repo holds


class HubFolderError(UserError, RuntimeError):
    """A checkpoint, export folder or upload request that cannot be used; the message names the file."""


def _args_from_weights(
        model_name: str, checkpoint_path: PathLike, checkpoint: Dict[str, Any], model_kwargs: Dict[str, Any],
) -> Dict[str, Any]:
    """Model arguments that the weights themselves fix: the sizes the architecture's ``sizes_of_weights`` reads
    (frames, resolution, channels), and the classes (read through the architecture's own checkpoint filter, the
    model built with ``model_kwargs``); a requested value that contradicts them is an error."""
    weights = unwrap_checkpoint(checkpoint)
    model_cls = type(create_model(model_name, device='meta'))  # nothing is allocated
    args = dict(model_cls.sizes_of_weights(weights))
    _check_requested(checkpoint_path, model_kwargs, args)  # before the sizes build a model for the class count
    try:
        others = {k: v for k, v in model_kwargs.items() if k != 'num_classes'}
        args['num_classes'], _ = classes_of_weights(model_name, weights, **{**others, **args})
    except CheckpointMismatchError as e:
        raise HubFolderError(f'{checkpoint_path}: {e}') from None
    _check_requested(checkpoint_path, model_kwargs, {'num_classes': args['num_classes']})
    return args


def _check_requested(checkpoint_path: PathLike, requested: Dict[str, Any], from_weights: Dict[str, Any]) -> None:
    """Refuse a requested argument that contradicts what the weights fix (an export never resamples or adapts)."""
    for key, value in requested.items():
        if key in from_weights and _as_list(value) != _as_list(from_weights[key]):
            raise HubFolderError(
                f'{checkpoint_path}: {key}={value!r} was requested but the weights were trained with '
                f'{key}={from_weights[key]!r}; an export never resamples or adapts weights. Drop the argument.')


def _build_from_checkpoint(
        model_name: str, checkpoint_path: PathLike, checkpoint: Dict[str, Any], model_kwargs: Dict[str, Any],
) -> torch.nn.Module:
    """The model the checkpoint was trained as, with exactly its weights (nothing resampled or adapted)."""
    from_weights = _args_from_weights(model_name, checkpoint_path, checkpoint, model_kwargs)
    kwargs = {**model_kwargs, **from_weights}
    # the cfg describes the source weights, so timm keeps their classifier instead of resetting it; the file was
    # read already (errors still name it)
    cfg = get_pretrained_cfg(model_name)
    source_cfg = dict(file=str(checkpoint_path), state_dict=checkpoint, num_classes=from_weights['num_classes'])
    if 'img_size' in kwargs or 'in_chans' in kwargs:
        source_cfg['input_size'] = (kwargs.get('in_chans', cfg.input_size[0]),
                                    *to_2tuple(kwargs.get('img_size', cfg.input_size[1:])))
    if from_weights['num_classes'] != cfg.num_classes:  # the cfg's label names belong to another label set
        source_cfg['label_names'] = None
    try:
        model = create_model(model_name, pretrained=True, pretrained_cfg_overlay=source_cfg, **kwargs)
    except PretrainedWeightsError as e:
        raise HubFolderError(str(e)) from None
    return model.eval()


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass
class ExportResult:
    """What ``export_folder`` wrote and what to add to the manifest."""
    folder: Path
    sha256: str
    hf_hub_id: Optional[str]
    manifest_entry: Optional[str]
    manifest_note: str


def export_folder(
        model_name: Optional[str],
        checkpoint: PathLike,
        out: PathLike,
        tag: Optional[str] = None,
        metrics: Optional[PathLike] = None,
        dtype: str = 'float32',
        model_kwargs: Optional[Dict[str, Any]] = None,
        train_dataset: Optional[str] = None,
        recipe: Optional[str] = None,
        license: str = 'mit',
        hub_org: str = HUB_ORG,
        checkpoint_entry: Optional[str] = None,
        extra_files: Optional[Dict[str, PathLike]] = None,
) -> ExportResult:
    """Write a ready-to-upload Hub repo folder (model.safetensors, config.json, README.md) from a checkpoint
    (``checkpoint_entry``: the entry of a training container to export; default: the model entry; ``extra_files``:
    the second files the model is built from, ``{'landmark_file': path}`` for S2D, exported in the same
    model.safetensors).

    ``model_name`` (``ARCH`` or ``ARCH.TAG``) may be None for a checkpoint folder, whose ``config.json`` names it.
    """
    if model_name is None:
        model_name = _folder_architecture(Path(checkpoint))
    arch, _, name_tag = model_name.partition('.')
    if arch not in list_clip_models():
        raise HubFolderError(
            f'--model must be a registered clip model ({", ".join(list_clip_models())}), got {model_name!r}.')
    if name_tag and tag is not None and tag != name_tag:
        raise HubFolderError(f'--model {model_name} names the tag {name_tag!r} but --tag is {tag!r}; pass one.')
    tag = tag or name_tag or None
    if tag is not None and (not tag or not all(c.isalnum() or c == '_' for c in tag)):
        raise HubFolderError(f'--tag must be letters, digits and "_" (e.g. dfew_fold1), got {tag!r}.')
    if dtype not in ('float32', 'float16'):
        raise HubFolderError(f'--dtype must be float32 or float16, got {dtype!r}.')
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HubFolderError(f'--out {out} is a file; pass a new (or empty) folder to write the repo into.')
    if out.exists() and any(out.iterdir()):
        raise HubFolderError(f'{out} already exists and is not empty; pass a new --out folder.')
    check_output_dir(str(out.parent), '--out')  # missing parents are made once the model is built
    eval_metrics = load_eval_metrics(metrics) if metrics is not None else None
    for flag, text in (('--train-dataset', train_dataset), ('--recipe', recipe), ('--license', license)):
        _check_free_text(flag, text)
    reported = REPORTED_RESULTS.get(f'{arch}.{tag}')  # an official release: its architecture is the tag's own
    released = reported is not None
    if released:  # the dataset the authors' release was trained on, unless the exporter states it
        train_dataset = train_dataset or reported.dataset
    model = _source_model(checkpoint, model_kwargs, arch, tag, checkpoint_entry, extra_files)
    if dtype == 'float16':
        model = model.half()

    name = f'{arch}.{tag}' if tag else arch
    hf_hub_id = f'{hub_org}/{name}' if tag else None
    out.parent.mkdir(parents=True, exist_ok=True)
    # written completely in a folder of its own, then renamed: never a half-written --out; of two exports to one
    # --out, the rename of the second fails (a folder is only renamed over an empty one)
    tmp = out.parent / f'.{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
    try:
        tmp.mkdir()
        save_for_hf(model, tmp, **_export_config(model, tag, license), safe_serialization=True)
        (tmp / 'README.md').write_text(model_card(
            model, name, hf_hub_id=hf_hub_id, metrics=eval_metrics, train_dataset=train_dataset, recipe=recipe,
            license=license, dtype=dtype), encoding='utf-8')
        try:
            os.rename(tmp, out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise HubFolderError(f'{out} was written by another export meanwhile; pass a new --out.') from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sha256 = file_sha256(out / WEIGHTS_FILENAME)
    if released:
        entry, note = None, (f'No manifest entry: {arch}.{tag} is the authors\' release, loaded from their file '
                             f"(pretrained_cfg_overlay=dict(file=...)) or from this folder (local-dir:, hf-hub:).")
    else:
        entry, note = _manifest_entry(
            arch, tag, sha256, eval_metrics, train_dataset, recipe, license, model.num_classes)
    return ExportResult(out, sha256, hf_hub_id, entry, note)


def _export_config(model: torch.nn.Module, tag: Optional[str], license: str) -> Dict[str, Any]:
    """The ``model_config`` and ``model_args`` of timm's ``save_for_hf`` for an export (and for verifying one)."""
    # what the weights do not fix but their meaning depends on (windows, block types, heads, layout)
    arch_args = {k: list(v) if isinstance(v, tuple) else v for k, v in model.architecture_args().items()}
    cfg = dict(tag=tag, license=license, num_frames=model.num_frames)  # the clip the weights were exported for
    return dict(model_config=dict(pretrained_cfg=cfg), model_args=arch_args)


def _source_model(
        checkpoint: PathLike, model_kwargs: Optional[Dict[str, Any]], arch: Optional[str] = None,
        tag: Optional[str] = None, checkpoint_entry: Optional[str] = None,
        extra_files: Optional[Dict[str, PathLike]] = None) -> torch.nn.Module:
    """The model a training checkpoint was trained as, its architecture from a source that knows it.

    A checkpoint folder (a run's ``last/`` or ``best/``) records it in ``config.json``, a torch container may
    under ``model_args``; a bare weights file does not (heads, windows, ...), so ``model_kwargs`` must state it
    (``{}`` states the architecture's defaults). ``arch`` defaults to the folder's architecture; a registered
    ``tag`` gives its pretrained cfg: protocol, label names, the authors' reported results. An official release's
    file needs no ``model_kwargs``: its architecture is the tag's own. A training container's weights are its
    ``checkpoint_entry``, by default the model entry (the one rule of ``files.unwrap_checkpoint``), with the
    ``extra_files`` the architecture declares merged in (``files.add_extra_weights``).
    """
    if model_kwargs is None and f'{arch}.{tag}' in REPORTED_RESULTS:
        model_kwargs = {}
    path = Path(checkpoint)
    known: Dict[str, Any] = {}
    if path.is_dir():
        config_path = path / 'config.json'
        if not config_path.is_file() or not (path / WEIGHTS_FILENAME).is_file():
            raise HubFolderError(
                f'{path} is not a checkpoint folder: it needs config.json and {WEIGHTS_FILENAME} (a training run\'s '
                f'last/ or best/ folder).')
        config = _read_json(config_path)
        folder_arch = config.get('architecture')
        if arch is not None and folder_arch != arch:
            raise HubFolderError(f'--model {arch} does not match {config_path}, which records {folder_arch!r}.')
        arch, known = folder_arch, dict(config.get('model_args') or {})
        path = path / WEIGHTS_FILENAME
        ckpt = read_checkpoint(path)
    else:
        ckpt = read_checkpoint(path)
        if isinstance(ckpt.get('model_args'), dict):
            known = dict(ckpt['model_args'])
        elif model_kwargs is None:
            raise HubFolderError(
                f'{path} is a bare weights file: it does not record the architecture arguments the weights cannot '
                f'reveal (num_heads, local_window, block_types, ...). Pass the training run\'s checkpoint folder '
                f'(e.g. runs/NAME/last), or --model-kwargs with every argument it was trained with '
                f'(--model-kwargs with no values states the defaults).')
    for key, value in (model_kwargs or {}).items():
        if key in known and _as_list(value) != _as_list(known[key]):
            raise HubFolderError(
                f'{checkpoint}: {key}={value!r} was requested but the checkpoint was trained with '
                f'{key}={known[key]!r}. Drop the argument.')
    if arch is None:
        raise HubFolderError(f'{checkpoint}: pass --model, the architecture the weights were trained as.')
    name = f'{arch}.{tag}' if tag and f'{arch}.{tag}' in list_clip_models(include_tags=True) else arch
    weights = unwrap_checkpoint(ckpt, checkpoint_entry, path)
    if extra_files:
        declared = getattr(type(create_model(arch, device='meta')), 'extra_weight_files', {})
        try:
            weights = add_extra_weights(weights, extra_files, declared, arch)
        except WeightsFileError as e:
            raise HubFolderError(str(e)) from None
    return _build_from_checkpoint(name, path, weights, {**known, **(model_kwargs or {})})


def _folder_architecture(path: Path) -> str:
    """The architecture a checkpoint folder's ``config.json`` records; a weights file needs ``--model``."""
    config = path / 'config.json'
    architecture = _read_json(config).get('architecture') if path.is_dir() and config.is_file() else None
    if not isinstance(architecture, str):
        raise HubFolderError(
            f'{path} does not name its architecture (no checkpoint folder with config.json): pass --model, the '
            f'architecture the weights were trained as (e.g. logoformer_base).')
    return architecture


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise HubFolderError(f'{path} is not valid JSON: {e}') from None


def _manifest_entry(arch, tag, sha256, metrics, train_dataset, recipe, license, num_classes):
    missing = [flag for flag, value in (('--tag', tag), ('--train-dataset', train_dataset), ('--recipe', recipe))
               if not value]
    if missing:
        return None, f'No manifest entry: a published tag needs {", ".join(missing)}.'
    fold = metrics.get('fold') if metrics else None
    uar, war = (metrics['uar'], metrics['war']) if metrics else (None, None)
    entry = (
        f"PUBLISHED['{arch}.{tag}'] = PublishedWeights(\n"
        f"    arch={arch!r}, tag={tag!r},\n"
        f"    sha256={sha256!r},\n"
        f"    dataset={train_dataset!r}, fold={fold!r}, uar={uar!r}, war={war!r},\n"
        f"    license={license!r}, recipe={recipe!r}, num_classes={num_classes!r})")
    note = 'Add to logoformer_timm/weights/manifest.py after the repo is pushed:' + (
        '' if metrics else ' (no --metrics: uar/war stay None, nothing is claimed)')
    return entry, note


def _check_free_text(flag: str, text: Optional[str]) -> None:
    """A free-text export option is one line without control characters or a YAML document marker."""
    if text is not None and (any(ord(c) < 32 or ord(c) == 127 for c in text) or '---' in text):
        raise HubFolderError(
            f'{flag} must be one line of text without control characters (newlines, tabs) or "---", got {text!r}.')
