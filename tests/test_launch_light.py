"""The launch-light efficient form: a fixed number of kernels per attention call, no host sync in the network,
nothing kept for backward in inference, no atomics, half precision, torch.compile without graph breaks, and the
small contracts of the public function (temperature shape, N = 0, double backward)."""
import os

import pytest
import torch

from basicsr_taylor import TaylorSwinIR, taylor_shift_attention
from basicsr_taylor.archs.shifted_windows import shifted_window_chunks
from conftest import benchmarking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


kernels = benchmarking('kernels')


def tiny_net(**kwargs):
    args = dict(upscale=2, img_size=48, window_size=24, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2,
                upsampler='pixelshuffle', resi_connection='1conv', attn_form='efficient')
    args.update(kwargs)
    return TaylorSwinIR(**args)


def windows_call(num_windows, grad):
    chunks = shifted_window_chunks(24, 24 * num_windows, 24, 12, torch.device('cpu'))
    q, k, v = (torch.randn(num_windows, 2, 576, 8, requires_grad=grad) for _ in range(3))
    tau = torch.ones(2, 1, 1, requires_grad=grad)

    def call():
        out = taylor_shift_attention(q, k, v, tau, chunks, form='efficient')
        if grad:
            out.sum().backward()
    return call


@pytest.mark.parametrize('grad', [False, True], ids=['inference', 'forward+backward'])
def test_kernels_per_call_do_not_grow_with_the_number_of_windows(one_thread, grad):
    counts = [kernels.count_kernels(windows_call(n, grad), 'cuda') for n in (2, 6)]
    assert counts[0] == counts[1] and counts[0] < (40 if not grad else 110)


def test_taylor_swinir_launches_at_most_twice_swinir_w8s_kernels(one_thread):
    from basicsr.archs.swinir_arch import SwinIR
    config = dict(upscale=2, in_chans=3, img_range=1., embed_dim=12, depths=[2, 2], num_heads=[2, 2], mlp_ratio=2,
                  upsampler='pixelshuffle', resi_connection='1conv')
    swinir_step, swinir_infer = kernels.network_calls(SwinIR(img_size=48, window_size=8, **config), 48)
    taylor_step, taylor_infer = kernels.network_calls(TaylorSwinIR(window_size=24, **config), 48)
    for taylor, swinir in ((taylor_step, swinir_step), (taylor_infer, swinir_infer)):
        assert kernels.count_kernels(taylor, 'cuda') <= 2 * kernels.count_kernels(swinir, 'cuda')


def test_no_atomics_in_the_forward_and_backward_pass(one_thread):
    names = set(kernels.leaf_ops(windows_call(3, grad=True)))
    assert not names & {'aten::index_add_', 'aten::index_add', 'aten::scatter_add_', 'aten::scatter_add',
                        'aten::index_put_', 'aten::_index_put_impl_', 'aten::put_'}, names


@pytest.mark.parametrize('form, options', [('efficient', {}), ('direct', {}), ('auto', {}),
                                           ('efficient', dict(taylor_order=1)),
                                           ('efficient', dict(window_size=23))],
                         ids=['efficient', 'direct', 'auto', 'efficient order 1', 'efficient odd window'])
def test_taylor_swinir_never_syncs_with_the_host(monkeypatch, one_thread, form, options):
    """Forward and backward read no tensor value on the host (.item(), int(t), .tolist(), .cpu(), .numpy(), bool)."""
    net = tiny_net(attn_form=form, **options)
    x = torch.rand(2, 3, 40, 56)

    def refuse(name):
        def method(*args, **kwargs):
            raise AssertionError(f'host sync: Tensor.{name}')
        return method
    for name in ('item', 'tolist', 'cpu', 'numpy', '__int__', '__float__', '__bool__', '__index__'):
        monkeypatch.setattr(torch.Tensor, name, refuse(name))
    net(x).mean().backward()
    with torch.no_grad():
        net(x)


