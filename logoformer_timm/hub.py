"""Turn a training checkpoint into a Hugging Face Hub repo folder, verify such a folder, and publish it.

``hub/export.py``, ``hub/verify.py`` and ``hub/push.py`` are thin command-line wrappers over
:func:`export_folder`, :func:`verify_folder` and :func:`push_folder`.

Evaluation metrics (``--metrics EVAL.json``)
--------------------------------------------
The model card's metrics table comes from one JSON file and from nothing else. It is the ``metrics.json`` that
``logoformer-eval`` writes. Schema (one JSON object)::

    {
      "uar": 0.6523,                      # unweighted average recall = mean of the per-class recalls, a FRACTION in [0, 1]
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
from typing import Any, Dict, Union

__all__ = ['EVAL_METRICS_KEYS', 'MetricsFileError', 'load_eval_metrics', 'validate_eval_metrics']

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
        raise MetricsFileError(f'{source}: {problem} (schema: see logoformer_timm/hub.py)')

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
