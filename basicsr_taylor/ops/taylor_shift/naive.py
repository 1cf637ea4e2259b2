"""The naive reference forms of TaylorShift attention: what the tests compare against and what graph export uses.

Both take L2-normalised q̂ (times τ) and k̂ and plain tensor ops only, with static shapes:

- :func:`direct`: w_ij = p_k(x_ij)·[r_i = r_j], y_i = s Σ_j w_ij v_j / Σ_j w_ij (Taylor order k, default 2:
  :func:`taylor_polynomial`); O(N²d) time, O(N²) memory;
- :func:`feature_form`: Φ(x) = [1, x, c_ab x_a x_b (a <= b)] (c_aa = 1/√2, c_ab = 1), so that Φ(q)·Φ(k) =
  p(q·k); per region r, S_r = Σ_{j in r} Φ(k_j) [1, v_j]ᵀ and y'_i = Φ(q_i)·S_{r(i)}, y_i = s y'_i[1:] / y'_i[0].
  Tokens go in a few fixed chunks (each unrolled into an exported graph: 4 chunks keep the export of the 36-block
  x2 model to minutes and Φ of one chunk to about 4× q). Region ids must lie in 0..num_regions-1: a fixed one-hot
  width replaces the data-dependent region count (TaylorSwinIR's shifted windows use 0..3).
"""
import torch
import torch.nn.functional as F

from ...utils.tracing import is_tracing
from .features import taylor_features

MAX_SHIFTED_WINDOW_REGIONS = 4  # a shifted window mixes at most 2 row groups × 2 column groups
EXPORT_CHUNKS = 4  # token chunks per window in the feature form


def normalized(q, k, temperature):
    """(τ q̂, k̂) with x̂ = x / max(|x|, eps): the logits are x_ij = τ cos(q_i, k_j)."""
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    return (q if temperature is None else q * temperature), k


def taylor_polynomial(x, order):
    """p_k(x) = Σ_{i=0..k} x^i / i! by Horner's rule: 1 + x (1 + x/2 (1 + x/3 (...)))."""
    p = torch.ones_like(x)
    for i in range(order, 0, -1):
        p = 1 + x * p / i
    return p


def direct(q, k, v, temperature, regions, scale, order=2):
    """TaylorShift attention with the N×N weights, for Taylor order k (default 2):
    y_i = s Σ_j w_ij v_j / Σ_j w_ij,  w_ij = p_k(x_ij)·[r_i = r_j],  x_ij = τ cos(q_i, k_j).
    (Odd orders expect the bounded temperature of ``interface.odd_order_temperature``.)"""
    q, k = normalized(q, k, temperature)
    x = q @ k.transpose(-2, -1)  # x_ij = τ cos(q_i, k_j)
    in_place = not (torch.is_grad_enabled() and x.requires_grad) and not is_tracing()  # reuse the N×N buffer
    if order != 2:
        weights = taylor_polynomial(x, order)
    else:  # w = 2 p(x) = (x + 1)² + 1; the factor 2 cancels in the ratio below
        weights = x.add_(1).square_().add_(1) if in_place else (x + 1).square() + 1
    if regions is not None:
        same = regions[..., :, None] == regions[..., None, :]  # only same-region keys
        weights = weights.mul_(same) if in_place else weights * same.to(weights.dtype)
    return (weights @ v) * (scale / weights.sum(-1, keepdim=True))  # y_i = s Σ_j w_ij v_j / Σ_j w_ij


def feature_form(q, k, v, temperature, regions, scale, num_regions=MAX_SHIFTED_WINDOW_REGIONS):
    """TaylorShift attention through the explicit feature map, in EXPORT_CHUNKS chunks of tokens."""
    q, k = normalized(q, k, temperature)
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
    return out[..., 1:] * (scale / out[..., :1])  # Y = s Y'[:, 1:] / Y'[:, :1]
