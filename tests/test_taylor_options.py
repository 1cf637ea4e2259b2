"""The network options of issue 13: Taylor order (against an independent formula), temperature_init, patch_size
(against the p = 1 network), and unchanged defaults (outputs and state dict keys of the code before them)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from basicsr_taylor import TaylorShiftAttention, TaylorSwinIR, taylor_shift_attention
from basicsr_taylor.ops.taylor_shift import interface as ts
from basicsr_taylor.ops.taylor_shift import naive


def reference(q, k, v, tau, regions, order, output_norm=True):
    """Independent NumPy loops: x_ij = τ cos(q_i, k_j), w_ij = Σ_{i<=k} x^i / i!, same-region keys only."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    n, d = q.shape
    out = np.zeros_like(v)
    for i in range(n):
        num, den = np.zeros(v.shape[1]), 0.0
        for j in range(n):
            if regions is not None and regions[i] != regions[j]:
                continue
            x = tau * q[i] @ k[j] / (np.linalg.norm(q[i]) * np.linalg.norm(k[j]))
            w = sum(x**p / math.factorial(p) for p in range(order + 1))
            num, den = num + w * v[j], den + w
        out[i] = num / den * (math.sqrt(n / d) if output_norm else 1)
    return out


def inputs(heads=2, n=23, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 2, heads, n, d, generator=g, dtype=torch.float64).unbind(0)
    return q, k, v


# orders 3 and 4 have no efficient form: refused with a ValueError (test_order_errors_and_auto_choice)
ORDER_FORMS = [(order, form) for order in (1, 2, 3, 4) for form in ('direct', 'efficient', 'auto')
               if order <= 2 or form != 'efficient']


@pytest.mark.parametrize('order,form', ORDER_FORMS)
def test_every_order_matches_the_formula(order, form):
    q, k, v = inputs()
    tau = torch.tensor([0.6, 0.9], dtype=torch.float64).view(2, 1, 1)  # inside every odd order's bound
    regions = torch.randint(0, 3, (2, 1, q.shape[-2]), generator=torch.Generator().manual_seed(1))
    out = taylor_shift_attention(q, k, v, tau, regions, form=form, order=order)
    for b in range(2):
        for h in range(2):
            expected = reference(q[b, h], k[b, h], v[b, h], float(tau[h]), regions[b, 0].tolist(), order)
            np.testing.assert_allclose(out[b, h].numpy(), expected, rtol=1e-10, atol=1e-10)


def test_order_2_is_the_default_and_unchanged():
    q, k, v = inputs()
    tau = torch.tensor([1.5, 0.5], dtype=torch.float64).view(2, 1, 1)
    for form in ('direct', 'efficient'):
        assert torch.equal(taylor_shift_attention(q, k, v, tau, form=form),
                           taylor_shift_attention(q, k, v, tau, form=form, order=2))
    assert torch.allclose(naive.taylor_polynomial(torch.tensor([-3., 0.5]), 2), torch.tensor([2.5, 1.625]))


