"""Every TaylorShift implementation path against the direct form: the blocked PyTorch efficient form (with
blocks small enough that the rows, token chunks and regions all split), its region layout and feature map,
the Triton kernels (in Triton's CPU interpreter), and the benchmark script's quick mode."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from basicsr_taylor import taylor_shift_attention
from basicsr_taylor.ops.taylor_shift import FORMS
from basicsr_taylor.archs.shifted_windows import shifted_region_ids
from basicsr_taylor.ops.taylor_shift import blocks
from basicsr_taylor.ops.taylor_shift import regions as regions_module
from basicsr_taylor.ops.taylor_shift.regions import sorted_region_chunks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=['small chunks', 'row blocks'])
def small_blocks(monkeypatch, request):
    """Small blocks even for tiny inputs: region chunks of 2-4 tokens (a region spans several chunks, sorted
    layouts pad), or a memory budget so small that every window (leading entry) is a block of its own."""
    monkeypatch.setattr(regions_module, 'MIN_CHUNK', 2)
    monkeypatch.setattr(regions_module, 'MAX_CHUNK', 4)
    if request.param == 'row blocks':
        monkeypatch.setitem(blocks.BLOCK_BYTES, 'cpu', 1)
    return request.param


def test_small_blocks_split_rows(small_blocks):
    per_block = blocks.rows_per_block(18, 36, 5, 5, 8, blocks.block_bytes(torch.device('cpu')), backward=True)
    assert per_block == (1 if small_blocks == 'row blocks' else 18)


def shifted_window_ids(height, width, shift):
    """Region ids of one window of a map rolled by -shift (as SwinIR's mask): 4 rectangles."""
    return shifted_region_ids(height, width, shift).flatten()


def region_cases(batch, n, gen):
    """(name, regions) covering the layouts the efficient form must handle."""
    shifted = shifted_window_ids(6, n // 6, 2) if n % 6 == 0 else None
    cases = [
        ('random ids', torch.randint(0, 3, (batch, 1, n), generator=gen) * 7 - 5),
        ('one region in some rows', torch.stack([torch.zeros(n, dtype=torch.long),
                                                 torch.randint(0, 4, (n, ), generator=gen)] * (batch // 2) +
                                                [torch.zeros(n, dtype=torch.long)] * (batch % 2)).view(batch, 1, n)),
        ('per head ids', torch.randint(0, 2, (batch, 3, n), generator=gen)),
        ('shared by the batch', torch.randint(0, 3, (n, ), generator=gen)),
    ]
    if shifted is not None:
        cases.append(('shifted window', shifted.view(1, 1, n).expand(batch, 1, n)))
    return cases


def forms_agree(q, k, v, temperature, regions, weight, atol=1e-10, form='efficient'):
    results = []
    for name in ('direct', form):
        out = taylor_shift_attention(q, k, v, temperature, regions, form=name)
        inputs = [t for t in (q, k, v, temperature) if t is not None and t.requires_grad]
        grads = torch.autograd.grad((out * weight).sum(), inputs)
        results.append((out, grads))
    (out_d, grads_d), (out_e, grads_e) = results
    torch.testing.assert_close(out_e, out_d, rtol=0, atol=atol)
    for i, (gd, ge) in enumerate(zip(grads_d, grads_e)):
        torch.testing.assert_close(ge, gd, rtol=0, atol=atol, msg=f'gradient {i}')


@pytest.mark.parametrize('n', [30, 36])
def test_blocked_efficient_form_matches_direct_with_every_region_layout(small_blocks, n):
    gen = torch.Generator().manual_seed(n)
    batch, heads, d, dv = 3, 3, 5, 7
    q, k, v = (torch.randn(batch, heads, n, dim, generator=gen, dtype=torch.float64).requires_grad_()
               for dim in (d, d, dv))
    temperature = (torch.rand(heads, 1, 1, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    weight = torch.randn(batch, heads, n, dv, generator=gen, dtype=torch.float64)
    forms_agree(q, k, v, temperature, None, weight)
    for name, regions in region_cases(batch, n, gen):
        try:
            forms_agree(q, k, v, temperature, regions, weight)
        except AssertionError as error:
            raise AssertionError(f'regions: {name}') from error


@pytest.mark.parametrize('shape', [(40, 4), (5, 40, 4), (2, 2, 3, 33, 6)])
def test_blocked_efficient_form_handles_any_batch_shape(small_blocks, shape):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(3))
    weight = torch.randn(shape, generator=gen, dtype=torch.float64)
    forms_agree(q, k, v, None, None, weight)
    regions = torch.randint(0, 2, shape[:-1], generator=gen)
    forms_agree(q, k, v, None, regions, weight)


def test_efficient_form_on_strided_inputs_and_without_some_gradients(small_blocks):
    """q, k, v as the attention layer makes them: a permuted view of one qkv tensor; v without grad."""
    gen = torch.Generator().manual_seed(2)
    b, n, heads, d = 2, 24, 2, 6
    qkv = torch.randn(b, n, 3, heads, d, generator=gen, dtype=torch.float64).requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    v = v.detach()
    regions = shifted_window_ids(4, 6, 2).view(1, 1, n).expand(b, 1, n)
    weight = torch.randn(b, heads, n, d, generator=gen, dtype=torch.float64)
    outs = [taylor_shift_attention(q, k, v, regions=regions, form=form) for form in ('direct', 'efficient')]
    grads = [torch.autograd.grad((out * weight).sum(), qkv)[0] for out in outs]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-10)


def test_efficient_form_under_no_grad_and_in_float32(small_blocks):
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 50, 8, generator=gen) for _ in range(3))
    regions = torch.randint(0, 4, (2, 1, 50), generator=gen)
    with torch.no_grad():
        out_e = taylor_shift_attention(q, k, v, regions=regions, form='efficient')
    out_d = taylor_shift_attention(q, k, v, regions=regions, form='direct')
    torch.testing.assert_close(out_e, out_d, rtol=0, atol=1e-5)


def test_sorted_regions_give_every_token_a_slot_in_a_single_region_chunk(monkeypatch):
    monkeypatch.setattr(regions_module, 'MIN_CHUNK', 4)
    monkeypatch.setattr(regions_module, 'MAX_CHUNK', 4)
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 5, (3, 45), generator=gen) * 3
    layout = sorted_region_chunks(ids)
    chunk = layout.chunks.chunk
    assert chunk == 4 and layout.source.shape[-1] % 4 == 0 and layout.chunks.num_chunks == layout.source.shape[-1] // 4
    for row in range(3):
        slot = layout.slot[row]
        assert slot.unique().numel() == 45  # a distinct slot per token
        assert (layout.source[row, slot] == torch.arange(45)).all()  # source inverts slot
        assert int(layout.key_weight[row].sum()) == 45  # padding weighs 0
        chunk_of = slot // chunk
        region_of_chunk = layout.chunks.chunk_regions[row]
        for c in chunk_of.unique():
            members = ids[row][chunk_of == c]
            assert (members == members[0]).all()  # one region per chunk
        for a in range(45):  # two tokens share a region exactly when their chunks do
            same = ids[row] == ids[row, a]
            assert (same == (region_of_chunk[chunk_of] == region_of_chunk[chunk_of[a]])).all()


