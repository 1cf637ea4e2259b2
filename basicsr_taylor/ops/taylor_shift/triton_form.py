"""The Triton form: TaylorShift's efficient form by the fused kernels of ``triton_kernels`` in a custom autograd
Function (forward: statistics of the keys, then the output; backward: dq from the keys' statistics, then the
queries' statistics and dk, dv). Regions become sorted segments visited through a permutation (:class:`Segments`).
"""
import math
import os

import torch
import triton

from .features import NORM_EPS
from .regions import RegionChunks, sorted_region_chunks
from .triton_kernels import BLOCK_N, FORWARD, GRAD_KV, GRAD_Q, KEYS, QUERIES, _stats_kernel, _token_kernel


def _interpreting():
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


class Segments:
    """Regions as sorted segments of every row: perm (rows, L) slot -> token (-1: padding), chunk_region
    (rows, L / BLOCK_N) region index of each block, seg (rows, R, 2) [start, stop) slots of each region.
    Without regions: one segment, slot = token (perm None)."""

    def __init__(self, regions, batch, num_tokens, device):
        rows = math.prod(batch)
        if regions is None:
            self.perm = self.chunk_region = self.seg = None
            self.num_regions, self.length = 1, num_tokens
            return
        if isinstance(regions, RegionChunks):
            regions = regions.token_regions(batch[0]).view(batch[:1] + (1, ) * (len(batch) - 1) + (num_tokens, ))
        layout = sorted_region_chunks(regions.expand(batch + (num_tokens, )).reshape(rows, num_tokens), BLOCK_N)
        length, num_regions = layout.source.shape[-1], int(layout.chunks.chunk_regions.max()) + 1
        filled = layout.key_weight > 0
        self.perm = torch.where(filled, layout.source, -1).to(torch.int32).contiguous()
        num_chunks = length // BLOCK_N
        chunk_region = layout.chunks.chunk_regions
        used = filled.reshape(rows, num_chunks, BLOCK_N).any(-1)  # not trailing padding
        member = (chunk_region[:, None, :] == torch.arange(num_regions, device=device)[None, :, None]) & used[:, None]
        position = torch.arange(num_chunks, device=device)
        start = torch.where(member, position, num_chunks).amin(-1)  # regions are contiguous runs of chunks
        stop = torch.maximum(torch.where(member, position + 1, 0).amax(-1), start)
        self.seg = (torch.stack([start, stop], dim=-1) * BLOCK_N).to(torch.int32).contiguous()
        self.chunk_region = chunk_region.to(torch.int32).contiguous()
        self.num_regions, self.length = num_regions, length


def _rows(t, rows):
    """(..., N, f) -> (rows, N, f) with unit stride along f (a view where possible)."""
    t = t.reshape((rows, ) + t.shape[-2:])
    return t if t.stride(-1) == 1 else t.contiguous()


def _precision(*tensors):
    """tl.dot precision: IEEE float32 for float32 inputs unless torch allows TF32 matmuls; TF32 for half inputs."""
    if any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors) or \
            (tensors[0].is_cuda and torch.backends.cuda.matmul.allow_tf32):
        return 'tf32'
    return 'ieee'


def _config(head_dim, value_dim):
    return dict(BLOCK=BLOCK_N, DP=max(16, triton.next_power_of_2(head_dim)),
                EP=max(16, triton.next_power_of_2(value_dim + 1)), EPS=NORM_EPS)


def _statistics(mode, x, tau, v, grad, out, den, segments, scale, precision):
    """S (keys, v') or T (queries, dz): (rows · R, d + 2, DP, EP) float32."""
    rows, num_tokens, head_dim = x.shape
    value_dim = (v if mode == KEYS else out).shape[-1]
    cfg = _config(head_dim, value_dim)
    stats = torch.empty(rows * segments.num_regions, head_dim + 2, cfg['DP'], cfg['EP'], device=x.device)
    vv = v if mode == KEYS else x  # unused pointers: any tensor
    gg, oo = (grad, out) if mode == QUERIES else (x, x)
    dummy = stats
    _stats_kernel[(rows * segments.num_regions, head_dim + 1)](
        x, dummy if tau is None else tau, vv, gg, oo, dummy if den is None else den,
        dummy if segments.perm is None else segments.perm, dummy if segments.seg is None else segments.seg, stats,
        num_tokens, segments.length, segments.num_regions, head_dim, value_dim, float(scale), x.stride(0),
        x.stride(1), vv.stride(0), vv.stride(1), gg.stride(0), gg.stride(1), oo.stride(0), oo.stride(1),
        MODE=mode, HAS_PERM=segments.perm is not None, HAS_TAU=tau is not None, PRECISION=precision, **cfg)
    return stats


