"""TaylorShift's efficient form: blocks of tokens inside a custom autograd Function, linear in N.

    p(q·k) = ψ(q)ᵀ C ψ(k),  S_r = C Σ_{j in r} ψ(k̂_j) [1, v_j]ᵀ,  y'_i = ψ(τ q̂_i)ᵀ S_r(i),  y_i = s y'_i[1:] / y'_i[0]

The Function normalises q and k inside the blocks and recomputes ψ in the backward pass: besides the inputs,
the output and the gradients, only the small statistics S and one block's temporaries are ever held.
With regions, tokens are sorted by region into blocks of one region each (:class:`RegionLayout`), with one S per
region: the cost stays that of unmasked attention, whatever the number of regions.
"""
import math

import torch

from .features import NORM_EPS, feature_map
from .regions import RegionLayout

BLOCK_TOKENS = 384  # (row, token) pairs per block with gradients: bounds the temporaries (block × (e·d + D))
BLOCK_TOKENS_INFERENCE = 4096  # without gradients (only ψ, block × D): fewer, larger ops
CUDA_BLOCK_SCALE = 8  # on CUDA, blocks 8x larger (kernel launches cost more than CPU ops); not tuned on a GPU
MIN_CHUNK = 64  # tokens per block along N, at least (or N): below this the per-op overhead dominates


def tokens_per_block(device, needs_grad):
    """(row, token) pairs per block for a device, with or without gradients (read at call time: tests shrink it)."""
    tokens = BLOCK_TOKENS if needs_grad else BLOCK_TOKENS_INFERENCE
    return tokens * CUDA_BLOCK_SCALE if device.type == 'cuda' else tokens