def test_sorted_region_gather_and_scatter_are_inverse_with_gather_gradients():
    gen = torch.Generator().manual_seed(6)
    ids = torch.randint(0, 3, (2, 13), generator=gen)
    layout = sorted_region_chunks(ids, chunk=4)
    x = torch.randn(2, 13, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: layout.scatter(layout.gather(t) * 2), (x, ))
    torch.testing.assert_close(layout.scatter(layout.gather(x)), x)


def test_chunk_size_divides_equal_regions_when_it_can():
    choose_chunk = regions_module.choose_chunk
    assert choose_chunk(576, 2304) == 576  # 48² window shifted by 24: 576-token regions, no padding
    assert choose_chunk(144, 576) == 144  # 24² window shifted by 12
    assert choose_chunk(2304, 2304) == 768  # the largest divisor up to MAX_CHUNK
    assert choose_chunk(7, 2304) == regions_module.MIN_CHUNK  # no divisor in range: pad to MIN_CHUNK
    assert choose_chunk(1, 5) == 5  # never more than N


def test_rows_per_block_fits_the_budget_in_balanced_blocks():
    per_token = blocks.temporaries_per_token(30, 30, backward=True) * 4
    limit = 64 * 2**20
    rows = blocks.rows_per_block(64 * 6 * 4, 576, 30, 30, 4, limit, backward=True)  # 64 windows x 6 heads x 4 chunks
    assert 1 <= rows < 64 * 6 * 4 and rows * 576 * per_token <= limit < (rows + 1) * 576 * per_token
    assert blocks.rows_per_block(3, 10**9, 30, 30, 4, limit, backward=False) == 1  # at least one
    assert blocks.rows_per_block(32, 576, 30, 30, 4, 10**12, backward=True) == 32  # all of them when they fit
    assert blocks.row_blocks(5, 2) == [slice(0, 1), slice(1, 3), slice(3, 5)]  # 3 blocks of 1-2 rows, not 2 + 2 + 1
    assert blocks.row_blocks(4, 4) == [slice(0, 4)]


