"""Feature maps of the 2nd-order Taylor polynomial: Φ(q)·Φ(k) = p(q·k) = 1 + q·k + (q·k)²/2.

- :func:`taylor_features`: the textbook symmetric map, D = 1 + d + d(d+1)/2 wide (the naive feature form);
- :class:`MonomialFeatures`: the same monomials built in a few broadcast multiplies, with the ½ weights kept
  apart (the efficient form's blocks, where the op count per block is what costs time).
"""
import torch

from ...utils.tracing import cache_unless_tracing

NORM_EPS = 1e-12  # as F.normalize: q̂ = q / max(|q|, eps)


def taylor_feature_dim(head_dim):
    """D = 1 + d + d(d+1)/2: width of the feature map."""
    return 1 + head_dim + head_dim * (head_dim + 1) // 2


def taylor_features(x):
    """Φ(x) = [1, x, c_ab x_a x_b (a <= b)] with c_aa = 1/√2, c_ab = 1, so that Φ(q)·Φ(k) = p(q·k).

    The textbook symmetric feature map, D = taylor_feature_dim(d) wide (the naive feature form and graph export; the
    efficient form uses :class:`MonomialFeatures`).  (..., d) -> (..., D)
    """
    rows, cols = torch.triu_indices(x.shape[-1], x.shape[-1], device=x.device)
    ones = torch.ones(rows.shape, dtype=torch.float64, device=x.device)
    coef = torch.where(rows == cols, 0.5**0.5 * ones, ones).to(x.dtype)  # c_aa = 1/√2, c_ab = 1 (traceable)
    return torch.cat([torch.ones_like(x[..., :1]), x, x[..., rows] * x[..., cols] * coef], dim=-1)


class MonomialFeatures:
    """ψ(x) = [1, x, x_a x_b for (a, b) in pairs] with weights C such that ψ(q)ᵀ C ψ(k) = p(q·k).

    The pairs cover the upper triangle a <= b in ``groups`` of rows: group [a0, a1) holds every (a, b)
    with a0 <= a < a1 and b >= a0, written by one broadcast multiply. Pairs below the diagonal inside a
    group's square repeat a pair above it; such repeated pairs and the squares x_a² get weight ½, the
    others 1 (p's x²/2 = Σ_a ½ x_a² y_a² + Σ_{a<b} x_a x_b y_a y_b). A few groups (a few % more features
    than d(d+1)/2) keep the op count per block small, which is what costs time for blocks of ~100 tokens.
    """

    def __init__(self, head_dim, device, num_groups=6):
        d = head_dim
        size = -(-d // min(d, num_groups))  # rows per group
        self.head_dim = d
        self.groups = [(a0, min(a0 + size, d)) for a0 in range(0, d, size)]
        first, second = [], []
        for a0, a1 in self.groups:
            for a in range(a0, a1):
                first += [a] * (d - a0)
                second += list(range(a0, d))
        first, second = torch.tensor(first), torch.tensor(second)
        in_square = torch.zeros(d, d, dtype=torch.bool)
        for a0, a1 in self.groups:
            in_square[a0:a1, a0:a1] = True
        repeated = (first == second) | in_square[first, second]  # x_a² or a pair written twice: weight ½
        self.width = 1 + d + first.numel()
        self.weight = torch.cat([torch.ones(1 + d, dtype=torch.float64), 1 - 0.5 * repeated.double()]).to(device)
        self.index_ab = (first * d + second).to(device)  # where feature (a, b) lands in a d×d grid
        self.index_ba = (second * d + first).to(device)

    def __call__(self, x, out):
        """ψ(x) for tokens stored along the last dim (contiguous, fast broadcasts): x (..., d, c) -> out
        (..., width, c)."""
        out[..., 0, :] = 1
        out[..., 1:self.head_dim + 1, :] = x
        return self.fill_quadratic(out)

    def fill_quadratic(self, out):
        """Rows 1 + d.. of out (..., width, c) from its rows 1..d (x): x_a x_b for a in [a0, a1), b >= a0."""
        d = self.head_dim
        x = out[..., 1:d + 1, :]
        start = d + 1
        for a0, a1 in self.groups:
            stop = start + (a1 - a0) * (d - a0)
            torch.mul(x[..., a0:a1, None, :], x[..., None, a0:, :],
                      out=out[..., start:stop, :].unflatten(-2, (a1 - a0, d - a0)))
            start = stop
        return out

    def vjp_weights(self, stats):
        """W(S) with [g, g⊠x] W(S) = dL/dx when dL/dψ(x) = S g, for S (..., width, e) -> (..., e + e·d, d).

        dx_a = Σ_e g_e S[1+a, e] + Σ_{e,b} g_e x_b B_ab,e, where B_ab sums the rows S_f of every feature
        f = x_a x_b and every f = x_b x_a (so a square x_a², with d/dx_a = 2x_a, counts twice).
        """
        d, width = self.head_dim, stats.shape[-1]
        quad = stats[..., 1 + d:, :]
        grid = stats.new_zeros(stats.shape[:-2] + (d * d, width))  # B as (a·d + b, e)
        grid.index_add_(-2, self.index_ab, quad).index_add_(-2, self.index_ba, quad)
        linear = stats[..., 1:1 + d, :].transpose(-2, -1)  # (..., e, d)
        return torch.cat([linear, grid.transpose(-2, -1).reshape(stats.shape[:-2] + (width * d, d))], dim=-2)



@cache_unless_tracing(maxsize=32)
def feature_map(head_dim, device):
    """The efficient form's ψ: one group per row, exactly d(d+1)/2 quadratic features (its blocks are large, so
    the op count per block no longer matters). Cached; built afresh while tracing."""
    return MonomialFeatures(head_dim, device, num_groups=head_dim)
