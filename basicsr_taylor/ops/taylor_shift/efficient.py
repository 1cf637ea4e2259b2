"""TaylorShift's efficient form: a fixed handful of batched ops per block of rows, linear in N, no host sync.

With the augmented vectors x̃ = [1, τ q̂] and k̃ = [1, k̂], p(t) = 1 + t + t²/2 = ((1 + t)² + 1) / 2 gives

    2 p(x·k) = (x̃⊗x̃ + E₀₀)·(k̃⊗k̃),   S_c = Σ_{j in chunk c} (k̃_j⊗k̃_j) v'_jᵀ,   S_r(c) = Σ_{c' in c's region} S_c',
    y'_i = (x̃_i⊗x̃_i + E₀₀)ᵀ S_r(i),   y_i = (s c₁ / f) y'_i[1:] / y'_i[0]   with v'_j = w_j [c₁, f v_j]

(E₀₀: 1 at (0, 0); w: key weights, 0 for padding; f, c₁: value scales for half inputs; s: the output scale; the
factor 2 cancels in the ratio). The outer products are (d + 1)² wide: no gather builds them, and one matmul per
block reads or writes the statistics; every per-token temporary has its tokens last (the CPU's GEMM runs the
resulting (features, tokens) blocks 2-3x faster). The vector-Jacobian products are dx̃_i = 2 G_i x̃_i with
G_i = S_r(i)·dy'_i and dk̃_j = 2 H_j k̃_j with H_j = dS_c·v'_j: a block's (d + 1)² grids are built by one matmul
and contracted in place, and none outlives its block.

Tokens come in C chunks per window, each inside one region (``regions.RegionChunks``); the region sums are one
small matmul with the same-region matrix M (C × C). Every product is one matmul batched over (windows, heads,
chunks), in blocks of chunk rows whose temporaries fit the block budget (``blocks``), in two phases (statistics
of all blocks, their region sums, then the outputs). Every per-token step (normalisation, augmentation, the
division, their gradients) runs inside the blocks and writes into preallocated outputs and gradients.

Memory (what an SDPA-like op keeps): the autograd Function saves its inputs (by reference), the output, the row
sums y'[0] (float32 for half inputs), |q|, |k| and the region-summed statistics S_r; the backward pass recomputes
q̂ and k̂ in its blocks. Inference (no gradient needed) runs the same blocks outside the Function and keeps nothing.
"""
import math

import torch

from ...utils.tracing import is_tracing
from .blocks import block_bytes, row_blocks, rows_per_block
from .features import NORM_EPS
from .regions import SortedRegions

_HALF = (torch.float16, torch.bfloat16)


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
    key_weight = None if regions is None else regions.key_weights(q.shape[0], q.dim() - 1)
    return _attention(q, k, v, temperature, regions, scale, key_weight)


def _attention(q, k, v, temperature, chunks, scale, key_weight):
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # chunk rows are views (no-op for the network's)
    inputs = (q, k, v) if temperature is None else (q, k, v, temperature)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return TaylorShiftEfficient.apply(q, k, v, temperature, chunks, key_weight, scale)
    with torch.no_grad():  # inference: keeps nothing
        return _forward(q, k, v, temperature, chunks, key_weight, scale, False, block_bytes(q.device))[0]


def value_scales(v):
    """(f, c₁) in v' = [c₁, f v]: for half inputs f = 1/N, so that the sums over N stay in range (|S| <= max |v|)
    and c₁ = max(1/N, 2⁻¹⁴), a normal float16 (y'[0] <= 2 p(τ) then); 1 and 1 otherwise. Both cancel in y."""
    if v.dtype not in _HALF:
        return 1.0, 1.0
    n = max(v.shape[-2], 1)
    return 1.0 / n, max(1.0 / n, 2.0 ** -14)


def _as(x, dtype):
    """x in ``dtype`` (no op when it is already)."""
    return x if x.dtype == dtype else x.to(dtype)


