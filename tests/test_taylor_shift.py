"""TaylorShift attention: the functional form and the TaylorShiftAttention module."""
import math

import numpy as np
import pytest
import torch

import basicsr_taylor
from basicsr_taylor import TaylorShiftAttention, taylor_shift_attention
from basicsr_taylor.ops.taylor_shift import features, interface, naive
from basicsr_taylor.ops.taylor_shift.interface import auto_form, auto_threshold, crossover_tokens


def make_qkv(shape, dtype=torch.float64, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=gen, dtype=dtype) * scale).requires_grad_() for _ in range(3)]


def loop_reference(q, k, v, temperature=None, regions=None, output_norm=True):
    """The formula written out query by query in numpy float64, with explicit weights."""
    q, k, v = (t.detach().double().numpy() for t in (q, k, v))
    lead, (n, d) = q.shape[:-2], q.shape[-2:]
    tau = np.ones(lead + (1, 1)) if temperature is None else np.broadcast_to(
        temperature.detach().double().numpy(), lead + (1, 1))
    reg = np.zeros(lead + (n, )) if regions is None else np.broadcast_to(regions.numpy(), lead + (n, ))
    out = np.zeros(v.shape)
    for idx in np.ndindex(*lead):
        for i in range(n):
            qi = q[idx][i] / np.linalg.norm(q[idx][i]) * tau[idx][0, 0]
            num, den = np.zeros(v.shape[-1]), 0.0
            for j in range(n):
                if reg[idx][j] != reg[idx][i]:
                    continue
                x = qi @ (k[idx][j] / np.linalg.norm(k[idx][j]))
                w = 1 + x + x * x / 2
                num += w * v[idx][j]
                den += w
            out[idx][i] = num / den * (math.sqrt(n / d) if output_norm else 1.0)
    return torch.from_numpy(out)


CASES = [  # (batch shape, N, d)
    ((2, 3), 10, 4),
    ((1, 2), 57, 8),
    ((3, 1), 130, 16),
    ((2, 6), 33, 30),
]


@pytest.mark.parametrize('with_regions', [False, True])
@pytest.mark.parametrize('lead,n,d', CASES)
def test_direct_and_efficient_agree_in_float64_with_gradients(lead, n, d, with_regions):
    q, k, v = make_qkv(lead + (n, d))
    temperature = (torch.rand(lead[-1], 1, 1, dtype=torch.float64) + 0.5).requires_grad_()
    regions = torch.randint(0, 3, (lead[0], 1, n)) if with_regions else None
    weight = torch.randn(lead + (n, d), dtype=torch.float64)
    results = []
    for form in ('direct', 'efficient'):
        out = taylor_shift_attention(q, k, v, temperature, regions, form=form)
        grads = torch.autograd.grad((out * weight).sum(), (q, k, v, temperature))
        results.append((out, grads))
    (out_d, grads_d), (out_e, grads_e) = results
    torch.testing.assert_close(out_e, out_d, rtol=0, atol=1e-10)
    for name, gd, ge in zip('qkvt', grads_d, grads_e):
        torch.testing.assert_close(ge, gd, rtol=0, atol=1e-10, msg=f'gradient w.r.t. {name}')


@pytest.mark.parametrize('n,d', [(64, 8), (300, 16), (961, 30)])
def test_direct_and_efficient_agree_in_float32(n, d):
    q, k, v = (t.detach().float() for t in make_qkv((2, 3, n, d), seed=1))
    regions = torch.randint(0, 4, (2, 1, n))
    for reg in (None, regions):
        out_d = taylor_shift_attention(q, k, v, regions=reg, form='direct')
        out_e = taylor_shift_attention(q, k, v, regions=reg, form='efficient')
        torch.testing.assert_close(out_e, out_d, rtol=0, atol=1e-4)


@pytest.mark.parametrize('form', ['direct', 'efficient'])
@pytest.mark.parametrize('with_regions,output_norm', [(False, True), (True, True), (True, False)])
def test_matches_a_query_by_query_loop(form, with_regions, output_norm):
    q, k, v = make_qkv((2, 3, 12, 5), seed=2)
    temperature = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    regions = torch.tensor([[0, 0, 1, 1, 2, 0, 1, 2, 2, 0, 7, 7], [5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]]).view(2, 1, 12)
    regions = regions if with_regions else None
    out = taylor_shift_attention(q, k, v, temperature, regions, form=form, output_norm=output_norm)
    torch.testing.assert_close(out.detach(), loop_reference(q, k, v, temperature, regions, output_norm),
                               rtol=0, atol=1e-12)


