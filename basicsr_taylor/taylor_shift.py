"""TaylorShift attention (arXiv 2403.02920): softmax's exp replaced by its 2nd-order Taylor polynomial.

    x_ij = τ · cos(q_i, k_j),   p(x) = 1 + x + x²/2 (>= 1/2),   y_i = Σ_j p(x_ij) v_j / Σ_j p(x_ij)

Exact forms that compute it (all agree to rounding error):

- ``direct``: builds the N×N weights; O(N²d) time, O(N²) memory.
- ``efficient``: p(q·k) = ψ(q)ᵀ C ψ(k) with the monomials ψ(x) = [1, x, x_a x_b (a <= b)] (the upper
  triangle of the row-wise outer product x⊠x: about d(d+1)/2 quadratic features instead of d², see
  :class:`MonomialFeatures`) and the diagonal weights C (½ on the squares x_a², 1 elsewhere).
  With V' = [1, V]:  S = C Σ_j ψ(k_j) v'_jᵀ  (D × (1+dv)),
  y'_i = ψ(q_i)ᵀ S and y_i = y'_i[1:] / y'_i[0]. O(N d³) time, linear in N. A custom autograd Function
  runs it in blocks of tokens, normalises q and k inside the blocks and recomputes ψ in the backward
  pass: besides the inputs, the output and the gradients, only the small statistics S and one block's
  temporaries are ever held.
- ``triton``: the efficient form's forward as fused Triton kernels (``taylor_shift_triton``), for CUDA.

Regions (the exact replacement of SwinIR's -100 mask, which a polynomial ignores: p(-100) = 4901): a query
attends only to keys with its own region id. The efficient form sorts each row's tokens by region into
blocks that each hold one region only (padding each region to whole blocks), and keeps one S per region:
the cost stays that of unmasked attention, whatever the number of regions.
"""
import math
from functools import lru_cache

import torch
import torch.nn.functional as F

FORMS = ('auto', 'direct', 'efficient', 'triton')
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_NORM_EPS = 1e-12  # as F.normalize: q̂ = q / max(|q|, eps)


def crossover_tokens(head_dim):
    """N0 = d² + d + 1: the token count above which the efficient form needs fewer FLOPs than the direct."""
    return head_dim * head_dim + head_dim + 1


def taylor_feature_dim(head_dim):
    """D = 1 + d + d(d+1)/2: width of the feature map."""
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
        form: "direct", "efficient", "triton" (CUDA, or CPU under TRITON_INTERPRET=1) or "auto" (direct
            below N0 = d² + d + 1 tokens, efficient from N0 on).
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
    scale = math.sqrt(num_tokens / head_dim) if output_norm else 1.0  # y · sqrt(N/d)

    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
        if temperature is not None:
            temperature = temperature.to(compute_dtype)
        if form == 'direct':
            out = _direct(q, k, v, temperature, regions, scale)
        elif form == 'efficient':
            out = _efficient(q, k, v, temperature, regions, scale)
        else:
            from .taylor_shift_triton import taylor_shift_triton
            out = taylor_shift_triton(q, k, v, temperature, regions, scale)
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


def _direct(q, k, v, temperature, regions, scale):
    q = F.normalize(q, dim=-1)  # q̂ = q / |q|
    k = F.normalize(k, dim=-1)  # k̂ = k / |k|
    if temperature is not None:
        q = q * temperature  # x_ij = τ q̂_i·k̂_j
    x = q @ k.transpose(-2, -1)  # x_ij = τ cos(q_i, k_j)
    in_place = not (torch.is_grad_enabled() and x.requires_grad)  # no graph to keep: reuse the N×N buffer
    # w = 2 p(x) = (x + 1)² + 1; the factor 2 cancels in the ratio below
    weights = x.add_(1).square_().add_(1) if in_place else (x + 1).square() + 1
    if regions is not None:
        same = regions[..., :, None] == regions[..., None, :]  # only same-region keys
        weights = weights.mul_(same) if in_place else weights * same
    return (weights @ v) * (scale / weights.sum(-1, keepdim=True))  # y_i = s Σ_j w_ij v_j / Σ_j w_ij


# ----------------------------------------------------------------------------------------------------------
# Feature maps
# ----------------------------------------------------------------------------------------------------------


