"""The Triton form: TaylorShift's efficient form by the fused kernels of ``triton_kernels`` in a custom autograd
Function (forward: statistics of the keys, then the output; backward: dq from the keys' statistics, then the
queries' statistics and dk, dv). Regions become a :class:`KernelLayout`: the chunks of every window sorted by region.
"""
import math
import os

import torch
import triton

from .features import NORM_EPS
from .regions import RegionChunks, derived, sorted_region_chunks
from .triton_kernels import (BLOCK_N, CHUNKS, FORWARD, GRAD_KV, GRAD_Q, KEYS, NO_REGIONS, QUERIES, SORTED,
                             STATS_BLOCK, _stats_kernel, _token_kernel)


def _interpreting():
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


class KernelLayout:
    """Regions as the kernels read them, per window w of W (row r of the inputs is window (r // rows_per_window) %
    W), all int32 on the device: order (W, C) the chunks sorted by region (stable), seg (W, R, 2) the [start, stop)
    slots of each region in that order, blocks (W, NB, 3) the region, first and stop slot of every token block
    (never two regions in one block; blocks past the window's end are empty), source (W, L) the input token of
    every slot or -1 (padding; sorted ids only). R bounds the region count: C unless given (no host sync), and
    the statistics take R slots of (d + 2)·DP·EP floats per row (128 KB at d = 30): 4 for TaylorSwinIR's even
    windows, but C = N for a window whose shift makes one-token chunks (an odd window: use the efficient form).
    Without regions: kind NO_REGIONS, one region of N tokens, blocks of BLOCK_N tokens."""

    def __init__(self, num_tokens, chunk_regions=None, chunk=1, rows_per_window=1, num_regions=None, source=None):
        self.rows_per_window, self.source, self.chunk = rows_per_window, source, chunk
        if chunk_regions is None:
            self.kind, self.num_windows, self.num_chunks, self.num_regions = NO_REGIONS, 1, 1, 1
            self.order = self.seg = self.blocks = None
            self.length, self.num_blocks = num_tokens, triton.cdiv(num_tokens, BLOCK_N)
            return
        self.kind = CHUNKS if source is None else SORTED
        windows, chunks = chunk_regions.shape
        regions = chunks if num_regions is None else min(num_regions, chunks)
        self.num_windows, self.num_chunks, self.num_regions, self.length = windows, chunks, regions, chunks * chunk
        device = chunk_regions.device
        ids, order = torch.sort(chunk_regions, dim=-1, stable=True)
        new = torch.ones_like(ids, dtype=torch.bool)
        new[:, 1:] = ids[:, 1:] != ids[:, :-1]
        rank = new.long().cumsum(-1) - 1  # region index of every sorted chunk, nondecreasing
        index = torch.arange(regions, device=device).expand(windows, regions).contiguous()
        start = torch.searchsorted(rank, index) * chunk  # region r: slots [start, stop) (empty if r >= R_w)
        stop = torch.searchsorted(rank, index, right=True) * chunk
        sizes = (stop - start + BLOCK_N - 1) // BLOCK_N  # token blocks of each region
        ends = sizes.cumsum(-1)
        # Σ_r ceil(n_r / B) <= (N + R (B - 1)) / B blocks; exactly N / B when chunks are whole blocks
        extra = 0 if chunk % BLOCK_N == 0 else regions * (BLOCK_N - 1)
        self.num_blocks = (self.length + extra) // BLOCK_N
        block = torch.arange(self.num_blocks, device=device).expand(windows, -1).contiguous()
        region = torch.searchsorted(ends, block, right=True)  # R: past the window's end (an empty block)
        region = torch.where(region < regions, region, 0)  # region 0 is never empty
        first = start.gather(1, region) + (block - (ends - sizes).gather(1, region)) * BLOCK_N
        last = torch.where(block < ends[:, -1:], stop.gather(1, region), first)
        self.order = order.to(torch.int32).contiguous()
        self.seg = torch.stack([start, stop], dim=-1).to(torch.int32).contiguous()
        self.blocks = torch.stack([region, first, last], dim=-1).to(torch.int32).contiguous()


