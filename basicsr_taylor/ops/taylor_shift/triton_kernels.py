"""TaylorShift's efficient form as fused Triton kernels (forward); the backward pass is the PyTorch one.

Two kernels, each normalising q / k on the fly and never writing features to memory:

- ``_key_statistics_kernel``, one program per (row, a, region), a = 0..d: accumulates over the region's
  tokens  S2[a] = Σ_j k̂_ja k̂_j v'_jᵀ  (d × e; the full d×d×e quadratic statistics, a slice per program)
  and, for a = d, the linear and constant parts  S1 = Σ_j k̂_j v'_jᵀ, S0 = Σ_j v'_j,  with v' = [w, w v].
- ``_query_kernel``, one program per (row, block of BLOCK_N tokens): for its region r,
  y'_i = S0 + q̂_i S1 + ½ Σ_a q̂_ia q̂_i S2[a]  and  y_i = s · y'_i[1:] / y'_i[0].

Regions use the same sorted, padded layout as the PyTorch efficient form (``regions.region_layout``, chunks as
multiples of BLOCK_N), so every token block has one region. The backward pass is the efficient form's, with its
block sizes (``blocks.block_plan``). Computes in float32 (tl.dot with IEEE precision). Runs on CUDA, and on CPU
under TRITON_INTERPRET=1 (slow, for tests only).
"""
import math
import os

import torch
import triton
import triton.language as tl

from .efficient import efficient_backward
from .regions import region_layout

BLOCK_N = 32  # tokens per program / per loop step (tl.dot needs >= 16)


@triton.jit
def _key_statistics_kernel(k_ptr, v_ptr, w_ptr, start_ptr, stop_ptr, s2_ptr, s1_ptr, s0_ptr, num_regions, head_dim,
                           value_dim, stride_k_row, stride_k_tok, stride_v_row, stride_v_tok, stride_w_row,
                           BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr):
    row = tl.program_id(0)
    a = tl.program_id(1)
    region = tl.program_id(2)
    start = tl.load(start_ptr + row * num_regions + region)
    stop = tl.load(stop_ptr + row * num_regions + region)
    dims = tl.arange(0, DP)
    cols = tl.arange(0, EP)
    acc = tl.zeros((DP, EP), dtype=tl.float32)
    acc0 = tl.zeros((EP, ), dtype=tl.float32)
    for t0 in range(start, stop, BLOCK):
        tokens = t0 + tl.arange(0, BLOCK)
        valid = tokens < stop
        k = tl.load(k_ptr + row * stride_k_row + tokens[:, None] * stride_k_tok + dims[None, :],
                    mask=valid[:, None] & (dims[None, :] < head_dim), other=0.)
        k = k / tl.maximum(tl.sqrt(tl.sum(k * k, axis=1)), 1e-12)[:, None]  # k̂ = k / |k|
        w = tl.load(w_ptr + row * stride_w_row + tokens, mask=valid, other=0.)
        v = tl.load(v_ptr + row * stride_v_row + tokens[:, None] * stride_v_tok + (cols[None, :] - 1),
                    mask=valid[:, None] & (cols[None, :] >= 1) & (cols[None, :] <= value_dim), other=0.)
        v_ext = tl.where(cols[None, :] == 0, w[:, None], w[:, None] * v)  # v' = [w, w v] (padding: w = 0)
        if a < head_dim:
            k_a = tl.sum(tl.where(dims[None, :] == a, k, 0.), axis=1)
            lhs = k * k_a[:, None]  # k̂_a k̂
        else:
            lhs = k
            acc0 += tl.sum(v_ext, axis=0)  # S0 += v'
        acc += tl.dot(tl.trans(lhs), v_ext, input_precision='ieee')  # S2[a] += k̂_a k̂ v'ᵀ  (or S1 += k̂ v'ᵀ)
    out_mask = (dims[:, None] < head_dim) & (cols[None, :] <= value_dim)
    width = value_dim + 1
    if a < head_dim:
        base = ((row * num_regions + region) * head_dim + a) * head_dim * width
        tl.store(s2_ptr + base + dims[:, None] * width + cols[None, :], acc, mask=out_mask)
    else:
        base = (row * num_regions + region) * head_dim * width
        tl.store(s1_ptr + base + dims[:, None] * width + cols[None, :], acc, mask=out_mask)
        tl.store(s0_ptr + (row * num_regions + region) * width + cols, acc0, mask=cols <= value_dim)


