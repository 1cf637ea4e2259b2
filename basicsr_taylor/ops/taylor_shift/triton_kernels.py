"""TaylorShift's efficient form as fused Triton kernels, forward and backward.

Per row (a batch × head entry) and region r, with x̂ = x / max(|x|, eps), q = τ q̂ and v' = [1, v]:

    statistics   S0 = Σ_j v'_j,  S1 = Σ_j k̂_j v'_jᵀ,  S2[a] = Σ_j k̂_ja k̂_j v'_jᵀ  (j in r, E = 1 + dv)
    apply        y'_i = S0 + q_iᵀ S1 + ½ Σ_a q_ia q_iᵀ S2[a]  (= Σ_j p(q_i·k̂_j) v'_j)
    output       y_i = s y'_i[1:] / y'_i[0]
    gradient     G(x, S, u) = S1 u + Σ_a x_a S2[a] u          (= Σ_j p'(x·k̂_j) (u·v'_j) k̂_j, p' = 1 + x)

The backward pass is the same two kernels with the roles swapped (dz = dL/dy'):

    dq_i  = G(q_i, S, dz_i)                  keys' statistics S (recomputed), then the chain rule of τ q̂
    T     = statistics of the queries with dz in place of v' (T2 raw: the ½ is in "apply")
    dv'_j = apply(k̂_j, T),   dk̂_j = G(k̂_j, T, v'_j)

So there are two kernels: ``_stats_kernel`` (one program per (row, region, a), a = 0..d: row a of S2, and S1, S0
for a = d, reduced over the region's tokens in one program: no atomics) and ``_token_kernel`` (one program per
(row, block of BLOCK_N slots), in three modes: forward output, dq, dk + dv). Features (x̂_a x̂) are built in
registers and never written to memory; q, k, v and the gradients are read in their own dtype (float32, float16,
bfloat16) through (batch, inner, token) strides (permuted views of one qkv tensor are read in place), and every sum
is accumulated in float32; S and T are float32 (rows × regions × (d + 2) × DP × EP, padded tiles).

Regions (LAYOUT 1) come as chunks: the N tokens of a window in C chunks of c tokens, each inside one region (the
network's chunk-major windows). The chunks of each window are visited sorted by region (``order``: a chunk
permutation), so region r is the slot range ``seg[r]`` of that order, slot s being token order[s // c]·c + s % c;
no token is copied. Token blocks (``blocks``: region, first and stop slot) never straddle two regions.
LAYOUT 2 adds ``source``: slot token -> input token or -1 (padding), for ids sorted into padded rows. LAYOUT 0: no
regions, slot = token. Runs on CUDA, and on the CPU under TRITON_INTERPRET=1 (slow; tests only). Not tuned on a
GPU.
"""

import triton
import triton.language as tl


BLOCK_N = 32  # tokens per program of _token_kernel (tl.dot needs >= 16)
STATS_BLOCK = 64  # tokens per loop step of _stats_kernel

KEYS, QUERIES = 0, 1  # _stats_kernel: values v' = [1, v] of the keys, or dz of the queries
FORWARD, GRAD_Q, GRAD_KV = 0, 1, 2  # _token_kernel modes
NO_REGIONS, CHUNKS, SORTED = 0, 1, 2  # LAYOUT: no regions; chunks sorted by region; plus a slot -> token source


@triton.jit
def _tokens(order_ptr, source_ptr, window, slots, stop, chunk, num_chunks, length, LAYOUT: tl.constexpr):
    """Token index of every slot < stop (and whether it holds a token): token = order[s // c]·c + s % c
    (LAYOUT 1), then source[token] (LAYOUT 2, -1: padding); slot = token without regions."""
    valid = slots < stop
    if LAYOUT == 0:
        tok = slots
    else:
        position = slots // chunk
        first = tl.load(order_ptr + window.to(tl.int64) * num_chunks + position, mask=valid, other=0)
        tok = first * chunk + (slots - position * chunk)
        if LAYOUT == 2:
            tok = tl.load(source_ptr + window.to(tl.int64) * length + tok, mask=valid, other=-1)
            valid = tok >= 0
    return tl.where(valid, tok, 0), valid