def allocated_bytes(fn):
    """Sum of all allocations of one call (the temporaries included, which a peak can hide)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == '[memory]' and e.nbytes() > 0)


def test_inference_with_a_parameter_temperature_keeps_nothing_for_backward(one_thread):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 576, 16, generator=gen) for _ in range(3))
    chunks = shifted_window_chunks(48, 48, 24, 12, torch.device('cpu'))
    parameter, plain = torch.nn.Parameter(torch.ones(2, 1, 1)), torch.ones(2, 1, 1)
    with torch.no_grad():
        taylor_shift_attention(q, k, v, plain, chunks, form='efficient')  # builds the cached feature map
        used = [allocated_bytes(lambda t=t: taylor_shift_attention(q, k, v, t, chunks, form='efficient'))
                for t in (parameter, plain)]
    assert used[0] == used[1]


def test_temperature_with_extra_or_wider_dims_is_refused():
    q = torch.randn(2, 3, 10, 4)
    for bad in (torch.ones(5, 2, 3, 1, 1), torch.ones(2, 3, 2, 1), torch.ones(4, 1, 1)):
        with pytest.raises(ValueError, match='temperature of shape'):
            taylor_shift_attention(q, q, q, bad)
    for good in (torch.ones(3, 1, 1), torch.ones(2, 3, 1, 1), torch.ones(())):
        assert taylor_shift_attention(q, q, q, good).shape == q.shape


@pytest.mark.parametrize('form', ['direct', 'efficient'])
def test_zero_tokens_give_an_empty_output_inside_the_graph(form):
    q, k, v = (torch.randn(2, 0, 4, requires_grad=True) for _ in range(3))
    tau = torch.ones(1, 1, requires_grad=True)
    out = taylor_shift_attention(q, k, v, tau, form=form)
    assert out.shape == (2, 0, 4) and out.grad_fn is not None
    out.sum().backward()
    assert q.grad.shape == q.shape and tau.grad is not None


def test_double_backward_of_the_efficient_form_is_a_clear_error():
    q, k, v = (torch.randn(1, 12, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = taylor_shift_attention(q, k, v, form='efficient')
    with pytest.raises(RuntimeError, match='no double backward'):
        torch.autograd.grad(out.sum(), q, create_graph=True)
    (grad_q, ) = torch.autograd.grad(taylor_shift_attention(q, k, v, form='efficient').sum(), q)  # first order: fine
    assert torch.isfinite(grad_q).all()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_inputs_stay_half_and_match_float64_within_half_tolerance(dtype):
    gen = torch.Generator().manual_seed(1)
    chunks = shifted_window_chunks(48, 48, 24, 12, torch.device('cpu'))
    q, k, v = (torch.randn(4, 2, 576, 16, generator=gen) * 3 for _ in range(3))
    tau = torch.full((2, 1, 1), 10.0)  # the largest documented temperature
    half = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out = taylor_shift_attention(*half, tau, chunks, form='efficient')
    out.float().square().mean().backward()
    reference = taylor_shift_attention(q.double(), k.double(), v.double(), tau.double(), chunks, form='direct')
    assert out.dtype == dtype and all(t.grad.dtype == dtype for t in half)
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in half)
    tolerance = 0.05 if dtype == torch.bfloat16 else 0.01  # relative to the output's scale
    assert (out.double() - reference).abs().max() <= tolerance * reference.abs().max()


def test_compiled_taylor_swinir_has_no_graph_break_and_matches_eager(one_thread):
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = tiny_net(depths=[2], num_heads=[2]).double()  # float64: the decompositions' rounding stays invisible
    x = torch.rand(1, 3, 24, 48, dtype=torch.float64)  # (an untrained float32 net amplifies it to ~1e-4)
    compiled = torch.compile(net, backend='aot_eager', fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, net(x), rtol=0, atol=1e-10)
    out.mean().backward()  # the backward graph too
    assert net.layers[0].blocks[1].attn.temperature.grad is not None
