"""TaylorShift's efficient form: a fixed handful of batched ops per call, linear in N, no host sync.

    p(q·k) = ψ(q)·ψ(k),   S_c = Σ_{j in chunk c} ψ(k̂_j) v'_jᵀ,   S_r(c) = Σ_{c' in c's region} S_c',
    y'_i = S_r(i)ᵀ ψ(τ q̂_i),   y_i = y'_i[1:] / y'_i[0]   with v'_j = [1/s, v_j] (s = output scale)

Tokens come in C chunks per window, each inside one region (``regions.RegionChunks``); the region sums are one
small matmul with the same-region matrix M (C × C), so masking costs no more than unmasked attention and needs no
gather or scatter. Every product is one matmul batched over (windows, heads, chunks), in blocks of chunk rows whose
temporaries fit an absolute budget (``blocks``: every window at once on CUDA, cache-sized blocks on the CPU), in two
phases (statistics of all blocks, their region sums, then the outputs). The autograd Function keeps q̂, k̂, their
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
    """(x̂, |x|) per chunk row, tokens last: x (B, ..., N, d) -> (R, d, c), (R, 1, c), R = B·...·C rows of one chunk."""
    x = x.unflatten(-2, (num_chunks, -1)).transpose(-2, -1)
    norm = torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min(NORM_EPS)  # |x| (eps as F.normalize)
    return (x / norm).flatten(0, -3), norm.flatten(0, -3)


def value_factor(v):
    """f in v' = f [1/s, v]: 1/N for half inputs, so that the sums over N stay in range (S <= max |v|, y'[0] <=
    p(τ)/s), else 1 (the factor cancels in y'[1:] / y'[0])."""
    return 1.0 / max(v.shape[-2], 1) if v.dtype in (torch.float16, torch.bfloat16) else 1.0


def _values(v, num_chunks, scale, key_weight):
    """v' = f [1/s, v] per chunk row (R, c, e); weighted by the key weights (0 for padding) if given."""
    factor = value_factor(v)
    ones = torch.full_like(v[..., :1], factor / scale)
    values = torch.cat([ones, v if factor == 1 else v * factor], dim=-1)
    if key_weight is not None:
        values = values * key_weight[..., None].to(values.dtype)
    return values.unflatten(-2, (num_chunks, -1)).flatten(0, -3)


class _Rows:
    """One call's chunk rows: the batch dims (B, ...), C chunks per row of the batch, the same-region matrix M
    (or None) and the blocks of chunk rows (all of them unless they exceed the memory budget)."""

    def __init__(self, batch, chunks, num_tokens, head_dim, value_dim, like, backward):
        self.batch, self.num_chunks = tuple(batch), 1 if chunks is None else chunks.num_chunks
        self.count = math.prod(self.batch) * self.num_chunks
        self.same = None if chunks is None else chunks.same_region(self.batch[0], like.dtype, len(self.batch) + 2)
        per_block = rows_per_block(self.count, num_tokens // self.num_chunks, head_dim, value_dim,
                                   like.element_size(), like.device, backward)
        self.blocks = row_blocks(self.count, per_block)

    def map(self, fn):
        """fn(rows) over the blocks, concatenated along the chunk rows."""
        parts = [fn(rows) for rows in self.blocks]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def region_sum(self, stats):
        """S_r(c) = Σ_{c'} M[c, c'] S_c' for (R, D, e) statistics; unchanged without regions (M = Mᵀ)."""
        if self.same is None:
            return stats
        return (self.same @ stats.view(self.batch + (self.num_chunks, -1))).view(stats.shape)

    def scaled(self, unit, temperature):
        """τ x̂ (R, d, c): τ broadcasts to batch + (1, 1)."""
        if temperature is None:
            return unit
        chunked = unit.view(self.batch + (self.num_chunks, ) + unit.shape[-2:])
        tau = temperature.to(unit.dtype)
        tau = tau.unsqueeze(-3) if tau.dim() >= 2 else tau  # (..., 1, 1) -> (..., 1, 1, 1): one τ per chunk row
        return (chunked * tau).flatten(0, -3)

    def tokens_first(self, x):
        """(R, f, c) chunk rows -> (B, ..., N, f)."""
        return x.transpose(-2, -1).reshape(self.batch + (-1, x.shape[-2]))


