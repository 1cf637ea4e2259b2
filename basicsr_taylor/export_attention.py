"""TaylorShift attention written for graph export (ONNX): only static shapes and plain tensor ops.

The training/inference implementation (``taylor_shift.taylor_shift_attention``) sorts tokens by region into
blocks of data-dependent length and runs a custom autograd Function; torch.export cannot trace that. This is
the same function of (q, k, v, τ, regions), computed the textbook way:

- direct form below N0 = d² + d + 1 tokens: w_ij = p(τ q̂_i·k̂_j)·[r_i = r_j], y_i = Σ_j w_ij v_j / Σ_j w_ij;
- efficient form from N0 on: Φ(x) = [1, x, c_ab x_a x_b (a <= b)] (c_aa = 1/√2, c_ab = 1), so that
  Φ(q)·Φ(k) = p(q·k); per region r, S_r = Σ_{j in r} Φ(k_j) [1, v_j]ᵀ and y'_i = Φ(q_i)·S_{r(i)},
  y_i = y'_i[1:] / y'_i[0]; tokens are processed in a few fixed chunks (every chunk is unrolled into the
  graph: 4 chunks keep export of the 36-block x2 model to minutes and Φ of one chunk to about 4× q).

Region ids must lie in 0..num_regions-1 (TaylorSwinIR's shifted windows use 0..3): a fixed one-hot width
replaces the data-dependent region count. ``export.py`` checks the exported graph against the PyTorch model.
"""
import contextlib
import math

import torch
import torch.nn.functional as F

from .taylor_shift import crossover_tokens, taylor_features

MAX_SHIFTED_WINDOW_REGIONS = 4  # a shifted window mixes at most 2 row groups × 2 column groups
EXPORT_CHUNKS = 4  # token chunks per window, each unrolled into the graph (48² window, d = 30: Φ of a chunk ≈ 4 q)


def exportable_taylor_shift_attention(q, k, v, temperature=None, regions=None, form='auto', output_norm=True,
                                      num_regions=MAX_SHIFTED_WINDOW_REGIONS):
    """Same arguments and result as :func:`basicsr_taylor.taylor_shift_attention` (``form`` only picks the
    cheaper of the two exact forms here), for region ids in 0..num_regions-1."""
    num_tokens, head_dim = q.shape[-2], q.shape[-1]
    out_dtype = q.dtype
    compute_dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q = F.normalize(q.to(compute_dtype), dim=-1)  # q̂ = q / |q|
    k = F.normalize(k.to(compute_dtype), dim=-1)  # k̂ = k / |k|
    v = v.to(compute_dtype)
    if temperature is not None:
        q = q * temperature.to(compute_dtype)  # x_ij = τ q̂_i·k̂_j
    use_direct = form == 'direct' or (form == 'auto' and num_tokens < crossover_tokens(head_dim))
    out = _direct(q, k, v, regions) if use_direct else _efficient(q, k, v, regions, num_regions)
    if output_norm:
        out = out * math.sqrt(num_tokens / head_dim)  # y · sqrt(N/d)
    return out.to(out_dtype)


def _direct(q, k, v, regions):
    x = q @ k.transpose(-2, -1)  # x_ij = τ cos(q_i, k_j)
    weights = 1 + x + 0.5 * x * x  # p(x) = 1 + x + x²/2
    if regions is not None:
        weights = weights * (regions[..., :, None] == regions[..., None, :]).to(weights.dtype)  # same region only
    return (weights @ v) / weights.sum(-1, keepdim=True)  # y_i = Σ_j w_ij v_j / Σ_j w_ij


def _efficient(q, k, v, regions, num_regions):
    num_tokens = q.shape[-2]
    chunk = max(64, -(-num_tokens // EXPORT_CHUNKS))  # ceil(N / 4): few chunks keep the graph small
    v_ext = torch.cat([torch.ones_like(v[..., :1]), v], dim=-1)  # V' = [1, V]: column 0 sums the weights
    onehot = None
    if regions is not None:
        onehot = F.one_hot(regions.expand(q.shape[:-1]).long(), num_regions).to(q.dtype)  # (..., N, R)
    chunks = [slice(start, min(start + chunk, num_tokens)) for start in range(0, num_tokens, chunk)]
    stats = None
    for rows in chunks:  # S_r = Σ_{j in r} Φ(k_j) v'_jᵀ, all regions side by side: (..., D, R·e)
        values = v_ext[..., rows, :]
        if onehot is not None:
            values = (onehot[..., rows, :, None] * values[..., :, None, :]).flatten(-2)  # v'_j into block r(j)
        part = taylor_features(k[..., rows, :]).transpose(-2, -1) @ values
        stats = part if stats is None else stats + part
    outputs = []
    for rows in chunks:  # y'_i = Φ(q_i)·S_{r(i)}
        out = taylor_features(q[..., rows, :]) @ stats
        if onehot is not None:
            out = (out.unflatten(-1, (num_regions, -1)) * onehot[..., rows, :, None]).sum(-2)  # block r(i)
        outputs.append(out)
    out = torch.cat(outputs, dim=-2)
    return out[..., 1:] / out[..., :1]  # Y = Y'[:, 1:] / Y'[:, :1]


@contextlib.contextmanager
def exportable_attention():
    """Within the block, TaylorShiftAttention layers call :func:`exportable_taylor_shift_attention`."""
    from basicsr_taylor.archs import taylor_shift_attention_arch as arch
    if not hasattr(arch, 'taylor_shift_attention'):
        raise RuntimeError('basicsr_taylor.archs.taylor_shift_attention_arch no longer calls '
                           'taylor_shift_attention by that name; update export_attention.exportable_attention')
    original = arch.taylor_shift_attention
    arch.taylor_shift_attention = exportable_taylor_shift_attention
    try:
        yield
    finally:
        arch.taylor_shift_attention = original
