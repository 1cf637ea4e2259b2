"""The efficient form's memory, counted on the CPU (the profiler's allocations): its forward + backward peak against
scaled_dot_product_attention's at a 48² window, under the CPU's block plan and CUDA's; odd windows costing what
their even neighbours cost (their regions padded to whole chunks); the budget a network sets."""
import pytest
import torch
import torch.nn.functional as F

from basicsr_taylor import TaylorSwinIR, taylor_shift_attention
from basicsr_taylor.ops.taylor_shift import blocks
from conftest import benchmarking

peak_bytes = benchmarking('measure').cpu_peak_bytes


def fwd_bwd_peak(attention):
    """Peak bytes of one forward + backward of ``attention(q, k, v, tau)`` at N 2304, d 30, 4 windows x 6 heads."""
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad = (torch.randn(4, 6, 2304, 30, generator=gen) for _ in range(4))
    leaves = [t.requires_grad_() for t in (q, k, v, torch.ones(6, 1, 1))]

    def step():
        for t in leaves:
            t.grad = None
        attention(*leaves).backward(grad)
    step()
    return peak_bytes(step)


def test_efficient_form_peak_stays_near_sdpa(one_thread):
    """The guard: the op keeps what an SDPA-like op keeps (inputs by reference, output, row sums, statistics) and
    computes in blocks within the budget: <= 1.3x SDPA's peak on the CPU's plan; on CUDA's (an 80 GB device's
    budget: two blocks of 12 rows here, docs/benchmarks.md) <= 5x."""
    sdpa = fwd_bwd_peak(lambda q, k, v, tau: F.scaled_dot_product_attention(q, k, v))
    taylor = lambda q, k, v, tau: taylor_shift_attention(q, k, v, tau, form='efficient')  # noqa: E731
    cpu = fwd_bwd_peak(taylor)
    with blocks.cuda_plan():
        cuda = fwd_bwd_peak(taylor)
    assert cpu <= 1.3 * sdpa, (cpu / sdpa, cuda / sdpa)
    assert cuda <= 5.0 * sdpa, (cpu / sdpa, cuda / sdpa)


def step_peak(window, lr_size, **options):
    torch.manual_seed(0)
    net = TaylorSwinIR(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=window, mlp_ratio=2,
                       upsampler='pixelshuffle', attn_form='efficient', **options)
    x, y = torch.rand(2, 3, lr_size, lr_size), torch.rand(2, 3, 2 * lr_size, 2 * lr_size)

    def step():
        net.zero_grad(set_to_none=True)
        F.l1_loss(net(x), y).backward()
    step()
    return peak_bytes(step)


@pytest.mark.parametrize('odd, even', [((23, 46), (24, 48)), ((7, 14), (8, 16))])
def test_an_odd_window_costs_what_its_even_neighbour_costs(one_thread, odd, even):
    """gcd(window - shift, shift) = 1 would make every chunk one token (the statistics per token); padded regions
    keep 4 chunks per window: two windows of 23 at LR 46 within 1.3x of two of 24 at LR 48."""
    assert step_peak(*odd) <= 1.3 * step_peak(*even)


def test_a_smaller_block_budget_lowers_the_peak_and_changes_nothing_else(one_thread):
    gen = torch.Generator().manual_seed(1)
    q, k, v, grad = (torch.randn(8, 2, 576, 16, generator=gen) for _ in range(4))
    results = {}
    for budget in (64 * 2**20, 2**20):  # every row in one block, then about one row per block
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def step():
            for t in leaves:
                t.grad = None
            taylor_shift_attention(*leaves, form='efficient').backward(grad)
        with blocks.block_budget(budget):
            step()
            results[budget] = peak_bytes(step), [t.grad for t in leaves]
    (big, big_grads), (small, small_grads) = results.values()
    assert small < 0.6 * big
    for a, b in zip(big_grads, small_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_attn_block_mb_is_the_budget_of_every_attention_call(monkeypatch, one_thread):
    from basicsr_taylor.ops.taylor_shift import efficient
    limits = []
    rows_per_block = efficient.rows_per_block
    monkeypatch.setattr(efficient, 'rows_per_block', lambda *a, **kw: limits.append(a[5]) or rows_per_block(*a, **kw))
    net = TaylorSwinIR(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=24, mlp_ratio=2,
                       upsampler='pixelshuffle', attn_form='efficient', attn_block_mb=0.5)
    net(torch.rand(1, 3, 48, 48)).mean().backward()  # the backward passes run outside the module's context
    assert len(limits) == 4 and set(limits) == {2**19}


@pytest.mark.parametrize('value', [0, -1, 'big', float('inf'), True])
def test_a_bad_block_budget_is_refused_in_one_line(value):
    with pytest.raises(ValueError, match='attn_block_mb must be a positive number of MiB'):
        TaylorSwinIR(upscale=2, embed_dim=12, depths=[1], num_heads=[2], window_size=8, upsampler='pixelshuffle',
                     attn_block_mb=value)


@pytest.mark.parametrize('tokens', [2304, 16384, 65536])
def test_half_value_scales_keep_the_denominator_column_a_normal_float16(tokens):
    """v' = [c₁, f v]: f = 1/N keeps the sums over N in range; c₁ (the denominator column) stays a normal float16
    (it was 1/(N s), a subnormal 4.95e-5 at N 2304, d 30), and float32 inputs are not scaled."""
    from basicsr_taylor.ops.taylor_shift.efficient import value_scales
    factor, ones = value_scales(torch.empty(1, tokens, 4, dtype=torch.float16))
    assert factor == 1 / tokens and ones >= torch.finfo(torch.float16).tiny and ones * tokens <= 4
    assert value_scales(torch.empty(1, tokens, 4)) == (1.0, 1.0)


@pytest.mark.parametrize('window, lr_size', [(3, 9), (7, 14), (5, 15)])
def test_padded_odd_windows_equal_the_unpadded_network(monkeypatch, one_thread, window, lr_size):
    """Output and every parameter gradient of TaylorSwinIR at an odd window, its shifted regions padded to whole
    chunks (efficient and direct forms), against the same network on the unpadded token layout (direct form,
    region ids per token), in float64: padding changes nothing but the cost."""
    from basicsr_taylor.archs import shifted_windows
    torch.manual_seed(0)
    net = TaylorSwinIR(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=window, mlp_ratio=2,
                       upsampler='pixelshuffle', drop_path_rate=0.).double()  # no random drop path
    x = torch.rand(2, 3, lr_size, lr_size, dtype=torch.float64)

    def run(form):
        for module in net.modules():
            if hasattr(module, 'form'):
                module.form = form
        net.zero_grad()
        out = net(x)
        out.square().mean().backward()
        return [out.detach()] + [p.grad.clone() for p in net.parameters()]
    padded = {form: run(form) for form in ('efficient', 'direct')}
    monkeypatch.setattr(shifted_windows, 'needs_padding', lambda *args: False)
    reference = run('direct')
    for form, results in padded.items():
        for got, expected in zip(results, reference):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-10, msg=form)