class _Plan:
    """One call's chunk rows: the batch dims (B, ...), C chunks of c tokens per row of the batch, the same-region
    matrix M (or None), the temperature per chunk row and the blocks of chunk rows within the block budget."""

    def __init__(self, like, num_tokens, head_dim, value_dim, chunks, temperature, key_weight, limit, backward):
        self.batch = tuple(like.shape[:-2])
        self.num_chunks = 1 if chunks is None else chunks.num_chunks
        self.chunk = num_tokens // self.num_chunks
        self.count = math.prod(self.batch) * self.num_chunks
        self.same = None if chunks is None else chunks.same_region(self.batch[0], like.dtype, len(self.batch) + 2)
        per_block = rows_per_block(self.count, self.chunk, head_dim, value_dim, like.element_size(), limit,
                                   backward)
        self.blocks = row_blocks(self.count, per_block)
        self.block_rows = max(r.stop - r.start for r in self.blocks)
        self.tau = None if temperature is None else self.per_row(_as(temperature, like.dtype))
        self.weight = None if key_weight is None else self.chunked(
            _as(key_weight, like.dtype).expand(self.batch + (num_tokens, ))[..., None]).transpose(-2, -1)

    def chunked(self, x):
        """(B, ..., N, f) -> (R, c, f): the chunk rows (a view of a contiguous x)."""
        return x.reshape(self.count, self.chunk, x.shape[-1])

    def tokens_last(self, x):
        """(B, ..., N, f) -> (R, f, c): the chunk rows with their tokens along the last dim (a view), the layout
        of every per-token temporary: the matmuls then produce (f, c) blocks, which the CPU's GEMM runs 2-3x
        faster than (c, f) ones at these shapes."""
        return self.chunked(x).transpose(-2, -1)

    def per_row(self, t):
        """A (B, ..., 1, 1)-broadcastable tensor -> (R, 1, 1), one value per chunk row."""
        t = t.expand(self.batch + (1, 1)).unsqueeze(-3).expand(self.batch + (self.num_chunks, 1, 1))
        return t.reshape(self.count, 1, 1)

    def region_sum(self, stats):
        """S_r(c) = Σ_{c'} M[c, c'] S_c' for (R, D, e) statistics; unchanged without regions (M = Mᵀ)."""
        if self.same is None:
            return stats
        return (self.same @ stats.view(self.batch + (self.num_chunks, -1))).view(stats.shape)


def _into(op, *args, out=None):
    """op(*args) written into ``out`` (a tokens-last view of a preallocated tensor, or None): through ``out=``, or by
    a copy while torch.compile traces (Dynamo refuses non-contiguous ``out=`` tensors)."""
    if out is None or not is_tracing():
        return op(*args, out=out)
    return out.copy_(op(*args))


def _norm(x, out=None):
    """|x| over dim -2 (tokens last), at least NORM_EPS (as F.normalize): (R, 1, c), written into ``out`` if given."""
    return torch.clamp_min(torch.linalg.vector_norm(x, dim=-2, keepdim=True), NORM_EPS, out=out)


def _augmented(x, norm, ones, scale=None):
    """x̃ = [1, t x / |x|] (R, d + 1, c) of tokens-last chunk rows x (t = ``scale`` (R, 1, 1) or 1; ``ones``:
    (R, 1, c))."""
    return torch.cat([ones, x / norm if scale is None else x * (scale / norm)], dim=-2)


def _outer(aug, query):
    """x̃⊗x̃ (R, (d + 1)², c), plus E₀₀ for queries (entry (0, 0) = 2)."""
    outer = (aug[:, :, None, :] * aug[:, None, :, :]).flatten(1, 2)
    if query:
        outer[:, 0].fill_(2.0)
    return outer


def _moments(aug, z, out):
    """out = Σ_i (x̃_i⊗x̃_i) z_iᵀ (R, (d + 1)², e) as x̃ (x̃⊗z)ᵀ: the d + 1 rows of the product on the inside (2x
    faster on the CPU than the outer product's (d + 1)² rows)."""
    side = aug.shape[1]
    paired = (aug[:, :, None, :] * z[:, None, :, :]).flatten(1, 2)  # (R, (d + 1) e, c)
    torch.bmm(aug, paired.transpose(-2, -1), out=out.view(aug.shape[0], side, side * z.shape[1]))


def _grid_product(stats, z, aug):
    """(G_i x̃_i)[1:] (R, d, c) with the (d + 1) × (d + 1) grid G_i = S·z_i of every token (freed on return)."""
    side = aug.shape[1]
    grid = torch.bmm(stats, z).view(aug.shape[0], side, side, -1)  # G[a, b] per token
    return grid.mul_(aug[:, None]).sum(2)[:, 1:]


def _values(v, weight, factor, ones):
    """v' = w [c₁, f v] (R, e, c) of tokens-last values; ``ones``: (R, 1, c) filled with c₁."""
    values = torch.cat([ones, v * factor if factor != 1 else v], dim=-2)
    return values if weight is None else values * weight


