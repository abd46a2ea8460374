"""Export a training checkpoint to a Hugging Face Hub repo folder, verify such a folder against its checkpoint, and
push it with ``HfApi``; the folder's model card and metrics schema are in :mod:`.card`.
"""
import errno
import json
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from timm.layers import to_2tuple
from timm.models import create_model, get_pretrained_cfg, is_model, save_for_hf
from timm.models._hub import save_config_for_hf

from .. import __version__
from .card import card_problem, load_eval_metrics, model_card
from .files import PathLike, check_weights, file_sha256, read_checkpoint, read_safetensors, unwrap_checkpoint
from .manifest import HUB_ORG, WEIGHTS_FILENAME
from ..models import REPORTED_RESULTS, PretrainedWeightsError, list_clip_models
from .filtering import CheckpointMismatchError
from .loading import classes_of_weights

__all__ = [
    'REPO_FILES', 'HubFolderError', 'ExportResult', 'export_folder', 'seed_hf_cache', 'verify_folder', 'push_folder']

REPO_FILES = (WEIGHTS_FILENAME, 'config.json', 'README.md')  # exactly what a published repo holds


class HubFolderError(RuntimeError):
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
) -> ExportResult:
    """Write a ready-to-upload Hub repo folder (model.safetensors, config.json, README.md) from a checkpoint
    (``checkpoint_entry``: the entry of a training container to export; default: the model entry).

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
    if not out.parent.is_dir():
        raise HubFolderError(f'--out {out}: the folder {out.parent} does not exist; create it first.')
    eval_metrics = load_eval_metrics(metrics) if metrics is not None else None
    for flag, text in (('--train-dataset', train_dataset), ('--recipe', recipe), ('--license', license)):
        _check_free_text(flag, text)
    reported = REPORTED_RESULTS.get(f'{arch}.{tag}')  # an official release: its architecture is the tag's own
    released = reported is not None
    if released:  # the dataset the authors' release was trained on, unless the exporter states it
        train_dataset = train_dataset or reported.dataset
    model = _source_model(checkpoint, model_kwargs, arch, tag, checkpoint_entry)
    if dtype == 'float16':
        model = model.half()

    name = f'{arch}.{tag}' if tag else arch
    hf_hub_id = f'{hub_org}/{name}' if tag else None
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
    return dict(model_config=dict(pretrained_cfg=dict(tag=tag, license=license)), model_args=arch_args)


def _source_model(
        checkpoint: PathLike, model_kwargs: Optional[Dict[str, Any]], arch: Optional[str] = None,
        tag: Optional[str] = None, checkpoint_entry: Optional[str] = None) -> torch.nn.Module:
    """The model a training checkpoint was trained as, its architecture from a source that knows it.

    A checkpoint folder (a run's ``last/`` or ``best/``) records it in ``config.json``, a torch container may
    under ``model_args``; a bare weights file does not (heads, windows, ...), so ``model_kwargs`` must state it
    (``{}`` states the architecture's defaults). ``arch`` defaults to the folder's architecture; a registered
    ``tag`` gives its pretrained cfg: protocol, label names, the authors' reported results. An official release's
    file needs no ``model_kwargs``: its architecture is the tag's own. A training container's weights are its
    ``checkpoint_entry``, by default the model entry (the one rule of ``files.unwrap_checkpoint``).
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


def seed_hf_cache(cache_dir: PathLike, repo_id: str, folder: PathLike, commit: str = '0' * 40) -> Path:
    """Place a repo folder's files in a Hugging Face cache as revision ``commit`` (also ``main``); return the snapshot."""
    root = Path(cache_dir) / f'models--{repo_id.replace("/", "--")}'
    (root / 'refs').mkdir(parents=True, exist_ok=True)
    (root / 'refs' / 'main').write_text(commit)
    snapshot = root / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        if (Path(folder) / name).is_file():
            shutil.copy(Path(folder) / name, snapshot / name)
    return snapshot


def _check_folder(folder: Path) -> Dict[str, Any]:
    if not folder.is_dir():
        raise HubFolderError(f'Not a folder: {folder}')
    missing = [name for name in REPO_FILES if not (folder / name).is_file()]
    if missing:
        raise HubFolderError(f'{folder} is missing {", ".join(missing)}; export it again with hub/export.py.')
    extra = sorted(p.name for p in folder.iterdir() if p.name not in REPO_FILES and not p.name.startswith('.'))
    if extra:
        raise HubFolderError(f'{folder} holds files a repo must not publish: {", ".join(extra)}. Remove them.')
    try:
        config = json.loads((folder / 'config.json').read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise HubFolderError(f'{folder / "config.json"} is not valid JSON: {e}') from None
    if not is_model(str(config.get('architecture'))):
        raise HubFolderError(
            f'{folder / "config.json"}: architecture {config.get("architecture")!r} is not a registered model.')
    problem = card_problem(folder / 'README.md')
    if problem:
        raise HubFolderError(problem)
    return config


def _differences(expected: Any, actual: Any, prefix: str = '') -> List[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [d for key in sorted(set(expected) | set(actual), key=str)
                for d in _differences(expected.get(key), actual.get(key), f'{prefix}{key}.')]
    return [] if expected == actual else [prefix.rstrip('.') or 'the whole file']


def _tensor_differences(expected: Dict[str, torch.Tensor], actual: Dict[str, torch.Tensor]) -> List[str]:
    """Each key whose tensor is not bitwise the expected one (dtype, shape and bytes), missing or unexpected."""
    def raw(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)

    differ = [f'{k} is missing' for k in expected if k not in actual]
    differ += [f'{k} is unexpected' for k in actual if k not in expected]
    for key in (k for k in expected if k in actual):
        a, b = expected[key], actual[key]
        if a.dtype != b.dtype or a.shape != b.shape:
            differ.append(f'{key} is {b.dtype} {tuple(b.shape)}, not {a.dtype} {tuple(a.shape)}')
        elif not torch.equal(raw(a), raw(b)):
            differ.append(f'{key} differs')
    return differ


def _fixed_clip(model: torch.nn.Module) -> torch.Tensor:
    shape = (model.in_chans, model.num_frames, *model.img_size)
    if model.input_layout == 'BTCHW':
        shape = (model.num_frames, model.in_chans, *model.img_size)
    return torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))


def verify_folder(
        folder: PathLike, checkpoint: PathLike, model_kwargs: Optional[Dict[str, Any]] = None,
        checkpoint_entry: Optional[str] = None) -> Dict[str, float]:
    """Check a repo folder against its source checkpoint: every tensor bitwise, then the logits of a fixed clip
    through ``local-dir:`` and a seeded offline ``hf-hub:`` cache.

    Every tensor of ``model.safetensors`` must be bitwise the source's after the architecture's documented key
    mapping (its ``checkpoint_filter_fn``: an official release's keys become ours), so a change the fixed clip
    does not reach is found too. The source is the training checkpoint built from its own architecture record (a checkpoint folder's
    ``config.json``, or ``model_kwargs`` for a bare file), never from the folder's, and the folder's
    ``config.json`` must be exactly what an export of that source writes. The source is rounded to the folder's
    weight dtype, so a float16 export is compared exactly with the float16-rounded source. Returns the max
    |difference| per route (all 0.0); raises on any mismatch.
    """
    folder = Path(folder)
    config = _check_folder(folder)
    exported = read_safetensors((folder / WEIGHTS_FILENAME).read_bytes(), folder / WEIGHTS_FILENAME)
    check_weights(exported, folder / WEIGHTS_FILENAME)
    arch, tag = config['architecture'], (config.get('pretrained_cfg') or {}).get('tag')
    source = _source_model(
        checkpoint, model_kwargs, None if Path(checkpoint).is_dir() else arch, tag, checkpoint_entry)
    dtypes = {v.dtype for v in exported.values() if v.is_floating_point()}
    if len(dtypes) != 1:
        raise HubFolderError(f'{folder / WEIGHTS_FILENAME} mixes floating dtypes {sorted(map(str, dtypes))}.')
    dtype = dtypes.pop()
    pretrained_cfg = config.get('pretrained_cfg') or {}
    with tempfile.TemporaryDirectory() as tmp:
        save_config_for_hf(source, Path(tmp) / 'config.json', **_export_config(
            source, pretrained_cfg.get('tag'), pretrained_cfg.get('license', 'mit')))
        expected = json.loads((Path(tmp) / 'config.json').read_text(encoding='utf-8'))
    differ = _differences(expected, config)
    if differ:
        raise HubFolderError(
            f'{folder / "config.json"} is not what {checkpoint} exports to: {", ".join(differ[:8])} differ. '
            f'Export the folder again with hub/export.py.')
    expected = {k: v.to(dtype) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    differ = _tensor_differences(expected, exported)
    if differ:
        raise HubFolderError(
            f'{folder / WEIGHTS_FILENAME} is not the weights of {checkpoint} (after its key mapping): '
            f'{"; ".join(differ[:6])}{f" ... ({len(differ)} in all)" if len(differ) > 6 else ""}. '
            f'Export the folder again with hub/export.py.')
    source.load_state_dict({k: v.to(source.state_dict()[k].dtype) for k, v in expected.items()})
    clip = _fixed_clip(source)
    with torch.no_grad():
        reference = source(clip)

    routes = {}
    with tempfile.TemporaryDirectory() as cache:
        commit = file_sha256(folder / WEIGHTS_FILENAME)[:40]  # a commit hash revision is served from the cache
        repo_id = f'{HUB_ORG}/verify-export'  # never a manifest name, so only this check reads it
        seed_hf_cache(cache, repo_id, folder, commit)
        for route, kwargs in ((f'local-dir:{folder}', {}), (f'hf-hub:{repo_id}@{commit}', dict(cache_dir=cache))):
            try:
                model = create_model(route, pretrained=True, **kwargs).eval()
            except Exception as e:
                raise HubFolderError(f'{route} does not load: {e}') from e
            with torch.no_grad():
                logits = model(clip)
            same_shape = logits.shape == reference.shape
            diff = (logits.float() - reference.float()).abs().max().item() if same_shape else math.inf
            routes[route.split(':', 1)[0]] = diff
            if diff != 0.:
                raise HubFolderError(
                    f'{route}: logits differ from the checkpoint {checkpoint} on the fixed clip '
                    f'(max |diff| {diff:.3g}, shapes {tuple(logits.shape)} vs {tuple(reference.shape)}).')
    return routes


def push_folder(
        folder: PathLike,
        repo_id: str,
        checkpoint: PathLike,
        dry_run: bool = True,
        private: bool = False,
        commit_message: Optional[str] = None,
        api: Any = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        checkpoint_entry: Optional[str] = None,
) -> Dict[str, Any]:
    """Verify a repo folder, then upload it with ``HfApi`` (``create_repo(exist_ok=True)``, ``upload_folder``).

    With ``dry_run`` nothing is uploaded and the result lists exactly the files that would be. ``api`` replaces
    the ``HfApi`` object (tests); the token comes from the environment (``HF_TOKEN`` or ``hf auth login``).
    """
    if repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise HubFolderError(f'--repo-id must be ORG/NAME, got {repo_id!r}.')
    if not dry_run and api is None:
        import huggingface_hub
        if huggingface_hub.get_token() is None:  # before any network call
            raise HubFolderError(
                'push --yes needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`.')
    folder = Path(folder)
    verified = verify_folder(folder, checkpoint, model_kwargs, checkpoint_entry)
    files = [(name, (folder / name).stat().st_size) for name in REPO_FILES]
    result = dict(repo_id=repo_id, files=files, verified=verified, sha256=file_sha256(folder / WEIGHTS_FILENAME),
                  commit_url=None)
    if dry_run:
        return result
    if api is None:
        from huggingface_hub import HfApi
        api = HfApi(library_name='logoformer-timm', library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), allow_patterns=list(REPO_FILES),
        commit_message=commit_message or f'Upload {repo_id.split("/")[1]} (logoformer-timm {__version__})')
    result['commit_url'] = info.commit_url
    return result
