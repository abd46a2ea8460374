"""Compact loss and the DFER training criterion ``classification loss + lambda * compact``.

LOGO-Former's compact loss regularisation ("minimum intra-class distance and maximum inter-class distance")
is not published as a formula; this is the project's formulation (``docs/architecture.md``), named as such.
With learnable class centres ``c_k`` in the space of the pooled features ``f`` (``forward_head(pre_logits=True)``):

    L_intra = mean_i ||f_i - c_{y_i}||^2
    L_inter = mean_{j != k} max(0, m - ||c_j - c_k||)^2
    L       = CE + lambda * (L_intra + L_inter)

The centres are parameters of the criterion: put them in the optimizer and the checkpoint.

The classification term is cross-entropy (``loss='ce'``) or, as in the code of the only public port of the
authors' tree, timm's ``AsymmetricLossSingleLabel(gamma_pos=1, gamma_neg=2, eps=0.1)`` (``loss='asl'``).
"""
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['CompactLoss', 'DferCriterion', 'LOSSES', 'create_classification_loss']

LOSSES = ('ce', 'asl')


class CompactLoss(nn.Module):
    """Intra-class pull towards learnable centres plus a squared hinge pushing centres ``margin`` apart."""

    def __init__(self, num_classes: int, feat_dim: int, margin: float = 10.0, device=None, dtype=None):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f'CompactLoss needs at least 2 classes, got {num_classes}.')
        self.num_classes = num_classes
        self.margin = margin
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim, device=device, dtype=dtype))

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(L_intra, L_inter)`` for features ``(B, D)`` and integer targets ``(B,)``."""
        centers = self.centers.to(features.dtype)
        intra = (features - centers[targets]).pow(2).sum(dim=1).mean()
        # pairwise centre distances through the difference (cdist's matmul form loses precision near 0)
        diff = centers.unsqueeze(0) - centers.unsqueeze(1)
        off_diag = ~torch.eye(self.num_classes, dtype=torch.bool, device=centers.device)
        dist = diff[off_diag].pow(2).sum(dim=-1).clamp_min(1e-12).sqrt()
        inter = F.relu(self.margin - dist).pow(2).mean()
        return intra, inter


def create_classification_loss(loss: str = 'ce', label_smoothing: float = 0.0) -> nn.Module:
    """The classification term ``(logits, integer targets) -> loss``: 'ce' or 'asl' (the authors' code)."""
    if loss == 'ce':
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if loss == 'asl':
        if label_smoothing:
            raise ValueError(
                f"label smoothing {label_smoothing} cannot be combined with loss 'asl': timm's "
                'AsymmetricLossSingleLabel already smooths the labels (eps=0.1); set the smoothing to 0 (--smoothing 0).')
        from timm.loss import AsymmetricLossSingleLabel
        return AsymmetricLossSingleLabel(gamma_pos=1, gamma_neg=2, eps=0.1)
    raise ValueError(f'loss must be one of {LOSSES}, got {loss!r}.')


class DferCriterion(nn.Module):
    """``loss(logits, y) + compact_weight * (L_intra + L_inter)`` on the pooled pre-logits features."""

    def __init__(
            self,
            num_classes: int,
            feat_dim: int,
            compact_weight: float = 0.001,
            margin: float = 10.0,
            label_smoothing: float = 0.0,
            loss: str = 'ce',
    ):
        super().__init__()
        self.compact_weight = compact_weight
        self.label_smoothing = label_smoothing
        self.loss = loss
        self.classification = create_classification_loss(loss, label_smoothing)
        self.compact = CompactLoss(num_classes, feat_dim, margin) if compact_weight > 0 else None

    def forward(
            self, logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Total loss and its parts (the classification term under its name ``loss``, ``intra``, ``inter``), detached."""
        cls = self.classification(logits.float(), targets)
        parts = {self.loss: cls.detach()}
        if self.compact is None:
            return cls, parts
        intra, inter = self.compact(features.float(), targets)
        parts.update(intra=intra.detach(), inter=inter.detach())
        return cls + self.compact_weight * (intra + inter), parts