def test_block_budget_per_plan_device_and_network():
    cpu = torch.device('cpu')
    assert blocks.block_bytes(cpu) == blocks.BLOCK_BYTES['cpu']  # cache-sized (BASICSR_TAYLOR_CPU_BLOCK_MB)
    assert blocks.cuda_budget(80 * 10**9) == 80 * 10**9 // 512  # a share of the card ...
    assert blocks.cuda_budget(12 * 10**9) == blocks.CUDA_MIN_BYTES  # ... bounded: a 12 GB card gets 32 MiB
    assert blocks.cuda_budget(10**12) == blocks.CUDA_MAX_BYTES
    with blocks.cuda_plan():  # the CPU takes CUDA's choices: a nominal 80 GB device's budget, CUDA's thresholds
        assert blocks.plan_of('cpu') == 'cuda' and blocks.block_bytes(cpu) == blocks.cuda_budget(80 * 10**9)
        with blocks.block_budget(8 * 2**20):  # a network's attn_block_mb wins over the plan
            assert blocks.block_bytes(cpu) == 8 * 2**20
    assert blocks.plan_of('cpu') == 'cpu' and blocks.block_bytes(cpu) == blocks.BLOCK_BYTES['cpu']


def cpu_peak_bytes(fn):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize('num_tokens', [1024, 2304])
def test_efficient_form_memory_stays_linear_in_tokens(num_tokens):
    """Forward + backward at N/2 and N (N = 1024, 2304: a 32² and a 48² window): the efficient form's peak grows
    like N, with and without regions, the direct form's like N²; at a 48² window it is under half one N×N matrix."""
    peaks = {n: efficient_and_direct_peaks(n) for n in (num_tokens // 2, num_tokens)}
    (plain_half, regions_half, direct_half), (plain, regions, direct) = peaks[num_tokens // 2], peaks[num_tokens]
    assert plain < 2.5 * plain_half and regions < 2.5 * regions_half  # linear: 2x the tokens, about 2x the memory
    assert direct > 3.5 * direct_half  # quadratic
    if num_tokens == 2304:
        square = 2 * 2 * num_tokens**2 * 4
        assert plain < square / 2 and regions < square / 2


def shifted_window_layout(n):
    """(ids (1, 1, n), RegionChunks) of one window of n tokens shifted by half its side (its last-row-and-column
    window: 4 regions)."""
    side = int(n**0.5) if int(n**0.5)**2 == n else 32
    height, width = side, n // side
    ids = shifted_window_ids(height, width, height // 2).view(1, 1, n)
    from basicsr_taylor.archs.shifted_windows import shifted_window_chunks
    chunks = shifted_window_chunks(height, width, height, height // 2, torch.device('cpu')) \
        if height == width else None
    return ids, chunks


def efficient_and_direct_peaks(n):
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, n, 16, generator=gen).requires_grad_() for _ in range(3))
    grad = torch.randn(2, 2, n, 16, generator=gen)
    regions = shifted_window_layout(n)[0].expand(2, 1, n)

    def step(form, reg):
        for t in (q, k, v):
            t.grad = None
        taylor_shift_attention(q, k, v, regions=reg, form=form).backward(grad)

    square = 2 * 2 * n * n * 4  # one N×N float32 matrix per window and head
    plain = cpu_peak_bytes(lambda: step('efficient', None))
    with_regions = cpu_peak_bytes(lambda: step('efficient', regions))
    direct = cpu_peak_bytes(lambda: step('direct', None))
    assert direct > square
    return plain, with_regions, direct


def test_a_smaller_block_budget_lowers_the_peak_and_changes_nothing_else(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(8, 2, 576, 16, generator=gen).requires_grad_() for _ in range(3))
    grad = torch.randn(8, 2, 576, 16, generator=gen)
    results = {}
    for budget in (2**40, 1):  # every chunk row in one block, then one per block
        monkeypatch.setitem(blocks.BLOCK_BYTES, 'cpu', budget)
        for t in (q, k, v):
            t.grad = None

        def step():
            taylor_shift_attention(q, k, v, form='efficient').backward(grad)
        peak = cpu_peak_bytes(step)
        results[budget] = peak, taylor_shift_attention(q, k, v, form='efficient').detach(), q.grad.clone()
    (big, out_big, grad_big), (small, out_small, grad_small) = results.values()
    assert small < big / 2
    torch.testing.assert_close(out_small, out_big)
    torch.testing.assert_close(grad_small, grad_big)


TRITON_CHECK = r"""
import json, torch
from basicsr_taylor import taylor_shift_attention
gen = torch.Generator().manual_seed(0)
rows = (torch.arange(8) >= 4).long()
shifted = (2 * rows[:, None] + rows[None, :]).flatten().view(1, 1, 64)  # an 8x8 window rolled by 4: 4 x 16 tokens
# 2 regions in one row, 4 in the other: the first row's layout ends in padding blocks (the earlier forward kernel
# counted them, and region 1 between, into region 0: error 1.4)
uneven = torch.stack([torch.randint(0, 2, (45, ), generator=gen), torch.randint(0, 4, (45, ), generator=gen)])
uneven = uneven.view(2, 1, 45)
from basicsr_taylor.archs.shifted_windows import padded_window_layout, shifted_window_chunks
two_windows = shifted_window_chunks(8, 16, 8, 4, 'cpu')  # the network's layout: 2 windows x 4 chunks of 16 tokens
odd_windows = padded_window_layout(14, 14, 7, 3, 'cpu').chunks  # 4 windows of 49 tokens padded to 4 x 16 slots
CASES = [  # name, q/k shape, dv, regions, dtype, temperature, v needs grad
    ('plain N=40 d=5 dv=7', (2, 2, 40, 5), 7, None, torch.float32, True, True),
    ('random regions, ids shared by heads', (2, 2, 45, 6), 6, torch.randint(0, 3, (2, 1, 45), generator=gen) * 7 - 5,
     torch.float32, True, True),
    ('2 regions in one row, 4 in the other', (2, 2, 45, 6), 3, uneven, torch.float32, True, True),
    ('shifted window, per-head ids', (1, 2, 64, 6), 6, shifted.expand(1, 2, 64), torch.float32, True, True),
    ('unbatched, no temperature, v without grad', (33, 4), 4, torch.randint(0, 2, (33, ), generator=gen),
     torch.float32, False, False),
    ('bfloat16 with regions', (2, 2, 40, 5), 7, torch.randint(0, 3, (2, 1, 40), generator=gen), torch.bfloat16,
     True, True),
    ('float16', (1, 2, 40, 5), 7, None, torch.float16, True, True),
    ('RegionChunks, 2 images x 2 windows x 3 heads', (4, 3, 64, 6), 6, two_windows, torch.float32, True, True),
    ('padded odd windows, 2 images x 4 windows x 2 heads', (8, 2, 64, 6), 6, odd_windows, torch.float32, True, True),
]
report = {}
for name, shape, dv, regions, dtype, with_tau, v_grad in CASES:
    q, k = (torch.randn(shape, generator=gen).to(dtype).requires_grad_() for _ in range(2))
    v = torch.randn(shape[:-1] + (dv, ), generator=gen).to(dtype).requires_grad_(v_grad)
    tau = (torch.rand(shape[-3] if len(shape) > 2 else 1, 1, 1, generator=gen) + 0.5).requires_grad_() \
        if with_tau else None
    weight = torch.randn(shape[:-1] + (dv, ), generator=gen, dtype=torch.float64)
    leaves = [t for t in (q, k, v, tau) if t is not None and t.requires_grad]
    res = []
    for form in ('direct', 'triton'):  # the direct form in float64 on the same (rounded) inputs
        args = [t.double() if form == 'direct' else t for t in (q, k, v)]
        out = taylor_shift_attention(*args, tau, regions, form=form)
        grads = torch.autograd.grad((out.double() * weight).sum(), leaves)
        res.append([out] + list(grads))
    (ref, *ref_grads), (got, *got_grads) = res
    report[name] = dict(
        dtype=str(got.dtype), grad_dtypes=[str(g.dtype) for g in got_grads], num_grads=len(got_grads),
        finite=all(bool(torch.isfinite(t).all()) for t in [got] + got_grads),
        error=max(float((b.double() - a).abs().max()) for a, b in zip([ref] + ref_grads, [got] + got_grads)),
        scale=max(float(a.abs().max()) for a in [ref] + ref_grads))
print(json.dumps(report))
"""


def test_triton_kernels_match_direct_in_the_interpreter():
    """Forward and backward kernels against the float64 direct form: q, k, v and temperature gradients; regions
    (rows with different region counts, per-head ids, a shifted window, the network's RegionChunks over several
    images, windows and heads, padded odd windows); N not a multiple of the block, d not a power of 2, dv != d;
    half inputs read as they are (output and gradients in their dtype, finite, close)."""
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable, '-c', TRITON_CHECK], env=env, capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report) == 9
    for name, r in report.items():
        assert r['finite'], name
        if r['dtype'] == 'torch.float32':
            assert r['error'] < 1e-4, (name, r)  # float32 kernels
        else:  # half inputs, float32 accumulation: output rounding only (bf16: 8 bits, fp16: 11 bits)
            assert r['dtype'] in ('torch.bfloat16', 'torch.float16') and set(r['grad_dtypes']) <= {r['dtype'],
                                                                                                  'torch.float32'}
            ulp = 2**-8 if r['dtype'] == 'torch.bfloat16' else 2**-11
            assert r['error'] < 4 * ulp * r['scale'], (name, r)
    assert report['unbatched, no temperature, v without grad']['num_grads'] == 2
    assert report['plain N=40 d=5 dv=7']['num_grads'] == 4


def test_triton_form_without_cuda_or_interpreter_raises_a_clear_error(monkeypatch):
    pytest.importorskip('triton')
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    q = torch.randn(1, 1, 8, 4)
    if torch.cuda.is_available():
        pytest.skip('CUDA present')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
        taylor_shift_attention(q, q, q, form='triton')


FLEX_REGION_CASES = [  # name, q/k shape, dv, regions
    ('plain N=40 d=5 dv=7', (2, 3, 40, 5), 7, None),
    ('ids shared by heads', (2, 3, 45, 6), 6, 'per window'),
    ('per-head ids', (2, 3, 45, 6), 4, 'per head'),
    ('2 regions in one row, 4 in the other', (2, 3, 45, 6), 6, 'uneven'),
    ('ids shared by the batch, unbatched-style (N,)', (2, 3, 45, 6), 6, 'shared'),
    ('shifted 8x8 window', (2, 2, 64, 6), 6, 'shifted'),
    ('(B, N, d)', (3, 33, 4), 4, 'per window'),
    ('(B1, B2, H, N, d)', (2, 2, 3, 33, 6), 6, 'per window'),
]


def flex_regions(kind, shape, gen):
    n = shape[-2]
    if kind is None:
        return None
    if kind == 'per window':
        return torch.randint(0, 3, shape[:-3] + (1, n), generator=gen) if len(shape) > 3 else \
            torch.randint(0, 3, shape[:-1], generator=gen)
    if kind == 'per head':
        return torch.randint(0, 3, shape[:-1], generator=gen)
    if kind == 'uneven':
        return torch.stack([torch.randint(0, 2, (n, ), generator=gen), torch.randint(0, 4, (n, ), generator=gen)]).view(
            2, 1, n)
    if kind == 'shared':
        return torch.randint(0, 3, (n, ), generator=gen)
    return shifted_window_ids(8, 8, 4).view(1, 1, n)


@pytest.mark.parametrize('name,shape,dv,kind', FLEX_REGION_CASES, ids=[c[0] for c in FLEX_REGION_CASES])
def test_flex_form_matches_direct_on_the_cpu_forward(name, shape, dv, kind):
    """FlexAttention with score_mod = log p and a same-region block mask equals the direct form (float64, CPU,
    eager flex_attention: forward only, torch has no CPU backward for it)."""
    from basicsr_taylor.ops.taylor_shift import flex
    if not flex.available():
        pytest.skip('torch without FlexAttention')
    gen = torch.Generator().manual_seed(len(name))
    q, k = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(shape[:-1] + (dv, ), generator=gen, dtype=torch.float64)
    tau = torch.rand(shape[-3], 1, 1, generator=gen, dtype=torch.float64) + 0.5
    regions = flex_regions(kind, shape, gen)
    with torch.no_grad():
        expected = taylor_shift_attention(q, k, v, tau, regions, form='direct')
        out = taylor_shift_attention(q, k, v, tau, regions, form='flex')
    assert out.shape == expected.shape == shape[:-1] + (dv, )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_flex_form_in_float32_and_half_on_the_cpu():
    from basicsr_taylor.ops.taylor_shift import flex
    if not flex.available():
        pytest.skip('torch without FlexAttention')
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 2, 50, 8, generator=gen) for _ in range(3))
    regions = torch.randint(0, 4, (2, 1, 50), generator=gen)
    with torch.no_grad():
        expected = taylor_shift_attention(q.double(), k.double(), v.double(), regions=regions, form='direct')
        out = taylor_shift_attention(q, k, v, regions=regions, form='flex')
        half = taylor_shift_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), regions=regions, form='flex')
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), expected, rtol=0, atol=0.05)


