"""Turn a training checkpoint into a Hugging Face Hub repo folder, verify such a folder, and publish it.

Command line: ``logoformer-hub export|verify|push`` (also ``python -m logoformer_timm.weights.hub``; the repository's
``hub/export.py``, ``hub/verify.py`` and ``hub/push.py`` are the same subcommands), over :func:`export_folder`,
:func:`verify_folder` and :func:`push_folder`.

Evaluation metrics (``--metrics EVAL.json``)
--------------------------------------------
The model card's metrics table comes from one JSON file and from nothing else. It is the ``metrics.json`` that
``logoformer-eval`` writes. Schema (one JSON object)::

    {
      "uar": 0.6523,                      # unweighted average recall = mean per-class recall, a FRACTION in [0, 1]
      "war": 0.7011,                      # weighted average recall = overall accuracy, a FRACTION in [0, 1]
      "per_class": {"Happy": 0.89, ...},  # label -> recall (fraction in [0, 1]); key order = class index order
      "confusion_matrix": [[...], ...],   # integer counts, row i = true class i, column j = predicted class j,
                                          # classes in the order of "per_class"
      "num_clips": 2341,                  # clips evaluated = sum of the confusion matrix
      "protocol": "DFEW 5-fold, fold 1 test split, 16 frames, ...",  # free text: how the numbers were measured
      "dataset": "DFEW",                  # optional: evaluation dataset
      "fold": 1                           # optional: fold number (int) or name (str)
    }

Metrics are fractions, never percent: the card prints them as percent. :func:`load_eval_metrics` rejects a file
whose ``uar``, ``war`` or ``per_class`` disagree with its confusion matrix by more than ``1e-4`` (the rounding of
4 decimals), so a hand-edited or mistyped number cannot reach a model card.
"""
import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from timm.layers import to_2tuple
from timm.models import create_model, is_model, save_for_hf
from timm.models._hub import save_config_for_hf

from .. import __version__
from ..cli import ArgumentParser, run_cli
from .files import file_sha256, read_checkpoint, read_safetensors, unwrap_checkpoint
from .manifest import HUB_ORG, WEIGHTS_FILENAME
from ..models import DFER_LABELS, PretrainedWeightsError

__all__ = [
    'EVAL_METRICS_KEYS', 'REPO_FILES', 'MetricsFileError', 'HubFolderError', 'ExportResult', 'load_eval_metrics',
    'validate_eval_metrics', 'export_folder', 'model_card', 'seed_hf_cache', 'verify_folder',
    'push_folder', 'build_parser', 'main']

PathLike = Union[str, os.PathLike]
REPO_FILES = (WEIGHTS_FILENAME, 'config.json', 'README.md')  # exactly what a published repo holds

EVAL_METRICS_KEYS = ('uar', 'war', 'per_class', 'confusion_matrix', 'num_clips', 'protocol')
_METRICS_ATOL = 1e-4


class MetricsFileError(ValueError):
    """An evaluation metrics file that does not follow the schema in this module's docstring."""


