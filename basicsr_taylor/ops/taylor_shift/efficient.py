"""TaylorShift's efficient form: a custom autograd Function over blocks of tokens, linear in N.

    p(q·k) = ψ(q)ᵀ C ψ(k),  S_r = C Σ_{j in r} [1, v_j] ψ(k̂_j)ᵀ,  y'_i = S_r(i) ψ(τ q̂_i),  y_i = s y'_i[1:] / y'_i[0]

The Function normalises q and k inside the blocks, keeps the small per-region statistics S from the forward pass
and rebuilds ψ block by block in the backward pass: besides the inputs, the output, S and the gradients, only one
block's temporaries are held (``blocks.block_plan``). With regions, every chunk of tokens holds one region
(``regions.RegionLayout``), gathered and scattered per block: the cost stays that of unmasked attention.
"""
import torch

from .blocks import Plan, rows3
from .regions import region_layout


def efficient(q, k, v, temperature, regions, scale):
    """The efficient form of :func:`taylor_shift_attention` (inputs already in the compute dtype)."""
    if q.dim() == 2:  # (N, d): give it a batch dimension
        return efficient(q[None], k[None], v[None], temperature, regions, scale)[0]
    layout = None if regions is None else region_layout(regions, q.shape[:-1])
    return TaylorShiftEfficient.apply(q, k, v, temperature, layout, scale)


def _vjp_inputs(g, x, out):
    """[g; g⊠x] (..., e + e·d, c) for tokens along the last dim: g (..., e, c), x (..., d, c)."""
    width, head_dim = g.shape[-2], x.shape[-2]
    out[..., :width, :] = g
    torch.mul(g[..., :, None, :], x[..., None, :, :], out=out[..., width:, :].unflatten(-2, (width, head_dim)))
    return out



def _unit_columns_vjp(unit, norm, grad_unit):
    """dL/dx for u = x / |x| given dL/du: (g - u (u·g)) / |x|, over dim -2."""
    return (grad_unit - unit * (unit * grad_unit).sum(-2, keepdim=True)) / norm


def _key_statistics(plan, k3, v3, rows):
    """S_r = C Σ_{j in r} v'_j ψ(k̂_j)ᵀ for a row block: (m, R, e, D)."""
    m = rows.stop - rows.start
    stats = k3.new_zeros((m, plan.num_regions, plan.value_dim + 1, plan.psi.width))
    for t0, t1, nb, cb in plan.token_blocks():
        features, _, _ = plan.features(plan.tokens(k3, rows, t0, t1, nb, cb), 'psi')
        values = plan.values(v3, rows, t0, t1, nb, cb)
        plan.add(stats, values @ features.transpose(-2, -1), plan.region_index(rows, t0, nb, cb))  # Σ v' ψ(k̂)ᵀ
    return stats.mul_(plan.psi.weight.to(stats.dtype))  # C S


def _vjp_weights(plan, stats):
    """W(S)ᵀ (m, R, d, e + e·d) for S (m, R, e, D): dx = W(S)ᵀ [g; g⊠x] when dL/dψ(x) = Sᵀ g."""
    return plan.psi.vjp_weights(stats.transpose(-2, -1)).transpose(-2, -1)


