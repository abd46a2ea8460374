"""UAR / WAR / confusion matrix against hand-computed values."""
import math

import pytest
import torch

from logoformer_timm.dfer.metrics import confusion_matrix, per_class_recall, summarize, uar, war


def test_metrics_against_a_hand_computed_confusion_matrix_with_an_empty_class():
    targets = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3, 3])
    preds = torch.tensor([0, 1, 0, 1, 2, 3, 3, 0, 3])
    cm = confusion_matrix(preds, targets, num_classes=4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 3]]
    recall = per_class_recall(cm)
    assert recall[[0, 1, 3]].tolist() == pytest.approx([2 / 3, 1 / 2, 3 / 4])
    assert math.isnan(recall[2])  # class 2 has no samples: no recall, and it is left out of the UAR
    assert uar(cm) == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    assert war(cm) == pytest.approx(6 / 9)
    summary = summarize(cm)
    assert summary['per_class'][2] is None and summary['num_clips'] == 9
    assert summary['per_class'][3] == pytest.approx(0.75)


def test_uar_differs_from_war_on_imbalanced_data():
    # 8 clips of class 0 all right, 2 clips of class 1 all wrong: WAR 0.8, UAR 0.5
    cm = confusion_matrix(torch.tensor([0] * 8 + [0, 0]), torch.tensor([0] * 8 + [1, 1]), 2)
    assert war(cm) == pytest.approx(0.8) and uar(cm) == pytest.approx(0.5)


def test_bad_metric_input():
    with pytest.raises(ValueError, match='outside'):
        confusion_matrix(torch.tensor([0, 7]), torch.tensor([0, 1]), 7)
    with pytest.raises(ValueError, match='differ in length'):
        confusion_matrix(torch.tensor([0]), torch.tensor([0, 1]), 7)
    assert math.isnan(uar(torch.zeros(3, 3, dtype=torch.long)))
