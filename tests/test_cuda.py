"""Every form on the GPU against the direct form, gradients included; TaylorSwinIR training and half precision.

Skipped without CUDA. ``BASICSR_TAYLOR_TEST_DEVICE=cpu`` (with ``TRITON_INTERPRET=1`` for the Triton kernels) runs
the same checks on the CPU, to test this file where no GPU is at hand.
"""
import os

import pytest
import torch

from basicsr_taylor import TaylorSwinIR, taylor_shift_attention
from basicsr_taylor.archs.shifted_windows import shifted_region_ids
from basicsr_taylor.ops.taylor_shift import flex

DEVICE = os.environ.get('BASICSR_TAYLOR_TEST_DEVICE') or ('cuda' if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason='no CUDA device')


def forms():
    names = ['efficient']
    if DEVICE == 'cuda' or os.environ.get('TRITON_INTERPRET', '0') not in ('', '0'):
        names.append('triton')
    if flex.available() and DEVICE == 'cuda':  # flex has no backward on the CPU
        names.append('flex')
    return names


def inputs(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype).requires_grad_()
               for _ in range(3))
    temperature = (torch.rand(shape[1], 1, 1, generator=gen, dtype=torch.float64) + 0.5).to(DEVICE, dtype)
    return q, k, v, temperature.requires_grad_()


def outputs_and_grads(form, q, k, v, temperature, regions):
    out = taylor_shift_attention(q, k, v, temperature, regions, form=form)
    weight = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype).view(out.shape)
    return [out] + list(torch.autograd.grad((out * weight).sum(), (q, k, v, temperature)))


@pytest.mark.parametrize('form', forms())
@pytest.mark.parametrize('with_regions', [False, True])
def test_forms_match_direct_on_the_device(form, with_regions):
    # a 24x24 shifted window (regions of 144, 288, 576 tokens) and 3 rows x 2 heads, head dim 30
    q, k, v, temperature = inputs((3, 2, 576, 30), torch.float32)
    regions = shifted_region_ids(24, 24, 12, DEVICE).view(1, 1, 576).expand(3, 1, 576) if with_regions else None
    expected = outputs_and_grads('direct', q, k, v, temperature, regions)
    actual = outputs_and_grads(form, q, k, v, temperature, regions)
    for name, a, e in zip(('out', 'dq', 'dk', 'dv', 'dtau'), actual, expected):
        scale = float(e.detach().abs().max())
        assert float((a - e).detach().abs().max()) <= 2e-3 * scale, (form, name)  # float32 (TF32 matmuls allowed)


@pytest.mark.parametrize('form', forms())
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_stay_finite_and_close(form, dtype):
    q, k, v, temperature = inputs((2, 2, 256, 16), dtype, seed=1)
    regions = shifted_region_ids(16, 16, 8, DEVICE).view(1, 1, 256)
    with torch.no_grad():
        out = taylor_shift_attention(q, k, v, temperature, regions, form=form)
        reference = taylor_shift_attention(q.double(), k.double(), v.double(), temperature.double(), regions,
                                           form='direct')
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert float((out.double() - reference).abs().max()) <= 0.05 * float(reference.abs().max())


def test_taylor_swinir_trains_on_the_device_and_autocast_stays_finite():
    torch.manual_seed(0)
    net = TaylorSwinIR(upscale=2, embed_dim=24, depths=[2], num_heads=[2], window_size=16, mlp_ratio=2,
                       upsampler='pixelshuffle').to(DEVICE)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    lr, hr = torch.rand(2, 3, 40, 36, device=DEVICE), torch.rand(2, 3, 80, 72, device=DEVICE)
    loss = (net(lr) - hr).abs().mean()
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
    optimizer.step()
    net.eval()
    with torch.no_grad():
        full = net(lr)
        for dtype in ((torch.float16, torch.bfloat16) if DEVICE == 'cuda' else (torch.bfloat16, )):
            with torch.autocast(DEVICE, dtype=dtype):
                half = net(lr).float()
            assert torch.isfinite(half).all() and float((half - full).abs().max()) < 0.05, dtype
