"""Feature maps of the 2nd-order Taylor polynomial: Φ(q)·Φ(k) = p(q·k) = 1 + q·k + (q·k)²/2.

- :func:`taylor_features`: the textbook symmetric map, D = 1 + d + d(d+1)/2 wide (the naive feature form);
- :class:`QuadraticFeatures`: the same map for tokens along the last dim, in a fixed handful of ops, with its
  vector-Jacobian product (the efficient form).
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
    efficient form uses :class:`QuadraticFeatures`).  (..., d) -> (..., D)
    """
    rows, cols = torch.triu_indices(x.shape[-1], x.shape[-1], device=x.device)
    ones = torch.ones(rows.shape, dtype=torch.float64, device=x.device)
    coef = torch.where(rows == cols, 0.5**0.5 * ones, ones).to(x.dtype)  # c_aa = 1/√2, c_ab = 1 (traceable)
    return torch.cat([torch.ones_like(x[..., :1]), x, x[..., rows] * x[..., cols] * coef], dim=-1)


class QuadraticFeatures:
    """ψ(x) = [1, x, s_ab x_a x_b (a <= b)] (s_aa = 1/√2, s_ab = 1), so that ψ(q)·ψ(k) = p(q·k), for tokens stored
    along the last dim: x (..., d, n) -> (..., D, n), D = taylor_feature_dim(d). Each map is a fixed handful of
    ops whatever d and n (the efficient form's launch count): one gather of the factor pairs and one product.
    """

    def __init__(self, head_dim, device):
        d = head_dim
        a, b = torch.triu_indices(d, d)
        self.head_dim, self.width = d, taylor_feature_dim(d)
        # factors from ext = [1, x, x/√2] (2d + 1 rows): feature f = ext[first[f]] · ext[second[f]]
        first = torch.cat([torch.zeros(1 + d, dtype=torch.long), 1 + a])
        second = torch.cat([torch.tensor([0]), 1 + torch.arange(d), torch.where(a == b, 1 + d + b, 1 + b)])
        self.pairs = torch.cat([first, second]).to(device)
        # dψ/dx: G[a, b] = g_f t_ab for f = (min, max): dx = g[1:1+d] + G x (t = 1, √2 on the diagonal)
        pair = torch.zeros(d, d, dtype=torch.long)
        pair[a, b] = pair[b, a] = 1 + d + torch.arange(a.numel())
        self.grid = pair.flatten().to(device)
        diagonal = torch.eye(d, dtype=torch.float64).view(d * d, 1)
        self._grid_weight = {torch.float64: (1 + (2 ** 0.5 - 1) * diagonal).to(device)}  # per dtype

    def __call__(self, x):
        """ψ(x): (..., d, n) -> (..., D, n)."""
        ext = torch.cat([torch.ones_like(x[..., :1, :]), x, x * 0.5 ** 0.5], dim=-2)  # [1, x, x/√2]
        factors = ext.index_select(-2, self.pairs)
        return factors[..., :self.width, :] * factors[..., self.width:, :]

    def grid_weight(self, dtype):
        """t (d·d, 1): √2 on the diagonal, 1 elsewhere, in ``dtype`` (converted once)."""
        if dtype not in self._grid_weight:
            self._grid_weight[dtype] = self._grid_weight[torch.float64].to(dtype)
        return self._grid_weight[dtype]

    def vjp(self, x, grad):
        """dL/dx (..., d, n) given dL/dψ(x) = grad (..., D, n): dx_a = g_a + Σ_b G_ab x_b."""
        d = self.head_dim
        grid = grad.index_select(-2, self.grid).mul_(self.grid_weight(grad.dtype))  # G (..., d·d, n)
        quadratic = (grid.view(grad.shape[:-2] + (d, d, grad.shape[-1])) * x[..., None, :, :]).sum(-2)
        return quadratic.add_(grad[..., 1:1 + d, :])


@cache_unless_tracing(maxsize=32)
def feature_map(head_dim, device):
    """The efficient form's ψ for head dim d on ``device`` (cached; built afresh while tracing)."""
    return QuadraticFeatures(head_dim, device)