def kernel_layout(regions, batch, num_tokens):
    """The :class:`KernelLayout` of ``regions`` for inputs of batch shape ``batch``.

    A :class:`RegionChunks` (the network's): built on the device with a few small ops, once per RegionChunks
    object (cached on it: it lives one forward and is shared by every block), no host sync. Integer ids (..., N):
    tokens sorted by id into padded rows (``sorted_region_chunks``), which reads the ids on the host (a sync per
    call; ids shared by every row but the first batch dim are sorted once per window, not per head)."""
    inner = math.prod(batch[1:])
    if regions is None:
        return KernelLayout(num_tokens)
    if isinstance(regions, RegionChunks):
        return derived(regions, ('triton', inner), lambda: KernelLayout(
            num_tokens, regions.chunk_regions, regions.chunk, rows_per_window=inner))
    ids = regions.expand(batch + (num_tokens, ))
    shared = all(ids.stride(i) == 0 for i in range(1, len(batch)))  # one id row per first batch entry
    rows = ids[(slice(None), ) + (0, ) * (len(batch) - 1)] if shared else ids.reshape(-1, num_tokens)
    layout = sorted_region_chunks(rows.reshape(-1, num_tokens), BLOCK_N)  # a host sync
    chunk_regions = layout.chunks.chunk_regions
    source = torch.where(layout.key_weight > 0, layout.source, -1).to(torch.int32).contiguous()
    num_regions = int(chunk_regions.max()) + 1  # the same sync's data: the stats hold only real regions
    return KernelLayout(num_tokens, chunk_regions, BLOCK_N, inner if shared else 1, num_regions, source)


def _batched(t, batch0, inner):
    """(..., N, f) -> (B, inner, N, f) with unit stride along f: a view where the strides allow (permuted views of
    one qkv tensor are read in place)."""
    t = t.reshape((batch0, inner) + t.shape[-2:])
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides(t):
    return t.stride(0), t.stride(1), t.stride(2)


def _precision(*tensors):
    """tl.dot precision: IEEE float32 for float32 inputs unless torch allows TF32 matmuls; TF32 for half inputs."""
    if any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors) or \
            (tensors[0].is_cuda and torch.backends.cuda.matmul.allow_tf32):
        return 'tf32'
    return 'ieee'


def _config(head_dim, value_dim, kernel='token'):
    return dict(BLOCK=BLOCK_N if kernel == 'token' else STATS_BLOCK, DP=max(16, triton.next_power_of_2(head_dim)),
                EP=max(16, triton.next_power_of_2(value_dim + 1)), EPS=NORM_EPS)


def _layout_args(layout, dummy):
    return (dummy if layout.order is None else layout.order, dummy if layout.source is None else layout.source)


def _layout_sizes(layout, num_tokens, inner):
    return (num_tokens, inner, layout.num_regions, layout.num_windows, layout.rows_per_window, layout.chunk,
            layout.num_chunks, layout.length)


def _statistics(mode, x, tau, v, grad, out, den, layout, scale, precision):
    """S (keys, v') or T (queries, dz): (rows · R, d + 2, DP, EP) float32 (slots of empty regions unwritten)."""
    batch0, inner, num_tokens, head_dim = x.shape
    rows = batch0 * inner
    value_dim = (v if mode == KEYS else out).shape[-1]
    cfg = _config(head_dim, value_dim, 'stats')
    stats = torch.empty(rows * layout.num_regions, head_dim + 2, cfg['DP'], cfg['EP'], device=x.device)
    vv = v if mode == KEYS else x  # unused pointers: any tensor
    gg, oo = (grad, out) if mode == QUERIES else (x, x)
    dummy = stats
    _stats_kernel[(rows * layout.num_regions, head_dim + 1)](
        x, dummy if tau is None else tau, vv, gg, oo, dummy if den is None else den, *_layout_args(layout, dummy),
        dummy if layout.seg is None else layout.seg, stats, *_layout_sizes(layout, num_tokens, inner), head_dim,
        value_dim, float(scale), *_strides(x), *_strides(vv), *_strides(gg), *_strides(oo), MODE=mode,
        LAYOUT=layout.kind, HAS_TAU=tau is not None, PRECISION=precision, **cfg)
    return stats


def _token_pass(mode, x, tau, v, grad, out, den, layout, stats, scale, precision, result, result2=None, dtau=None):
    batch0, inner, num_tokens, head_dim = x.shape
    value_dim = v.shape[-1]
    cfg = _config(head_dim, value_dim)
    gg, oo = (grad, out) if mode == GRAD_Q else (x, x)
    r2 = result if result2 is None else result2
    _token_kernel[(batch0 * inner, layout.num_blocks)](
        x, stats if tau is None else tau, v, gg, oo, den, *_layout_args(layout, stats),
        stats if layout.blocks is None else layout.blocks, stats, result, r2, stats if dtau is None else dtau,
        *_layout_sizes(layout, num_tokens, inner), head_dim, value_dim, float(scale), *_strides(x), *_strides(v),
        *_strides(gg), *_strides(oo), *_strides(result), *_strides(r2), MODE=mode, LAYOUT=layout.kind,
        HAS_TAU=tau is not None, PRECISION=precision, **cfg)


