"""What ``logoformer-eval`` leaves in its ``--output``: ``metrics.json`` and ``predictions.jsonl``, written as a pair.

The rule a reader can rely on: ``metrics.json`` is the mark of a finished evaluation. It is renamed into place last
and records the sha256 of the ``predictions.jsonl`` it goes with (``predictions_sha256``). Both files are first
written whole (and synced) to hidden temporary files in the folder; then an earlier ``metrics.json`` is removed,
the new predictions renamed into place, and the new metrics last. A failure before the renames leaves the earlier
pair as it was; a failure between them removes the new predictions again; a kill between them leaves predictions
without a ``metrics.json``, which are no result. :func:`read_result_pair` reads a pair and checks that it is one.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, Sequence, Tuple

__all__ = ['METRICS_FILE', 'PREDICTIONS_FILE', 'write_result_pair', 'read_result_pair']

METRICS_FILE = 'metrics.json'
PREDICTIONS_FILE = 'predictions.jsonl'


def _write_synced(path: str, text: str) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_result_pair(folder: str, metrics: Dict[str, Any], prediction_lines: Sequence[str]) -> None:
    """Write ``metrics.json`` (with the predictions' sha256) and ``predictions.jsonl`` by the rule above."""
    os.makedirs(folder, exist_ok=True)
    predictions = ''.join(f'{line}\n' for line in prediction_lines)
    metrics = dict(metrics, predictions_sha256=hashlib.sha256(predictions.encode('utf-8')).hexdigest())
    final = {name: os.path.join(folder, name) for name in (METRICS_FILE, PREDICTIONS_FILE)}
    temporary = {name: os.path.join(folder, f'.{name}.tmp') for name in final}
    renamed = False
    try:
        _write_synced(temporary[PREDICTIONS_FILE], predictions)
        _write_synced(temporary[METRICS_FILE], json.dumps(metrics, indent=2) + '\n')
        if os.path.exists(final[METRICS_FILE]):
            os.remove(final[METRICS_FILE])  # from here until the last rename the folder holds no result
        os.replace(temporary[PREDICTIONS_FILE], final[PREDICTIONS_FILE])
        renamed = True
        os.replace(temporary[METRICS_FILE], final[METRICS_FILE])
    except BaseException:
        if renamed and not os.path.exists(final[METRICS_FILE]):
            os.remove(final[PREDICTIONS_FILE])
        raise
    finally:
        for path in temporary.values():
            if os.path.exists(path):
                os.remove(path)
    if hasattr(os, 'O_DIRECTORY'):  # the renames themselves reach the disk
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_result_pair(folder: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """``metrics.json`` and the lines of ``predictions.jsonl`` of an evaluation folder; a ``ValueError`` when the
    folder holds no finished evaluation or the predictions are not the ones its metrics were written with."""
    path = os.path.join(folder, METRICS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f'{folder} holds no {METRICS_FILE}: no finished evaluation (predictions without it are none).')
    with open(path, encoding='utf-8') as f:
        metrics = json.load(f)
    with open(os.path.join(folder, PREDICTIONS_FILE), 'rb') as f:
        predictions = f.read()
    if hashlib.sha256(predictions).hexdigest() != metrics.get('predictions_sha256'):
        raise ValueError(f'{folder}: {PREDICTIONS_FILE} is not the one {METRICS_FILE} was written with.')
    return metrics, [json.loads(line) for line in predictions.decode('utf-8').splitlines()]
