"""The direct form through torch's FlexAttention (torch >= 2.5): flash-style, no N×N tensor on CUDA.

p(x) = 1 + x + x²/2 > 0, so the Taylor weights are a softmax of log p:

    p(x_ij) / Σ_j p(x_ij) = exp(log p(x_ij)) / Σ_j exp(log p(x_ij)) = softmax_j(log p(x_ij))

With q̂ τ and k̂ normalised (x_ij = τ cos) and scale 1, ``score_mod`` = log 2p(x) = log((x + 1)² + 1) (the 2
cancels). Regions: the tokens are visited sorted by region (:class:`FlexLayout`; with a ``RegionChunks`` a
permutation of whole chunks, no per-token sort) so that each region is a contiguous run and the block mask
(``mask_mod``: same region) skips every block pair between two regions. The layout and its BlockMask are built
from block-level indices (no (B, 1, N, N) mask), and for a ``RegionChunks`` once per object (it lives one forward
and is passed to every block). On CUDA the call is compiled once with dynamic shapes (a fused Triton kernel;
meant so that a new image size, i.e. a new window count, neither recompiles per size nor falls back to the
unfused path; not yet run on a GPU). On the CPU
(torch 2.14) eager flex_attention runs the forward pass unfused (it materialises the scores: a reference path, not
a fast one) and torch raises NotImplementedError for its backward pass; this form then says so before running.
"""
import functools
import math
import warnings

import torch

from .naive import normalized

from .regions import RegionChunks, derived

try:  # torch >= 2.5
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    BlockMask = create_block_mask = flex_attention = None

FLEX_BLOCK = 128  # FlexAttention's default sparse block (tokens per block-mask tile)


def available():
    """True when this torch has FlexAttention."""
    return flex_attention is not None


def log_taylor_score(score, batch, head, q_index, kv_index):
    """score_mod: log 2p(x) = log((x + 1)² + 1), x = τ cos(q, k); softmax of it = p(x) / Σ p(x)."""
    return torch.log((score + 1) * (score + 1) + 1)


@functools.lru_cache(maxsize=None)
def compiled_flex_attention():
    """torch.compile(flex_attention, dynamic=True), built once: symbolic sizes, so that a new window count or
    token count reuses the compiled kernel instead of recompiling (and falling back to the unfused path after
    torch's recompile limit)."""
    return torch.compile(flex_attention, dynamic=True)


def run_flex_attention(q, k, v, score_mod=None, block_mask=None, scale=None):
    """flex_attention compiled on CUDA, eager elsewhere (the CPU: unfused, a reference path)."""
    if q.device.type == 'cuda':
        return compiled_flex_attention()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():  # "called without torch.compile": known, intended off CUDA
        warnings.filterwarnings('ignore', message='.*flex_attention called without torch.compile.*')
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def check_available(q, k, v, temperature):
    """Raise a clear error where torch cannot run this form (no FlexAttention; backward on CPU)."""
    if flex_attention is None:
        raise RuntimeError(f"form='flex' needs torch >= 2.5 (torch.nn.attention.flex_attention); this is torch "
                           f"{torch.__version__}: use form='direct' or 'efficient'")
    inputs = [t for t in (q, k, v, temperature) if t is not None]
    if q.device.type != 'cuda' and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        raise RuntimeError(f"form='flex': torch's FlexAttention has no backward pass on {q.device.type} "
                           f"(torch {torch.__version__}); run it under torch.no_grad() there, or on CUDA, or use "
                           "form='direct' / 'efficient'")


def _as_4d(t, batch):
    """(..., N, f) -> (B, H, N, f): (N, f) -> (1, 1, N, f), (B, N, f) -> (B, 1, N, f), more dims flattened into B."""
    if len(batch) == 0:
        return t[None, None]
    if len(batch) == 1:
        return t[:, None]
    return t.reshape((math.prod(batch[:-1]), batch[-1]) + t.shape[-2:])


def _per_row(ids, batch, num_tokens):
    """(..., N) integers broadcastable to batch + (N,) -> (B or 1, H or 1, N) contiguous, in _as_4d's (B, H)
    (sizes 1 where the values are shared)."""
    ids = ids.reshape((1, ) * (len(batch) + 1 - ids.dim()) + tuple(ids.shape))  # batch dims + (N,)
    ids = ids.expand(ids.shape[:-1] + (num_tokens, ))
    if len(batch) >= 2 and any(size != 1 for size in ids.shape[:-2]):
        ids = ids.expand(batch[:-1] + ids.shape[-2:])
    return _as_4d(ids[..., None], ids.shape[:-1])[..., 0].contiguous()


def _same_id_mask_mod(table):
    """mask_mod "same id" over a (B or 1, H or 1, N) table. Eager flex evaluates mask_mod at every (b, h) of q,
    even for a (1, 1) mask: the shared dims are indexed with 0."""
    shared_batch, shared_head = table.shape[0] == 1, table.shape[1] == 1
    table = table[0] if shared_batch else table  # (H|1, N) or (B, H|1, N)
    table = table[..., 0, :] if shared_head else table  # drop the head dim where shared

    def same_region(b, h, q_index, kv_index):  # mask_mod: attend only within the region
        row = table
        if not shared_batch:
            row = row[b]
        if not shared_head:
            row = row[h]
        return row[q_index] == row[kv_index]

    return same_region