class TaylorShiftTriton(torch.autograd.Function):
    """Forward and backward by the kernels. Saves q, k, v (references), τ, the output and y'_0 (float32) per
    token; the backward pass recomputes the keys' statistics S. Deterministic: every sum is one program's loop
    (dτ: one partial sum per token block, added by torch), no atomics."""

    @staticmethod
    def forward(ctx, q, k, v, temperature, layout, scale):
        batch, num_tokens, value_dim = q.shape[:-2], q.shape[-2], v.shape[-1]
        batch0, inner = batch[0], math.prod(batch[1:])
        q4, k4, v4 = (_batched(t, batch0, inner) for t in (q, k, v))
        tau = None if temperature is None else \
            temperature.detach().float().expand(batch + (1, 1)).reshape(batch0 * inner).contiguous()
        precision = _precision(q4, k4, v4)
        stats = _statistics(KEYS, k4, None, v4, None, None, None, layout, scale, precision)
        out = torch.empty(batch + (num_tokens, value_dim), dtype=q.dtype, device=q.device)
        den = torch.empty(batch0 * inner, num_tokens, device=q.device)  # y'_0 = Σ_j p(x_ij)
        out4 = out.view(batch0, inner, num_tokens, value_dim)
        _token_pass(FORWARD, q4, tau, v4, None, None, den, layout, stats, scale, precision, out4)
        ctx.save_for_backward(q4, k4, v4, tau, out4, den)
        ctx.layout, ctx.scale, ctx.shapes = layout, scale, (q.shape, k.shape, v.shape)
        ctx.temperature_shape = None if temperature is None else temperature.shape
        ctx.temperature_dtype = None if temperature is None else temperature.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q4, k4, v4, tau, out4, den = ctx.saved_tensors
        layout, scale = ctx.layout, ctx.scale
        need_q, need_k, need_v, need_tau = ctx.needs_input_grad[:4]
        g4 = _batched(grad_out, *q4.shape[:2])
        precision = _precision(q4, k4, v4, g4)
        grad_q = grad_k = grad_v = grad_tau = None
        if need_q or need_tau:
            stats = _statistics(KEYS, k4, None, v4, None, None, None, layout, scale, precision)  # S, recomputed
            grad_q = torch.empty(q4.shape, dtype=q4.dtype, device=q4.device)
            dtau = None if tau is None else torch.zeros(tau.shape[0], layout.num_blocks, device=q4.device)
            _token_pass(GRAD_Q, q4, tau, v4, g4, out4, den, layout, stats, scale, precision, grad_q, dtau=dtau)
            grad_q = grad_q.view(ctx.shapes[0]) if need_q else None
            if need_tau:
                grad_tau = dtau.sum(-1).view(ctx.shapes[0][:-2] + (1, 1)).sum_to_size(ctx.temperature_shape)
                grad_tau = grad_tau.to(ctx.temperature_dtype)
        if need_k or need_v:
            stats = _statistics(QUERIES, q4, tau, v4, g4, out4, den, layout, scale, precision)  # T
            grad_k = torch.empty(k4.shape, dtype=k4.dtype, device=k4.device)
            grad_v = torch.empty(v4.shape, dtype=v4.dtype, device=v4.device)
            _token_pass(GRAD_KV, k4, None, v4, None, None, den, layout, stats, scale, precision, grad_k, grad_v)
            grad_k = grad_k.view(ctx.shapes[1]) if need_k else None
            grad_v = grad_v.view(ctx.shapes[2]) if need_v else None
        return grad_q, grad_k, grad_v, grad_tau, None, None


def taylor_shift_triton(q, k, v, temperature, regions, scale):
    """TaylorShift attention (normalised q, k inside) by the Triton kernels. q, k: (..., N, d), v: (..., N, dv)
    in float32, float16 or bfloat16 (read as they are, accumulated in float32); returns q's dtype. ``regions``:
    None, a :class:`RegionChunks` (no host sync) or integer ids broadcastable to (..., N) (one host sync)."""
    if q.device.type != 'cuda' and not _interpreting():
        raise RuntimeError(f"form='triton' needs CUDA tensors (got {q.device.type}); on CPU set TRITON_INTERPRET=1 "
                           "before importing basicsr_taylor to run the kernels in Triton's interpreter (slow)")
    if q.dim() == 2:
        return taylor_shift_triton(q[None], k[None], v[None], temperature, regions, scale)[0]
    layout = kernel_layout(regions, q.shape[:-2], q.shape[-2])
    return TaylorShiftTriton.apply(q, k, v, temperature, layout, scale)
