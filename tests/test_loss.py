"""Compact loss: pulls features to their centre, pushes centres apart, zero when the margin holds."""
import pytest
import torch
import torch.nn.functional as F

from logoformer_timm.loss import CompactLoss, DferCriterion, create_classification_loss


def _loss(centers, margin=5.0):
    loss = CompactLoss(len(centers), len(centers[0]), margin=margin)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor(centers, dtype=torch.float32))
    return loss


def test_zero_with_zero_gradients_when_features_sit_on_centres_and_margin_holds():
    loss = _loss([[0., 0.], [6., 0.], [0., 7.]])  # all pairwise distances >= 6 > margin 5
    features = loss.centers.detach()[[0, 2, 1]].clone().requires_grad_()
    intra, inter = loss(features, torch.tensor([0, 2, 1]))
    assert intra.item() == 0 and inter.item() == 0
    (intra + inter).backward()
    assert features.grad.abs().max() == 0 and loss.centers.grad.abs().max() == 0


def test_intra_term_pulls_features_towards_their_centre():
    loss = _loss([[0., 0.], [10., 0.]])
    features = torch.tensor([[1., 2.], [12., -1.]], requires_grad=True)
    targets = torch.tensor([0, 1])
    intra, inter = loss(features, targets)
    assert intra.item() == pytest.approx((1 + 4 + 4 + 1) / 2)  # mean squared distance to own centre
    assert inter.item() == 0
    intra.backward()
    centers = loss.centers.detach()
    torch.testing.assert_close(features.grad, (features.detach() - centers[targets]))  # d/df of mean ||f - c||^2
    stepped = features.detach() - 0.1 * features.grad
    before = (features.detach() - centers[targets]).norm(dim=1)
    after = (stepped - centers[targets]).norm(dim=1)
    assert (after < before).all()
    # the centres move towards their features as well
    moved = centers - 0.1 * loss.centers.grad
    assert ((features.detach() - moved).norm(dim=1) < before).all()


def test_inter_term_pushes_close_centres_apart():
    loss = _loss([[0., 0.], [3., 0.]], margin=5.0)
    features = loss.centers.detach().clone()
    intra, inter = loss(features, torch.tensor([0, 1]))
    assert intra.item() == 0
    assert inter.item() == pytest.approx((5 - 3) ** 2)  # both ordered pairs: max(0, 5 - 3)^2
    inter.backward()
    moved = loss.centers.detach() - 0.1 * loss.centers.grad
    assert (moved[0] - moved[1]).norm() > 3
    assert loss.centers.grad[0, 0] > 0 > loss.centers.grad[1, 0]  # pushed along the line joining them


def test_criterion_is_cross_entropy_plus_weighted_compact_terms():
    torch.manual_seed(0)
    criterion = DferCriterion(num_classes=3, feat_dim=4, compact_weight=0.5, margin=2.0, label_smoothing=0.1)
    assert [n for n, _ in criterion.named_parameters()] == ['compact.centers']
    logits, features, targets = torch.randn(5, 3), torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    total, parts = criterion(logits, features, targets)
    intra, inter = criterion.compact(features, targets)
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1) + 0.5 * (intra + inter)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(parts['ce'], F.cross_entropy(logits, targets, label_smoothing=0.1))
    plain = DferCriterion(3, 4, compact_weight=0.0)
    assert list(plain.parameters()) == []
    torch.testing.assert_close(plain(logits, features, targets)[0], F.cross_entropy(logits, targets))


def test_asl_is_timms_single_label_asymmetric_loss_with_the_authors_parameters():
    from timm.loss import AsymmetricLossSingleLabel
    asl = create_classification_loss('asl')
    assert type(asl) is AsymmetricLossSingleLabel
    assert (asl.gamma_pos, asl.gamma_neg, asl.eps, asl.reduction) == (1, 2, 0.1, 'mean')
    # hand computation: loss = -sum_k t_k w_k log p_k with smoothed targets t = 0.9 onehot + 0.1 / K and
    # focusing weights w = (1 - p_y)^1 for the true class, p_k^2 for the others
    logits, targets = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]]), torch.tensor([0, 2])
    p = logits.softmax(-1)
    expected = []
    for i, y in enumerate(targets.tolist()):
        terms = []
        for k in range(3):
            t = 0.9 * (k == y) + 0.1 / 3
            w = (1 - p[i, k]) if k == y else p[i, k] ** 2
            terms.append(-t * w * p[i, k].log())
        expected.append(sum(terms))
    torch.testing.assert_close(asl(logits, targets), torch.stack(expected).mean())
    criterion = DferCriterion(3, 4, compact_weight=0.5, margin=2.0, loss='asl')
    features = torch.randn(2, 4)
    total, parts = criterion(logits, features, targets)
    intra, inter = criterion.compact(features, targets)
    torch.testing.assert_close(total, torch.stack(expected).mean() + 0.5 * (intra + inter))
    assert sorted(parts) == ['asl', 'inter', 'intra']


@pytest.mark.parametrize('loss, smoothing, message', [
    ('asl', 0.1, "cannot be combined with loss 'asl'"),
    ('focal', 0.0, 'loss must be one of'),
])
def test_incompatible_loss_settings_are_refused(loss, smoothing, message):
    with pytest.raises(ValueError, match=message):
        DferCriterion(3, 4, loss=loss, label_smoothing=smoothing)