def region_block_mask(regions, batch, num_tokens, device):
    """BlockMask of "same region id" for (..., N) ids broadcastable to batch + (N,) in the tokens' own order (the
    benchmark's softmax baseline, whose bias depends on positions): evaluated densely by create_block_mask. The
    TaylorShift form sorts the tokens instead (:func:`flex_layout`)."""
    ids = _per_row(regions, batch, num_tokens)
    return create_block_mask(_same_id_mask_mod(ids), ids.shape[0], ids.shape[1], num_tokens, num_tokens,
                             device=device)


def _ordered(blocks):
    """Dense block flags (B, H, nq, nkv) -> (count (B, H, nq), indices (B, H, nq, nkv)) as BlockMask takes them:
    the flagged kv blocks first, in order."""
    blocks = blocks.to(torch.int32)
    return blocks.sum(-1, dtype=torch.int32), torch.argsort(blocks, dim=-1, descending=True, stable=True).int()


def sorted_block_mask(sorted_ids, block=FLEX_BLOCK):
    """BlockMask of "same id" for ids (B or 1, H or 1, N) sorted along N, from block-level indices alone (no
    N×N mask): blocks i, j touch iff their id ranges [first, last] overlap; a pair is full (no mask_mod) iff both
    blocks are whole and hold one and the same id; other touching pairs are partial (mask_mod decides)."""
    num_tokens = sorted_ids.shape[-1]
    starts = torch.arange(0, num_tokens, block, device=sorted_ids.device)
    ends = (starts + block).clamp(max=num_tokens)
    first, last = sorted_ids[..., starts], sorted_ids[..., ends - 1]  # (B, H, nb): sorted, so the id range
    touch = (first[..., :, None] <= last[..., None, :]) & (first[..., None, :] <= last[..., :, None])
    single = (first == last) & (ends - starts == block)
    full = single[..., :, None] & single[..., None, :] & (first[..., :, None] == first[..., None, :])
    return BlockMask.from_kv_blocks(*_ordered(touch & ~full), *_ordered(full), BLOCK_SIZE=block,
                                    mask_mod=_same_id_mask_mod(sorted_ids), seq_lengths=(num_tokens, num_tokens))


class FlexLayout:
    """Tokens sorted by region for FlexAttention: perm (B or 1, H or 1, N) slot -> token, inverse token -> slot,
    and the BlockMask over the sorted slots."""

    def __init__(self, sorted_ids, perm):
        self.perm = perm
        self.inverse = torch.empty_like(perm).scatter_(-1, perm, torch.arange(perm.shape[-1], device=perm.device)
                                                        .expand(perm.shape))
        self.block_mask = sorted_block_mask(sorted_ids)

    def gather(self, x, order=None):
        """(B, H, N, f) in the order ``perm`` (sorted) or ``inverse`` (back to the tokens' order)."""
        index = self.perm if order is None else order
        return x.gather(-2, index[..., None].expand(x.shape))


def flex_layout(regions, batch, num_tokens):
    """The :class:`FlexLayout` of ``regions`` (a ``RegionChunks`` or integer ids) for inputs of batch shape
    ``batch``. A RegionChunks: each window's chunks sorted by region id (a chunk permutation; tokens are
    chunk-major), made once per RegionChunks object and batch shape and kept on it. Ids: a stable sort of every
    row's ids. No host sync either way."""
    if not isinstance(regions, RegionChunks):
        sorted_ids, perm = torch.sort(_per_row(regions, batch, num_tokens), dim=-1, stable=True)
        return FlexLayout(sorted_ids, perm)

    def build():
        ids, order = torch.sort(regions.chunk_regions, dim=-1, stable=True)  # (W, C)
        chunk = regions.chunk
        perm = (order[:, :, None] * chunk + torch.arange(chunk, device=order.device)).flatten(-2)  # (W, N)
        sorted_ids = ids[:, :, None].expand(-1, -1, chunk).flatten(-2)
        repeat = batch[0] // regions.num_windows  # window w of every image has the layout of window w
        rows = [t.repeat(repeat, 1).view(batch[:1] + (1, ) * (len(batch) - 1) + (num_tokens, ))
                for t in (sorted_ids, perm)]
        return FlexLayout(*(_per_row(t, batch, num_tokens) for t in rows))

    return derived(regions, ('flex', tuple(batch)), build)


def taylor_shift_flex(q, k, v, temperature, regions, scale):
    """TaylorShift attention by FlexAttention. q, k: (..., N, d), v: (..., N, dv); regions None, a
    ``RegionChunks`` or integer ids broadcastable to (..., N)."""
    check_available(q, k, v, temperature)
    q, k = normalized(q, k, temperature)  # τ q̂, k̂: the score is x = τ cos(q, k)
    batch, num_tokens = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), q.shape[-2]  # (τ may add dims)
    q, k, v = (_as_4d(t.expand(batch + t.shape[-2:]), batch) for t in (q, k, v))
    if regions is None:
        out = run_flex_attention(q, k, v, score_mod=log_taylor_score, scale=1.0)
    else:
        layout = flex_layout(regions, batch, num_tokens)
        out = run_flex_attention(layout.gather(q), layout.gather(k), layout.gather(v), score_mod=log_taylor_score,
                                 block_mask=layout.block_mask, scale=1.0)
        out = layout.gather(out, layout.inverse)
    return out.reshape(batch + out.shape[-2:]) * scale  # y · sqrt(N/d)
