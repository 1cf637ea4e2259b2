"""The efficient form of order-1 TaylorShift: p_1(q·k) = 1 + q·k = [1, q]·[1, k], i.e. linear attention.

    y_i = s · y'_i[1:] / y'_i[0],   y'_i = [1, τ q̂_i]ᵀ S_r(i),   S_r = Σ_{j in r} [1, k̂_j] [1, v_j]ᵀ

S has (d + 1) × (dv + 1) entries per region: time O(N d dv), memory linear in N. Plain torch ops, so autograd
gives the backward pass. Regions: a ``RegionChunks`` layout (what the network passes) gives one S per chunk and
the region sums by the same-region matrix, with no host sync; integer ids give one S per distinct id, each query
reading its own (R × N × (d + 1) temporaries for R distinct ids; counting the ids reads them on the host).
The temperature must already be bounded (``interface.odd_order_temperature``) so that every weight
1 + τ cos is positive: the denominator y'_i[0] is then >= 1e-3 · (keys in i's region).
"""
import torch
import torch.nn.functional as F

from .regions import RegionChunks


def linear_taylor_attention(q, k, v, temperature, regions, scale):
    """q, k (..., N, d), v (..., N, dv), temperature broadcastable to (..., 1, 1) or None, regions (integer,
    broadcastable to (..., N)) or None, scale s. Returns (..., N, dv)."""
    q = F.normalize(q, dim=-1)
    if temperature is not None:
        q = q * temperature
    phi_q = F.pad(q, (1, 0), value=1.0)  # [1, τ q̂]
    phi_k = F.pad(F.normalize(k, dim=-1), (1, 0), value=1.0)  # [1, k̂]
    values = F.pad(v, (1, 0), value=1.0)  # [1, v]: column 0 carries the denominator
    if isinstance(regions, RegionChunks):  # S_c per chunk, S_r = M S_c: no host sync
        weight = regions.key_weights(q.shape[0], q.dim() - 1)
        if weight is not None:  # padding keys weigh 0
            values = values * weight[..., None].to(values.dtype)
        chunked = lambda x: x.unflatten(-2, (regions.num_chunks, regions.chunk))  # noqa: E731  (..., C, c, f)
        stats = chunked(phi_k).transpose(-2, -1) @ chunked(values)  # (..., C, d + 1, e)
        same = regions.same_region(q.shape[0], q.dtype, q.dim())  # (B, 1..., C, C)
        stats = (same @ stats.flatten(-2)).view(stats.shape)
        y = (chunked(phi_q) @ stats).flatten(-3, -2)
    elif regions is None:
        y = phi_q @ (phi_k.transpose(-2, -1) @ values)
    else:
        _, index = torch.unique(regions, return_inverse=True)  # ids -> 0..R-1
        member = F.one_hot(index, int(index.max()) + 1).to(q.dtype).movedim(-1, -2)[..., None]  # (..., R, N, 1)
        stats = (phi_k.unsqueeze(-3) * member).transpose(-2, -1) @ values.unsqueeze(-3)  # S_r (..., R, d+1, e)
        y = ((phi_q.unsqueeze(-3) @ stats) * member).sum(-3)  # each query reads its own region's S
    return y[..., 1:] * (scale / y[..., :1])
