"""Region layouts: which keys each query may attend to, as whole chunks of tokens (the exact replacement of
SwinIR's -100 mask, which a polynomial ignores).

- :class:`RegionChunks`: the tokens of every window in C equal chunks of c tokens, each chunk inside one region;
  built from integer sizes by the network (``archs.shifted_windows.shifted_window_chunks``), once per forward,
  and shared by every block and head, like FlexAttention's BlockMask. No host sync; the Triton and Flex forms keep
  what they derive from it on the object (:func:`derived`). The efficient form rebuilds its 4x4 same-region matrix
  per call instead: a tensor cached from inside its autograd Function breaks torch.compile's graph.
- :func:`sorted_region_chunks`: any integer ids (the public function's ``regions`` tensor): tokens sorted by id,
  each region padded to whole chunks. It reads the ids on the host (one device-to-host sync per call).
"""
import math

import torch

PADDING_REGION = 4  # the id of padding tokens (shifted windows' real regions are 0..3)
MIN_CHUNK = 8  # sorted layouts: chunks of a divisor of the region sizes' gcd in [MIN_CHUNK, MAX_CHUNK]
MAX_CHUNK = 1024


class RegionChunks:
    """Tokens of each of W windows in C chunks of ``chunk`` tokens (chunk-major: chunk j holds tokens
    j·c .. (j+1)·c - 1); chunk j of window w lies in region ``chunk_regions[w, j]``.

    An attention input (B, ..., N, d) with N = C·c and B a multiple of W holds B / W images of W windows each
    (window w of every image has the layout of window w). Attributes: chunk_regions (W, C) integer tensor, chunk
    (c), num_chunks (C).
    """

    def __init__(self, chunk_regions, chunk, key_weight=None, real_tokens=None):
        if chunk_regions.dim() != 2 or chunk_regions.dtype.is_floating_point:
            raise ValueError(f'chunk_regions must be an integer (windows, chunks) tensor, got '
                             f'{tuple(chunk_regions.shape)} {chunk_regions.dtype}')
        self.chunk_regions = chunk_regions
        self.chunk = int(chunk)
        self.num_windows, self.num_chunks = chunk_regions.shape
        if key_weight is not None and tuple(key_weight.shape) != (self.num_windows, self.num_tokens):
            raise ValueError(f'key_weight must be a (windows, tokens) = ({self.num_windows}, {self.num_tokens}) '
                             f'tensor, got {tuple(key_weight.shape)}')
        self.key_weight = key_weight
        # tokens per window that are not padding: the output scale sqrt(N / d) counts these
        self.real_tokens = self.num_tokens if real_tokens is None else int(real_tokens)

    @property
    def num_tokens(self):
        return self.num_chunks * self.chunk

    def same_region(self, batch, dtype, ndim):
        """M (B, 1..., C, C) with M[b, i, j] = 1 if chunks i and j of window b share a region, shaped to broadcast
        against (B, ..., C, ·) tensors of ``ndim`` dims (B a multiple of W)."""
        ids = self.chunk_regions
        same = (ids[:, :, None] == ids[:, None, :]).to(dtype)  # (W, C, C)
        if batch != self.num_windows:
            same = same.repeat(batch // self.num_windows, 1, 1)
        return same.view((batch, ) + (1, ) * (ndim - 3) + same.shape[-2:])

    def key_weights(self, batch, ndim):
        """(B, 1..., N) weights of the tokens as keys (0: padding), shaped to broadcast against (B, ..., N)
        tensors of ``ndim`` dims, or None when every token is real."""
        if self.key_weight is None:
            return None
        weight = self.key_weight
        if batch != self.num_windows:
            weight = weight.repeat(batch // self.num_windows, 1)
        return weight.view((batch, ) + (1, ) * (ndim - 2) + weight.shape[-1:])

    def token_regions(self, batch):
        """(B, N) region id of every token (for the direct, flex and export forms); padding tokens (key weight 0)
        get an id of their own (PADDING_REGION), so that no real token attends to them."""
        ids = self.chunk_regions[:, :, None].expand(-1, -1, self.chunk).reshape(self.num_windows, self.num_tokens)
        if self.key_weight is not None:
            ids = torch.where(self.key_weight > 0, ids, torch.full_like(ids, PADDING_REGION))
        return ids if batch == self.num_windows else ids.repeat(batch // self.num_windows, 1)

    def check(self, shape):
        """ValueError unless inputs of ``shape`` (B, ..., N, d) fit this layout."""
        if len(shape) < 3 or shape[-2] != self.num_tokens or shape[0] % self.num_windows:
            raise ValueError(f'inputs of shape {tuple(shape)} do not fit the region layout of {self.num_windows} '
                             f'windows of {self.num_chunks} chunks x {self.chunk} tokens: expected (B, ..., '
                             f'{self.num_tokens}, d) with B a multiple of {self.num_windows}')


class SortedRegions:
    """Any integer region ids as a :class:`RegionChunks` over padded rows: each row's tokens sorted by id, each
    region padded to whole chunks (padding slots hold a copy of token 0 and weigh 0 as keys).

    Attributes: chunks (a RegionChunks with one "window" per row), source (rows, L) the token in every slot,
    slot (rows, N) the slot of every token, key_weight (rows, L) 1 for tokens and 0 for padding.
    """

    def __init__(self, chunks, source, slot, key_weight):
        self.chunks, self.source, self.slot, self.key_weight = chunks, source, slot, key_weight

    def gather(self, x):
        """(rows, N, f) -> (rows, L, f) in the padded, region-sorted order (gradient: a gather by slot)."""
        return permute_rows(x, self.source, self.slot)

    def scatter(self, x):
        """(rows, L, f) -> (rows, N, f) back in the token order (gradient: a gather by source, zero on padding)."""
        return permute_rows(x, self.slot, self.source, self.key_weight)


def permute_rows(x, index, inverse, zero=None):
    """x (rows, M, f) -> x at ``index`` (rows, K) along dim 1, whose gradient is a gather by ``inverse`` (rows, M)
    (deterministic, no scatter-add); ``zero`` (rows, K) masks the gradient of the slots ``inverse`` leaves out."""
    return _Permute.apply(x, index, inverse, zero)


def _take(x, index):
    """x (rows, M, f) at index (rows, K) along dim 1 -> (rows, K, f)."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[-1]))


class _Permute(torch.autograd.Function):
    """y = x[index] along dim 1, whose gradient is again a gather (by ``inverse``): no scatter-add, deterministic.
    ``zero`` (rows, M) masks the gradient of the slots that ``inverse`` does not reach (padding)."""

    @staticmethod
    def forward(ctx, x, index, inverse, zero=None):
        ctx.save_for_backward(inverse, zero)
        return _take(x, index)

    @staticmethod
    def backward(ctx, grad):
        inverse, zero = ctx.saved_tensors
        grad_x = _take(grad, inverse)
        if zero is not None:
            grad_x = grad_x * zero[:, :, None].to(grad_x.dtype)
        return grad_x, None, None, None


def choose_chunk(granule, num_tokens):
    """Tokens per chunk: the largest divisor of ``granule`` (the gcd of the region sizes) in [MIN_CHUNK,
    MAX_CHUNK] (no padding at all), else min(MIN_CHUNK, N)."""
    fits = [c for c in range(MIN_CHUNK, min(granule, MAX_CHUNK) + 1) if granule % c == 0]
    return fits[-1] if fits else max(1, min(MIN_CHUNK, num_tokens))


def sorted_region_chunks(regions, chunk=None):
    """:class:`SortedRegions` of integer ids (rows, N). Reads the ids on the host (a sync): the network passes a
    :class:`RegionChunks` instead. ``chunk``: tokens per chunk (default: :func:`choose_chunk`)."""
    rows, num_tokens = regions.shape
    ids, order = torch.sort(regions, dim=-1, stable=True)
    new_region = torch.ones_like(ids, dtype=torch.bool)
    new_region[:, 1:] = ids[:, 1:] != ids[:, :-1]
    region = new_region.long().cumsum(-1) - 1  # region index of every sorted token, 0..R_row-1
    num_regions = int(region.max()) + 1
    sizes = torch.zeros(rows, num_regions, dtype=torch.long, device=ids.device)
    sizes.scatter_add_(1, region, torch.ones_like(region))  # tokens per region
    chunk = chunk or choose_chunk(math.gcd(*sizes[sizes > 0].unique().tolist()), num_tokens)
    padded = (sizes + chunk - 1) // chunk * chunk  # each region padded to whole chunks
    start = padded.cumsum(-1) - padded  # first slot of each region in the padded row
    first = sizes.cumsum(-1) - sizes  # first sorted position of each region
    position = torch.arange(num_tokens, device=ids.device) - first.gather(1, region)  # rank inside its region
    length = int(padded.sum(-1).max())
    slot = torch.empty_like(order).scatter_(1, order, start.gather(1, region) + position)
    chunk_start = torch.arange(0, length, chunk, device=ids.device).expand(rows, -1).contiguous()
    chunk_region = torch.searchsorted(start + padded, chunk_start, right=True)
    chunk_region[chunk_region >= region[:, -1:] + 1] = 0  # padding after a row's end: region 0 (never empty)
    key_weight = torch.zeros(rows, length, device=ids.device).scatter_(1, slot, 1.0)
    source = torch.zeros(rows, length, dtype=torch.long, device=ids.device)
    source.scatter_(1, slot, torch.arange(num_tokens, device=ids.device).expand(rows, -1))
    return SortedRegions(RegionChunks(chunk_region, chunk), source, slot, key_weight)


def derived(chunks, key, build):
    """What ``build()`` makes of a :class:`RegionChunks` for one form (the Triton kernels' layout, FlexAttention's
    BlockMask), made once and kept on the object itself under ``key``: it lives one forward and is shared by every
    block, so the cache needs no bound, no lock against other forwards and no key on the ids' values."""
    cache = chunks.__dict__.setdefault('_derived', {})
    if key not in cache:
        cache[key] = build()
    return cache[key]