def test_flex_form_says_why_it_cannot_run(monkeypatch):
    from basicsr_taylor.ops.taylor_shift import flex
    assert 'flex' in FORMS
    q = torch.randn(1, 1, 8, 4, requires_grad=True)
    if flex.available() and not torch.cuda.is_available():  # torch: "FlexAttention does not support backward on CPU"
        with pytest.raises(RuntimeError, match='no backward pass on cpu'):
            taylor_shift_attention(q, q, q, form='flex')
    monkeypatch.setattr(flex, 'flex_attention', None)
    with pytest.raises(RuntimeError, match='torch >= 2.5'):
        with torch.no_grad():
            taylor_shift_attention(q, q, q, form='flex')


def test_taylor_swinir_runs_with_the_flex_form():
    from basicsr_taylor import TaylorSwinIR
    from basicsr_taylor.ops.taylor_shift import flex
    if not flex.available():
        pytest.skip('torch without FlexAttention')
    config = dict(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2,
                  upsampler='pixelshuffle', img_size=16)
    torch.manual_seed(0)
    net = TaylorSwinIR(attn_form='direct', **config).eval()
    flex_net = TaylorSwinIR(attn_form='flex', **config).eval()
    flex_net.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():  # blocks 2 shift by 4: regions
        torch.testing.assert_close(flex_net(x), net(x), rtol=0, atol=1e-5)


