"""The direct form through torch's FlexAttention (torch >= 2.5): flash-style, no N×N tensor on CUDA.

p(x) = 1 + x + x²/2 > 0, so the Taylor weights are a softmax of log p:

    p(x_ij) / Σ_j p(x_ij) = exp(log p(x_ij)) / Σ_j exp(log p(x_ij)) = softmax_j(log p(x_ij))

With q̂ τ and k̂ normalised (x_ij = τ cos) and scale 1, ``score_mod`` = log 2p(x) = log((x + 1)² + 1) (the 2
cancels) and regions are a block mask (``mask_mod``: same region id), so blocks between different regions are
skipped. On CUDA the call is compiled (a fused Triton kernel). On the CPU (torch 2.14) eager flex_attention
runs the forward pass unfused (it materialises the scores: a reference path, not a fast one) and torch raises
NotImplementedError for its backward pass; this form then says so before running.
"""
import functools
import math
import warnings

import torch

from .naive import normalized

try:  # torch >= 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    create_block_mask = flex_attention = None


def available():
    """True when this torch has FlexAttention."""
    return flex_attention is not None


def log_taylor_score(score, batch, head, q_index, kv_index):
    """score_mod: log 2p(x) = log((x + 1)² + 1), x = τ cos(q, k); softmax of it = p(x) / Σ p(x)."""
    return torch.log((score + 1) * (score + 1) + 1)


@functools.lru_cache(maxsize=None)
def compiled_flex_attention():
    """torch.compile(flex_attention), built once (one compiled kernel per score_mod / shape)."""
    return torch.compile(flex_attention, dynamic=False)


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


def region_block_mask(regions, batch, num_tokens, device):
    """BlockMask of "same region id" for (..., N) ids broadcastable to batch + (N,); batch / heads of size 1 where
    the ids are shared."""
    ids = regions.reshape((1, ) * (len(batch) + 1 - regions.dim()) + tuple(regions.shape))  # batch dims + (N,)
    ids = ids.expand(ids.shape[:-1] + (num_tokens, ))
    if len(batch) >= 2 and any(size != 1 for size in ids.shape[:-2]):
        ids = ids.expand(batch[:-1] + ids.shape[-2:])
    ids = _as_4d(ids[..., None], ids.shape[:-1])[..., 0]  # (B or 1, H or 1, N)
    ids = ids.contiguous()
    # eager flex evaluates mask_mod at every (b, h) of q, even for a (1, 1) mask: index the shared dims with 0
    shared_batch, shared_head = ids.shape[0] == 1, ids.shape[1] == 1
    table = ids[0] if shared_batch else ids  # (H|1, N) or (B, H|1, N)
    table = table[..., 0, :] if shared_head else table  # drop the head dim where shared

    def same_region(b, h, q_index, kv_index):  # mask_mod: attend only within the region
        row = table
        if not shared_batch:
            row = row[b]
        if not shared_head:
            row = row[h]
        return row[q_index] == row[kv_index]

    return create_block_mask(same_region, ids.shape[0], ids.shape[1], num_tokens, num_tokens, device=device)


def taylor_shift_flex(q, k, v, temperature, regions, scale):
    """TaylorShift attention by FlexAttention. q, k: (..., N, d), v: (..., N, dv)."""
    check_available(q, k, v, temperature)
    q, k = normalized(q, k, temperature)  # τ q̂, k̂: the score is x = τ cos(q, k)
    batch, num_tokens = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), q.shape[-2]  # (τ may add dims)
    q, k, v = (t.expand(batch + t.shape[-2:]) for t in (q, k, v))
    block_mask = None if regions is None else region_block_mask(regions, batch, num_tokens, q.device)
    out = run_flex_attention(_as_4d(q, batch), _as_4d(k, batch), _as_4d(v, batch), score_mod=log_taylor_score,
                             block_mask=block_mask, scale=1.0)
    return out.reshape(batch + out.shape[-2:]) * scale  # y · sqrt(N/d)