@triton.jit
def _row_base(row, inner, stride_batch, stride_inner):
    """Offset of row = b·inner + i in a (B, inner, N, f) tensor with those strides."""
    return (row // inner).to(tl.int64) * stride_batch + (row % inner).to(tl.int64) * stride_inner


@triton.jit
def _load_rows(ptr, stride_tok, tok, valid, cols, first_col, num_cols):
    """Rows ptr[tok, cols - first_col] as float32, 0 outside 0 <= cols - first_col < num_cols."""
    c = cols - first_col
    mask = valid[:, None] & (c[None, :] >= 0) & (c[None, :] < num_cols)
    return tl.load(ptr + tok.to(tl.int64)[:, None] * stride_tok + c[None, :], mask=mask, other=0.).to(tl.float32)


@triton.jit
def _store_rows(ptr, value, stride_tok, tok, valid, cols, first_col, num_cols):
    c = cols - first_col
    mask = valid[:, None] & (c[None, :] >= 0) & (c[None, :] < num_cols)
    tl.store(ptr + tok.to(tl.int64)[:, None] * stride_tok + c[None, :], value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _unit(x, EPS: tl.constexpr):
    """(x̂, n, |x| > eps) with x̂ = x / n, n = max(|x|, eps) (as F.normalize)."""
    length = tl.sqrt(tl.sum(x * x, axis=1))
    norm = tl.maximum(length, EPS)
    return x / norm[:, None], norm, length > EPS


@triton.jit
def _unit_vjp(unit, norm, unclamped, grad_unit):
    """dL/dx for x̂ = x / max(|x|, eps): (g - x̂ (x̂·g)) / |x|, or g / eps where the norm is clamped."""
    proj = tl.where(unclamped, tl.sum(unit * grad_unit, axis=1), 0.)
    return (grad_unit - unit * proj[:, None]) / norm[:, None]


@triton.jit
def _values(v_ptr, stride_tok, tok, valid, cols, value_dim):
    """v' = [1, v] (0 for padding slots)."""
    v = _load_rows(v_ptr, stride_tok, tok, valid, cols, 1, value_dim)
    return tl.where((cols[None, :] == 0) & valid[:, None], 1., v)


@triton.jit
def _grad_ext(g_ptr, stride_g_tok, o_ptr, stride_o_tok, den_ptr, tok, valid, cols, value_dim, scale):
    """dz = dL/dy' = [-(g·y) / y'_0, s g / y'_0] for y = s y'[1:] / y'_0 (0 for padding slots)."""
    g = _load_rows(g_ptr, stride_g_tok, tok, valid, cols, 1, value_dim)
    y = _load_rows(o_ptr, stride_o_tok, tok, valid, cols, 1, value_dim)
    den = tl.load(den_ptr + tok, mask=valid, other=1.)
    gy = tl.sum(g * y, axis=1)
    return tl.where(cols[None, :] == 0, (-gy / den)[:, None], g * (scale / den)[:, None])


@triton.jit
def _stats_kernel(x_ptr, tau_ptr, v_ptr, g_ptr, o_ptr, den_ptr, order_ptr, source_ptr, seg_ptr, stats_ptr,
                  num_tokens, inner, num_regions, num_windows, rows_per_window, chunk, num_chunks, length, head_dim,
                  value_dim, scale, stride_x_b, stride_x_i, stride_x_tok, stride_v_b, stride_v_i, stride_v_tok,
                  stride_g_b, stride_g_i, stride_g_tok, stride_o_b, stride_o_i, stride_o_tok, MODE: tl.constexpr,
                  LAYOUT: tl.constexpr, HAS_TAU: tl.constexpr, BLOCK: tl.constexpr, DP: tl.constexpr,
                  EP: tl.constexpr, PRECISION: tl.constexpr, EPS: tl.constexpr):
    pid = tl.program_id(0)  # row · R + region
    a = tl.program_id(1)  # 0..d-1: S2[a]; d: S1 and S0
    row = pid // num_regions
    window = (row // rows_per_window) % num_windows
    if LAYOUT == 0:
        start = 0
        stop = num_tokens
    else:  # the region's slots in the window's region-sorted chunk order
        seg = seg_ptr + (window.to(tl.int64) * num_regions + pid % num_regions) * 2
        start = tl.load(seg)
        stop = tl.load(seg + 1)
    x_ptr += _row_base(row, inner, stride_x_b, stride_x_i)
    v_ptr += _row_base(row, inner, stride_v_b, stride_v_i)
    g_ptr += _row_base(row, inner, stride_g_b, stride_g_i)
    o_ptr += _row_base(row, inner, stride_o_b, stride_o_i)
    den_ptr += row.to(tl.int64) * num_tokens
    dims = tl.arange(0, DP)
    cols = tl.arange(0, EP)
    acc = tl.zeros((DP, EP), dtype=tl.float32)
    acc0 = tl.zeros((EP, ), dtype=tl.float32)
    tau = 1.
    if HAS_TAU:
        tau = tl.load(tau_ptr + row)
    for s0 in range(start, stop, BLOCK):
        tok, valid = _tokens(order_ptr, source_ptr, window, s0 + tl.arange(0, BLOCK), stop, chunk, num_chunks, length,
                             LAYOUT)
        x, _, _ = _unit(_load_rows(x_ptr, stride_x_tok, tok, valid, dims, 0, head_dim), EPS)
        x = x * tau  # τ x̂
        if MODE == 0:  # KEYS
            vals = _values(v_ptr, stride_v_tok, tok, valid, cols, value_dim)
        else:
            vals = _grad_ext(g_ptr, stride_g_tok, o_ptr, stride_o_tok, den_ptr, tok, valid, cols, value_dim, scale)
        if a < head_dim:
            lhs = x * tl.sum(tl.where(dims[None, :] == a, x, 0.), axis=1)[:, None]  # x_a x (in registers)
        else:
            lhs = x
            acc0 += tl.sum(vals, axis=0)  # S0 += v'
        acc += tl.dot(tl.trans(lhs), vals, input_precision=PRECISION)  # S2[a] += x_a x v'ᵀ  (S1 += x v'ᵀ)
    tile = dims[:, None] * EP + cols[None, :]
    base = stats_ptr + (pid.to(tl.int64) * (head_dim + 2) + a) * (DP * EP)
    filled = stop > start  # an empty region (its slot of the layout unused): nothing to write
    tl.store(base + tile, acc, mask=filled)
    if a == head_dim:
        tl.store(base + DP * EP + cols, acc0, mask=filled)


@triton.jit
def _token_kernel(x_ptr, tau_ptr, v_ptr, g_ptr, o_ptr, den_ptr, order_ptr, source_ptr, blocks_ptr, stats_ptr,
                  out_ptr, out2_ptr, dtau_ptr, num_tokens, inner, num_regions, num_windows, rows_per_window, chunk,
                  num_chunks, length, head_dim, value_dim, scale, stride_x_b, stride_x_i, stride_x_tok, stride_v_b,
                  stride_v_i, stride_v_tok, stride_g_b, stride_g_i, stride_g_tok, stride_o_b, stride_o_i,
                  stride_o_tok, stride_out_b, stride_out_i, stride_out_tok, stride_out2_b, stride_out2_i,
                  stride_out2_tok, MODE: tl.constexpr, LAYOUT: tl.constexpr, HAS_TAU: tl.constexpr,
                  BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, PRECISION: tl.constexpr,
                  EPS: tl.constexpr):
    row = tl.program_id(0)
    block = tl.program_id(1)
    num_blocks = tl.num_programs(1)
    window = (row // rows_per_window) % num_windows
    dims = tl.arange(0, DP)
    cols = tl.arange(0, EP)
    if LAYOUT == 0:
        region = 0
        start = block * BLOCK
        stop = num_tokens
    else:  # (region, first slot, stop slot) of this block: one region per block
        info = blocks_ptr + (window.to(tl.int64) * num_blocks + block) * 3
        region = tl.load(info)
        start = tl.load(info + 1)
        stop = tl.load(info + 2)
    tok, valid = _tokens(order_ptr, source_ptr, window, start + tl.arange(0, BLOCK), stop, chunk, num_chunks, length,
                         LAYOUT)
    x_ptr += _row_base(row, inner, stride_x_b, stride_x_i)
    v_ptr += _row_base(row, inner, stride_v_b, stride_v_i)
    g_ptr += _row_base(row, inner, stride_g_b, stride_g_i)
    o_ptr += _row_base(row, inner, stride_o_b, stride_o_i)
    out_ptr += _row_base(row, inner, stride_out_b, stride_out_i)
    out2_ptr += _row_base(row, inner, stride_out2_b, stride_out2_i)
    den_ptr += row.to(tl.int64) * num_tokens
    unit, norm, unclamped = _unit(_load_rows(x_ptr, stride_x_tok, tok, valid, dims, 0, head_dim), EPS)
    tau = 1.
    if HAS_TAU:
        tau = tl.load(tau_ptr + row)
    x = unit * tau  # τ x̂
    tile = dims[:, None] * EP + cols[None, :]
    base = stats_ptr + (row.to(tl.int64) * num_regions + region) * (head_dim + 2) * (DP * EP)
    s1 = tl.load(base + head_dim * (DP * EP) + tile)
    s0 = tl.load(base + (head_dim + 1) * (DP * EP) + cols)
    y = tl.zeros((BLOCK, EP), dtype=tl.float32)
    grad = tl.zeros((BLOCK, DP), dtype=tl.float32)
    u = tl.zeros((BLOCK, EP), dtype=tl.float32)
    if MODE == 1:  # GRAD_Q: u = dz
        u = _grad_ext(g_ptr, stride_g_tok, o_ptr, stride_o_tok, den_ptr, tok, valid, cols, value_dim, scale)
    if MODE == 2:  # GRAD_KV: u = v'
        u = _values(v_ptr, stride_v_tok, tok, valid, cols, value_dim)
    if MODE != 1:
        y = s0[None, :] + tl.dot(x, s1, input_precision=PRECISION)  # y' = S0 + x S1
    if MODE != 0:
        grad = tl.dot(u, tl.trans(s1), input_precision=PRECISION)  # G = S1 u
    for a in range(0, head_dim):
        x_a = tl.sum(tl.where(dims[None, :] == a, x, 0.), axis=1)  # x[:, a]
        s2 = tl.load(base + a * (DP * EP) + tile)
        if MODE != 1:
            y += 0.5 * tl.dot(x * x_a[:, None], s2, input_precision=PRECISION)  # y' += ½ x_a x S2[a]
        if MODE != 0:
            grad += x_a[:, None] * tl.dot(u, tl.trans(s2), input_precision=PRECISION)  # G += x_a S2[a] u
    if MODE == 0:  # out = s y'[1:] / y'_0, and y'_0 for the backward pass
        den = tl.sum(tl.where(cols[None, :] == 0, y, 0.), axis=1)
        tl.store(den_ptr + tok, den, mask=valid)
        _store_rows(out_ptr, y * (scale / den)[:, None], stride_out_tok, tok, valid, cols, 1, value_dim)
    if MODE == 1:  # dq̂ = τ G, dτ = Σ G·q̂ (one partial sum per block), dq = (dq̂ - q̂(q̂·dq̂)) / |q|
        if HAS_TAU:
            tl.store(dtau_ptr + row.to(tl.int64) * num_blocks + block,
                     tl.sum(tl.sum(tl.where(valid[:, None], grad * unit, 0.), axis=1), axis=0))
        _store_rows(out_ptr, _unit_vjp(unit, norm, unclamped, grad * tau), stride_out_tok, tok, valid, dims, 0,
                    head_dim)
    if MODE == 2:  # dv = dv'[1:] = apply(k̂, T)[1:], dk = (dk̂ - k̂(k̂·dk̂)) / |k| with dk̂ = G(k̂, T, v')
        _store_rows(out2_ptr, y, stride_out2_tok, tok, valid, cols, 1, value_dim)
        _store_rows(out_ptr, _unit_vjp(unit, norm, unclamped, grad), stride_out_tok, tok, valid, dims, 0, head_dim)