def load_benchmark():
    spec = importlib.util.spec_from_file_location('benchmark_script', os.path.join(ROOT, 'scripts', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_quick_mode_writes_csv_markdown_and_plots(tmp_path, capsys):
    bench = load_benchmark()
    # by default a quick run goes to results/, never over the committed docs/benchmarks/cpu/
    assert bench.parse_args(['--quick']).out == 'results/benchmark-quick'
    assert bench.parse_args([]).out == 'docs/benchmarks/cpu'
    out = tmp_path / 'bench'
    records = bench.main(['--quick', '--repeats', '1', '--warmup', '0', '--cpu-mem-cap-gb', '0', '--device', 'cpu',
                          '--out', str(out)])
    with open(out / 'results.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records) > 0
    assert {r['suite'] for r in rows} == {'op', 'model', 'scaling-window', 'scaling-size', 'ops', 'targets', 'heads',
                                          'light'}
    ops = [r for r in rows if r['suite'] == 'ops']  # kernels per call, both block plans, against SwinIR
    assert {(r['method'], r['mode']) for r in ops} >= {('SwinIR-w4', 'train'), ('TaylorSwinIR-w8', 'inference')}
    assert all(int(r['kernels']) > 0 for r in ops)
    assert {r['case'] for r in rows if r['suite'] == 'targets'} == {'S', 'L', 'recipe', 'op'}
    op_methods = {r['method'] for r in rows if r['suite'] == 'op'}
    assert op_methods >= {'softmax_explicit', 'sdpa', 'taylor_direct', 'taylor_efficient'}
    # heads: SwinIR and TaylorSwinIR at two head dimensions, both modes, with time, memory and kernels
    heads = [r for r in rows if r['suite'] == 'heads']
    assert {(r['method'], r['mode']) for r in heads} == {(m, mode) for mode in ('train', 'inference') for m in (
        'SwinIR-w4 2 heads (d 6)', 'TaylorSwinIR-w8 2 heads (d 6)', 'TaylorSwinIR-w8 4 heads (d 3)')}
    assert all(int(r['kernels']) > 0 for r in heads)
    flops = [r for r in rows if r['suite'] == 'light' and 'FLOPs' in r['case']]  # params and FLOPs, no time
    assert len(flops) == 2 and all(int(r['params']) > 0 and float(r['gflops']) > 0 for r in flops)
    for r in rows:
        assert r['status'] == 'ok', r
        if r['suite'] != 'ops' and r not in flops:  # (kernel counts / FLOPs, no time)
            assert float(r['time_s']) > 0 and float(r['peak_mb']) > 0, r
    text = (out / 'results.md').read_text()
    assert '## op' in text and '## model' in text and '## targets' in text and 'torch' in text
    assert '## ops' in text and 'ops tiny train: TaylorSwinIR-w8 kernels / SwinIR-w4' in text
    assert '## heads' in text and '## light' in text and 'kernel ratio' in text
    assert 'S train: TaylorSwinIR-w8 time / SwinIR-w4' in text
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert pngs == ['op_forward.png', 'op_forward_backward.png', 'scaling-size.png', 'scaling-window.png']
    assert all((out / p).stat().st_size > 1000 for p in pngs)
    assert not list(out.glob('tmp*'))  # no half-written files left
    printed = capsys.readouterr().out
    assert 'these times and ratios mean nothing about the real sizes' in printed
    assert all(line.endswith('[quick sizes]') for line in printed.splitlines() if '(limit ' in line)


def test_benchmark_flops_on_fake_tensors_equal_the_flops_of_a_real_run():
    """The light suite counts FLOPs on fake tensors (nothing computed): the same count as a real run, and a
    convolution's count is 2 x multiply-adds."""
    from torch.utils.flop_counter import FlopCounterMode

    from basicsr_taylor import TaylorSwinIR
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    try:
        from benchmarking.recipes import count_flops
    finally:
        sys.path.pop(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (16, 20)) == 2 * 3 * 8 * 9 * 16 * 20
    net = TaylorSwinIR(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2,
                       upsampler='pixelshuffle').eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 3, 16, 24))
    assert count_flops(net, (16, 24)) == counter.get_total_flops() > 0


def test_benchmark_flex_bias_baseline_equals_swinir_softmax_on_the_cpu():
    """The benchmark's Flex + relative position bias score_mod (+ region block mask) against SwinIR's explicit
    softmax with its gathered bias (+ -100 mask), forward (the suite runs it on CUDA only)."""
    from basicsr_taylor.ops.taylor_shift import flex
    if not flex.available():
        pytest.skip('torch without FlexAttention')
    load_benchmark()
    from benchmarking import suites
    gen = torch.Generator().manual_seed(8)
    side, windows, heads, d = 4, 4, 2, 8
    n = side * side
    q, k, v = (torch.randn(windows, heads, n, d, generator=gen, dtype=torch.float64) for _ in range(3))
    table = torch.randn((2 * side - 1)**2, heads, generator=gen, dtype=torch.float64)
    index = suites.relative_position_index(side)
    regions = suites.window_region_ids(side, windows, torch.device('cpu'))
    assert regions.shape == (windows, n) and len(regions[-1].unique()) == 4  # the last window has 4 regions
    mask = ((regions[:, None, :, None] != regions[:, None, None, :]) * -100.0).double()
    score_mod = suites.relative_bias_score_mod(table, side)
    with torch.no_grad():
        for add_mask in (None, mask):
            block_mask = None if add_mask is None else flex.region_block_mask(regions[:, None], (windows, heads), n,
                                                                              q.device)
            out = flex.run_flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)
            expected = suites.softmax_explicit(q, k, v, table, index, add_mask)
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_benchmark_op_configs_add_shifted_windows_at_large_windows_only():
    load_benchmark()
    from benchmarking import suites
    cpu = torch.device('cpu')
    full = suites.op_configs(False, cpu)
    assert {side for _, _, side, shifted, _, _ in full if shifted} == {24, 32, 48}
    assert not {name for *_, name in full} & {'flex_bias', 'taylor_flex', 'taylor_triton'}  # CUDA only
    quick = suites.op_configs(True, cpu)
    assert len(quick) == 24 and {side for _, _, side, shifted, _, _ in quick if shifted} == {8}


def test_benchmark_output_is_quiet(tmp_path):
    """A fresh process (kineto reads its log level once): no profiler_start/stop or gpuGetDeviceCount lines."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('KINETO_LOG_LEVEL', None)
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'), '--quick', '--suites', 'op',
                             '--repeats', '1', '--warmup', '0', '--device', 'cpu', '--cpu-mem-cap-gb', '0',
                             '--out', str(tmp_path / 'bench')], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'profiler_start' not in result.stderr and 'gpuGetDeviceCount' not in result.stderr
    assert 'wrote ' in result.stdout


def test_benchmark_rejects_unknown_suites():
    bench = load_benchmark()
    with pytest.raises(SystemExit):
        bench.parse_args(['--suites', 'op,bogus'])
