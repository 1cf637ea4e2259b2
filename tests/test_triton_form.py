"""The Triton form without a GPU: its region layout (built on the device from a RegionChunks, no host sync), every
kernel compiled ahead of time for sm_90 / sm_80 by the real Triton compiler, and the kernels at the real tile sizes
in Triton's interpreter against the float64 direct form.

The whole compile matrix (72 kernels, ~2-5 s each) is marked ``slow`` and runs with BASICSR_TAYLOR_SLOW_TESTS=1;
the default run compiles a representative subset (each kernel mode, layout and dtype at least once)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from basicsr_taylor.archs.shifted_windows import shifted_window_chunks

triton = pytest.importorskip('triton')
from basicsr_taylor.ops.taylor_shift import triton_aot  # noqa: E402
from basicsr_taylor.ops.taylor_shift.triton_form import kernel_layout  # noqa: E402
from basicsr_taylor.ops.taylor_shift.triton_kernels import (BLOCK_N, CHUNKS, FORWARD, GRAD_KV, GRAD_Q, KEYS,  # noqa
                                                             NO_REGIONS, QUERIES, SORTED)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
slow = pytest.mark.skipif(os.environ.get('BASICSR_TAYLOR_SLOW_TESTS', '0') in ('', '0'),
                          reason='slow: set BASICSR_TAYLOR_SLOW_TESTS=1')


def slot_tokens(layout, window, start, stop):
    """The tokens the kernels visit at slots [start, stop) of ``window`` (as triton_kernels._tokens)."""
    slots = torch.arange(int(start), int(stop))
    tokens = layout.order[window, slots // layout.chunk].long() * layout.chunk + slots % layout.chunk
    if layout.source is not None:
        tokens = layout.source[window, tokens].long()
        tokens = tokens[tokens >= 0]  # padding
    return tokens


def check_layout(layout, token_ids):
    """Every token in exactly one region segment and one token block, each holding a single region id;
    token_ids (W, N) the id of every token of each layout window."""
    windows, num_tokens = token_ids.shape
    assert layout.blocks.shape == (windows, layout.num_blocks, 3) and layout.seg.shape == (windows,
                                                                                          layout.num_regions, 2)
    for w in range(windows):
        ids = token_ids[w]
        seen_seg, seen_block = [], []
        for r, (start, stop) in enumerate(layout.seg[w].tolist()):
            tokens = slot_tokens(layout, w, start, stop)
            if len(tokens):
                assert (ids[tokens] == ids.unique()[r]).all()  # region r: the r-th distinct id
            seen_seg.append(tokens)
        for region, start, stop in layout.blocks[w].tolist():  # a block: slots [start, min(stop, start + B))
            assert stop >= start
            tokens = slot_tokens(layout, w, start, min(stop, start + BLOCK_N))
            if len(tokens) and stop - start > BLOCK_N:
                assert len(tokens) == BLOCK_N  # full blocks inside a region
            if len(tokens):
                assert (ids[tokens] == ids.unique()[region]).all()  # one region per block, the right one
            seen_block.append(tokens)
        for seen in (seen_seg, seen_block):
            assert torch.equal(torch.cat(seen).sort().values, torch.arange(num_tokens))


@pytest.mark.parametrize('window,shift', [(24, 12), (8, 4), (7, 3), (48, 24)])
def test_kernel_layout_of_region_chunks(window, shift):
    """A RegionChunks of shifted windows (chunks of 144, 16, 1 and 576 tokens): whole chunks sorted by region, the
    blocks never straddle two regions, and no more blocks than (N + R (B - 1)) / B (N / B for whole-block chunks)."""
    chunks = shifted_window_chunks(2 * window, 3 * window, window, shift, 'cpu')
    layout = kernel_layout(chunks, (12, 2), window * window)
    assert layout.kind == CHUNKS and layout.rows_per_window == 2 and layout.num_windows == 6
    check_layout(layout, chunks.token_regions(6))
    if chunks.chunk % BLOCK_N == 0:
        assert layout.num_blocks == window * window // BLOCK_N
    assert kernel_layout(chunks, (12, 2), window * window) is layout  # once per RegionChunks (kept on it)


def test_kernel_layout_of_region_chunks_needs_no_host_sync():
    """Built from ids on the meta device, which cannot be read: any .item() / .tolist() / int() would raise."""
    chunks = shifted_window_chunks(96, 96, 48, 24, 'meta')
    layout = kernel_layout(chunks, (8, 6), 2304)
    assert layout.blocks.device.type == 'meta' and layout.num_blocks == 72 and layout.num_regions == 4


@pytest.mark.parametrize('shared', [True, False])
def test_kernel_layout_of_integer_ids(shared):
    """Ids sorted into padded rows: per first batch entry when shared by the other dims, else per row."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (3, 1 if shared else 2, 45), generator=gen) * 5 - 3
    layout = kernel_layout(ids, (3, 2), 45)
    assert layout.kind == SORTED and layout.rows_per_window == (2 if shared else 1)
    check_layout(layout, ids[:, 0] if shared else ids.reshape(6, 45))