def choose_chunk(num_tokens, rows_per_batch, granule=None, block_tokens=None):
    """Tokens per block along N. ``granule``: a length every block should divide (regions: the gcd of
    the region sizes), preferred when one of its divisors is close to the target."""
    target = max(MIN_CHUNK, (block_tokens or BLOCK_TOKENS) // max(1, rows_per_batch))
    target = min(num_tokens, target)
    if granule:
        divisors = [c for c in range(1, granule + 1) if granule % c == 0 and target // 2 <= c <= 2 * target]
        if divisors:
            return min(divisors, key=lambda c: abs(c - target))
    return target


def efficient(q, k, v, temperature, regions, scale):
    """The efficient form of :func:`taylor_shift_attention` (inputs already in the compute dtype)."""
    if q.dim() == 2:  # (N, d): give it a batch dimension for the blocks
        return efficient(q[None], k[None], v[None], temperature, regions, scale)[0]
    if q.shape[-2] == 0:  # no tokens: nothing to attend to (as scaled_dot_product_attention)
        return v.new_empty(v.shape)
    num_tokens = q.shape[-2]
    inner_rows = math.prod(q.shape[1:-2])
    inputs = (q, k, v) if temperature is None else (q, k, v, temperature)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    block_tokens = tokens_per_block(q.device, needs_grad)
    if regions is None:
        chunk = choose_chunk(num_tokens, inner_rows, num_tokens, block_tokens)  # equal chunks if N allows
        return TaylorShiftEfficient.apply(q, k, v, temperature, None, None, 1, scale, chunk, block_tokens)
    layout = RegionLayout(regions, q.shape[:-1],
                          lambda granule: choose_chunk(num_tokens, inner_rows, granule, block_tokens))
    q_blocks, k_blocks, v_blocks = (layout.to_blocks(t) for t in (q, k, v))
    out = TaylorShiftEfficient.apply(q_blocks, k_blocks, v_blocks, temperature, layout.key_weight,
                                     layout.chunk_region, layout.num_regions, scale, layout.chunk, block_tokens)
    return layout.from_blocks(out)


def _vjp_inputs(g, x, out):
    """[g; g⊠x] (..., e + e·d, c) for tokens along the last dim: g (..., e, c), x (..., d, c)."""
    width, head_dim = g.shape[-2], x.shape[-2]
    out[..., :width, :] = g
    torch.mul(g[..., :, None, :], x[..., None, :, :], out=out[..., width:, :].unflatten(-2, (width, head_dim)))
    return out


def _unit_columns(x):
    """(x / n, n) with n = max(|x|, eps) over dim -2 (tokens along the last dim); x / n contiguous."""
    norm = torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min_(NORM_EPS)
    return torch.div(x, norm, out=x.new_empty(x.shape)), norm


def _unit_columns_vjp(unit, norm, grad_unit):
    """dL/dx for u = x / |x| given dL/du: (g - u (u·g)) / |x|, over dim -2."""
    return (grad_unit - unit * (unit * grad_unit).sum(-2, keepdim=True)) / norm



def _row_slices(batch_rows, rows_per_block):
    return [slice(r0, min(r0 + rows_per_block, batch_rows)) for r0 in range(0, batch_rows, rows_per_block)]


def _token_chunks(num_tokens, chunk):
    """[(chunk index j, token slice)]."""
    return list(enumerate(slice(t0, min(t0 + chunk, num_tokens)) for t0 in range(0, num_tokens, chunk)))


class _Buffers:
    """Reusable scratch tensors, one per name and shape: fresh large CPU allocations cost page faults."""

    def __init__(self, like):
        self.like = like
        self.cache = {}

    def get(self, name, shape, init=None):
        key = (name, tuple(shape))
        if key not in self.cache:
            self.cache[key] = self.like.new_empty(shape)
            if init is not None:
                init(self.cache[key])
        return self.cache[key]


class TaylorShiftEfficient(torch.autograd.Function):
    """Normalised TaylorShift attention by blocks: y_i = s · y'_i[1:] / y'_i[0], y'_i = ψ(τ q̂_i)ᵀ S_{r(i)},
    S_r = C Σ_{j in r} ψ(k̂_j) [w_j, w_j v_j]ᵀ, where w_j = 1 for a token and 0 for padding.

    Inputs: q, k (B, ..., L, d), v (B, ..., L, dv), temperature (broadcasts to (B, ..., 1, 1)) or None,
    key_weight (broadcasts to (B, ..., L), 0 or 1; v' = [w, w v]) or None, chunk_region (broadcasts to
    (B, ..., L / chunk)) or None, num_regions, scale s, chunk, block_tokens. Work goes slice by slice of
    dim 0 ("rows"), and within a slice chunk by chunk of tokens. Saves only q, k, v (references), the
    output and its denominators y'[0]: the backward pass recomputes S and ψ, so the extra memory is one
    row slice's S and one block's temporaries.
    """

    @staticmethod
    def rows_per_block(shape, chunk, block_tokens):
        """Slices of dim 0 such that a block (rows × chunk tokens) has about block_tokens tokens."""
        return max(1, block_tokens // (chunk * max(1, math.prod(shape[1:-2]))))

    @staticmethod
    def forward(ctx, q, k, v, temperature, key_weight, chunk_region, num_regions, scale, chunk, block_tokens):
        batch, (num_tokens, head_dim) = q.shape[:-2], q.shape[-2:]
        rows_per_block = TaylorShiftEfficient.rows_per_block(q.shape, chunk, block_tokens)
        psi, bufs = feature_map(head_dim, q.device), _Buffers(q)
        tau = None if temperature is None else temperature.expand(batch + (1, 1))
        out = v.new_empty(v.shape)
        denominator = v.new_empty(batch + (num_tokens, ))
        chunks = _token_chunks(num_tokens, chunk)
        for rows in _row_slices(batch[0], rows_per_block):
            stats = _key_statistics(k, v, key_weight, chunk_region, num_regions, rows, chunks, psi, bufs)
            for j, tokens in chunks:  # y'_i = ψ(τ q̂_i)ᵀ S_r(i)
                features = psi.of_tokens(q[rows, ..., tokens, :], bufs, None if tau is None else tau[rows])
                y_ext = features.transpose(-2, -1) @ _region_entry(stats, chunk_region, rows, j)  # (m, ..., c, e)
                denominator[rows, ..., tokens] = y_ext[..., 0]
                torch.mul(y_ext[..., 1:], scale / y_ext[..., :1], out=out[rows, ..., tokens, :])  # s y'[1:] / y'[0]
        ctx.save_for_backward(q, k, v, temperature, key_weight, chunk_region, out, denominator)
        ctx.config = (num_regions, scale, chunk, rows_per_block)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, temperature, key_weight, chunk_region, out, denominator = ctx.saved_tensors
        num_regions, scale, chunk, rows_per_block = ctx.config
        batch, (num_tokens, head_dim), width = q.shape[:-2], q.shape[-2:], v.shape[-1] + 1
        psi, bufs = feature_map(head_dim, q.device), _Buffers(q)
        need_q, need_k, need_v, need_tau = ctx.needs_input_grad[:4]
        tau = None if temperature is None else temperature.expand(batch + (1, 1))
        grad_q = torch.empty_like(q) if need_q else None
        grad_k = torch.empty_like(k) if need_k else None
        grad_v = torch.empty_like(v) if need_v else None
        grad_tau = q.new_zeros(batch + (1, 1)) if need_tau else None
        chunks = _token_chunks(num_tokens, chunk)
        for rows in _row_slices(batch[0], rows_per_block):
            stats = _key_statistics(k, v, key_weight, chunk_region, num_regions, rows, chunks, psi, bufs)
            query_weights = _VjpWeights(psi, stats, chunk_region, rows)
            grad_stats = torch.zeros_like(stats)
            for j, tokens in chunks:
                g, y = grad_out[rows, ..., tokens, :], out[rows, ..., tokens, :]
                inv_den = 1 / denominator[rows, ..., tokens, None]
                grad_y_ext = bufs.get('dz', g.shape[:-1] + (width, ))  # dL/dy' = [-(g·y)/y'_0, s g / y'_0]
                torch.mul((g * y).sum(-1, keepdim=True), -inv_den, out=grad_y_ext[..., :1])
                torch.mul(g, scale * inv_den, out=grad_y_ext[..., 1:])
                q_unit, q_norm = _unit_columns(q[rows, ..., tokens, :].transpose(-2, -1))  # q̂ (m, ..., d, c)
                q_hat = q_unit if tau is None else q_unit * tau[rows]
                features = psi(q_hat, bufs.get('psi', q_hat.shape[:-2] + (psi.width, q_hat.shape[-1])))
                # dS_r += Σ_i ψ(q̂_i) dz_iᵀ
                _add_to_region(grad_stats, features @ grad_y_ext, chunk_region, rows, j)
                if need_q or need_tau:  # dq̂ = W(S_r)ᵀ [dz; dz⊠q̂]
                    vjp_shape = q_hat.shape[:-2] + (width * (1 + head_dim), q_hat.shape[-1])
                    inputs = _vjp_inputs(grad_y_ext.transpose(-2, -1), q_hat, bufs.get('vjp', vjp_shape))
                    grad_q_hat = query_weights(j) @ inputs  # (m, ..., d, c)
                    if need_tau:  # dτ = Σ dq̂·q̂/τ
                        grad_tau[rows] += (grad_q_hat * q_unit).sum((-2, -1), keepdim=True)
                    if need_q:
                        grad_unit = grad_q_hat if tau is None else grad_q_hat * tau[rows]
                        grad_q[rows, ..., tokens, :] = _unit_columns_vjp(q_unit, q_norm, grad_unit).transpose(-2, -1)
            if not (need_k or need_v):
                continue
            psi.apply_weight(grad_stats)  # G = dL/d(Σ_j ψ(k̂_j) v'_jᵀ) = C dS
            key_weights = _VjpWeights(psi, grad_stats, chunk_region, rows)
            for j, tokens in chunks:
                k_unit, k_norm = _unit_columns(k[rows, ..., tokens, :].transpose(-2, -1))
                values = _weighted_values(v[rows, ..., tokens, :], key_weight, rows, tokens, bufs)
                if need_v:  # dv'_j = ψ(k̂_j)ᵀ G_r(j)
                    features = psi(k_unit, bufs.get('psi', k_unit.shape[:-2] + (psi.width, k_unit.shape[-1])))
                    region_grad = _region_entry(grad_stats, chunk_region, rows, j)
                    grad_v_ext = features.transpose(-2, -1) @ region_grad
                    if key_weight is None:
                        grad_v[rows, ..., tokens, :] = grad_v_ext[..., 1:]
                    else:  # v' = [w, w v]: dv = w dv'[1:], 0 in the padding
                        weight = _key_weight(key_weight, rows, tokens)[..., None]
                        torch.mul(grad_v_ext[..., 1:], weight, out=grad_v[rows, ..., tokens, :])
                if need_k:  # dk̂ = W(G_r)ᵀ [v'; v'⊠k̂]
                    vjp_shape = k_unit.shape[:-2] + (width * (1 + head_dim), k_unit.shape[-1])
                    inputs = _vjp_inputs(values.transpose(-2, -1), k_unit, bufs.get('vjp', vjp_shape))
                    grad_k_hat = key_weights(j) @ inputs
                    grad_k[rows, ..., tokens, :] = _unit_columns_vjp(k_unit, k_norm, grad_k_hat).transpose(-2, -1)
        if need_tau:
            grad_tau = grad_tau.sum_to_size(temperature.shape)
        return grad_q, grad_k, grad_v, grad_tau, None, None, None, None, None, None


def _key_statistics(k, v, key_weight, chunk_region, num_regions, rows, chunks, psi, bufs):
    """S_r = C Σ_{j in r} ψ(k̂_j) v'_jᵀ for one row slice: (m, ..., R, width, 1 + dv)."""
    stats = k.new_zeros(k[rows].shape[:-2] + (num_regions, psi.width, v.shape[-1] + 1))
    for j, tokens in chunks:
        features = psi.of_tokens(k[rows, ..., tokens, :], bufs)  # ψ(k̂) (m, ..., width, c)
        values = _weighted_values(v[rows, ..., tokens, :], key_weight, rows, tokens, bufs)
        _add_to_region(stats, features @ values, chunk_region, rows, j)
    return psi.apply_weight(stats)


class _VjpWeights:
    """W(S_r)ᵀ for chunk j's region: computed once per row slice without regions, per chunk with them."""

    def __init__(self, psi, stats, chunk_region, rows):
        self.psi, self.stats, self.chunk_region, self.rows = psi, stats, chunk_region, rows
        self.shared = psi.vjp_weights(stats[..., 0, :, :]).transpose(-2, -1) if chunk_region is None else None

    def __call__(self, j):
        if self.shared is not None:
            return self.shared
        region_stats = _region_entry(self.stats, self.chunk_region, self.rows, j)
        return self.psi.vjp_weights(region_stats).transpose(-2, -1)


def _weighted_values(v_rows, key_weight, rows, tokens, bufs):
    """v' = [w, v]: column 0 counts the keys (the denominator), 0 for padding."""
    values = bufs.get('values', v_rows.shape[:-1] + (v_rows.shape[-1] + 1, ), init=lambda b: b[..., 0].fill_(1))
    if key_weight is None:
        values[..., 1:] = v_rows
    else:
        weight = _key_weight(key_weight, rows, tokens)
        values[..., 0] = weight
        torch.mul(v_rows, weight[..., None], out=values[..., 1:])  # w v: padding slots hold a copy of token 0
    return values


def _key_weight(key_weight, rows, tokens):
    return key_weight[rows if key_weight.shape[0] > 1 else slice(None), ..., tokens]


def _chunk_region_index(chunk_region, rows, j, like):
    """The region index of chunk j for every row of the block, shaped (m, ..., 1, a, b) for ``like``."""
    index = chunk_region[rows if chunk_region.shape[0] > 1 else slice(None), ..., j]
    return index.expand(like.shape[:-3])[..., None, None, None].expand(like.shape[:-3] + (1, ) + like.shape[-2:])


def _add_to_region(stats, part, chunk_region, rows, j):
    """S_r(chunk j) += part, for every row of the block."""
    if chunk_region is None:
        stats[..., 0, :, :] += part
    else:
        stats.scatter_add_(-3, _chunk_region_index(chunk_region, rows, j, stats), part[..., None, :, :])


def _region_entry(per_region, chunk_region, rows, j):
    """The (..., R, a, b) entry of chunk j's region for every row of the block: (m, ..., a, b)."""
    if chunk_region is None:
        return per_region[..., 0, :, :]
    return per_region.gather(-3, _chunk_region_index(chunk_region, rows, j, per_region))[..., 0, :, :]