def test_value_width_may_differ_from_head_dim():
    q, k, _ = make_qkv((2, 20, 6), seed=3)
    v = torch.randn(2, 20, 9, dtype=torch.float64)
    out_d = taylor_shift_attention(q, k, v, form='direct')
    out_e = taylor_shift_attention(q, k, v, form='efficient')
    assert out_d.shape == (2, 20, 9)
    torch.testing.assert_close(out_e, out_d, rtol=0, atol=1e-10)


def test_regions_isolate_exactly_where_a_minus_100_bias_would_not():
    # SwinIR's additive -100 mask would not isolate: the polynomial gives it a large weight, p(-100) = 4901
    q, k, v = (t.detach() for t in make_qkv((1, 2, 40, 8), seed=4))
    regions = (torch.arange(40) >= 25).long().view(1, 1, 40)
    k2, v2 = k.clone(), v.clone()
    k2[..., 25:, :] += 5 * torch.randn_like(k2[..., 25:, :])  # change only region 1's keys and values
    v2[..., 25:, :] += 5
    for form in ('direct', 'efficient'):
        a = taylor_shift_attention(q, k, v, regions=regions, form=form)
        b = taylor_shift_attention(q, k2, v2, regions=regions, form=form)
        torch.testing.assert_close(b[..., :25, :], a[..., :25, :], rtol=0, atol=1e-12)
        assert (b[..., 25:, :] - a[..., 25:, :]).abs().max() > 1e-3
        # a region of its own is plain attention over that region
        alone = taylor_shift_attention(q[..., :25, :], k[..., :25, :], v[..., :25, :], form=form, output_norm=False)
        masked = taylor_shift_attention(q, k, v, regions=regions, form=form, output_norm=False)
        torch.testing.assert_close(masked[..., :25, :], alone, rtol=0, atol=1e-12)


def test_auto_switches_at_the_measured_threshold(monkeypatch):
    calls = []
    real_direct, real_efficient = naive.direct, interface.efficient
    monkeypatch.setattr(naive, 'direct', lambda *a: calls.append('direct') or real_direct(*a))
    monkeypatch.setattr(interface, 'efficient', lambda *a: calls.append('efficient') or real_efficient(*a))
    d = 4
    assert crossover_tokens(d) == d * d + d + 1 == 21
    assert auto_threshold('cuda', 30, True) == crossover_tokens(30) == 931  # not measured: the FLOP rule
    # measured on CPU: the efficient form wins from fewer tokens with gradients than without
    assert auto_threshold('cpu', 30, True) < auto_threshold('cpu', 30, False) < crossover_tokens(30)
    assert auto_form('cpu', 30, 64, False) == auto_form('cpu', 30, 64, True) == 'direct'  # 8x8 windows
    assert auto_form('cpu', 30, 2304, False) == auto_form('cpu', 16, 576, True) == 'efficient'
    for grad in (False, True):
        n0 = auto_threshold('cpu', d, grad)
        for n, expected in [(n0 - 1, 'direct'), (n0, 'efficient'), (n0 + 40, 'efficient'), (3, 'direct')]:
            q, k, v = (t.detach().requires_grad_(grad) for t in make_qkv((1, 1, n, d)))
            calls.clear()
            out = taylor_shift_attention(q, k, v)
            assert calls == [expected], (grad, n, calls)
            torch.testing.assert_close(out, taylor_shift_attention(q, k, v, form='direct'), rtol=0, atol=1e-10)