def _token_pass(mode, x, tau, v, grad, out, den, segments, stats, scale, precision, result, result2=None,
                dtau=None):
    rows, num_tokens, head_dim = x.shape
    value_dim = v.shape[-1]
    cfg = _config(head_dim, value_dim)
    num_blocks = triton.cdiv(segments.length, BLOCK_N)
    gg, oo = (grad, out) if mode == GRAD_Q else (x, x)
    r2 = result if result2 is None else result2
    _token_kernel[(rows, num_blocks)](
        x, stats if tau is None else tau, v, gg, oo, den, stats if segments.perm is None else segments.perm,
        stats if segments.chunk_region is None else segments.chunk_region, stats, result, r2,
        stats if dtau is None else dtau, num_tokens, segments.length, segments.num_regions, head_dim, value_dim,
        float(scale), x.stride(0), x.stride(1), v.stride(0), v.stride(1), gg.stride(0), gg.stride(1), oo.stride(0),
        oo.stride(1), result.stride(0), result.stride(1), r2.stride(0), r2.stride(1), MODE=mode,
        HAS_PERM=segments.perm is not None, HAS_TAU=tau is not None, PRECISION=precision, **cfg)


class TaylorShiftTriton(torch.autograd.Function):
    """Forward and backward by the kernels. Saves q, k, v (references), τ, the output and y'_0 (float32) per
    token; the backward pass recomputes the keys' statistics S."""

    @staticmethod
    def forward(ctx, q, k, v, temperature, segments, scale):
        batch, num_tokens, value_dim = q.shape[:-2], q.shape[-2], v.shape[-1]
        rows = math.prod(batch)
        q3, k3, v3 = _rows(q, rows), _rows(k, rows), _rows(v, rows)
        tau = None if temperature is None else \
            temperature.detach().float().expand(batch + (1, 1)).reshape(rows).contiguous()
        precision = _precision(q3, k3, v3)
        stats = _statistics(KEYS, k3, None, v3, None, None, None, segments, scale, precision)
        out = torch.empty(batch + (num_tokens, value_dim), dtype=q.dtype, device=q.device)
        den = torch.empty(rows, num_tokens, device=q.device)  # y'_0 = Σ_j p(x_ij)
        _token_pass(FORWARD, q3, tau, v3, None, None, den, segments, stats, scale, precision,
                    out.view(rows, num_tokens, value_dim))
        ctx.save_for_backward(q3, k3, v3, tau, out, den)
        ctx.segments, ctx.scale, ctx.shapes = segments, scale, (q.shape, k.shape, v.shape)
        ctx.temperature_shape = None if temperature is None else temperature.shape
        ctx.temperature_dtype = None if temperature is None else temperature.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q3, k3, v3, tau, out, den = ctx.saved_tensors
        segments, scale = ctx.segments, ctx.scale
        need_q, need_k, need_v, need_tau = ctx.needs_input_grad[:4]
        rows = q3.shape[0]
        g3, out = _rows(grad_out, rows), out.view(rows, out.shape[-2], out.shape[-1])
        precision = _precision(q3, k3, v3, g3)
        grad_q = grad_k = grad_v = grad_tau = None
        if need_q or need_tau:
            stats = _statistics(KEYS, k3, None, v3, None, None, None, segments, scale, precision)  # S, recomputed
            grad_q = torch.empty_like(q3)
            dtau = None
            if tau is not None:
                dtau = torch.empty(rows, triton.cdiv(segments.length, BLOCK_N), device=q3.device)
            _token_pass(GRAD_Q, q3, tau, v3, g3, out, den, segments, stats, scale, precision, grad_q, dtau=dtau)
            grad_q = grad_q.view(ctx.shapes[0]) if need_q else None
            if need_tau:
                grad_tau = dtau.sum(-1).view(ctx.shapes[0][:-2] + (1, 1)).sum_to_size(ctx.temperature_shape)
                grad_tau = grad_tau.to(ctx.temperature_dtype)
        if need_k or need_v:
            stats = _statistics(QUERIES, q3, tau, v3, g3, out, den, segments, scale, precision)  # T
            grad_k, grad_v = torch.empty_like(k3), torch.empty_like(v3)
            _token_pass(GRAD_KV, k3, None, v3, None, None, den, segments, stats, scale, precision, grad_k, grad_v)
            grad_k = grad_k.view(ctx.shapes[1]) if need_k else None
            grad_v = grad_v.view(ctx.shapes[2]) if need_v else None
        return grad_q, grad_k, grad_v, grad_tau, None, None


def taylor_shift_triton(q, k, v, temperature, regions, scale):
    """TaylorShift attention (normalised q, k inside) by the Triton kernels. q, k: (..., N, d), v: (..., N, dv)
    in float32, float16 or bfloat16 (read as they are, accumulated in float32); returns q's dtype."""
    if q.device.type != 'cuda' and not _interpreting():
        raise RuntimeError(f"form='triton' needs CUDA tensors (got {q.device.type}); on CPU set TRITON_INTERPRET=1 "
                           "before importing basicsr_taylor to run the kernels in Triton's interpreter (slow)")
    if q.dim() == 2:
        return taylor_shift_triton(q[None], k[None], v[None], temperature, regions, scale)[0]
    segments = Segments(regions, q.shape[:-2], q.shape[-2], q.device)
    return TaylorShiftTriton.apply(q, k, v, temperature, segments, scale)
