"""TaylorShift attention (arXiv 2403.02920): softmax's exp replaced by its 2nd-order Taylor polynomial.

    x_ij = τ · cos(q_i, k_j),   p(x) = 1 + x + x²/2 (>= 1/2),   y_i = Σ_j p(x_ij) v_j / Σ_j p(x_ij)

Two exact forms compute it:

- ``direct``: builds the N×N weights; O(N²d) time, O(N²) memory.
- ``efficient``: p(q·k) = Φ(q)·Φ(k) with the feature map Φ(x) = [1, x, x_a x_b · c_ab (a <= b)], where
  c_aa = 1/√2 and c_ab = 1 (the symmetric half of the row-wise outer product x⊠x: d(d+1)/2 features
  instead of d²). Then Y' = Φ(Q) (Φ(K)ᵀ [1, V]) and Y = Y'[:, 1:] / Y'[:, :1]: O(N d³) time, linear in N.
  Tokens are processed in chunks inside a custom autograd Function that recomputes Φ in the backward
  pass, so no N×D feature tensor is ever held, in forward or backward.

Regions (the exact replacement of SwinIR's -100 mask, which a polynomial ignores: p(-100) = 4901): a query
attends only to keys with its own region id. The efficient form keeps separate key statistics per region.
"""
import math
from functools import lru_cache

import torch
import torch.nn.functional as F

FORMS = ('auto', 'direct', 'efficient')
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def crossover_tokens(head_dim):
    """N0 = d² + d + 1: the token count above which the efficient form needs fewer FLOPs than the direct."""
    return head_dim * head_dim + head_dim + 1


def taylor_feature_dim(head_dim):
    """D = 1 + d + d(d+1)/2: width of the feature map Φ."""
    return 1 + head_dim + head_dim * (head_dim + 1) // 2


def taylor_shift_attention(q, k, v, temperature=None, regions=None, form='auto', output_norm=True):
    """TaylorShift attention, in the spirit of ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        q, k: (..., N, d) queries and keys (batch and heads in front).
        v: (..., N, dv) values.
        temperature: optional tensor broadcastable to (..., 1, 1), e.g. (heads, 1, 1); multiplies the
            L2-normalised queries (x = τ·cos). None means τ = 1.
        regions: optional integer tensor whose shape broadcasts against (..., N) by torch's rules (pass
            (B, 1, N) for per-window ids shared by all heads). Query i attends only to keys j with
            regions[i] == regions[j].
        form: "direct", "efficient" or "auto" (direct below N0 = d² + d + 1 tokens, efficient from N0 on).
        output_norm: multiply the output by sqrt(N/d), as in all of the TaylorShift paper's models.

    Returns:
        (..., N, dv) tensor in q's dtype. Half-precision inputs (and autocast) are computed in float32
        internally: the squared term and the sums over N are where float16 overflows.
    """
    _check_inputs(q, k, v, temperature, regions, form)
    num_tokens, head_dim = q.shape[-2], q.shape[-1]
    out_dtype = q.dtype
    compute_dtype = torch.float32 if q.dtype in _HALF_DTYPES else q.dtype
    if form == 'auto':
        form = 'direct' if num_tokens < crossover_tokens(head_dim) else 'efficient'

    with torch.autocast(device_type=q.device.type, enabled=False):
        q = F.normalize(q.to(compute_dtype), dim=-1)  # q̂ = q / |q|
        k = F.normalize(k.to(compute_dtype), dim=-1)  # k̂ = k / |k|
        v = v.to(compute_dtype)
        if temperature is not None:
            q = q * temperature.to(compute_dtype)  # x_ij = τ q̂_i·k̂_j
        if form == 'direct':
            out = _direct(q, k, v, regions)
        else:
            out = _efficient(q, k, v, regions)
        if output_norm:
            out = out * math.sqrt(num_tokens / head_dim)  # y · sqrt(N/d)
    return out.to(out_dtype)