def test_taylor_features_reproduce_the_polynomial():
    x, y = torch.randn(2, 7, 11, dtype=torch.float64).unbind(0)
    phi_x, phi_y = features.taylor_features(x), features.taylor_features(y)
    assert phi_x.shape[-1] == features.taylor_feature_dim(11) == 1 + 11 + 66
    s = (x * y).sum(-1)
    torch.testing.assert_close((phi_x * phi_y).sum(-1), 1 + s + s * s / 2, rtol=0, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('form', ['direct', 'efficient'])
def test_half_precision_autocast_stays_finite_on_large_inputs(dtype, form):
    q, k, v = (t.detach().float() for t in make_qkv((2, 2, 600, 30), seed=5, scale=3e3))
    v = v / 3e3 * 50
    temperature = torch.tensor([1.0, 200.0]).view(2, 1, 1)  # x up to 200: x²/2 = 20000 per term
    with torch.autocast('cpu', dtype=dtype):
        out = taylor_shift_attention(q, k, v, temperature, form=form)
    assert torch.isfinite(out).all()
    out_half = taylor_shift_attention(q.to(dtype), k.to(dtype), v.to(dtype), temperature, form=form)
    assert out_half.dtype == dtype and torch.isfinite(out_half).all()
    reference = taylor_shift_attention(q.double(), k.double(), v.double(), temperature.double(), form='direct')
    assert (out_half.double() - reference).abs().max() < 0.05 * reference.abs().max()


def test_denominator_is_never_zero_even_for_opposed_vectors():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 2)
    k = -q.clone()  # cos = -1 for matching pairs: p(-1) = 0.5, the minimum of p
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2)
    for form in ('direct', 'efficient'):
        out = taylor_shift_attention(q, k, v, form=form, output_norm=False)
        assert torch.isfinite(out).all()
        assert out.min() >= 1.0 and out.max() <= 4.0  # a convex combination of the values


def test_bad_arguments_raise_value_errors_that_name_them():
    q = torch.randn(2, 3, 10, 4)
    with pytest.raises(ValueError, match='form'):
        taylor_shift_attention(q, q, q, form='fast')
    with pytest.raises(ValueError, match='q and k'):
        taylor_shift_attention(q, q[..., :3], q)
    with pytest.raises(ValueError, match='v must'):
        taylor_shift_attention(q, q, q[..., :9, :])
    with pytest.raises(ValueError, match='regions'):
        taylor_shift_attention(q, q, q, regions=torch.zeros(2, 10))  # float
    with pytest.raises(ValueError, match='regions'):
        taylor_shift_attention(q, q, q, regions=torch.zeros(2, 11, dtype=torch.long))
    with pytest.raises(ValueError, match='temperature'):
        taylor_shift_attention(q, q, q, temperature=torch.ones(4, 1, 1))


def test_module_shapes_parameters_and_registry():
    from basicsr.utils.registry import ARCH_REGISTRY
    assert ARCH_REGISTRY.get('TaylorShiftAttention') is TaylorShiftAttention
    attn = TaylorShiftAttention(dim=24, num_heads=4)
    assert attn.temperature.shape == (4, 1, 1) and torch.all(attn.temperature == 1)
    x = torch.randn(3, 50, 24, requires_grad=True)
    regions = torch.randint(0, 2, (3, 50))
    out = attn(x, regions=regions)
    assert out.shape == (3, 50, 24)
    out.sum().backward()
    assert attn.temperature.grad is not None and torch.isfinite(attn.temperature.grad).all()
    attn_direct = TaylorShiftAttention(dim=24, num_heads=4, form='direct').double()
    attn_direct.load_state_dict(attn.state_dict())
    attn_eff = TaylorShiftAttention(dim=24, num_heads=4, form='efficient').double()
    attn_eff.load_state_dict(attn.state_dict())
    xd = x.detach().double()
    torch.testing.assert_close(attn_eff(xd, regions), attn_direct(xd, regions), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match='num_heads'):
        TaylorShiftAttention(dim=24, num_heads=5)
    with pytest.raises(ValueError, match='form'):
        TaylorShiftAttention(dim=24, num_heads=4, form='softmax')


def test_package_exports():
    assert basicsr_taylor.taylor_shift_attention is taylor_shift_attention
    assert basicsr_taylor.TaylorShiftAttention is TaylorShiftAttention


@pytest.mark.parametrize('form', ['direct', 'efficient'])
def test_zero_tokens_give_an_empty_output_as_sdpa(form):
    q = torch.randn(2, 3, 0, 8, requires_grad=True)
    v = torch.randn(2, 3, 0, 5)
    out = taylor_shift_attention(q, q, v, torch.ones(3, 1, 1), regions=torch.zeros(2, 1, 0, dtype=torch.long),
                                 form=form)
    expected = torch.nn.functional.scaled_dot_product_attention(q, q, v)
    assert out.shape == expected.shape == (2, 3, 0, 5) and out.dtype == v.dtype