def _forward(q, k, v, temperature, chunks, key_weight, scale, keep):
    """(out, saved) with saved = (q̂, |q|, k̂, |k|, v', 1/y'[0], S_r) if keep else None."""
    rows = _Rows(q.shape[:-2], chunks, q.shape[-2], q.shape[-1], v.shape[-1], q, backward=False)
    q_unit, q_norm = _unit(q, rows.num_chunks)
    k_unit, k_norm = _unit(k, rows.num_chunks)
    values = _values(v, rows.num_chunks, scale, key_weight)
    psi = feature_map(q.shape[-1], q.device)
    stats = rows.region_sum(rows.map(lambda r: psi(k_unit[r]) @ values[r]))  # S_c = Σ_j ψ(k̂_j) v'_jᵀ (R, D, e)
    x_q = rows.scaled(q_unit, temperature)  # τ q̂
    y_ext = rows.map(lambda r: psi(x_q[r]).transpose(-2, -1) @ stats[r])  # y'_i = S_r(i)ᵀ ψ(τ q̂_i)  (R, c, e)
    y_ext = y_ext.view(rows.batch + (-1, y_ext.shape[-1]))  # (B, ..., N, e)
    if y_ext.dtype in (torch.float16, torch.bfloat16):  # the division in float32
        y_ext = y_ext.float()
    if not keep:
        return (y_ext[..., 1:] / y_ext[..., :1]).to(v.dtype), None
    inv_den = y_ext[..., :1].reciprocal()
    out = (y_ext[..., 1:] * inv_den).to(v.dtype)  # y = y'[1:] / y'[0]  (= s Σ w v / Σ w)
    return out, (q_unit, q_norm, k_unit, k_norm, values, inv_den, stats)


def _unit_vjp(unit, norm, grad_unit):
    """dL/dx for x̂ = x / |x| given dL/dx̂, over dim -2: (g - x̂ (x̂·g)) / |x|."""
    return (grad_unit - unit * (unit * grad_unit).sum(-2, keepdim=True)) / norm


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
        head_dim, value_dim = q_unit.shape[-2], out.shape[-1]
        rows = _Rows(out.shape[:-2], ctx.chunks, out.shape[-2], head_dim, value_dim, values, backward=True)
        x_q = rows.scaled(q_unit, temperature)
        # dL/dy' = [-(g·y), g] / y'[0]  (1/y'[0] in float32), as chunk rows (R, c, e)
        dz = (torch.cat([-(grad_out * out).sum(-1, keepdim=True), grad_out], dim=-1) * inv_den).to(values.dtype)
        dz = dz.view(values.shape)
        psi = feature_map(head_dim, q_unit.device)
        grad_q = grad_k = grad_v = grad_tau = None
        if need_q or need_tau:  # dψ(τ q̂_i) = S_r(i) dz_i
            grad_x = rows.map(lambda r: psi.vjp(x_q[r], stats[r] @ dz[r].transpose(-2, -1)))  # dL/d(τ q̂)
            if need_tau:  # dτ = Σ dL/d(τ q̂) · q̂
                per_row = (grad_x * q_unit).view(rows.batch + (-1, )).sum(-1)
                grad_tau = per_row.view(rows.batch + (1, 1)).sum_to_size(temperature.shape)
            if need_q:
                grad_unit = grad_x if temperature is None else rows.scaled(grad_x, temperature)
                grad_q = rows.tokens_first(_unit_vjp(q_unit, q_norm, grad_unit))
        if need_k or need_v:  # dS_c = Mᵀ dS_r,  dS_r = Σ_i ψ(τ q̂_i) dz_iᵀ
            grad_stats = rows.region_sum(rows.map(lambda r: psi(x_q[r]) @ dz[r]))
            if need_k:  # dψ(k̂_j) = dS_c v'_j
                grad_k_unit = rows.map(lambda r: psi.vjp(k_unit[r], grad_stats[r] @ values[r].transpose(-2, -1)))
                grad_k = rows.tokens_first(_unit_vjp(k_unit, k_norm, grad_k_unit))
            if need_v:  # dv'_j = dS_cᵀ ψ(k̂_j);  v' = f [1/s, w v]
                grad_values = rows.map(lambda r: psi(k_unit[r]).transpose(-2, -1) @ grad_stats[r])
                grad_v = grad_values.view(rows.batch + (-1, grad_values.shape[-1]))[..., 1:]
                factor = value_factor(grad_v)
                if factor != 1:
                    grad_v = grad_v * factor
                if key_weight is not None:
                    grad_v = grad_v * key_weight[..., None].to(grad_v.dtype)
        return grad_q, grad_k, grad_v, grad_tau, None, None, None