@triton.jit
def _query_kernel(q_ptr, tau_ptr, region_ptr, s2_ptr, s1_ptr, s0_ptr, out_ptr, den_ptr, num_tokens, num_regions,
                  head_dim, value_dim, scale, stride_q_row, stride_q_tok, stride_o_row, stride_o_tok,
                  BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr):
    row = tl.program_id(0)
    block = tl.program_id(1)
    tokens = block * BLOCK + tl.arange(0, BLOCK)
    valid = tokens < num_tokens
    dims = tl.arange(0, DP)
    cols = tl.arange(0, EP)
    width = value_dim + 1
    q = tl.load(q_ptr + row * stride_q_row + tokens[:, None] * stride_q_tok + dims[None, :],
                mask=valid[:, None] & (dims[None, :] < head_dim), other=0.)
    q = q / tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), 1e-12)[:, None]  # q̂ = q / |q|
    q = q * tl.load(tau_ptr + row)  # τ q̂
    region = tl.load(region_ptr + row * num_tokens + block * BLOCK)  # one region per block of tokens
    stat_mask = (dims[:, None] < head_dim) & (cols[None, :] <= value_dim)
    base1 = (row * num_regions + region) * head_dim * width
    s1 = tl.load(s1_ptr + base1 + dims[:, None] * width + cols[None, :], mask=stat_mask, other=0.)
    s0 = tl.load(s0_ptr + (row * num_regions + region) * width + cols, mask=cols <= value_dim, other=0.)
    y = s0[None, :] + tl.dot(q, s1, input_precision='ieee')  # S0 + q̂ S1
    for a in range(0, head_dim):
        q_a = tl.sum(tl.where(dims[None, :] == a, q, 0.), axis=1)
        base2 = ((row * num_regions + region) * head_dim + a) * head_dim * width
        s2 = tl.load(s2_ptr + base2 + dims[:, None] * width + cols[None, :], mask=stat_mask, other=0.)
        y += 0.5 * tl.dot(q * q_a[:, None], s2, input_precision='ieee')  # ½ q̂_a q̂ S2[a]
    den = tl.sum(tl.where(cols[None, :] == 0, y, 0.), axis=1)  # y'_0 = Σ_j p(x_ij)
    tl.store(den_ptr + row * num_tokens + tokens, den, mask=valid)
    out = y * (scale / den)[:, None]  # s y'[1:] / y'[0]
    tl.store(out_ptr + row * stride_o_row + tokens[:, None] * stride_o_tok + (cols[None, :] - 1), out,
             mask=valid[:, None] & (cols[None, :] >= 1) & (cols[None, :] <= value_dim))


def _interpreting():
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


