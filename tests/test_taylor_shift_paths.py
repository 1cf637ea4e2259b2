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
from basicsr_taylor.archs.shifted_windows import shifted_region_ids
from basicsr_taylor.ops.taylor_shift import efficient
from basicsr_taylor.ops.taylor_shift.features import MonomialFeatures
from basicsr_taylor.ops.taylor_shift.regions import RegionLayout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of at most 24 (row, token) pairs and chunks from 4 tokens: many blocks even for tiny inputs."""
    monkeypatch.setattr(efficient, 'BLOCK_TOKENS', 24)
    monkeypatch.setattr(efficient, 'BLOCK_TOKENS_INFERENCE', 24)
    monkeypatch.setattr(efficient, 'MIN_CHUNK', 4)


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


def test_region_layout_gives_every_token_a_slot_in_a_single_region_chunk():
    gen = torch.Generator().manual_seed(4)
    regions = torch.randint(0, 5, (3, 1, 45), generator=gen) * 3
    layout = RegionLayout(regions, (3, 2, 45), lambda granule: 4)
    assert layout.chunk == 4 and layout.length % 4 == 0
    slot = layout.slot.reshape(3, 45)
    for row in range(3):
        assert slot[row].unique().numel() == 45  # a distinct slot per token
        assert int(layout.key_weight.reshape(3, -1)[row].sum()) == 45  # padding weighs 0
        ids = regions[row, 0]
        chunk_of = slot[row] // 4
        for chunk in chunk_of.unique():
            members = ids[chunk_of == chunk]
            assert (members == members[0]).all()  # one region per chunk
        rank = {int(r): i for i, r in enumerate(ids.unique())}
        region_of_chunk = layout.chunk_region.reshape(3, -1)[row]
        for token in range(45):
            assert int(region_of_chunk[chunk_of[token]]) == rank[int(ids[token])]
    assert layout.num_regions == max(int(regions[r].unique().numel()) for r in range(3))


def test_chunk_size_divides_equal_regions_when_it_can():
    # a 48² window shifted by 24: regions of 576 tokens
    assert efficient.choose_chunk(2304, 6, granule=576, block_tokens=1024) == 192
    assert 576 % efficient.choose_chunk(2304, 6, granule=576) == 0
    assert efficient.choose_chunk(2304, 6, granule=7) == efficient.choose_chunk(2304, 6)  # no divisor near the target
    assert efficient.choose_chunk(50, 1) == 50  # never more than N
    assert efficient.choose_chunk(2304, 6, granule=2304, block_tokens=4096) == 768  # 3 equal chunks, not 682 + a tail


@pytest.mark.parametrize('d', [1, 2, 7, 30])
def test_monomial_features_reproduce_the_polynomial_and_their_gradient(d):
    gen = torch.Generator().manual_seed(d)
    psi = MonomialFeatures(d, torch.device('cpu'))
    x, y = (torch.randn(3, d, 11, generator=gen, dtype=torch.float64) for _ in range(2))  # tokens last
    fx = psi(x, x.new_empty(3, psi.width, 11))
    fy = psi(y, y.new_empty(3, psi.width, 11))
    s = (x * y).sum(-2)
    weighted = (fx * psi.weight[:, None] * fy).sum(-2)  # ψ(x)ᵀ C ψ(y)
    torch.testing.assert_close(weighted, 1 + s + s * s / 2, rtol=0, atol=1e-12)
    # vjp: [g; g⊠x] W(S) equals autograd's dL/dx for dL/dψ(x) = S g
    stats = torch.randn(3, psi.width, 5, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    x_var = x.clone().requires_grad_()
    first, second = psi.index_ab // d, psi.index_ab % d  # feature f = x_first x_second
    features = torch.cat([torch.ones_like(x_var[:, :1]), x_var, x_var[:, first] * x_var[:, second]], dim=1)
    torch.testing.assert_close(features, fx, rtol=0, atol=0)
    (expected, ) = torch.autograd.grad(features, x_var, stats @ g)
    inputs = efficient._vjp_inputs(g, x, x.new_empty(3, 5 * (1 + d), 11))
    torch.testing.assert_close(psi.vjp_weights(stats).transpose(-2, -1) @ inputs, expected, rtol=0, atol=1e-11)


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
    """Forward + backward at N = 1024 and 2304 (a 32² and a 48² window) allocate a few times the inputs, never
    anything like N² or N·d²: the peak grows like N, the direct form's like N²."""
    peaks = {}
    for n in (num_tokens // 2, num_tokens):
        peaks[n] = efficient_and_direct_peaks(n)
    (plain_half, regions_half, direct_half), (plain, regions, direct) = peaks[num_tokens // 2], peaks[num_tokens]
    assert plain < 2.5 * plain_half and regions < 2.5 * regions_half  # linear: 2x the tokens, about 2x the memory
    assert direct > 3.5 * direct_half  # quadratic


def efficient_and_direct_peaks(n):
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, n, 16, generator=gen).requires_grad_() for _ in range(3))
    grad = torch.randn(2, 2, n, 16, generator=gen)
    height = 32 if n % 32 == 0 else 24  # a window of n tokens, shifted by half its height
    regions = shifted_window_ids(height, n // height, height // 2).view(1, 1, n).expand(2, 1, n)

    def step(form, reg):
        for t in (q, k, v):
            t.grad = None
        taylor_shift_attention(q, k, v, regions=reg, form=form).backward(grad)

    one = q.numel() * 4  # bytes of one (B, H, N, d) float32 tensor
    width = MonomialFeatures(16, q.device).width
    block = efficient.BLOCK_TOKENS * (width + 17 * 17 + 2 * 17) * 4  # one block's ψ, [g; g⊠x], g and v' buffers
    square = 2 * 2 * n * n * 4  # one N×N float32 matrix per window and head
    plain = cpu_peak_bytes(lambda: step('efficient', None))
    assert plain < 4 * one + 2 * block < square / 2  # out + 3 grads + one block's temporaries
    # regions add the region-sorted copies of q, k, v and the output, and their gradients
    with_regions = cpu_peak_bytes(lambda: step('efficient', regions))
    assert with_regions < 12 * one + 2 * block
    direct = cpu_peak_bytes(lambda: step('direct', None))
    assert direct > square
    return plain, with_regions, direct


TRITON_CHECK = r'''
import json, sys, torch
from basicsr_taylor import taylor_shift_attention
gen = torch.Generator().manual_seed(0)
errors = {}
for name, shape, regions in [
        ('plain', (2, 2, 40, 5), None),
        ('regions', (2, 2, 45, 6), torch.randint(0, 3, (2, 1, 45), generator=gen)),
        ('shifted window, d=16, dv=8', (1, 2, 64, 16), None),
        ('unbatched', (33, 4), torch.randint(0, 2, (33, ), generator=gen))]:
    q, k = (torch.randn(shape, generator=gen).requires_grad_() for _ in range(2))
    v = torch.randn(shape[:-1] + ((8, ) if shape[-1] == 16 else shape[-1:]), generator=gen).requires_grad_()
    if name.startswith('shifted'):
        rows = (torch.arange(8) >= 6).long()
        regions = (2 * rows[:, None] + rows[None, :]).flatten().view(1, 1, 64)
    tau = (torch.rand(shape[-3] if len(shape) > 2 else 1, 1, 1, generator=gen) + 0.5).requires_grad_()
    res = []
    for form in ('direct', 'triton'):
        out = taylor_shift_attention(q, k, v, tau, regions, form=form)
        grads = torch.autograd.grad((out * out.detach()).sum(), (q, k, v, tau))
        res.append([out] + list(grads))
    errors[name] = max(float((a - b).abs().max()) for a, b in zip(*res))
print(json.dumps(errors))
'''


def test_triton_kernels_match_direct_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable, '-c', TRITON_CHECK], env=env, capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors) == 4
    for name, err in errors.items():
        assert err < 1e-4, (name, err)  # float32 kernels


