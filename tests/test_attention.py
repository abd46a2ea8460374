"""Local, global and joint attention against explicit, independently written references."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from logoformer_timm.layers import GlobalAttention3d, WindowAttention3d

DIM, HEADS = 16, 2


def grid_coords(t, h, w):
    return list(itertools.product(range(t), range(h), range(w)))  # (t, h, w) row-major, as the model flattens


def explicit_mha(x_tokens, qkv_weight, proj, allowed, num_heads=HEADS):
    """softmax(q k^T / sqrt(d)) v over flat tokens (N, C) where allowed[i, j] says query i may see key j."""
    n, c = x_tokens.shape
    d = c // num_heads
    q, k, v = (x_tokens @ qkv_weight.T).split(c, dim=-1)
    out = torch.zeros(n, c, dtype=x_tokens.dtype)
    for head in range(num_heads):
        sl = slice(head * d, (head + 1) * d)
        scores = q[:, sl] @ k[:, sl].T / d ** 0.5
        scores = scores.masked_fill(~allowed, float('-inf'))
        out[:, sl] = scores.softmax(-1) @ v[:, sl]
    return proj(out)


def window_reference(module, x, window):
    b, t, h, w, c = x.shape
    coords = grid_coords(t, h, w)
    win_id = [tuple(p // s for p, s in zip(coord, window)) for coord in coords]
    allowed = torch.tensor([[wi == wj for wj in win_id] for wi in win_id])
    outs = [explicit_mha(x[i].reshape(-1, c), module.qkv.weight, module.proj, allowed) for i in range(b)]
    return torch.stack(outs).reshape(b, t, h, w, c)


@pytest.mark.parametrize('grid', [(4, 8, 8), (3, 7, 7), (1, 5, 6)])
@pytest.mark.parametrize('fused', [True, False])
def test_local_attention_equals_masked_full_attention(grid, fused):
    """Padded or not, a token attends exactly to the real tokens of its own window."""
    window = (2, 4, 4)
    module = WindowAttention3d(DIM, HEADS, window_size=window).eval().double()
    module.fused_attn = fused
    x = torch.randn(2, *grid, DIM, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(module(x), window_reference(module, x, window), rtol=1e-10, atol=1e-10)


def test_local_output_independent_of_other_windows():
    module = WindowAttention3d(DIM, HEADS, window_size=(2, 4, 4)).eval()
    x = torch.randn(1, 3, 7, 7, DIM)
    y = x.clone()
    y[:, 2:, :, :] = torch.randn_like(y[:, 2:, :, :])  # other temporal windows
    y[:, :2, 4:, :] = 5 * torch.randn_like(y[:, :2, 4:, :])  # other spatial windows of the first temporal window
    y[:, :2, :4, 4:] = -3.
    with torch.no_grad():
        out_x, out_y = module(x), module(y)
    torch.testing.assert_close(out_x[:, :2, :4, :4], out_y[:, :2, :4, :4])
    assert not torch.allclose(out_x[:, :2, 4:], out_y[:, :2, 4:])


def test_padding_does_not_leak():
    """A 7x7 grid (padded to 8x8) gives, in its full windows, what the same tokens give inside a real 8x8 grid."""
    module = WindowAttention3d(DIM, HEADS, window_size=(2, 4, 4)).eval()
    big = torch.randn(1, 2, 8, 8, DIM)
    small = big[:, :, :7, :7].contiguous()
    with torch.no_grad():
        out_big, out_small = module(big), module(small)
    # the window at rows/cols 0..3 never sees padding, so both agree there
    torch.testing.assert_close(out_small[:, :, :4, :4], out_big[:, :, :4, :4])
    # windows touching the border differ from the 8x8 grid only because the 8x8 grid has extra real tokens;
    # with those extra tokens zeroed in the big grid they would still differ, proving padded keys are masked
    zeroed = big.clone()
    zeroed[:, :, 7, :] = 0
    zeroed[:, :, :, 7] = 0
    with torch.no_grad():
        out_zeroed = module(zeroed)
    assert not torch.allclose(out_small[:, :, 4:7, 4:7], out_zeroed[:, :, 4:7, 4:7], atol=1e-4)
    torch.testing.assert_close(out_small, window_reference(module, small, (2, 4, 4)), rtol=1e-4, atol=1e-5)


def test_joint_attention_is_full_attention():
    module = WindowAttention3d(DIM, HEADS, window_size=None).eval().double()
    x = torch.randn(2, 3, 5, 6, DIM, dtype=torch.double)
    n = 3 * 5 * 6
    ref = torch.stack([
        explicit_mha(x[i].reshape(n, DIM), module.qkv.weight, module.proj, torch.ones(n, n, dtype=torch.bool))
        for i in range(2)]).reshape(x.shape)
    with torch.no_grad():
        torch.testing.assert_close(module(x), ref, rtol=1e-10, atol=1e-10)


def global_reference(module, x, pool):
    """Summaries by explicit loops over windows (padding contributes nothing), then explicit attention."""
    b, t, h, w, c = x.shape
    weight, bias = module.summary.weight.reshape(c, *pool), module.summary.bias  # (C, pt, ph, pw)
    nt, nh, nw = (-(-s // p) for s, p in zip((t, h, w), pool))
    outs = []
    for i in range(b):
        summaries = []
        for wt, wh, ww in itertools.product(range(nt), range(nh), range(nw)):
            s = bias.clone()
            for dt, dh, dw in itertools.product(*(range(p) for p in pool)):
                ti, hi, wi = wt * pool[0] + dt, wh * pool[1] + dh, ww * pool[2] + dw
                if ti < t and hi < h and wi < w:
                    s = s + weight[:, dt, dh, dw] * x[i, ti, hi, wi]
            summaries.append(s)
        summaries = F.layer_norm(torch.stack(summaries), (c,), module.summary_norm.weight, module.summary_norm.bias)
        tokens = x[i].reshape(-1, c)
        q = tokens @ module.q.weight.T
        k, v = (summaries @ module.kv.weight.T).split(c, dim=-1)
        d = c // HEADS
        out = torch.zeros_like(tokens)
        for head in range(HEADS):
            sl = slice(head * d, (head + 1) * d)
            out[:, sl] = (q[:, sl] @ k[:, sl].T / d ** 0.5).softmax(-1) @ v[:, sl]
        outs.append(module.proj(out).reshape(t, h, w, c))
    return torch.stack(outs)


@pytest.mark.parametrize('grid,pool', [((4, 8, 8), (2, 4, 4)), ((3, 7, 7), (2, 4, 4)), ((4, 7, 7), (2, 1, 1))])
@pytest.mark.parametrize('fused', [True, False])
def test_global_attention_equals_explicit(grid, pool, fused):
    module = GlobalAttention3d(DIM, HEADS, pool_size=pool).eval().double()
    torch.nn.init.normal_(module.summary.bias)
    module.fused_attn = fused
    x = torch.randn(2, *grid, DIM, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(module(x), global_reference(module, x, pool), rtol=1e-10, atol=1e-10)


def test_global_attention_sees_every_window():
    module = GlobalAttention3d(DIM, HEADS, pool_size=(2, 4, 4)).eval()
    x = torch.randn(1, 4, 8, 8, DIM)
    y = x.clone()
    y[:, 2:, 4:, 4:] += 1.  # only the last window changes
    with torch.no_grad():
        assert not torch.allclose(module(x)[:, 0, 0, 0], module(y)[:, 0, 0, 0])


@pytest.mark.parametrize('module_cls,kwargs', [
    (WindowAttention3d, dict(window_size=(2, 4, 4))),
    (WindowAttention3d, dict(window_size=None)),
    (GlobalAttention3d, dict(pool_size=(2, 4, 4))),
])
def test_fused_and_explicit_paths_agree(module_cls, kwargs):
    module = module_cls(64, 4, **kwargs).eval()
    x = torch.randn(2, 5, 7, 7, 64)
    with torch.no_grad():
        module.fused_attn = True
        fused = module(x)
        module.fused_attn = False
        explicit = module(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


def test_attention_dropout_only_in_training():
    module = WindowAttention3d(DIM, HEADS, window_size=(2, 4, 4), attn_drop=0.5)
    x = torch.randn(1, 2, 4, 4, DIM)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), module(x))
    module.train()
    with torch.no_grad():
        assert not torch.allclose(module(x), module(x))


def test_bad_window_sizes():
    with pytest.raises(ValueError, match='local_window'):
        WindowAttention3d(DIM, HEADS, window_size=(2, 0, 4))
    with pytest.raises(ValueError, match='divisible'):
        GlobalAttention3d(10, 3)


# ---------------------------------------------------------------------------------------------------------------
# the one-copy window kernels and chunked eager inference give the landed kernels' outputs


def landed_window_attention(module, x, window):
    """The kernel as landed before window_qkv: pad, partition windows, then split heads (two copies), merge back."""
    from logoformer_timm.layers import padded_key_mask, window_merge, window_partition
    from logoformer_timm.layers.attention import attend
    b, grid = x.shape[0], x.shape[1:4]
    qkv = window_partition(module.qkv(x), window)
    nw, j = qkv.shape[1], qkv.shape[2]
    q, k, v = qkv.reshape(b, nw, j, 3, module.num_heads, -1).permute(3, 0, 1, 4, 2, 5).reshape(
        3, b, -1, j, module.head_dim).unbind(0)
    mask = None
    if any(-g % w for g, w in zip(grid, window)):
        mask = padded_key_mask(grid, window, x.device).expand(-1, module.num_heads, -1, -1).reshape(1, -1, 1, j)
    out = attend(q, k, v, mask, module.attn_drop, module.fused_attn)
    out = out.reshape(b, nw, module.num_heads, j, -1).transpose(2, 3).flatten(3)
    return module.proj(window_merge(out, window, grid))


@pytest.mark.parametrize('grid', [(4, 8, 8), (3, 7, 7), (5, 14, 14), (1, 5, 6)])
@pytest.mark.parametrize('fused', [True, False])
def test_window_qkv_kernel_equals_landed_kernel(grid, fused):
    from logoformer_timm.layers import window_qkv
    window = (2, 4, 4)
    module = WindowAttention3d(DIM, HEADS, window_size=window).eval().double()
    module.fused_attn = fused
    x = torch.randn(2, *grid, DIM, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(module(x), landed_window_attention(module, x, module.window_for(grid)),
                                   rtol=1e-12, atol=1e-12)
        # q/k/v windows hold the real tokens and zeros at padded positions
        qkv = window_qkv(module.qkv(x), (2, 4, 4), HEADS)
        assert qkv.shape == (2 * -(-grid[0] // 2) * -(-grid[1] // 4) * -(-grid[2] // 4), 32, 3, HEADS, DIM // HEADS)


@pytest.mark.parametrize('grid,window', [((8, 10, 10), (2, 5, 10)), ((3, 7, 7), (2, 4, 4)), ((4, 8, 8), (2, 4, 4))])
def test_window_partition_and_merge_are_einops_inverses(grid, window):
    """Windows in (t, h, w) row-major order, zero-padded at the end; merge drops the padding and restores the grid."""
    from logoformer_timm.layers import window_merge, window_partition
    x = torch.randn(2, *grid, 3)
    windows = window_partition(x, window)
    counts = [-(-g // w) for g, w in zip(grid, window)]
    assert windows.shape == (2, counts[0] * counts[1] * counts[2], window[0] * window[1] * window[2], 3)
    # the first window holds the grid's first wt x wh x ww block, in (t, h, w) order
    torch.testing.assert_close(windows[:, 0], x[:, :window[0], :window[1], :window[2]].reshape(2, -1, 3))
    torch.testing.assert_close(window_merge(windows, window, grid), x, rtol=0, atol=0)
    assert windows.abs().sum() == pytest.approx(x.abs().sum().item(), rel=1e-6)  # padding adds zeros only


@pytest.fixture
def chunk_tokens(monkeypatch):
    """Set INFERENCE_CHUNK_TOKENS for one test (None: no chunking)."""
    from logoformer_timm.layers import attention
    return lambda value: monkeypatch.setattr(attention, 'INFERENCE_CHUNK_TOKENS', value)


@pytest.mark.parametrize('kind', ['local', 'global', 'joint'])
@pytest.mark.parametrize('grid', [(8, 8, 8), (7, 7, 7), (5, 14, 14), (3, 5, 6)])
def test_chunked_sub_layer_equals_whole_grid(kind, grid, chunk_tokens):
    """Chunks of whole windows (the last one short when T is not a window multiple) give the whole grid's output."""
    from logoformer_timm.layers import SpaceTimeAttention
    layer = SpaceTimeAttention(kind, DIM, HEADS, (2, 4, 4), (2, 4, 4), False, 0., 0., 0.).eval().double()
    torch.nn.init.normal_(layer.attn.summary.bias) if kind == 'global' else None
    x = torch.randn(2, *grid, DIM, dtype=torch.double)
    calls = []
    forward = layer.attn.forward  # counted without a hook: a hook would turn chunking off
    layer.attn.forward = lambda x, *args: calls.append(x.shape[1]) or forward(x, *args)
    with torch.no_grad():
        chunk_tokens(None)
        whole = layer(x)
        chunk_tokens(2 * grid[1] * grid[2] * 2)  # 2 frames of 2 clips: one window of frames per chunk
        chunked = layer(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    # one call per chunk; joint attention has one window, so one chunk
    assert calls[1:] == ([grid[0]] if kind == 'joint' else [2] * (grid[0] // 2) + [1] * (grid[0] % 2))


@pytest.mark.parametrize('where', ['attn', 'attn.proj', 'norm', 'global'])
@pytest.mark.parametrize('kind', ['local', 'global'])
def test_hooks_see_the_whole_grid(kind, where, chunk_tokens):
    """A forward hook or pre-hook on a chunked module, inside it or global turns chunking off: it sees every frame."""
    from logoformer_timm.layers import SpaceTimeAttention, hooks_see_chunks
    layer = SpaceTimeAttention(kind, DIM, HEADS, (2, 4, 4), (2, 4, 4), False, 0., 0., 0.).eval()
    x = torch.randn(1, 8, 4, 4, DIM)
    seen = []
    module = layer.attn if where == 'global' else layer.get_submodule(where)
    if where == 'global':
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda mod, args, out: seen.append(out.shape[1]) if mod is module else None)
    elif where == 'norm':
        handle = module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    else:
        handle = module.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1]))
    chunk_tokens(2 * 16)  # 2 frames a chunk
    try:
        with torch.no_grad():
            hooked = layer(x)
            assert seen == [8]  # once, every frame
            seen.clear()
            with hooks_see_chunks():  # the benchmark's per-part timing: hooks run once per chunk
                torch.testing.assert_close(layer(x), hooked, rtol=1e-5, atol=1e-6)
            # global attention normalises each chunk twice: for the summaries, then for the queries
            assert seen == [2] * (8 if (kind, where) == ('global', 'norm') else 4)
    finally:
        handle.remove()