def _forward(q, k, v, temperature, chunks, key_weight, scale, keep, limit):
    """(out, saved): saved = (|q|, |k| (2, R, 1, c), row sums ρ = y'[0] / out_scale (R, 1, c), float32 for half
    inputs; region-summed S_r) if keep else None; ``limit``: the block budget in bytes."""
    plan = _Plan(q, q.shape[-2], q.shape[-1], v.shape[-1], chunks, temperature, key_weight, limit, backward=False)
    factor, ones = value_scales(v)
    qt, kt, vt = plan.tokens_last(q), plan.tokens_last(k), plan.tokens_last(v)
    side = q.shape[-1] + 1
    unit_row = q.new_ones(plan.block_rows, 1, plan.chunk)
    value_row = unit_row if ones == 1 else q.new_full(unit_row.shape, ones)
    norms = q.new_empty(2, plan.count, 1, plan.chunk) if keep else [None, None]
    stats = q.new_empty(plan.count, side * side, v.shape[-1] + 1)
    for r in plan.blocks:  # S_c = Σ_j (k̃_j⊗k̃_j) v'_jᵀ
        n = r.stop - r.start
        weight = None if plan.weight is None else plan.weight[r]
        aug = _augmented(kt[r], _norm(kt[r], out=norms[1][r] if keep else None), unit_row[:n])
        _moments(aug, _values(vt[r], weight, factor, value_row[:n]), out=stats[r])
    stats = plan.region_sum(stats)
    out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=v.dtype, device=v.device)
    out_rows = plan.tokens_last(out)
    sum_dtype = torch.float32 if q.dtype in _HALF else q.dtype
    row_sums = torch.empty(plan.count, 1, plan.chunk, dtype=sum_dtype, device=q.device) if keep else None
    out_scale = scale * ones / factor
    for r in plan.blocks:  # y'_i = (x̃_i⊗x̃_i + E₀₀)ᵀ S_r(i),  y_i = out_scale y'_i[1:] / y'_i[0]  (s c₁ / f)
        n = r.stop - r.start
        tau = None if plan.tau is None else plan.tau[r]
        aug = _augmented(qt[r], _norm(qt[r], out=norms[0][r] if keep else None), unit_row[:n], tau)
        y_ext = torch.bmm(stats[r].transpose(-2, -1), _outer(aug, query=True))  # (R, e, c)
        if y_ext.dtype in _HALF:  # the division in float32
            y_ext = y_ext.float()
        row_sum = torch.mul(y_ext[:, :1], 1 / out_scale, out=row_sums[r] if keep else None)
        _into(torch.div, y_ext[:, 1:], row_sum, out=out_rows[r])
    return out, (norms, row_sums, stats) if keep else None


def _unit_vjp(unit, grad, factor, out=None):
    """(dL/dx, x̂·g) for x̂ = x / |x| (tokens last) given dL/dx̂ = t·g: t (g - x̂ (x̂·g)) / |x| with ``factor`` =
    t / |x|, written into ``out`` if given."""
    dot = (unit * grad).sum(-2, keepdim=True)
    return _into(torch.mul, torch.addcmul(grad, unit, dot, value=-1), factor, out=out), dot