class TaylorShiftEfficient(torch.autograd.Function):
    """Normalised TaylorShift attention by blocks: y_i = s · y'_i[1:] / y'_i[0], y'_i = S_{r(i)} ψ(τ q̂_i),
    S_r = C Σ_{j in r} [w_j; w_j v_j] ψ(k̂_j)ᵀ, where w_j = 1 for a token and 0 for padding.

    Inputs: q, k (batch..., N, d), v (batch..., N, dv), temperature (broadcasts to (batch..., 1, 1)) or None,
    layout (a :class:`RegionLayout`, or None without regions), scale s. The batch dims are flattened into
    rows; blocks of whole rows (or of whole region chunks of one row) are computed with a few batched
    matmuls each. Saves q, k, v (references), the output, the denominators y'[0] and the per-region
    statistics S (rows × R × e × D: small); the backward pass rebuilds ψ block by block.
    """

    @staticmethod
    def forward(ctx, q, k, v, temperature, layout, scale):
        plan = Plan(q, v, layout)
        q3, k3, v3 = (rows3(t, plan) for t in (q, k, v))
        tau = plan.tau_rows(temperature, q3)
        keep = any(ctx.needs_input_grad[:4])  # S is kept for the backward pass
        out3 = v3.new_empty(v3.shape)
        denominator = v3.new_empty(plan.rows, plan.length)
        stats_all = v3.new_empty(plan.rows, plan.num_regions, plan.value_dim + 1, plan.psi.width) if keep else None
        for rows in plan.row_blocks():
            stats = _key_statistics(plan, k3, v3, rows)
            if keep:
                stats_all[rows] = stats
            out_rows = out3[rows] if layout is None else plan.bufs.get('out', (stats.shape[0], plan.length,
                                                                               plan.value_dim))
            for t0, t1, nb, cb in plan.token_blocks():
                features, _, _ = plan.features(plan.tokens(q3, rows, t0, t1, nb, cb), 'psi',
                                               None if tau is None else tau[rows])
                index = plan.region_index(rows, t0, nb, cb)
                y_ext = plan.select(stats, index, nb) @ features  # y'_i = S_r(i) ψ(τ q̂_i)  (m, nb, e, cb)
                den = y_ext[..., :1, :]
                denominator[rows, t0:t1] = den.reshape(den.shape[0], -1)
                y = (y_ext[..., 1:, :] * (scale / den)).transpose(-2, -1)  # s y'[1:] / y'[0]  (m, nb, cb, dv)
                out_rows[:, t0:t1] = y.reshape(y.shape[0], t1 - t0, plan.value_dim)
            if layout is not None:
                out3[rows] = plan.to_rows(out_rows, rows)
        out = out3.view(v.shape)
        ctx.save_for_backward(q, k, v, temperature, out, denominator, stats_all)
        ctx.layout, ctx.scale = layout, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, temperature, out, denominator, stats_all = ctx.saved_tensors
        return efficient_backward(ctx, grad_out, q, k, v, temperature, out, denominator, stats_all)[:4] + (None, ) * (
            len(ctx.needs_input_grad) - 4)