def test_triton_form_without_cuda_or_interpreter_raises_a_clear_error(monkeypatch):
    pytest.importorskip('triton')
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    q = torch.randn(1, 1, 8, 4)
    if torch.cuda.is_available():
        pytest.skip('CUDA present')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
        taylor_shift_attention(q, q, q, form='triton')


def load_benchmark():
    spec = importlib.util.spec_from_file_location('benchmark_script', os.path.join(ROOT, 'scripts', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_quick_mode_writes_csv_markdown_and_plots(tmp_path):
    bench = load_benchmark()
    out = tmp_path / 'bench'
    records = bench.main(['--quick', '--repeats', '1', '--warmup', '0', '--cpu-mem-cap-gb', '0', '--device', 'cpu',
                          '--out', str(out)])
    with open(out / 'results.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records) > 0
    assert {r['suite'] for r in rows} == {'op', 'model', 'scaling-window', 'scaling-size'}
    op_methods = {r['method'] for r in rows if r['suite'] == 'op'}
    assert op_methods >= {'softmax_explicit', 'sdpa', 'taylor_direct', 'taylor_efficient'}
    for r in rows:
        assert r['status'] == 'ok', r
        assert float(r['time_s']) > 0 and float(r['peak_mb']) > 0, r
    text = (out / 'results.md').read_text()
    assert '## op' in text and '## model' in text and 'torch' in text
    assert '| target |' not in text and "measured none of the targets' cases" in text  # no empty table
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert pngs == ['op_forward.png', 'op_forward_backward.png', 'scaling-size.png', 'scaling-window.png']
    assert all((out / p).stat().st_size > 1000 for p in pngs)
    assert not list(out.glob('tmp*'))  # no half-written files left


def test_benchmark_memory_measurement_keeps_the_profiler_quiet():
    """kineto printed USDT profiler_start/stop for every measurement and 'gpuGetDeviceCount failed' without
    CUDA; it reads its log level once, so this runs in a fresh process, as the benchmark command does."""
    code = ('import torch; from benchmarking.measure import cpu_peak_bytes; '
            'print(cpu_peak_bytes(lambda: torch.ones(1000, 1000) * 2))')
    env = {k: v for k, v in os.environ.items() if k != 'KINETO_LOG_LEVEL'}
    done = subprocess.run([sys.executable, '-c', code], cwd=os.path.join(ROOT, 'scripts'), env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and int(done.stdout) >= 4_000_000, done.stderr
    assert 'profiler_start' not in done.stderr and 'gpuGetDeviceCount' not in done.stderr, done.stderr


def test_benchmark_rejects_unknown_suites():
    bench = load_benchmark()
    with pytest.raises(SystemExit):
        bench.parse_args(['--suites', 'op,bogus'])