def _check_inputs(q, k, v, temperature, regions, form):
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    if q.dim() < 2 or q.shape != k.shape:
        raise ValueError(f'q and k must have the same shape (..., N, d), got q {tuple(q.shape)} and k {tuple(k.shape)}')
    if v.dim() != k.dim() or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f'v must have shape (..., N, dv) matching k {tuple(k.shape)} except the last dim, '
                         f'got {tuple(v.shape)}')
    if temperature is not None:
        try:
            torch.broadcast_shapes(temperature.shape, q.shape[:-2] + (1, 1))
        except RuntimeError:
            raise ValueError(f'temperature of shape {tuple(temperature.shape)} does not broadcast to '
                             f'{tuple(q.shape[:-2]) + (1, 1)}') from None
    if regions is not None:
        if regions.dtype.is_floating_point or regions.dtype.is_complex or regions.dtype == torch.bool:
            raise ValueError(f'regions must be an integer tensor, got {regions.dtype}')
        try:
            shape = torch.broadcast_shapes(regions.shape, q.shape[:-1])
        except RuntimeError:
            shape = None
        if shape != q.shape[:-1]:
            raise ValueError(f'regions of shape {tuple(regions.shape)} does not broadcast to (..., N) = '
                             f'{tuple(q.shape[:-1])}; for (B, heads, N, d) inputs pass (B, 1, N)')


def _direct(q, k, v, regions):
    x = q @ k.transpose(-2, -1)  # x_ij = τ cos(q_i, k_j)
    weights = 1 + x + 0.5 * x * x  # p(x) = 1 + x + x²/2
    if regions is not None:
        weights = weights * (regions[..., :, None] == regions[..., None, :])  # only same-region keys
    return (weights @ v) / weights.sum(-1, keepdim=True)  # y_i = Σ_j w_ij v_j / Σ_j w_ij


def _efficient(q, k, v, regions):
    v_ext = torch.cat([torch.ones_like(v[..., :1]), v], dim=-1)  # V' = [1, V]: column 0 carries Σ_j p(x_ij)
    onehot = None
    if regions is not None:
        regions = regions.expand(q.shape[:-1])
        _, dense = torch.unique(regions, return_inverse=True)  # ids -> 0..R-1
        onehot = F.one_hot(dense, int(dense.max()) + 1).to(q.dtype)  # (..., N, R)
    chunk_size = default_chunk_size(q.shape[-2], q.shape[-1])
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v_ext.requires_grad):
        out = TaylorFeatureAttention.apply(q, k, v_ext, onehot, chunk_size)
    else:
        out, _ = taylor_feature_attention(q, k, v_ext, onehot, chunk_size)
    return out[..., 1:] / out[..., :1]  # Y = Y'[:, 1:] / Y'[:, :1]