def taylor_features(x):
    """Φ(x) = [1, x, c_ab x_a x_b (a <= b)] with c_aa = 1/√2, c_ab = 1, so that Φ(q)·Φ(k) = p(q·k).

    The textbook symmetric feature map, D = taylor_feature_dim(d) wide (the ONNX export path; the efficient form
    uses :class:`MonomialFeatures`).  (..., d) -> (..., D)
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

    def of_tokens(self, x_rows, bufs, tau=None):
        """ψ(τ x / |x|) for a chunk of token rows x_rows (..., c, d) -> (..., width, c), in a reused buffer."""
        x = x_rows.transpose(-2, -1)  # (..., d, c)
        features = bufs.get('psi', x.shape[:-2] + (self.width, x.shape[-1]), init=lambda b: b[..., 0, :].fill_(1))
        norm = torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min_(_NORM_EPS)  # |x| (eps as F.normalize)
        factor = norm.reciprocal_() if tau is None else tau / norm
        torch.mul(x, factor, out=features[..., 1:self.head_dim + 1, :])  # τ x / |x|
        return self.fill_quadratic(features)

    def apply_weight(self, stats):
        """C S, in place: S (..., width, e)."""
        return stats.mul_(self.weight.to(stats.dtype)[:, None])

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


def is_tracing():
    """True while torch.compile or torch.export traces: tensors made then are fake and must not be cached."""
    compiler = getattr(torch, 'compiler', None)
    return any(getattr(compiler, name, lambda: False)() for name in ('is_compiling', 'is_exporting'))


def _feature_map(head_dim, device):
    return MonomialFeatures(head_dim, device) if is_tracing() else _cached_feature_map(head_dim, device)


_cached_feature_map = lru_cache(maxsize=32)(MonomialFeatures)


def _vjp_inputs(g, x, out):
    """[g; g⊠x] (..., e + e·d, c) for tokens along the last dim: g (..., e, c), x (..., d, c)."""
    width, head_dim = g.shape[-2], x.shape[-2]
    out[..., :width, :] = g
    torch.mul(g[..., :, None, :], x[..., None, :, :], out=out[..., width:, :].unflatten(-2, (width, head_dim)))
    return out


def _unit_columns(x):
    """(x / n, n) with n = max(|x|, eps) over dim -2 (tokens along the last dim); x / n contiguous."""
    norm = torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min_(_NORM_EPS)
    return torch.div(x, norm, out=x.new_empty(x.shape)), norm


def _unit_columns_vjp(unit, norm, grad_unit):
    """dL/dx for u = x / |x| given dL/du: (g - u (u·g)) / |x|, over dim -2."""
    return (grad_unit - unit * (unit * grad_unit).sum(-2, keepdim=True)) / norm


# ----------------------------------------------------------------------------------------------------------
# Efficient form
# ----------------------------------------------------------------------------------------------------------

_BLOCK_TOKENS = 384  # (row, token) pairs per block with gradients: bounds the temporaries (block × (e·d + D))
_BLOCK_TOKENS_INFERENCE = 4096  # without gradients (only ψ, block × D): fewer, larger ops
_CUDA_BLOCK_SCALE = 8  # on CUDA, blocks 8x larger (kernel launches cost more than CPU ops); not tuned on a GPU
_MIN_CHUNK = 64  # tokens per block along N, at least (or N): below this the per-op overhead dominates


def choose_chunk(num_tokens, rows_per_batch, granule=None, block_tokens=None):
    """Tokens per block along N. ``granule``: a length every block should divide (regions: the gcd of
    the region sizes), preferred when one of its divisors is close to the target."""
    target = max(_MIN_CHUNK, (block_tokens or _BLOCK_TOKENS) // max(1, rows_per_batch))
    target = min(num_tokens, target)
    if granule:
        divisors = [c for c in range(1, granule + 1) if granule % c == 0 and target // 2 <= c <= 2 * target]
        if divisors:
            return min(divisors, key=lambda c: abs(c - target))
    return target


def _efficient(q, k, v, temperature, regions, scale):
    if q.dim() == 2:  # (N, d): give it a batch dimension for the blocks
        out = _efficient(q[None], k[None], v[None], temperature, regions, scale)
        return out[0]
    num_tokens = q.shape[-2]
    inner_rows = math.prod(q.shape[1:-2])
    inputs = (q, k, v) if temperature is None else (q, k, v, temperature)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    block_tokens = _BLOCK_TOKENS if needs_grad else _BLOCK_TOKENS_INFERENCE
    if q.device.type == 'cuda':
        block_tokens *= _CUDA_BLOCK_SCALE
    if regions is None:
        chunk = choose_chunk(num_tokens, inner_rows, num_tokens, block_tokens)  # equal chunks if N allows
        return TaylorShiftEfficient.apply(q, k, v, temperature, None, None, 1, scale, chunk, block_tokens)
    layout = RegionLayout(regions, q.shape[:-1],
                          lambda granule: choose_chunk(num_tokens, inner_rows, granule, block_tokens))
    q_blocks, k_blocks, v_blocks = (layout.to_blocks(t) for t in (q, k, v))
    out = TaylorShiftEfficient.apply(q_blocks, k_blocks, v_blocks, temperature, layout.key_weight,
                                     layout.chunk_region, layout.num_regions, scale, layout.chunk, block_tokens)
    return layout.from_blocks(out)


class RegionLayout:
    """Tokens of every row sorted by region id and each region padded to whole chunks.

    Attributes: chunk (tokens per chunk), length (padded row length, a multiple of chunk), slot (..., N)
    (position of every token in the padded row), source (..., length) (the token in every slot; 0 in the
    padding), key_weight (..., length) (1 for tokens, 0 for padding), chunk_region (..., length / chunk)
    (the region index 0..R-1 of each chunk), num_regions (R, the largest number of distinct ids in a row).
    Leading dims are those of ``regions`` (broadcast against the batch).
    """

    def __init__(self, regions, token_shape, choose):
        num_tokens = token_shape[-1]
        regions = regions.reshape((1, ) * (len(token_shape) - regions.dim()) + tuple(regions.shape))
        regions = regions.expand(regions.shape[:-1] + (num_tokens, ))
        lead = regions.shape[:-1]
        ids, order = torch.sort(regions.reshape(-1, num_tokens), dim=-1, stable=True)
        new_region = torch.ones_like(ids, dtype=torch.bool)
        new_region[:, 1:] = ids[:, 1:] != ids[:, :-1]
        region = new_region.long().cumsum(-1) - 1  # region index of every sorted token, 0..R_row-1
        self.num_regions = int(region.max()) + 1
        sizes = torch.zeros(ids.shape[0], self.num_regions, dtype=torch.long, device=ids.device)
        sizes.scatter_add_(1, region, torch.ones_like(region))  # tokens per region
        granule = math.gcd(*sizes[sizes > 0].unique().tolist())
        self.chunk = chunk = choose(granule)
        padded = (sizes + chunk - 1) // chunk * chunk  # each region padded to whole chunks
        start = padded.cumsum(-1) - padded  # first slot of each region in the padded row
        first = sizes.cumsum(-1) - sizes  # first sorted position of each region
        position = torch.arange(num_tokens, device=ids.device) - first.gather(1, region)  # rank inside region
        self.length = length = int(padded.sum(-1).max())
        slot = torch.empty_like(order).scatter_(1, order, start.gather(1, region) + position)
        chunk_start = torch.arange(0, length, chunk, device=ids.device).expand(ids.shape[0], -1)
        chunk_region = torch.searchsorted(start + padded, chunk_start.contiguous(), right=True)
        regions_in_row = region[:, -1:] + 1
        chunk_region[chunk_region >= regions_in_row] = 0  # padding after a row's end: any non-empty region
        self.chunk_region = chunk_region.reshape(lead + (-1, ))
        key_weight = torch.zeros(ids.shape[0], length, device=ids.device)
        self.key_weight = key_weight.scatter_(1, slot, 1.0).reshape(lead + (length, ))
        source = torch.zeros(ids.shape[0], length, dtype=torch.long, device=ids.device)
        source.scatter_(1, slot, torch.arange(num_tokens, device=ids.device).expand(ids.shape[0], -1))
        self.source = source.reshape(lead + (length, ))
        self.slot = slot.reshape(lead + (num_tokens, ))
        self.shared_inside_rows = all(size == 1 for size in lead[1:])  # one layout per index of dim 0

    def _take(self, t, index):
        """Rows t[..., index[..., i], :] for every i: (..., n, f) -> (..., len(index), f)."""
        batch, width = t.shape[:-2], t.shape[-1]
        if self.shared_inside_rows and len(batch) >= 1:
            # one index per dim-0 entry: a single index_select over (dim 0 × tokens) rows, the fastest copy
            index = index.reshape(index.shape[0], -1).expand(batch[0], -1)
            offsets = torch.arange(batch[0], device=t.device)[:, None] * t.shape[-2]
            rows = t.movedim(-2, 1).reshape((batch[0] * t.shape[-2], ) + batch[1:] + (width, ))
            taken = rows.index_select(0, (index + offsets).flatten())
            return taken.view((batch[0], index.shape[-1]) + batch[1:] + (width, )).movedim(1, -2)
        index = index.expand(batch + index.shape[-1:])
        return t.gather(-2, index[..., None].expand(index.shape + (width, )))

    def to_blocks(self, t):
        """(..., N, f) -> (..., length, f); padding slots repeat token 0 (their key weight is 0)."""
        return self._take(t, self.source)

    def from_blocks(self, t):
        """(..., length, f) -> (..., N, f)."""
        return self._take(t, self.slot)


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
        psi, bufs = _feature_map(head_dim, q.device), _Buffers(q)
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
        psi, bufs = _feature_map(head_dim, q.device), _Buffers(q)
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