def efficient_backward(ctx, grad_out, q, k, v, temperature, out, denominator, stats_all):
    """(dq, dk, dv, dτ) of :class:`TaylorShiftEfficient` (also the Triton form's backward: stats_all may be None,
    then S is recomputed)."""
    layout, scale = ctx.layout, ctx.scale
    need_q, need_k, need_v, need_tau = ctx.needs_input_grad[:4]
    plan = Plan(q, v, layout)
    q3, k3, v3 = (rows3(t, plan) for t in (q, k, v))
    out3, grad3 = rows3(out, plan), rows3(grad_out, plan)
    tau = plan.tau_rows(temperature, q3)
    d, e, psi = plan.head_dim, plan.value_dim + 1, plan.psi
    grad_q = torch.empty_like(q3) if need_q else None
    grad_k = torch.empty_like(k3) if need_k else None
    grad_v = torch.empty_like(v3) if need_v else None
    grad_tau = q3.new_zeros(plan.rows, 1, 1, 1) if need_tau else None
    blocks = plan.token_blocks()

    def padded(grad, name, rows):  # gradient rows in the padded layout (written block by block)
        return grad[rows] if layout is None else plan.bufs.get(name, (rows.stop - rows.start, plan.length,
                                                                      grad.shape[-1]))

    def put(grad_rows, part, t0, t1):  # part (m, nb, f, cb) -> grad_rows[:, t0:t1] (m, t, f)
        grad_rows[:, t0:t1] = part.transpose(-2, -1).reshape(part.shape[0], t1 - t0, part.shape[-2])

    for rows in plan.row_blocks():
        m = rows.stop - rows.start
        stats = _key_statistics(plan, k3, v3, rows) if stats_all is None else stats_all[rows]
        query_weights = _vjp_weights(plan, stats) if need_q or need_tau else None  # W(S_r)ᵀ once per region
        grad_stats = q3.new_zeros(stats.shape)
        dq_rows = padded(grad_q, 'dq', rows) if need_q else None
        for t0, t1, nb, cb in blocks:
            g = plan.tokens(grad3, rows, t0, t1, nb, cb)  # (m, nb, dv, cb)
            y = plan.tokens(out3, rows, t0, t1, nb, cb)
            inv_den = denominator[rows, t0:t1].view(m, nb, 1, cb).reciprocal()
            weight = plan.weight(rows, t0, t1, nb, cb)
            if weight is not None:
                inv_den = inv_den * weight  # padding slots: no gradient
            dz = plan.bufs.get('dz', (m, nb, e, cb))  # dL/dy' = [-(g·y)/y'_0, s g / y'_0]
            torch.mul((g * y).sum(-2, keepdim=True), -inv_den, out=dz[..., :1, :])
            torch.mul(g, scale * inv_den, out=dz[..., 1:, :])
            features, q_unit, q_norm = plan.features(plan.tokens(q3, rows, t0, t1, nb, cb), 'psi',
                                                     None if tau is None else tau[rows])
            index = plan.region_index(rows, t0, nb, cb)
            plan.add(grad_stats, dz @ features.transpose(-2, -1), index)  # dS_r += Σ_i dz_i ψ(τ q̂_i)ᵀ
            if need_q or need_tau:  # d(τq̂) = W(S_r)ᵀ [dz; dz⊠τq̂]
                q_hat = features[..., 1:d + 1, :]
                inputs = _vjp_inputs(dz, q_hat, plan.bufs.get('vjp', (m, nb, e * (1 + d), cb)))
                grad_q_hat = plan.select(query_weights, index, nb) @ inputs  # (m, nb, d, cb)
                if need_tau:  # dτ = Σ d(τq̂)·q̂
                    grad_tau[rows] += (grad_q_hat * q_unit).sum((1, 2, 3), keepdim=True)
                if need_q:
                    grad_unit = grad_q_hat if tau is None else grad_q_hat * tau[rows]
                    put(dq_rows, _unit_columns_vjp(q_unit, q_norm, grad_unit), t0, t1)
        if need_q and layout is not None:
            grad_q[rows] = plan.to_rows(dq_rows, rows)
        if not (need_k or need_v):
            continue
        grad_stats.mul_(psi.weight.to(grad_stats.dtype))  # G = dL/d(Σ_j v'_j ψ(k̂_j)ᵀ) = C dS
        key_weights = _vjp_weights(plan, grad_stats) if need_k else None
        dk_rows = padded(grad_k, 'dk', rows) if need_k else None
        dv_rows = padded(grad_v, 'dv', rows) if need_v else None
        for t0, t1, nb, cb in blocks:
            features, k_unit, k_norm = plan.features(plan.tokens(k3, rows, t0, t1, nb, cb), 'psi')
            values = plan.values(v3, rows, t0, t1, nb, cb)
            index = plan.region_index(rows, t0, nb, cb)
            if need_v:  # dv'_j = G_r(j) ψ(k̂_j); dv = w dv'[1:]
                grad_values = plan.select(grad_stats, index, nb) @ features  # (m, nb, e, cb)
                weight = plan.weight(rows, t0, t1, nb, cb)
                put(dv_rows, grad_values[..., 1:, :] if weight is None else grad_values[..., 1:, :] * weight, t0, t1)
            if need_k:  # dk̂ = W(G_r)ᵀ [v'; v'⊠k̂]
                inputs = _vjp_inputs(values, k_unit, plan.bufs.get('vjp', (m, nb, e * (1 + d), cb)))
                grad_k_hat = plan.select(key_weights, index, nb) @ inputs
                put(dk_rows, _unit_columns_vjp(k_unit, k_norm, grad_k_hat), t0, t1)
        if layout is not None:
            if need_k:
                grad_k[rows] = plan.to_rows(dk_rows, rows)
            if need_v:
                grad_v[rows] = plan.to_rows(dv_rows, rows)
    if need_tau:
        grad_tau = grad_tau.view(plan.batch + (1, 1)).sum_to_size(temperature.shape)
    return (None if grad_q is None else grad_q.view(q.shape), None if grad_k is None else grad_k.view(k.shape),
            None if grad_v is None else grad_v.view(v.shape), grad_tau)