@pytest.mark.parametrize('order', [1, 2])
def test_efficient_gradients_match_direct(order):
    q, k, v = (t.requires_grad_() for t in inputs(n=40))
    tau = torch.tensor([0.7, 0.95], dtype=torch.float64).view(2, 1, 1).requires_grad_()
    regions = (torch.arange(40) // 13).view(1, 1, 40).expand(2, 1, 40)
    grads = []
    for form in ('direct', 'efficient'):
        out = taylor_shift_attention(q, k, v, tau, regions, form=form, order=order)
        grads.append(torch.autograd.grad((out * torch.cos(out)).sum(), (q, k, v, tau)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize('order', [1, 3])
def test_odd_orders_stay_defined(order):
    """Keys opposite to the query and a large temperature: the bound keeps every weight positive, the output
    is a convex combination of the values (never NaN or inf), and both forms agree."""
    q = torch.randn(1, 1, 1, 5, dtype=torch.float64).expand(1, 1, 9, 5)
    k = -q * torch.linspace(0.5, 2, 9, dtype=torch.float64).view(1, 1, 9, 1)  # every cos = -1
    v = torch.randn(1, 1, 9, 4, dtype=torch.float64)
    tau = torch.full((1, 1, 1), 50.0, dtype=torch.float64)
    forms = ('direct', 'efficient') if order == 1 else ('direct', )
    outs = [taylor_shift_attention(q, k, v, tau, form=f, order=order, output_norm=False) for f in forms]
    for out in outs:
        assert torch.isfinite(out).all()
        assert (out >= v.amin(-2, keepdim=True) - 1e-9).all() and (out <= v.amax(-2, keepdim=True) + 1e-9).all()
    bound = (1 - 1e-3) * {1: 1.0, 3: 1.5960716379833215}[order]
    assert naive.taylor_polynomial(torch.tensor(-bound, dtype=torch.float64), order) > 9e-4  # weights >= ~1e-3
    assert abs(float(naive.taylor_polynomial(torch.tensor(-1.5960716379833215, dtype=torch.float64), 3))) < 1e-12
    torch.testing.assert_close(outs[0], taylor_shift_attention(q, k, v, tau.new_full((1, 1, 1), bound),
                                                               form='direct', order=order, output_norm=False))
    # the bound is what the forms see: gradients stay finite
    tau = tau.clone().requires_grad_()
    taylor_shift_attention(q, k, v.requires_grad_(), tau, form='direct', order=order).sum().backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(tau.grad).all()


def test_order_errors_and_auto_choice():
    q, k, v = inputs()
    for order, form in ((3, 'efficient'), (4, 'efficient'), (1, 'triton'), (0, 'direct'), (5, 'auto'), (True, 'auto')):
        with pytest.raises(ValueError, match='order'):
            taylor_shift_attention(q, k, v, form=form, order=order)
    with pytest.raises(ValueError, match='order'):
        TaylorShiftAttention(12, 2, form='efficient', order=3)
    with pytest.raises(ValueError, match='order'):
        TaylorSwinIR(embed_dim=12, depths=[1], num_heads=[2], upsampler='pixelshuffle', taylor_order=3,
                     attn_form='efficient')
    assert ts.auto_form_of_order(2304, 30, 3) == 'direct' and ts.auto_form_of_order(2304, 30, 4) == 'direct'
    assert ts.auto_form_of_order(31, 30, 1) == 'direct' and ts.auto_form_of_order(32, 30, 1) == 'efficient'
    with pytest.raises(ValueError, match='order'):
        taylor_shift_attention(q, k, v, form='flex', order=1)


def test_order_1_efficient_memory_is_linear():
    """No N×N tensor: the largest saved/intermediate tensor grows linearly with N."""
    sizes = []
    for n in (256, 1024):
        q, k, v = (t.float().requires_grad_() for t in inputs(n=n, d=8))
        regions = (torch.arange(n) % 4).view(1, 1, n)
        largest = []

        def pack(t):
            largest.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            taylor_shift_attention(q, k, v, None, regions, form='efficient', order=1)
        sizes.append(max(largest))
    assert sizes[1] <= 4 * sizes[0] + 16 and sizes[1] < 1024 * 1024


def test_attention_layer_options():
    torch.manual_seed(0)
    layer = TaylorShiftAttention(12, 3, temperature_init=4.0, order=3).double()
    assert torch.equal(layer.temperature, torch.full((3, 1, 1), 4.0, dtype=torch.float64))
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    q, k, v = layer.qkv(x).reshape(2, 10, 3, 3, 4).permute(2, 0, 3, 1, 4)
    expected = taylor_shift_attention(q, k, v, torch.full((3, 1, 1), 4.0, dtype=torch.float64), order=3)
    expected = layer.proj(expected.transpose(1, 2).reshape(2, 10, 12))
    torch.testing.assert_close(layer(x), expected)
    for bad in (0, -1.0, float('inf'), 'x'):
        with pytest.raises(ValueError, match='temperature_init'):
            TaylorShiftAttention(12, 3, temperature_init=bad)
    net = TaylorSwinIR(embed_dim=12, depths=[2], num_heads=[2], window_size=4, temperature_init=16, taylor_order=1,
                       upsampler='pixelshuffle')
    for block in net.layers[0].blocks:
        assert block.attn.order == 1 and torch.equal(block.attn.temperature, torch.full((2, 1, 1), 16.0))


# Computed by the code before these options (commit 6d27864): TaylorSwinIR with defaults, seed 0, float64.
OLD_OUTPUT = (468.02320617958634, 0.37172809857697525, 197.31332498882918)
OLD_KEY_COUNT = 46


def test_defaults_give_the_outputs_and_keys_of_before():
    torch.manual_seed(0)
    net = TaylorSwinIR(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2,
                       upsampler='pixelshuffle').double()
    x = torch.rand(1, 3, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
    np.testing.assert_allclose((float(y.sum()), float(y[0, 1, 5, 7]), float((y * y).sum())), OLD_OUTPUT, rtol=1e-9)
    keys = sorted(net.state_dict())
    assert len(keys) == OLD_KEY_COUNT and not any('token_' in key for key in keys)
    explicit = TaylorSwinIR(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2,
                            upsampler='pixelshuffle', patch_size=1, taylor_order=2, temperature_init=1.0)
    explicit.load_state_dict(net.float().state_dict())  # strict: an old checkpoint loads


@pytest.mark.parametrize('p', [2, 4, 8])
def test_patch_network_is_the_p1_network_on_the_token_grid(p):
    torch.manual_seed(0)
    kwargs = dict(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=3, mlp_ratio=2,
                  upsampler='pixelshuffle')
    net = TaylorSwinIR(patch_size=p, **kwargs).double().eval()
    p1 = TaylorSwinIR(patch_size=1, **kwargs).double().eval()
    missing, unexpected = p1.load_state_dict(net.state_dict(), strict=False)
    assert not missing and unexpected and all(key.startswith('token_') for key in unexpected)
    assert net.pad_multiple == 3 * p
    feat = torch.randn(1, 12, 3 * p * 2, 3 * p, dtype=torch.float64)
    with torch.no_grad():
        # embedding: a linear map of each p×p patch (pixel-unshuffled) to a token
        tokens = net.token_embed(feat)
        weight = net.token_embed.weight.reshape(12, 12 * p * p)
        linear = torch.einsum('oc,bchw->bohw', weight, F.pixel_unshuffle(feat, p)) + net.token_embed.bias[:, None, None]
        torch.testing.assert_close(tokens, linear)
        # the body is the p = 1 network's body on the token grid; unembedding: 1×1 conv + pixel shuffle
        body = p1.forward_features(tokens)
        unembed = F.pixel_shuffle(F.conv2d(body, net.token_unembed[0].weight, net.token_unembed[0].bias), p)
        torch.testing.assert_close(net.forward_features(feat), unembed)
        # any input size: padded to the (window × p)-pixel grid inside and cropped
        x = torch.rand(1, 3, 3 * p + 1, 2 * 3 * p - 1, dtype=torch.float64)
        assert net(x).shape == (1, 3, 2 * x.shape[2], 2 * x.shape[3])
    with pytest.raises(ValueError, match='patch_size'):
        TaylorSwinIR(patch_size=3, **kwargs)


@pytest.mark.parametrize('order', [1, 3])
def test_other_orders_under_the_exportable_switch_run_the_direct_form(order):
    from basicsr_taylor.ops.taylor_shift import exportable
    q, k, v = inputs(n=40)
    regions = (torch.arange(40) // 11).view(1, 1, 40).expand(2, 1, 40)
    expected = taylor_shift_attention(q, k, v, None, regions, form='direct', order=order)
    with exportable():
        torch.testing.assert_close(taylor_shift_attention(q, k, v, None, regions, order=order), expected)
