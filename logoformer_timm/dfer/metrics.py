"""DFER metrics as plain tensors: confusion matrix, per-class recall, UAR and WAR.

WAR (weighted average recall) is the overall accuracy; UAR (unweighted average recall) is the mean of the
per-class recalls. A class without samples has no recall (NaN) and is left out of the UAR mean, as in
scikit-learn's ``balanced_accuracy_score``.
"""
from typing import Dict

import torch

__all__ = ['confusion_matrix', 'per_class_recall', 'uar', 'war', 'summarize']


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts; row = true class, column = predicted class."""
    preds, targets = preds.reshape(-1).long().cpu(), targets.reshape(-1).long().cpu()
    if preds.shape != targets.shape:
        raise ValueError(f'preds and targets differ in length: {preds.numel()} vs {targets.numel()}.')
    for name, values in (('preds', preds), ('targets', targets)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f'{name} hold values outside [0, {num_classes}): {values.min()}..{values.max()}.')
    flat = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_recall(cm: torch.Tensor) -> torch.Tensor:
    """Diagonal / row sum per class (float64); NaN for a class without samples."""
    cm = cm.double()
    return cm.diagonal() / cm.sum(dim=1)  # 0 / 0 = NaN


def uar(cm: torch.Tensor) -> float:
    """Unweighted average recall: mean per-class recall over the classes that have samples."""
    recall = per_class_recall(cm)
    present = ~recall.isnan()
    return float(recall[present].mean()) if present.any() else float('nan')


def war(cm: torch.Tensor) -> float:
    """Weighted average recall: overall accuracy."""
    total = cm.sum()
    return float(cm.diagonal().sum().double() / total) if total > 0 else float('nan')


def summarize(cm: torch.Tensor) -> Dict[str, object]:
    """UAR, WAR, per-class recall (None for classes without samples), confusion matrix and clip count."""
    return dict(
        uar=uar(cm),
        war=war(cm),
        per_class=[None if r != r else float(r) for r in per_class_recall(cm).tolist()],
        confusion_matrix=cm.tolist(),
        num_clips=int(cm.sum()),
    )
