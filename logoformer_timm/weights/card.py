"""The model card of an exported Hub repo (README.md: template, Markdown escaping, the checks verify applies) and the
schema of the evaluation metrics its results table comes from (``metrics.json``, below).

Evaluation metrics (``--metrics EVAL.json``)
--------------------------------------------
The model card's metrics table comes from one JSON file and from nothing else. It is the ``metrics.json`` that
``logoformer-eval`` writes. Schema (one JSON object)::

    {
      "unit": "fraction",                 # optional (logoformer-eval writes it): the unit of uar, war, per_class
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
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

__all__ = [
    'EVAL_METRICS_KEYS', 'MetricsFileError', 'load_eval_metrics', 'validate_eval_metrics', 'model_card',
    'card_problem']

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
        raise MetricsFileError(f'{source}: {problem} (schema: see logoformer_timm/weights/card.py)')

    if not isinstance(metrics, dict):
        fail(f'expected a JSON object, got {type(metrics).__name__}')
    missing = [k for k in EVAL_METRICS_KEYS if k not in metrics]
    if missing:
        fail(f'missing keys {missing}')
    if metrics.get('unit', 'fraction') != 'fraction':
        fail(f'"unit" must be "fraction" (uar, war and per_class in [0, 1]), got {metrics["unit"]!r}')
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


CARD_SECTIONS = ['## Training', '## Results', '## Usage', '## Limitations', '## Citation']
NO_RESULTS = 'No evaluation results were supplied for these weights, so none are reported.'
NOT_MEASURED = 'No result was measured by this project (no DFER data is reachable where it is built).'
REPORTED_PREFIX = 'Reported by the authors (not measured by this project):'


def _results_table(uar: float, war: float) -> str:
    """The card's metrics table (fractions printed as percent)."""
    return (f'| metric | value (%) |\n|---|---|\n| UAR (mean per-class recall) | {100 * uar:.2f} |\n'
            f'| WAR (accuracy) | {100 * war:.2f} |')


# what Markdown (CommonMark, GitHub's and the Hub's extensions) interprets inside a line: escapes, code, emphasis
# (``_`` only at a word's edge), links, HTML, table cells, strikethrough, entities, math; and at a line's start:
# headings, quotes, list items, setext underlines
_MD_INLINE = re.compile(r'[\\`*\[\]<>|~&$]|(?<![^\W_])_|_(?![^\W_])')
_MD_LINE_START = re.compile(r'^(?:[#>+=-]|\d+(?=[.)]))')


def _md_text(text: Any) -> str:
    """Free text as literal Markdown on one line: readable as typed, only what Markdown would interpret escaped."""
    text = _MD_INLINE.sub(lambda m: '\\' + m.group(), ' '.join(str(text).split()))
    return _MD_LINE_START.sub(lambda m: m.group() + '\\' if m.group()[0].isdigit() else '\\' + m.group(), text)


def _md_code(text: str) -> str:
    """Free text as a one-line Markdown code span, whatever backticks it holds."""
    text = ' '.join(text.split())
    fence = '`' * (max((len(run) for run in re.findall('`+', text)), default=0) + 1)
    return f'{fence} {text} {fence}'


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
    """The README.md of a Hub repo: YAML front matter, then what, how trained, measured metrics, usage, limits.

    Weights of an official release (a tag with a reported result in ``models.REPORTED_RESULTS``) are said to be
    the authors', with their download page, and carry the authors' reported numbers labelled as theirs, never in
    the front matter's (measured) results.
    """
    from huggingface_hub import EvalResult, ModelCardData
    from ..models import REPORTED_RESULTS, citation_of

    cfg = model.pretrained_cfg
    arch = cfg.get('architecture', name.split('.', 1)[0])
    reported = REPORTED_RESULTS.get(f'{arch}.{cfg.get("tag")}') if cfg.get('tag') else None

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
        tags=['timm', 'video-classification', 'facial-expression-recognition', type(model).__module__.rsplit('.', 1)[-1]],
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

    if reported is not None:
        training = (f'These are the **authors\' own weights**, released at <{cfg.get("origin_url")}> '
                    f'({_md_text(cfg.get("description"))}); `logoformer-hub export` read the file as distributed and '
                    f'stored the same values under this package\'s key names. This project did not train them.')
    elif train_dataset and train_dataset.upper() in ('DFEW', 'FERV39K'):
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
    elif reported is not None:
        results = f'{_md_text(reported.describe())}\n\n{NOT_MEASURED}'
    else:
        results = NO_RESULTS
    mean, std = tuple(cfg.get('mean') or (0.,) * c), tuple(cfg.get('std') or (1.,) * c)
    values = ('values in [0, 1] (no mean/std normalisation)' if set(mean) == {0.} and set(std) == {1.} else
              f'RGB in [0, 1], then normalised with mean {mean} and std {std}')

    body = f"""
# {name}

{_md_text(cfg.get('paper_name') or arch)} ({_md_text(cfg.get('paper_ids') or '')}) for dynamic facial expression
recognition, as a [timm](https://github.com/huggingface/pytorch-image-models) model from the `logoformer-timm`
package (not on PyPI: install it from a clone of its repository with `pip install .`).

- Architecture: `{arch}`, {params:.2f} M parameters, weights stored as {dtype}
- Input: {t} frames of {h}x{w}, {c} channels, layout `{model.input_layout}`, {values}
- Output: {model.num_classes} logits{': ' + ', '.join(labels) if labels else ''}

## Training

{training}

## Results

{results}

## Usage

```python
import timm
import torch
import logoformer_timm  # registers the package's architectures with timm (timm has no plugin discovery)

model = timm.create_model('{load_name}', pretrained=True).eval()
clip = torch.rand{shape}  # face crops: {values}
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
{citation_of(model)}
```
"""
    return f'---\n{card_data.to_yaml()}\n---\n{body}'


def card_problem(path: Path) -> Optional[str]:
    """Why a README.md is not an exported model card, or None (verify refuses a folder whose card has a problem).

    The card's front matter is timm's, its sections are the template's, its numbers only the front matter's.
    """
    import yaml
    lines = path.read_text(encoding='utf-8').split('\n')
    end = lines.index('---', 1) if lines[0] == '---' and '---' in lines[1:] else 0
    front, body = lines[1:end], lines[end + 1:]
    for line in ('library_name: timm', 'pipeline_tag: video-classification'):
        if line not in front:
            return f'{path}: the YAML front matter lacks "{line}".'
    sections = [line for line in body if line.startswith('## ')]
    if sections != CARD_SECTIONS:
        return f'{path}: sections {sections} are not the model card template\'s {CARD_SECTIONS}.'
    meta = yaml.safe_load('\n'.join(front)) or {}
    results = body[body.index('## Results') + 1:body.index('## Usage')]
    table = [line for line in body if line.startswith('|')]
    if 'model-index' not in meta:
        lines = [line for line in results if line.strip()]
        reported = len(lines) == 2 and lines[0].startswith(_md_text(REPORTED_PREFIX)) and lines[1] == NOT_MEASURED
        if table or (lines != [NO_RESULTS] and not reported):
            return (f'{path}: the card shows results but its front matter has none; a card\'s numbers come only from '
                    f'hub/export.py --metrics.')
        return None
    values = {m.get('name'): m.get('value') for m in meta['model-index'][0]['results'][0]['metrics']}
    if table != _results_table(values.get('UAR', math.nan), values.get('WAR', math.nan)).split('\n'):
        return f'{path}: the results table differs from the metrics in the front matter.'
    return None
