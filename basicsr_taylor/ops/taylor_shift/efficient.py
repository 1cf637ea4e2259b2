"""TaylorShift's efficient form: a fixed handful of batched ops per call, linear in N, no host sync.

    p(q·k) = ψ(q)·ψ(k),   S_c = Σ_{j in chunk c} ψ(k̂_j) v'_jᵀ,   S_r(c) = Σ_{c' in c's region} S_c',
    y'_i = S_r(i)ᵀ ψ(τ q̂_i),   y_i = y'_i[1:] / y'_i[0]   with v'_j = [1/s, v_j] (s = output scale)

Tokens come in C chunks per window, each inside one region (``regions.RegionChunks``); the region sums are one
small matmul with the same-region matrix M (C × C), so masking costs no more than unmasked attention and needs no
gather or scatter. Every product is one matmul batched over (windows, heads, chunks); all windows are computed at
once unless their temporaries exceed an absolute budget (``blocks``). The autograd Function keeps q̂, k̂, their
norms, v', the output, 1/y'[0] and the small statistics S_r; the backward pass rebuilds ψ and uses no atomics.
Inference (no gradient needed) runs the same ops outside the Function and keeps nothing.
"""
import math

import torch

from .blocks import row_blocks, rows_per_block
from .features import NORM_EPS, feature_map
from .regions import SortedRegions


def efficient(q, k, v, temperature, regions, scale):
    """The efficient form of :func:`taylor_shift_attention`: q, k (B, ..., N, d), v (B, ..., N, dv), temperature
    broadcastable to (B, ..., 1, 1) or None, regions None, a ``RegionChunks`` or a ``SortedRegions``."""
    if q.dim() == 2:  # (N, d): give it a batch dimension
        return efficient(q[None], k[None], v[None], temperature, regions, scale)[0]
    if isinstance(regions, SortedRegions):  # any ids: tokens gathered into region-sorted, padded rows
        rows, num_tokens = math.prod(q.shape[:-2]), q.shape[-2]
        flat = lambda t: regions.gather(t.reshape(rows, num_tokens, t.shape[-1]))  # noqa: E731
        tau = None if temperature is None else temperature.expand(q.shape[:-2] + (1, 1)).reshape(rows, 1, 1)
        out = _attention(flat(q), flat(k), flat(v), tau, regions.chunks, scale, regions.key_weight)
        return regions.scatter(out).view(q.shape[:-1] + v.shape[-1:])
    return _attention(q, k, v, temperature, regions, scale, None)


def _attention(q, k, v, temperature, chunks, scale, key_weight):
    inputs = (q, k, v) if temperature is None else (q, k, v, temperature)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return TaylorShiftEfficient.apply(q, k, v, temperature, chunks, key_weight, scale)
    return _forward(q, k, v, temperature, chunks, key_weight, scale, keep=False)[0]  # inference: keeps nothing


def _unit(x, num_chunks):
    """(x̂, |x|) per chunk, tokens last: x (B, ..., N, d) -> (B, ..., C, d, c), (B, ..., C, 1, c)."""
    x = x.unflatten(-2, (num_chunks, -1)).transpose(-2, -1)
    norm = torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min(NORM_EPS)  # |x| (eps as F.normalize)
    return x / norm, norm


def value_factor(v):
    """f in v' = f [1/s, v]: 1/N for half inputs, so that the sums over N stay in range (S <= max |v|, y'[0] <=
    p(τ)/s), else 1 (the factor cancels in y'[1:] / y'[0])."""
    return 1.0 / max(v.shape[-2], 1) if v.dtype in (torch.float16, torch.bfloat16) else 1.0


def _values(v, num_chunks, scale, key_weight):
    """v' = f [1/s, v] per chunk (B, ..., C, c, e); rows weighted by the key weights (0 for padding) if given."""
    factor = value_factor(v)
    ones = torch.full_like(v[..., :1], factor / scale)
    values = torch.cat([ones, v if factor == 1 else v * factor], dim=-1)
    if key_weight is not None:
        values = values * key_weight[..., None].to(values.dtype)
    return values.unflatten(-2, (num_chunks, -1))


def _tau(temperature, like):
    """τ shaped to multiply (B, ..., C, d, c) tensors, or None."""
    return None if temperature is None else temperature.to(like.dtype).unsqueeze(-3)


def _region_sum(same, stats):
    """S_r(c) = Σ_{c'} M[c, c'] S_c' (B, ..., C, D, e); unchanged without regions."""
    return stats if same is None else (same @ stats.flatten(-2)).view(stats.shape)


def _same(chunks, like):
    return None if chunks is None else chunks.same_region(like.shape[0], like.dtype, like.dim() - 1)


def _blocks(q, value_dim, backward):
    rows, num_tokens = q.shape[0], math.prod(q.shape[1:-1])
    per_block = rows_per_block(rows, num_tokens, q.shape[-1], value_dim, q.element_size(), q.device, backward)
    return row_blocks(rows, per_block)