def load_eval_metrics(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read and validate an evaluation ``metrics.json`` (schema in this module's docstring)."""
    try:
        with open(path, encoding='utf-8') as f:
            metrics = json.load(f)
    except FileNotFoundError:
        raise MetricsFileError(f'Metrics file not found: {path}') from None
    except json.JSONDecodeError as e:
        raise MetricsFileError(f'Metrics file {path} is not valid JSON: {e}') from None
    return validate_eval_metrics(metrics, source=str(path))


def validate_eval_metrics(metrics: Any, source: str = 'metrics') -> Dict[str, Any]:
    """Check an evaluation metrics dict against the schema and its own confusion matrix; return it unchanged."""
    def fail(problem: str):
        raise MetricsFileError(f'{source}: {problem} (schema: see logoformer_timm/weights/hub.py)')

    if not isinstance(metrics, dict):
        fail(f'expected a JSON object, got {type(metrics).__name__}')
    missing = [k for k in EVAL_METRICS_KEYS if k not in metrics]
    if missing:
        fail(f'missing keys {missing}')
    for key in ('uar', 'war'):
        value = metrics[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0. <= value <= 1.:
            fail(f'"{key}" must be a fraction in [0, 1] (not percent), got {value!r}')
    per_class = metrics['per_class']
    if not isinstance(per_class, dict) or not per_class:
        fail('"per_class" must be a non-empty object label -> recall')
    for label, recall in per_class.items():
        if isinstance(recall, bool) or not isinstance(recall, (int, float)) or not 0. <= recall <= 1.:
            fail(f'per_class[{label!r}] must be a fraction in [0, 1] (not percent), got {recall!r}')
    cm = metrics['confusion_matrix']
    n = len(per_class)
    if (not isinstance(cm, list) or len(cm) != n
            or any(not isinstance(row, list) or len(row) != n for row in cm)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for row in cm for v in row)):
        fail(f'"confusion_matrix" must be a {n}x{n} list of non-negative integer counts (one row per class)')
    num_clips = metrics['num_clips']
    total = sum(map(sum, cm))
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips != total or total == 0:
        fail(f'"num_clips" ({num_clips!r}) must be a positive integer equal to the confusion matrix sum ({total})')
    if not isinstance(metrics['protocol'], str) or not metrics['protocol'].strip():
        fail('"protocol" must be a non-empty string saying how the numbers were measured')
    if 'dataset' in metrics and not isinstance(metrics['dataset'], str):
        fail(f'"dataset" must be a string, got {metrics["dataset"]!r}')
    if 'fold' in metrics and (isinstance(metrics['fold'], bool) or not isinstance(metrics['fold'], (int, str))):
        fail(f'"fold" must be an integer or a string, got {metrics["fold"]!r}')

    # the headline numbers must follow from the confusion matrix
    recalls = [row[i] / sum(row) if sum(row) else math.nan for i, row in enumerate(cm)]
    for (label, recall), derived in zip(per_class.items(), recalls):
        if math.isnan(derived):
            fail(f'class {label!r} has no clips in the confusion matrix, so its recall is undefined')
        if abs(recall - derived) > _METRICS_ATOL:
            fail(f'per_class[{label!r}] = {recall} but the confusion matrix gives {derived:.6f}')
    uar, war = sum(recalls) / n, sum(cm[i][i] for i in range(n)) / total
    if abs(metrics['uar'] - uar) > _METRICS_ATOL:
        fail(f'"uar" = {metrics["uar"]} but the mean of the per-class recalls is {uar:.6f}')
    if abs(metrics['war'] - war) > _METRICS_ATOL:
        fail(f'"war" = {metrics["war"]} but the confusion matrix accuracy is {war:.6f}')
    return metrics


class HubFolderError(RuntimeError):
    """A checkpoint, export folder or upload request that cannot be used; the message names the file."""


def _args_from_weights(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """Model arguments that the weights themselves fix: frames, resolution, channels, classes."""
    weights = unwrap_checkpoint(checkpoint)
    args = {}
    if 'pos_embed_temporal' in weights:
        args['num_frames'] = weights['pos_embed_temporal'].shape[1]
    if 'pos_embed_spatial' in weights:
        args['img_size'] = [weights['pos_embed_spatial'].shape[1] * 16, weights['pos_embed_spatial'].shape[2] * 16]
    if 'stem.conv1.weight' in weights:
        args['in_chans'] = weights['stem.conv1.weight'].shape[1]
    args['num_classes'] = weights['head.weight'].shape[0] if 'head.weight' in weights else 0
    return args


def _build_from_checkpoint(
        model_name: str, checkpoint_path: PathLike, checkpoint: Dict[str, Any], model_kwargs: Dict[str, Any],
) -> torch.nn.Module:
    """The model the checkpoint was trained as, with exactly its weights (nothing resampled or adapted)."""
    from_weights = _args_from_weights(checkpoint)
    for key, value in model_kwargs.items():
        if key in from_weights and _as_list(value) != _as_list(from_weights[key]):
            raise HubFolderError(
                f'{checkpoint_path}: {key}={value!r} was requested but the weights were trained with '
                f'{key}={from_weights[key]!r}; an export never resamples or adapts weights. Drop the argument.')
    kwargs = {**model_kwargs, **from_weights}
    # the cfg describes the source weights, so timm keeps their classifier instead of resetting it
    source_cfg = dict(
        file=str(checkpoint_path), num_classes=from_weights['num_classes'],
        input_size=(kwargs.get('in_chans', 3), *to_2tuple(kwargs.get('img_size', 112))))
    if from_weights['num_classes'] != len(DFER_LABELS):
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
        model_name: str,
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
) -> ExportResult:
    """Write a ready-to-upload Hub repo folder (model.safetensors, config.json, README.md) from a checkpoint."""
    arch = model_name.split('.', 1)[0]
    if not arch.startswith('logoformer_') or not is_model(arch):
        raise HubFolderError(
            f'--model must be a registered LOGO-Former architecture such as logoformer_base, got {model_name!r}.')
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
    model = _source_model(checkpoint, model_kwargs, arch)
    if dtype == 'float16':
        model = model.half()

    name = f'{arch}.{tag}' if tag else arch
    hf_hub_id = f'{hub_org}/{name}' if tag else None
    tmp = out.parent / f'.{out.name}.tmp'  # written completely, then renamed: never a half-written --out
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_for_hf(model, tmp, **_export_config(model, tag, license), safe_serialization=True)
        (tmp / 'README.md').write_text(model_card(
            model, name, hf_hub_id=hf_hub_id, metrics=eval_metrics, train_dataset=train_dataset, recipe=recipe,
            license=license, dtype=dtype), encoding='utf-8')
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sha256 = file_sha256(out / WEIGHTS_FILENAME)
    entry, note = _manifest_entry(arch, tag, sha256, eval_metrics, train_dataset, recipe, license, model.num_classes)
    return ExportResult(out, sha256, hf_hub_id, entry, note)


def _export_config(model: torch.nn.Module, tag: Optional[str], license: str) -> Dict[str, Any]:
    """The ``model_config`` and ``model_args`` of timm's ``save_for_hf`` for an export (and for verifying one)."""
    arch_args = dict(  # what the weights do not fix but their meaning depends on
        local_window=list(model.local_window), global_pool_size=list(model.global_pool_size),
        block_types=list(model.block_types), input_layout=model.input_layout)
    return dict(model_config=dict(pretrained_cfg=dict(tag=tag, license=license)), model_args=arch_args)


def _source_model(
        checkpoint: PathLike, model_kwargs: Optional[Dict[str, Any]], arch: Optional[str] = None) -> torch.nn.Module:
    """The model a training checkpoint was trained as, its architecture from a source that knows it.

    A checkpoint folder (a run's ``last/`` or ``best/``) records it in ``config.json``, a torch container may
    under ``model_args``; a bare weights file does not (heads, windows, ...), so ``model_kwargs`` must state it
    (``{}`` states the architecture's defaults). ``arch`` defaults to the folder's architecture.
    """
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
    return _build_from_checkpoint(arch, path, ckpt, {**known, **(model_kwargs or {})})


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


CARD_SECTIONS = ['## Training', '## Results', '## Usage', '## Limitations', '## Citation']
NO_RESULTS = 'No evaluation results were supplied for these weights, so none are reported.'


def _results_table(uar: float, war: float) -> str:
    """The card's metrics table (fractions printed as percent)."""
    return (f'| metric | value (%) |\n|---|---|\n| UAR (mean per-class recall) | {100 * uar:.2f} |\n'
            f'| WAR (accuracy) | {100 * war:.2f} |')


def _md_text(text: Any) -> str:
    """Free text as literal Markdown: one line, every Markdown character backslash-escaped."""
    return re.sub(r'([\\`*_{}\[\]<>()#+\-.!|~=])', r'\\\1', ' '.join(str(text).split()))


def _md_code(text: str) -> str:
    """Free text as a one-line Markdown code span, whatever backticks it holds."""
    text = ' '.join(text.split())
    fence = '`' * (max((len(run) for run in re.findall('`+', text)), default=0) + 1)
    return f'{fence} {text} {fence}'


def _check_free_text(flag: str, text: Optional[str]) -> None:
    """A free-text export option is one line without control characters or a YAML document marker."""
    if text is not None and (any(ord(c) < 32 or ord(c) == 127 for c in text) or '---' in text):
        raise HubFolderError(
            f'{flag} must be one line of text without control characters (newlines, tabs) or "---", got {text!r}.')


def model_card(
        model: torch.nn.Module,
        name: str,
        hf_hub_id: Optional[str] = None,
        metrics: Optional[Dict[str, Any]] = None,
        train_dataset: Optional[str] = None,
        recipe: Optional[str] = None,
        license: str = 'mit',
        dtype: str = 'float32',
) -> str:
    """The README.md of a Hub repo: YAML front matter, then what, how trained, measured metrics, usage, limits."""
    from huggingface_hub import EvalResult, ModelCardData

    datasets = [d for d in dict.fromkeys([train_dataset, (metrics or {}).get('dataset')]) if d]
    eval_results = None
    if metrics:
        dataset = metrics.get('dataset') or 'evaluation set'
        split = f'fold {metrics["fold"]}' if metrics.get('fold') is not None else None
        eval_results = [
            EvalResult(task_type='video-classification', dataset_type=dataset.lower(), dataset_name=dataset,
                       dataset_split=split, metric_type=metric_type, metric_name=metric_name, metric_value=metrics[key])
            for key, metric_type, metric_name in (('uar', 'recall', 'UAR'), ('war', 'accuracy', 'WAR'))]
    card_data = ModelCardData(
        library_name='timm', pipeline_tag='video-classification', license=license,
        tags=['timm', 'video-classification', 'facial-expression-recognition', 'logoformer'],
        datasets=datasets or None, metrics=['recall', 'accuracy'] if metrics else None,
        model_name=name if metrics else None, eval_results=eval_results)
    c, t, (h, w) = model.in_chans, model.num_frames, model.img_size
    params = sum(p.numel() for p in model.parameters()) / 1e6
    shape = f'(1, {c}, {t}, {h}, {w})' if model.input_layout == 'BCTHW' else f'(1, {t}, {c}, {h}, {w})'
    load_name = f'hf-hub:{hf_hub_id}' if hf_hub_id else 'local-dir:path/to/this/folder'
    labels = model.pretrained_cfg.get('label_names') or ()
    labels = labels if len(labels) == model.num_classes else ()
    labels = [_md_text(label) for label in labels]
    labels_comment = f": {', '.join(labels)}" if labels else ''

    if train_dataset and train_dataset.upper() in ('DFEW', 'FERV39K'):
        training = f'Trained on **{_md_text(train_dataset)}** (as stated by the exporter).'
    elif train_dataset:
        training = (f'Trained on **{_md_text(train_dataset)}** (as stated by the exporter). These weights were **not trained on '
                    f'DFEW or FERV39K**.')
    else:
        training = ('The exporter did not state the training data, so this card makes no claim about it: '
                    '**these weights were not shown to be trained on DFEW or FERV39K**.')
    if recipe:
        training += f'\n\nTraining recipe: {_md_code(recipe)}'

    if metrics:
        where = _md_text(', '.join(str(x) for x in (metrics.get('dataset'), split) if x)) or 'the evaluation set'
        per_class = ' | '.join(f'{_md_text(label)} {100 * r:.2f}' for label, r in metrics['per_class'].items())
        results = (
            f'Measured by `logoformer-eval` on {where}, {metrics["num_clips"]} clips. '
            f'Protocol: {_md_text(metrics["protocol"])}\n\n'
            f'{_results_table(metrics["uar"], metrics["war"])}\n\n'
            f'Per-class recall (%): {per_class}')
    else:
        results = NO_RESULTS

    body = f"""
# {name}

LOGO-Former (Ma, Sun, Li, ICASSP 2023, [arXiv:2305.03343](https://arxiv.org/abs/2305.03343)) for dynamic facial
expression recognition, as a [timm](https://github.com/huggingface/pytorch-image-models) model from the
`logoformer-timm` package (not on PyPI: install it from a clone of its repository with `pip install .`): a
per-frame ResNet-18 stem, then
Transformer blocks of local window and global attention over the space-time tokens.

- Architecture: `{model.pretrained_cfg.get('architecture', name)}`, {params:.2f} M parameters, weights stored as {dtype}
- Input: {t} frames of {h}x{w}, {c} channels, layout `{model.input_layout}`, values in [0, 1] (no mean/std normalisation)
- Output: {model.num_classes} logits{': ' + ', '.join(labels) if labels else ''}

## Training

{training}

## Results

{results}

## Usage

```python
import timm
import torch
import logoformer_timm  # registers the LOGO-Former architectures with timm (timm has no plugin discovery)

model = timm.create_model('{load_name}', pretrained=True).eval()
clip = torch.rand{shape}  # face crops, RGB in [0, 1]
probs = model(clip).softmax(dim=-1)  # {model.num_classes} classes{labels_comment}
```

## Limitations

- Dynamic facial expression datasets are small, collected from films and the web, and labelled with seven basic
  categories by annotators; predictions inherit their demographic and cultural biases.
- Input must be face crops prepared like the training data (same frame sampling and crop); other pipelines lower
  accuracy by an unknown amount.
- Expression recognition is not emotion recognition; do not use it to make decisions about people.

## Citation

```bibtex
@inproceedings{{ma2023logoformer,
  title={{LOGO-Former: Local-Global Spatio-Temporal Transformer for Dynamic Facial Expression Recognition}},
  author={{Ma, Fuyan and Sun, Bin and Li, Shutao}},
  booktitle={{IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)}},
  year={{2023}}
}}
```
"""
    return f'---\n{card_data.to_yaml()}\n---\n{body}'


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
    _check_card(folder / 'README.md')
    return config


def _check_card(path: Path) -> None:
    """The card's front matter is timm's, its sections are the template's, its numbers only the front matter's."""
    import yaml
    lines = path.read_text(encoding='utf-8').split('\n')
    end = lines.index('---', 1) if lines[0] == '---' and '---' in lines[1:] else 0
    front, body = lines[1:end], lines[end + 1:]
    for line in ('library_name: timm', 'pipeline_tag: video-classification'):
        if line not in front:
            raise HubFolderError(f'{path}: the YAML front matter lacks "{line}".')
    sections = [line for line in body if line.startswith('## ')]
    if sections != CARD_SECTIONS:
        raise HubFolderError(f'{path}: sections {sections} are not the model card template\'s {CARD_SECTIONS}.')
    meta = yaml.safe_load('\n'.join(front)) or {}
    results = body[body.index('## Results') + 1:body.index('## Usage')]
    table = [line for line in body if line.startswith('|')]
    if 'model-index' not in meta:
        if table or [line for line in results if line.strip()] != [NO_RESULTS]:
            raise HubFolderError(
                f'{path}: the card shows results but its front matter has none; a card\'s numbers come only from '
                f'hub/export.py --metrics.')
        return
    values = {m.get('name'): m.get('value') for m in meta['model-index'][0]['results'][0]['metrics']}
    if table != _results_table(values.get('UAR', math.nan), values.get('WAR', math.nan)).split('\n'):
        raise HubFolderError(f'{path}: the results table differs from the metrics in the front matter.')


def _differences(expected: Any, actual: Any, prefix: str = '') -> List[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [d for key in sorted(set(expected) | set(actual), key=str)
                for d in _differences(expected.get(key), actual.get(key), f'{prefix}{key}.')]
    return [] if expected == actual else [prefix.rstrip('.') or 'the whole file']


def _fixed_clip(model: torch.nn.Module) -> torch.Tensor:
    shape = (model.in_chans, model.num_frames, *model.img_size)
    if model.input_layout == 'BTCHW':
        shape = (model.num_frames, model.in_chans, *model.img_size)
    return torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))


def verify_folder(
        folder: PathLike, checkpoint: PathLike, model_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """Reload a repo folder through ``local-dir:`` and a seeded offline ``hf-hub:`` cache; logits must equal the source.

    The source is the training checkpoint built from its own architecture record (a checkpoint folder's
    ``config.json``, or ``model_kwargs`` for a bare file), never from the folder's, and the folder's
    ``config.json`` must be exactly what an export of that source writes. The source is rounded to the folder's
    weight dtype, so a float16 export is compared exactly with the float16-rounded source. Returns the max
    |difference| per route (all 0.0); raises on any mismatch.
    """
    folder = Path(folder)
    config = _check_folder(folder)
    exported = read_safetensors((folder / WEIGHTS_FILENAME).read_bytes(), folder / WEIGHTS_FILENAME)
    source = _source_model(checkpoint, model_kwargs, None if Path(checkpoint).is_dir() else config['architecture'])
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
    source.load_state_dict({
        k: v.to(dtype).to(v.dtype) if v.is_floating_point() else v for k, v in source.state_dict().items()})
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
    verified = verify_folder(folder, checkpoint, model_kwargs)
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


_EXPORT_DOC = """Turn a LOGO-Former training checkpoint into a ready-to-upload Hugging Face Hub repo folder.

Writes model.safetensors, config.json (timm's format) and a README.md model card, then prints the sha256 of
model.safetensors and the entry to add to logoformer_timm/weights/manifest.py. Frames, resolution, input channels and
classes are read from the weights, the rest of the architecture from the checkpoint folder's config.json (or
--model-kwargs for a bare weights file); the metrics table of the card comes only from --metrics."""
_VERIFY_DOC = """Check an exported Hub repo folder before publishing it.

Reloads the folder through timm's local-dir: route and through hf-hub: from a seeded offline cache, and checks
that both give logits identical to the source checkpoint on a fixed clip. Exits non-zero on any difference."""
_PUSH_DOC = """Publish a verified export folder to the Hugging Face Hub.

Runs the verify checks first and refuses a folder that fails them. Without --yes this is a dry run that lists
exactly what would be uploaded. With --yes it creates the repo if needed (HfApi.create_repo(exist_ok=True)),
uploads the folder (HfApi.upload_folder) with the token from the environment (HF_TOKEN or `hf auth login`) and
prints the commit URL."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``logoformer-hub`` (``python -m logoformer_timm.weights.hub``, ``hub/*.py``)."""
    from timm.utils import ParseKwargs

    parser = ArgumentParser(
        prog='logoformer-hub', description='Export, verify and publish LOGO-Former weights on the Hugging Face Hub.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='{export,verify,push}')
    raw = argparse.RawDescriptionHelpFormatter

    export = commands.add_parser('export', help=_EXPORT_DOC.split('\n')[0], description=_EXPORT_DOC,
                                 formatter_class=raw)
    export.add_argument('--model', required=True,
                        help='architecture the checkpoint was trained as, e.g. logoformer_base')
    export.add_argument('--checkpoint', required=True,
                        help="a training run's checkpoint folder (runs/NAME/last or best), or a weights file: "
                             '.safetensors, or a torch file (loaded weights-only) together with --model-kwargs')
    export.add_argument('--out', required=True, help='new (or empty) folder to write the repo into')
    export.add_argument('--tag', help='pretrained tag, e.g. dfew_fold1; the repo becomes logoformer-timm/<model>.<tag>')
    export.add_argument('--metrics', help='metrics.json written by logoformer-eval (schema in logoformer_timm/weights/hub.py)')
    export.add_argument('--dtype', default='float32', choices=('float32', 'float16'), help='stored weight dtype')
    export.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: every model argument it was trained with that the weights do '
                             'not fix, e.g. local_window="(2, 4, 4)" num_heads=8 (no values: the defaults)')
    export.add_argument('--train-dataset', help='dataset the weights were trained on, e.g. DFEW (stated on the card)')
    export.add_argument('--recipe', help='how the weights were trained: command line or URL (card and manifest)')
    export.add_argument('--license', default='mit', help='license of the weights (default: mit)')

    verify = commands.add_parser('verify', help=_VERIFY_DOC.split('\n')[0], description=_VERIFY_DOC,
                                 formatter_class=raw)
    verify.add_argument('folder', help='folder written by logoformer-hub export')
    verify.add_argument('--checkpoint', required=True, help='the training checkpoint the folder was exported from')
    verify.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: the --model-kwargs it was exported with')

    push = commands.add_parser('push', help=_PUSH_DOC.split('\n')[0], description=_PUSH_DOC, formatter_class=raw)
    push.add_argument('folder', help='folder written by logoformer-hub export')
    push.add_argument('--repo-id', required=True, help='ORG/NAME, e.g. logoformer-timm/logoformer_base.dfew_fold1')
    push.add_argument('--checkpoint', required=True, help='the training checkpoint the folder was exported from')
    push.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: the --model-kwargs it was exported with')
    push.add_argument('--yes', action='store_true', help='really upload (default: dry run)')
    push.add_argument('--dry-run', action='store_true', help='only list what would be uploaded (the default)')
    push.add_argument('--private', action='store_true', help='create the repo as private')
    return parser


def _export(args: argparse.Namespace, api: Any) -> None:
    import logoformer_timm  # noqa: F401  (registers the models)
    result = export_folder(
        args.model, args.checkpoint, args.out, tag=args.tag, metrics=args.metrics, dtype=args.dtype,
        model_kwargs=args.model_kwargs, train_dataset=args.train_dataset, recipe=args.recipe, license=args.license)
    print(f'wrote {result.folder}: ' + ', '.join(sorted(p.name for p in result.folder.iterdir())))
    print(f'sha256(model.safetensors) = {result.sha256}')
    if result.hf_hub_id:
        print(f'Hub repo: {result.hf_hub_id}')
    print(result.manifest_note)
    if result.manifest_entry:
        print(result.manifest_entry)


def _verify(args: argparse.Namespace, api: Any) -> None:
    for route, diff in verify_folder(args.folder, args.checkpoint, args.model_kwargs).items():
        print(f'{route}: logits identical to {args.checkpoint} (max |diff| {diff})')
    print(f'OK: {args.folder} is ready to push')


def _push(args: argparse.Namespace, api: Any) -> None:
    result = push_folder(
        args.folder, args.repo_id, args.checkpoint, dry_run=not args.yes, private=args.private, api=api,
        model_kwargs=args.model_kwargs)
    print('verified: ' + ', '.join(f'{route} identical' for route in result['verified']))
    print(f"{'would upload' if result['commit_url'] is None else 'uploaded'} to {result['repo_id']}:")
    for name, size in result['files']:
        print(f'  {name}  {size} bytes')
    print(f"sha256(model.safetensors) = {result['sha256']}")
    if result['commit_url'] is None:
        print('dry run: nothing uploaded; pass --yes to upload')
    else:
        print(f"commit: {result['commit_url']}")


def main(argv: Optional[Sequence[str]] = None, api: Any = None) -> int:
    """``logoformer-hub export|verify|push``; ``api`` replaces ``HfApi`` for push (tests). User errors exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == 'push' and args.yes and args.dry_run:
        parser.error('--yes and --dry-run contradict each other; pass one')
    command = dict(export=_export, verify=_verify, push=_push)[args.command]
    return run_cli(lambda: command(args, api))


if __name__ == '__main__':
    sys.exit(main())
