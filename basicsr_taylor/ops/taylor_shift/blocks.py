"""How the efficient form walks its input: rows (the batch dims flattened) and padded tokens in blocks whose
temporaries fit a memory budget, each block a few batched matmuls over (rows × chunks).

The one place where block sizes are decided: the PyTorch efficient form and the Triton form's backward use it.
"""
import math

import torch

from .features import NORM_EPS, feature_map, taylor_feature_dim

BLOCK_BUDGET = {'cpu': 4.0, 'cuda': 16.0}  # a block's temporaries, in multiples of q's bytes (bounds the extra memory)
MIN_BLOCK_TOKENS = 256  # (row, token) pairs per block at least: below this the per-op cost dominates


def block_plan(rows, length, chunk, head_dim, value_dim, device, itemsize):
    """(rows per block, tokens per block) for rows of ``length`` tokens (padded layout; ``chunk``: the region
    chunk that a block must hold whole, or None). A block's temporaries (ψ, [g; g⊠x], v' and x̂ per token)
    stay within BLOCK_BUDGET[device] × the bytes of q; a block holds whole rows when one fits."""
    per_token = (taylor_feature_dim(head_dim) + (value_dim + 1) * (head_dim + 2) + 2 * head_dim) * itemsize
    budget = BLOCK_BUDGET.get(device.type, BLOCK_BUDGET['cuda']) * rows * length * head_dim * itemsize
    tokens = max(int(budget // per_token), MIN_BLOCK_TOKENS)
    if tokens >= length:
        return max(1, min(rows, tokens // length)), length
    step = chunk or 1
    return 1, min(length, max(step, tokens // step * step))



class Buffers:
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


class Plan:
    """One call's rows (the batch dims flattened), padded token layout, blocks and scratch buffers.

    A block is (rows r0:r1, padded tokens t0:t1) holding nb chunks of cb tokens, each chunk of one region;
    tokens are arranged (m, nb, cb, ·) so that every product below is one batched matmul over (rows × chunks).
    """

    def __init__(self, q, v, layout):
        self.batch, (self.num_tokens, self.head_dim) = q.shape[:-2], q.shape[-2:]
        self.rows, self.value_dim = math.prod(self.batch), v.shape[-1]
        self.layout = layout
        if layout is None:
            self.length, self.chunk, self.num_regions = self.num_tokens, None, 1
        else:
            self.length, self.chunk, self.num_regions = layout.length, layout.chunk, layout.num_regions
            self.gather, self.slot, self.key_weight, self.chunk_region = layout.for_rows(self.batch)
        self.rows_per_block, self.tokens_per_block = block_plan(self.rows, self.length, self.chunk, self.head_dim,
                                                                self.value_dim, q.device, q.element_size())
        self.psi = feature_map(self.head_dim, q.device)
        self.bufs = Buffers(q)

    def row_blocks(self):
        return [slice(r0, min(r0 + self.rows_per_block, self.rows)) for r0 in range(0, self.rows, self.rows_per_block)]

    def token_blocks(self):
        """[(t0, t1, nb, cb)]: nb chunks of cb tokens (no regions: one chunk, the whole block)."""
        out = []
        for t0 in range(0, self.length, self.tokens_per_block):
            t1 = min(t0 + self.tokens_per_block, self.length)
            cb = self.chunk or t1 - t0
            out.append((t0, t1, (t1 - t0) // cb, cb))
        return out

    def tokens(self, t3, rows, t0, t1, nb, cb):
        """Tokens t0:t1 of the padded rows, (m, nb, f, cb) (tokens last): t3 is (rows, N, f), contiguous."""
        if self.layout is None:
            block = t3[rows, t0:t1]
        else:
            index = self.gather[rows, t0:t1]
            block = t3.view(-1, t3.shape[-1]).index_select(0, index.reshape(-1)).view(index.shape + t3.shape[-1:])
        return block.view(block.shape[0], nb, cb, block.shape[-1]).transpose(-2, -1)

    def weight(self, rows, t0, t1, nb, cb):
        """Key weights (m, nb, 1, cb): 1 for a token, 0 for padding; None without regions."""
        return None if self.layout is None else self.key_weight[rows, None, t0:t1].view(-1, nb, 1, cb)

    def region_index(self, rows, t0, nb, cb):
        """Flat (m·nb) indices into (m·R) of each chunk's region; None without regions."""
        if self.layout is None:
            return None
        j0 = t0 // cb
        index = self.chunk_region[rows, j0:j0 + nb]
        return (index + torch.arange(index.shape[0], device=index.device)[:, None] * self.num_regions).reshape(-1)

    def features(self, x_rows, name, tau=None):
        """(ψ(τ x̂) (m, nb, D, cb), x̂ (m, nb, d, cb), |x| (m, nb, 1, cb)) for x_rows (m, nb, d, cb)."""
        psi = self.psi
        features = self.bufs.get(name, x_rows.shape[:-2] + (psi.width, x_rows.shape[-1]),
                                 init=lambda b: b[..., 0, :].fill_(1))
        norm = torch.linalg.vector_norm(x_rows, dim=-2, keepdim=True).clamp_min_(NORM_EPS)  # |x| (eps as F.normalize)
        unit = torch.div(x_rows, norm, out=self.bufs.get(name + '_unit', x_rows.shape))  # x̂ = x / |x|
        torch.mul(unit, 1 if tau is None else tau, out=features[..., 1:self.head_dim + 1, :])  # τ x̂
        return psi.fill_quadratic(features), unit, norm

    def values(self, v3, rows, t0, t1, nb, cb):
        """v'ᵀ = [w; w v]ᵀ (m, nb, e, cb): row 0 counts the keys (the denominator), 0 for padding."""
        v_rows = self.tokens(v3, rows, t0, t1, nb, cb)
        values = self.bufs.get('values', v_rows.shape[:-2] + (self.value_dim + 1, cb),
                               init=lambda b: b[..., 0, :].fill_(1))
        weight = self.weight(rows, t0, t1, nb, cb)
        if weight is None:
            values[..., 1:, :] = v_rows
        else:
            values[..., :1, :] = weight
            torch.mul(v_rows, weight, out=values[..., 1:, :])  # w v: padding slots hold a copy of token 0
        return values

    def select(self, per_region, index, nb):
        """Each chunk's region entry: per_region (m, R, a, b) -> (m, nb, a, b) (broadcast without regions)."""
        if index is None:
            return per_region
        m = per_region.shape[0]
        return per_region.reshape((-1, ) + per_region.shape[-2:]).index_select(0, index).view(
            (m, nb) + per_region.shape[-2:])

    def add(self, per_region, part, index):
        """per_region (m, R, a, b) += the chunks' parts (m, nb, a, b), each to its own region."""
        if index is None:
            per_region += part.sum(1, keepdim=True)
        else:
            per_region.view((-1, ) + part.shape[-2:]).index_add_(0, index, part.reshape((-1, ) + part.shape[-2:]))

    def to_rows(self, padded, rows):
        """(m, L, f) in the padded layout -> (m, N, f) in the token order."""
        if self.layout is None:
            return padded
        index = self.slot[rows] + torch.arange(padded.shape[0], device=padded.device)[:, None] * self.length
        return padded.view(-1, padded.shape[-1]).index_select(0, index.reshape(-1)).view(index.shape +
                                                                                          padded.shape[-1:])

    def tau_rows(self, temperature, like):
        """τ per row, (rows, 1, 1, 1), or None."""
        if temperature is None:
            return None
        return temperature.expand(self.batch + (1, 1)).reshape(self.rows, 1, 1, 1).to(like.dtype)


def rows3(t, plan):
    """(batch..., N, f) -> (rows, N, f), contiguous."""
    return t.reshape(plan.rows, t.shape[-2], t.shape[-1]).contiguous()