def triton_forward(q, k, v, temperature, key_weight, chunk_region, num_regions, scale, chunk):
    """The forward of :class:`TaylorShiftEfficient` by the kernels. Returns (out, denominator)."""
    batch, (num_tokens, head_dim), value_dim = q.shape[:-2], q.shape[-2:], v.shape[-1]
    rows = math.prod(batch)
    q3, k3, v3 = (t.reshape(rows, num_tokens, t.shape[-1]).float().contiguous() for t in (q, k, v))
    tau = torch.ones(rows, device=q.device) if temperature is None else \
        temperature.float().expand(batch + (1, 1)).reshape(rows).contiguous()
    if key_weight is None:
        weight = torch.ones(rows, num_tokens, device=q.device)
        token_region = torch.zeros(rows, num_tokens, dtype=torch.int32, device=q.device)
        starts = torch.zeros(rows, 1, dtype=torch.int32, device=q.device)
        stops = torch.full((rows, 1), num_tokens, dtype=torch.int32, device=q.device)
    else:
        weight = key_weight.float().expand(batch + (num_tokens, )).reshape(rows, num_tokens).contiguous()
        per_chunk = chunk_region.expand(batch + chunk_region.shape[-1:]).reshape(rows, -1)
        token_region = per_chunk.repeat_interleave(chunk, dim=-1)[:, :num_tokens].to(torch.int32).contiguous()
        ids = torch.arange(num_regions, device=q.device)
        in_region = token_region[:, None, :] == ids[None, :, None].to(torch.int32)  # (rows, R, L)
        positions = torch.arange(num_tokens, device=q.device)
        starts = torch.where(in_region, positions, num_tokens).amin(-1).to(torch.int32).contiguous()
        stops = torch.where(in_region, positions + 1, 0).amax(-1).to(torch.int32).contiguous()
        stops = torch.maximum(stops, starts)  # empty region: start = stop
    width = value_dim + 1
    s2 = torch.zeros(rows, num_regions, head_dim, head_dim, width, device=q.device)
    s1 = torch.zeros(rows, num_regions, head_dim, width, device=q.device)
    s0 = torch.zeros(rows, num_regions, width, device=q.device)
    dp, ep = max(16, triton.next_power_of_2(head_dim)), max(16, triton.next_power_of_2(width))
    _key_statistics_kernel[(rows, head_dim + 1, num_regions)](
        k3, v3, weight, starts, stops, s2, s1, s0, num_regions, head_dim, value_dim, k3.stride(0), k3.stride(1),
        v3.stride(0), v3.stride(1), weight.stride(0), BLOCK=BLOCK_N, DP=dp, EP=ep)
    out = torch.empty(rows, num_tokens, value_dim, device=q.device)
    denominator = torch.empty(rows, num_tokens, device=q.device)
    _query_kernel[(rows, triton.cdiv(num_tokens, BLOCK_N))](
        q3, tau, token_region, s2, s1, s0, out, denominator, num_tokens, num_regions, head_dim, value_dim,
        float(scale), q3.stride(0), q3.stride(1), out.stride(0), out.stride(1), BLOCK=BLOCK_N, DP=dp, EP=ep)
    out = out.reshape(batch + (num_tokens, value_dim)).to(v.dtype)
    return out, denominator.reshape(batch + (num_tokens, )).to(v.dtype)


class TaylorShiftTriton(torch.autograd.Function):
    """Forward by the Triton kernels; backward by the efficient form's (``efficient.efficient_backward``, S
    recomputed)."""

    @staticmethod
    def forward(ctx, q, k, v, temperature, layout, scale):
        if layout is None:
            out, denominator = triton_forward(q, k, v, temperature, None, None, 1, scale, BLOCK_N)
        else:
            q_blocks, k_blocks, v_blocks = (layout.to_blocks(t) for t in (q, k, v))
            out, denominator = triton_forward(q_blocks, k_blocks, v_blocks, temperature, layout.key_weight,
                                              layout.chunk_region, layout.num_regions, scale, layout.chunk)
            out = layout.from_blocks(out)
        ctx.save_for_backward(q, k, v, temperature, out, denominator.reshape(-1, denominator.shape[-1]))
        ctx.layout, ctx.scale = layout, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, temperature, out, denominator = ctx.saved_tensors
        return efficient_backward(ctx, grad_out, q, k, v, temperature, out, denominator, None) + (None, None)


def taylor_shift_triton(q, k, v, temperature, regions, scale):
    """TaylorShift attention (normalised q, k inside) with the Triton forward. q, k, v: (..., N, d)."""
    if q.device.type != 'cuda' and not _interpreting():
        raise RuntimeError(f"form='triton' needs CUDA tensors (got {q.device.type}); on CPU set TRITON_INTERPRET=1 "
                           "before importing basicsr_taylor to run the kernels in Triton's interpreter (slow)")
    if q.dim() == 2:
        return taylor_shift_triton(q[None], k[None], v[None], temperature, regions, scale)[0]
    layout = None if regions is None else region_layout(regions, q.shape[:-1], multiple=BLOCK_N)
    return TaylorShiftTriton.apply(q, k, v, temperature, layout, scale)
