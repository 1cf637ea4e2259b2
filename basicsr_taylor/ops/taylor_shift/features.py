"""Feature maps of the 2nd-order Taylor polynomial: Φ(q)·Φ(k) = p(q·k) = 1 + q·k + (q·k)²/2.

- :func:`taylor_features`: the textbook symmetric map, D = 1 + d + d(d+1)/2 wide (the naive feature form and graph
  export; the efficient form contracts the outer products of the augmented vectors instead, ``efficient``).
"""
import torch

NORM_EPS = 1e-12  # as F.normalize: q̂ = q / max(|q|, eps)


def taylor_feature_dim(head_dim):
    """D = 1 + d + d(d+1)/2: width of the feature map."""
    return 1 + head_dim + head_dim * (head_dim + 1) // 2


def taylor_features(x):
    """Φ(x) = [1, x, c_ab x_a x_b (a <= b)] with c_aa = 1/√2, c_ab = 1, so that Φ(q)·Φ(k) = p(q·k).

    The textbook symmetric feature map, D = taylor_feature_dim(d) wide (the naive feature form and graph export).
    (..., d) -> (..., D)
    """
    rows, cols = torch.triu_indices(x.shape[-1], x.shape[-1], device=x.device)
    ones = torch.ones(rows.shape, dtype=torch.float64, device=x.device)
    coef = torch.where(rows == cols, 0.5**0.5 * ones, ones).to(x.dtype)  # c_aa = 1/√2, c_ab = 1 (traceable)
    return torch.cat([torch.ones_like(x[..., :1]), x, x[..., rows] * x[..., cols] * coef], dim=-1)