def _forward(q, k, v, temperature, chunks, key_weight, scale, keep):
    """(out, saved) with saved = (q̂, |q|, k̂, |k|, v', 1/y'[0], S_r) if keep else None."""
    num_chunks = 1 if chunks is None else chunks.num_chunks
    q_unit, q_norm = _unit(q, num_chunks)
    k_unit, k_norm = _unit(k, num_chunks)
    tau = _tau(temperature, q_unit)
    x_q = q_unit if tau is None else q_unit * tau  # τ q̂
    values = _values(v, num_chunks, scale, key_weight)
    same = _same(chunks, values)
    psi = feature_map(q.shape[-1], q.device)
    outs, inv_dens, all_stats = [], [], []
    for rows in _blocks(q, v.shape[-1], backward=False):
        stats = psi(k_unit[rows]) @ values[rows]  # S_c = Σ_j ψ(k̂_j) v'_jᵀ  (b, ..., C, D, e)
        stats = _region_sum(None if same is None else same[rows], stats)
        y_ext = psi(x_q[rows]).transpose(-2, -1) @ stats  # y'_i = S_r(i)ᵀ ψ(τ q̂_i)  (b, ..., C, c, e)
        if y_ext.dtype in (torch.float16, torch.bfloat16):  # the division in float32
            y_ext = y_ext.float()
        if keep:
            inv_den = y_ext[..., :1].reciprocal()
            outs.append((y_ext[..., 1:] * inv_den).to(v.dtype))  # y = y'[1:] / y'[0]  (= s Σ w v / Σ w)
            inv_dens.append(inv_den)
            all_stats.append(stats)
        else:
            outs.append((y_ext[..., 1:] / y_ext[..., :1]).to(v.dtype))
    out = _cat(outs).flatten(-3, -2)  # (B, ..., N, dv)
    saved = (q_unit, q_norm, k_unit, k_norm, values, _cat(inv_dens), _cat(all_stats)) if keep else None
    return out, saved


def _cat(parts):
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _unit_vjp(unit, norm, grad_unit):
    """dL/dx for x̂ = x / |x| given dL/dx̂, over dim -2: (g - x̂ (x̂·g)) / |x|."""
    return (grad_unit - unit * (unit * grad_unit).sum(-2, keepdim=True)) / norm


def _tokens_first(x):
    """(B, ..., C, d, c) -> (B, ..., N, d)."""
    return x.transpose(-2, -1).flatten(-3, -2)


class TaylorShiftEfficient(torch.autograd.Function):
    """The efficient form with its own backward pass (module docstring): inputs q, k, v, temperature, chunks (a
    ``RegionChunks`` or None), key_weight ((B, N): 0 for padding tokens, or None), scale s."""

    @staticmethod
    def forward(ctx, q, k, v, temperature, chunks, key_weight, scale):
        out, saved = _forward(q, k, v, temperature, chunks, key_weight, scale, keep=True)
        ctx.save_for_backward(out, temperature, key_weight, *saved)
        ctx.chunks = chunks
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError("TaylorShift's efficient form has no double backward (create_graph=True): use "
                               "form='direct' for higher-order gradients")
        out, temperature, key_weight, q_unit, q_norm, k_unit, k_norm, values, inv_den, stats = ctx.saved_tensors
        need_q, need_k, need_v, need_tau = ctx.needs_input_grad[:4]
        num_chunks = q_unit.shape[-3]
        tau = _tau(temperature, q_unit)
        x_q = q_unit if tau is None else q_unit * tau
        g = grad_out.unflatten(-2, (num_chunks, -1))  # (B, ..., C, c, dv)
        y = out.unflatten(-2, (num_chunks, -1))
        # dL/dy' = [-(g·y), g] / y'[0]  (1/y'[0] in float32)
        dz = (torch.cat([-(g * y).sum(-1, keepdim=True), g], dim=-1) * inv_den).to(values.dtype)
        same = _same(ctx.chunks, values)
        psi = feature_map(q_unit.shape[-2], q_unit.device)
        dx_q, dx_k, dv = [], [], []
        for rows in _blocks(q_unit.transpose(-2, -1), values.shape[-1] - 1, backward=True):
            grad_stats = psi(x_q[rows]) @ dz[rows]  # dS_r = Σ_i ψ(τ q̂_i) dz_iᵀ  (b, ..., C, D, e)
            if need_q or need_tau:  # dψ(τ q̂_i) = S_r(i) dz_i
                dx_q.append(psi.vjp(x_q[rows], stats[rows] @ dz[rows].transpose(-2, -1)))
            if not (need_k or need_v):
                continue
            grad_stats = _region_sum(None if same is None else same[rows], grad_stats)  # dS_c = Mᵀ dS_r
            if need_k:  # dψ(k̂_j) = dS_c v'_j
                dx_k.append(psi.vjp(k_unit[rows], grad_stats @ values[rows].transpose(-2, -1)))
            if need_v:  # dv'_j = dS_cᵀ ψ(k̂_j)
                dv.append((psi(k_unit[rows]).transpose(-2, -1) @ grad_stats)[..., 1:])
        grad_q = grad_k = grad_v = grad_tau = None
        if need_q or need_tau:
            grad_x = _cat(dx_q)  # dL/d(τ q̂)
            if need_tau:  # dτ = Σ dL/d(τ q̂) · q̂
                grad_tau = (grad_x * q_unit).sum((-3, -2, -1)).view(q_unit.shape[:-3] + (1, 1))
                grad_tau = grad_tau.sum_to_size(temperature.shape)
            if need_q:
                grad_q = _tokens_first(_unit_vjp(q_unit, q_norm, grad_x if tau is None else grad_x * tau))
        if need_k:
            grad_k = _tokens_first(_unit_vjp(k_unit, k_norm, _cat(dx_k)))
        if need_v:
            grad_v = _cat(dv).flatten(-3, -2)
            factor = value_factor(grad_v)  # v' = f [1/s, v]
            if factor != 1:
                grad_v = grad_v * factor
            if key_weight is not None:
                grad_v = grad_v * key_weight[..., None].to(grad_v.dtype)
        return grad_q, grad_k, grad_v, grad_tau, None, None, None