def test_chunked_attention_equals_explicit_reference(chunk_tokens):
    from logoformer_timm.layers import SpaceTimeAttention
    layer = SpaceTimeAttention('local', DIM, HEADS, (2, 4, 4), (2, 4, 4), False, 0., 0., 0.).eval().double()
    x = torch.randn(2, 5, 7, 7, DIM, dtype=torch.double)
    chunk_tokens(2 * 49 * 2)
    with torch.no_grad():
        expected = x + window_reference(layer.attn, layer.norm(x), (2, 4, 4))
        torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('kwargs,shape', [
    (dict(), (2, 3, 8, 64, 64)),
    (dict(num_frames=7, img_size=(96, 80)), (1, 3, 7, 96, 80)),
    (dict(block_types='joint'), (2, 3, 8, 64, 64)),
])
def test_chunked_inference_equals_unchunked_model(kwargs, shape, chunk_tokens, monkeypatch):
    """Stem, attention and MLP chunks at eager inference: the model's outputs are those of one piece."""
    import timm
    from logoformer_timm.layers import FrameStem
    model = timm.create_model('logoformer_tiny', **{'num_frames': shape[2], 'img_size': shape[3:], **kwargs})
    model = model.eval().double()
    x = torch.rand(*shape, dtype=torch.double)
    with torch.no_grad():
        chunk_tokens(None)
        whole = model.forward_features(x)
        chunk_tokens(16)
        monkeypatch.setattr(FrameStem, 'chunk_pixels', shape[3] * shape[4])  # one frame a chunk
        chunked = model.forward_features(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-10, atol=1e-10)


def test_no_chunks_with_autograd_or_in_training(chunk_tokens):
    from logoformer_timm.layers import eager_inference
    chunk_tokens(16)
    with torch.no_grad():
        assert eager_inference()
    assert not eager_inference()  # autograd on: training graphs keep one piece (and the same saved activations)
    chunk_tokens(None)
    with torch.no_grad():
        assert not eager_inference()