# the default run: every MODE, every layout, each dtype, with and without τ; and one sm_80 kernel
SUBSET = [('stats', KEYS, CHUNKS, False, 'bfloat16'), ('stats', QUERIES, SORTED, True, 'float32'),
          ('token', FORWARD, CHUNKS, True, 'float16'), ('token', GRAD_Q, NO_REGIONS, True, 'bfloat16'),
          ('token', GRAD_KV, CHUNKS, False, 'float32')]


def check_compiles(variant, capability):
    compiled = triton_aot.compile_variant(triton_aot.Variant(*variant), capability)
    assert compiled.asm['cubin'] and f'.target sm_{capability}' in compiled.asm['ptx']
    usage = triton_aot.resource_usage(compiled)  # ptxas -v (spills: docs/benchmarks.md, not asserted)
    assert 0 < usage['registers'] <= 255 and usage['shared'] <= 227 * 1024, usage
    return usage


@pytest.mark.parametrize('variant', SUBSET, ids=[triton_aot.Variant(*v).name for v in SUBSET])
def test_kernels_compile_for_sm90(variant):
    check_compiles(variant, 90)


def test_a_kernel_compiles_for_sm80():
    check_compiles(('token', GRAD_KV, SORTED, False, 'bfloat16'), 80)


@slow
@pytest.mark.parametrize('variant', list(triton_aot.variants()), ids=lambda v: v.name)
def test_every_kernel_compiles_for_sm90(variant):
    check_compiles(variant, 90)


@slow
@pytest.mark.parametrize('variant', list(triton_aot.variants(('float32', ))), ids=lambda v: v.name)
def test_every_kernel_compiles_for_sm80(variant):
    check_compiles(variant, 80)


INTERPRETER_CHECK = r"""
import json, sys, torch
from basicsr_taylor import taylor_shift_attention
from basicsr_taylor.archs.shifted_windows import shifted_window_chunks
gen = torch.Generator().manual_seed(0)
chunks = shifted_window_chunks(24, 24, 24, 12, 'cpu')  # one 24-window shifted by 12: 4 regions of 144 tokens
ids = chunks.token_regions(1)[:, None]  # (1, 1, 576): the same regions as integer ids
qkv = torch.randn(1, 576, 3, 1, 30, generator=gen).requires_grad_()  # N = 576, one head of d = 30
tau = torch.full((1, 1, 1), 1.3).requires_grad_()
weight = torch.randn(1, 1, 576, 30, generator=gen, dtype=torch.float64)


def run(form, regions, dtype):
    q, k, v = qkv.to(dtype).permute(2, 0, 3, 1, 4)  # strided views of one qkv tensor, (1, 1, 576, 30) each
    out = taylor_shift_attention(q, k, v, tau, regions, form=form)
    grads = torch.autograd.grad((out.double() * weight).sum(), (qkv, tau))
    return [out.detach().double()] + [g.double() for g in grads]


reference = run('direct', ids, torch.float64)
got = run('triton', chunks if sys.argv[1] == 'RegionChunks' else ids, torch.float32)
print(json.dumps(dict(scale=[float(t.abs().max()) for t in reference],
                      error=[float((a - b).abs().max()) for a, b in zip(reference, got)])))
"""


def test_kernels_at_the_real_tile_sizes_in_the_interpreter():
    """N = 576, d = 30, one row and one head, a 24-window shifted by 12 as a RegionChunks and as ids, q, k, v
    strided views of one qkv tensor: output, dqkv and dτ of the float32 kernels against the float64 direct form.
    Triton's interpreter runs every program in Python (about 20-40 s a case): the two cases run side by side."""
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cases = {name: subprocess.Popen([sys.executable, '-c', INTERPRETER_CHECK, name], env=env, cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in ('RegionChunks', 'ids')}
    for name, process in cases.items():
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, (name, stderr[-3000:])
        report = json.loads(stdout.strip().splitlines()[-1])
        for what, error, scale in zip(('output', 'dqkv', 'dtau'), report['error'], report['scale']):
            assert error < 1e-5 * max(scale, 1.0), (name, what, error, scale)
