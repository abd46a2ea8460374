"""Verify a Hub repo folder written by :func:`.publish.export_folder` against its checkpoint (bitwise tensors, then
the logits through ``local-dir:`` and an offline ``hf-hub:`` cache), and push it with ``HfApi``."""
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from timm.models import create_model, is_model
from timm.models._hub import save_config_for_hf

from .. import __version__
from .card import card_problem
from .files import PathLike, check_weights, file_sha256, read_safetensors
from .manifest import HUB_ORG, WEIGHTS_FILENAME
from .publish import REPO_FILES, HubFolderError, _export_config, _source_model

__all__ = ['seed_hf_cache', 'verify_folder', 'push_folder']


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
        checkpoint_entry: Optional[str] = None, extra_files: Optional[Dict[str, PathLike]] = None,
) -> Dict[str, float]:
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
        checkpoint, model_kwargs, None if Path(checkpoint).is_dir() else arch, tag, checkpoint_entry, extra_files)
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
        extra_files: Optional[Dict[str, PathLike]] = None,
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
    verified = verify_folder(folder, checkpoint, model_kwargs, checkpoint_entry, extra_files)
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