class TaylorShiftEfficient(torch.autograd.Function):
    """The efficient form with its own backward pass (module docstring): inputs q, k, v, temperature, chunks (a
    ``RegionChunks`` or None), key_weight (broadcastable to (B, ..., N): 0 for padding tokens, or None), scale s."""

    @staticmethod
    def forward(ctx, q, k, v, temperature, chunks, key_weight, scale):
        limit = block_bytes(q.device)  # the backward pass runs outside the network's budget context: keep it
        out, (norms, row_sums, stats) = _forward(q, k, v, temperature, chunks, key_weight, scale, True, limit)
        ctx.save_for_backward(q, k, v, out, temperature, key_weight, norms, row_sums, stats)
        ctx.chunks, ctx.scale, ctx.limit = chunks, scale, limit
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError("TaylorShift's efficient form has no double backward (create_graph=True): use "
                               "form='direct' for higher-order gradients")
        q, k, v, out, temperature, key_weight, norms, row_sums, stats = ctx.saved_tensors
        need_q, need_k, need_v, need_tau = ctx.needs_input_grad[:4]
        plan = _Plan(q, q.shape[-2], q.shape[-1], v.shape[-1], ctx.chunks, temperature, key_weight, ctx.limit,
                     backward=True)
        factor, ones = value_scales(v)
        out_scale = ctx.scale * ones / factor  # y = y'[1:] / ρ,  ρ = y'[0] / out_scale
        qt, kt, vt = plan.tokens_last(q), plan.tokens_last(k), plan.tokens_last(v)
        grad_rows, out_rows = plan.tokens_last(grad_out.contiguous()), plan.tokens_last(out)
        unit_row = q.new_ones(plan.block_rows, 1, plan.chunk)
        contiguous = dict(memory_format=torch.contiguous_format)
        grad_q = torch.empty_like(q, **contiguous) if need_q else None
        grad_tau_rows = q.new_empty(plan.count, 1, 1, dtype=row_sums.dtype) if need_tau else None
        grad_stats = torch.empty_like(stats) if need_k or need_v else None
        two_tau = None if plan.tau is None else 2 * plan.tau
        for r in plan.blocks:  # queries: dy' = [-(g·y) / out_scale, g] / ρ
            n = r.stop - r.start
            g = grad_rows[r].float() if grad_rows.dtype in _HALF else grad_rows[r]
            y = out_rows[r].float() if out_rows.dtype in _HALF else out_rows[r]
            dz = torch.cat([(g * y).sum(-2, keepdim=True) * (-1 / out_scale), g], dim=-2).div_(row_sums[r])
            dz = _as(dz, stats.dtype)
            unit = qt[r] / norms[0][r]
            aug = torch.cat([unit_row[:n], unit if plan.tau is None else unit * plan.tau[r]], dim=-2)
            if grad_stats is not None:  # dS_r = Σ_i (x̃_i⊗x̃_i + E₀₀) dy'_iᵀ
                _moments(aug, dz, out=grad_stats[r])
                grad_stats[r, 0].mul_(2)  # + E₀₀: the (0, 0) row counts twice
            if need_q or need_tau:  # dx̃_i = 2 G_i x̃_i,  G_i = S_r(i)·dy'_i  ((d + 1) × (d + 1))
                grad_x = _grid_product(stats[r], dz, aug)  # dL/d(τ q̂) = 2 grad_x
                factor_q = 2.0 / norms[0][r] if two_tau is None else two_tau[r] / norms[0][r]
                grad_q_rows = plan.tokens_last(grad_q)[r] if need_q else None
                _, dot = _unit_vjp(unit, grad_x, factor_q, out=grad_q_rows)
                if need_tau:  # dL/dτ = Σ_i q̂_i · dL/d(τ q̂_i)
                    torch.sum(dot, -1, keepdim=True, out=grad_tau_rows[r])
        grad_k = torch.empty_like(k, **contiguous) if need_k else None
        grad_v = torch.empty_like(v, **contiguous) if need_v else None
        if grad_stats is not None:
            grad_stats = plan.region_sum(grad_stats)  # dS_c = Mᵀ dS_r
            value_row = unit_row if ones == 1 else q.new_full(unit_row.shape, ones)
            for r in plan.blocks:  # keys and values
                n = r.stop - r.start
                weight = None if plan.weight is None else plan.weight[r]
                unit = kt[r] / norms[1][r]
                aug = torch.cat([unit_row[:n], unit], dim=-2)
                if need_v:  # dv'_j = dS_cᵀ (k̃_j⊗k̃_j);  v' = w [c₁, f v]
                    grad_values = torch.bmm(grad_stats[r][..., 1:].transpose(-2, -1), _outer(aug, query=False))
                    scaled = weight if factor == 1 else factor if weight is None else weight * factor
                    if scaled is None:
                        plan.tokens_last(grad_v)[r] = grad_values
                    else:
                        _into(torch.mul, grad_values, scaled, out=plan.tokens_last(grad_v)[r])
                if need_k:  # dk̃_j = 2 H_j k̃_j,  H_j = dS_c·v'_j
                    values = _values(vt[r], weight, factor, value_row[:n])
                    _unit_vjp(unit, _grid_product(grad_stats[r], values, aug), 2.0 / norms[1][r],
                              out=plan.tokens_last(grad_k)[r])
        grad_tau = None
        if need_tau:  # 2 Σ per chunk row, summed to τ's shape
            per_batch = grad_tau_rows.view(plan.batch + (plan.num_chunks, )).sum(-1)
            grad_tau = _as((2 * per_batch).view(plan.batch + (1, 1)).sum_to_size(temperature.shape), temperature.dtype)
        return grad_q, grad_k, grad_v, grad_tau, None, None, None
