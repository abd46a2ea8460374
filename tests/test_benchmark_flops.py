"""The FLOP counter against an analytic count written here, attention matmuls included, and SDPA not dropped."""
import math

import pytest
import timm
import torch

import logoformer_timm.layers.attention as attention_module
from logoformer_timm.bench.counting import count_flops, flops_by_part

VARIANTS = {  # embed_dim, depth (heads do not change the MAC count)
    'logoformer_tiny': (256, 2),
    'logoformer_small': (256, 4),
    'logoformer_base': (512, 4),
}
WINDOW = (2, 4, 4)
NUM_CLASSES = 7


def resnet18_stem_macs(h, w):
    """timm ResNet-18 conv1 .. layer3 on one h x w frame (convolutions only; BN/ReLU/pool have no MACs)."""
    def conv(out_h, out_w, cin, cout, k):
        return out_h * out_w * cout * cin * k * k
    h2, w2, h4, w4, h8, w8, h16, w16 = h // 2, w // 2, h // 4, w // 4, h // 8, w // 8, h // 16, w // 16
    macs = conv(h2, w2, 3, 64, 7)                                       # conv1, stride 2 (then maxpool /2)
    macs += 4 * conv(h4, w4, 64, 64, 3)                                 # layer1: 2 blocks x 2 convs
    macs += conv(h8, w8, 64, 128, 3) + 3 * conv(h8, w8, 128, 128, 3) + conv(h8, w8, 64, 128, 1)   # layer2 + down
    macs += conv(h16, w16, 128, 256, 3) + 3 * conv(h16, w16, 256, 256, 3) + conv(h16, w16, 128, 256, 1)
    return macs


def padded(size, multiple):
    return math.ceil(size / multiple) * multiple


def analytic_macs(embed_dim, depth, frames, img, block_types=('local', 'global'), mlp_ratio=4):
    """Per-part multiply-adds of one clip, from the architecture description (not from the code)."""
    c = embed_dim
    t, h, w = frames, img // 16, img // 16
    n = t * h * w                                                        # real tokens
    n_pad = padded(t, WINDOW[0]) * padded(h, WINDOW[1]) * padded(w, WINDOW[2])
    window_tokens = WINDOW[0] * WINDOW[1] * WINDOW[2]
    num_summaries = n_pad // window_tokens
    parts = dict(stem=frames * resnet18_stem_macs(img, img), token_embedding=n * 256 * c)
    per_block = {
        # q/k/v and output projection on real tokens only; q k^T and attn v over every padded window
        'local': n * c * 3 * c + 2 * n_pad * window_tokens * c + n * c * c,
        # q on real tokens, depthwise summary conv over the padded grid, k/v on summaries, attention, output
        'global': n * c * c + n_pad * c + num_summaries * c * 2 * c + 2 * n * num_summaries * c + n * c * c,
        'joint': n * c * 3 * c + 2 * n * n * c + n * c * c,
    }
    for kind in block_types:
        parts[f'{kind}_attention'] = depth * per_block[kind]
    parts['mlp'] = depth * 2 * n * c * mlp_ratio * c
    parts['head'] = c * NUM_CLASSES
    return parts


def attention_matmul_macs(embed_dim, depth, frames, img):
    """Only the q k^T and attn v matmuls of the default local + global blocks."""
    t, h, w = frames, img // 16, img // 16
    n = t * h * w
    n_pad = padded(t, WINDOW[0]) * padded(h, WINDOW[1]) * padded(w, WINDOW[2])
    window_tokens = WINDOW[0] * WINDOW[1] * WINDOW[2]
    return depth * (2 * n_pad * window_tokens * embed_dim + 2 * n * (n_pad // window_tokens) * embed_dim)


CLIPS = [(16, 112), (5, 96)]  # the default (7x7 grid, padded to 8x8) and one padded in time and space


@pytest.mark.parametrize('name', VARIANTS)
@pytest.mark.parametrize('frames,img', CLIPS)
def test_count_matches_analytic_formula(name, frames, img):
    embed_dim, depth = VARIANTS[name]
    model = timm.create_model(name, num_frames=frames, img_size=img, device='meta')
    count = count_flops(model, (1, 3, frames, img, img))
    expected = analytic_macs(embed_dim, depth, frames, img)
    assert count.macs == pytest.approx(sum(expected.values()), rel=0.01)
    assert count.gflops == pytest.approx(2 * count.gmacs)
    parts = {k: v / 2 for k, v in flops_by_part(count).items()}
    assert parts['stem'] == pytest.approx(expected['stem'], rel=0.01)
    assert parts['local attention'] == pytest.approx(expected['local_attention'], rel=0.01)
    assert parts['global attention'] == pytest.approx(expected['global_attention'], rel=0.01)
    assert parts['MLP'] == pytest.approx(expected['mlp'], rel=0.01)
    assert sum(parts.values()) == pytest.approx(count.macs)


def test_joint_count_matches_analytic_formula():
    model = timm.create_model('logoformer_base', block_types='joint', device='meta')
    count = count_flops(model, (1, 3, 16, 112, 112))
    expected = analytic_macs(512, 4, 16, 112, block_types=('joint',))
    assert count.macs == pytest.approx(sum(expected.values()), rel=0.01)
    assert flops_by_part(count)['joint attention'] / 2 == pytest.approx(expected['joint_attention'], rel=0.01)


def test_batch_scales_count():
    model = timm.create_model('logoformer_tiny', num_frames=4, device='meta')
    one, three = count_flops(model, (1, 3, 4, 112, 112)), count_flops(model, (3, 3, 4, 112, 112))
    assert three.flops == 3 * one.flops


def _set_fused(model, fused):
    for module in model.modules():
        if hasattr(module, 'fused_attn'):
            module.fused_attn = fused


def test_sdpa_is_not_dropped(monkeypatch):
    """Fused SDPA and explicit attention count the same; both exceed the count with attention removed by
    exactly the attention matmuls."""
    frames, img = 4, 112
    model = timm.create_model('logoformer_small', num_frames=frames, img_size=img, device='meta')
    shape = (1, 3, frames, img, img)
    _set_fused(model, True)
    fused = count_flops(model, shape).macs
    _set_fused(model, False)
    explicit = count_flops(model, shape).macs
    # attention removed: the output takes q's shape, no q k^T and no attn v
    monkeypatch.setattr(attention_module, 'attend', lambda q, k, v, *args, **kwargs: q * 1.)
    removed = count_flops(model, shape).macs
    assert fused == explicit
    assert fused - removed == attention_matmul_macs(256, 4, frames, img)


def test_backward_count_is_three_forwards_minus_first_input_grad():
    """fwd+bwd: every matmul/conv needs its weight gradient and (except the first conv) its input gradient."""
    model = timm.create_model('logoformer_tiny', num_frames=4, device='meta').eval()
    shape = (1, 3, 4, 112, 112)
    forward, train = count_flops(model, shape), count_flops(model, shape, backward=True)
    conv1 = 4 * (56 * 56 * 64 * 3 * 49) * 2  # the first conv has no input gradient
    assert train.flops == pytest.approx(3 * forward.flops - conv1, rel=0.01)
    assert not model.training  # counting leaves the caller's model alone