def default_chunk_size(num_tokens, head_dim):
    """Tokens per chunk so that one chunk of features Φ (chunk × D) is about as large as q (N × d)."""
    return max(64, min(num_tokens, num_tokens * head_dim // taylor_feature_dim(head_dim)))


@lru_cache(maxsize=64)
def _pair_index(head_dim, device):
    rows, cols = torch.triu_indices(head_dim, head_dim, device=device)
    coef = torch.ones(rows.shape, dtype=torch.float64, device=device)  # c_ab = 1 (cast to x's dtype on use)
    coef[rows == cols] = 0.5**0.5  # c_aa = 1/√2
    return rows, cols, coef


def taylor_features(x):
    """Φ(x) = [1, x, c_ab x_a x_b (a <= b)], so that Φ(q)·Φ(k) = 1 + q·k + (q·k)²/2.  (..., d) -> (..., D)"""
    rows, cols, coef = _pair_index(x.shape[-1], x.device)
    quadratic = x[..., rows] * x[..., cols] * coef.to(x.dtype)  # c_ab x_a x_b
    return torch.cat([torch.ones_like(x[..., :1]), x, quadratic], dim=-1)


def _taylor_features_vjp(x, grad_features):
    """dL/dx for Φ(x) given dL/dΦ, by recomputing Φ on this chunk only."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(taylor_features(x), x, grad_features)
    return grad


def _spread(values, onehot):
    """Row n of values copied into the block of its region: (..., n, e) -> (..., n, R*e)."""
    if onehot is None:
        return values
    return (onehot[..., :, :, None] * values[..., :, None, :]).flatten(-2)


def _gather(per_region, onehot):
    """Row n's block of its own region: (..., n, R*e) -> (..., n, e)."""
    if onehot is None:
        return per_region
    num_regions = onehot.shape[-1]
    blocks = per_region.unflatten(-1, (num_regions, -1))
    return (blocks * onehot[..., :, :, None]).sum(-2)


def _chunks(num_tokens, chunk_size):
    return [slice(start, min(start + chunk_size, num_tokens)) for start in range(0, num_tokens, chunk_size)]


def _rows(tensor, rows):
    return None if tensor is None else tensor[..., rows, :]


def taylor_feature_attention(q, k, v_ext, onehot, chunk_size):
    """Forward of the efficient form without autograd bookkeeping. Returns (Y', key statistics S)."""
    num_tokens = q.shape[-2]
    stats = None
    for rows in _chunks(num_tokens, chunk_size):  # S_r = Σ_{j in r} Φ(k_j)ᵀ v'_j
        part = taylor_features(k[..., rows, :]).transpose(-2, -1) @ _spread(v_ext[..., rows, :], _rows(onehot, rows))
        stats = part if stats is None else stats + part
    out = v_ext.new_empty(v_ext.shape)
    for rows in _chunks(num_tokens, chunk_size):  # y'_i = Φ(q_i)·S_{r(i)}
        out[..., rows, :] = _gather(taylor_features(q[..., rows, :]) @ stats, _rows(onehot, rows))
    return out, stats


class TaylorFeatureAttention(torch.autograd.Function):
    """Y' = Φ(Q)·S_{r(i)} with S_r = Σ_{j in region r} Φ(k_j) v'_jᵀ, chunked over tokens.

    Saves only q, k, v', the region one-hot and the key statistics S (D × R·e per batch and head);
    the backward pass recomputes Φ chunk by chunk.
    """

    @staticmethod
    def forward(ctx, q, k, v_ext, onehot, chunk_size):
        out, stats = taylor_feature_attention(q, k, v_ext, onehot, chunk_size)
        ctx.save_for_backward(q, k, v_ext, onehot, stats)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v_ext, onehot, stats = ctx.saved_tensors
        num_tokens = q.shape[-2]
        grad_q = grad_k = grad_v = None
        grad_stats = torch.zeros_like(stats)
        if ctx.needs_input_grad[0]:
            grad_q = torch.empty_like(q)
        for rows in _chunks(num_tokens, ctx.chunk_size):
            q_rows = q[..., rows, :]
            grad_z = _spread(grad_out[..., rows, :], _rows(onehot, rows))  # dL/d(Φ(q)S) for this chunk
            grad_stats += taylor_features(q_rows).transpose(-2, -1) @ grad_z  # dS = Σ_i Φ(q_i)ᵀ dz_i
            if grad_q is not None:
                grad_q[..., rows, :] = _taylor_features_vjp(q_rows, grad_z @ stats.transpose(-2, -1))
        if ctx.needs_input_grad[1]:
            grad_k = torch.empty_like(k)
        if ctx.needs_input_grad[2]:
            grad_v = torch.empty_like(v_ext)
        if grad_k is not None or grad_v is not None:
            for rows in _chunks(num_tokens, ctx.chunk_size):
                k_rows = k[..., rows, :]
                spread_v = _spread(v_ext[..., rows, :], _rows(onehot, rows))
                if grad_v is not None:  # dv'_j = Φ(k_j)·dS_{r(j)}
                    grad_v[..., rows, :] = _gather(taylor_features(k_rows) @ grad_stats, _rows(onehot, rows))
                if grad_k is not None:  # dΦ(k_j) = dS_{r(j)} v'_j
                    grad_k[..., rows, :] = _taylor_features_vjp(k_rows, spread_v @ grad_stats.transpose(-2, -1))
        return grad_q, grad_k, grad_v, None, None
