"""Tokens sorted by region id into chunks that each hold one region: exact masks at no extra cost.

A shifted window's regions (SwinIR's masks) become runs of whole chunks; the efficient form keeps one set of key
statistics per region and gives every chunk its own region's. The layout of a set of ids is cached (it costs a
sort and a host sync; a network passes the same ids on every call).
"""
import math

import torch

from ...utils.tracing import is_tracing

MIN_CHUNK = 8  # region chunks: a divisor of the region sizes' gcd in [MIN_CHUNK, MAX_CHUNK], else MIN_CHUNK
MAX_CHUNK = 1024
LAYOUT_CACHE_SIZE = 16
_layout_cache = {}


def choose_chunk(num_tokens, granule=None, multiple=1):
    """Tokens per region chunk (every chunk holds one region; each region is padded to whole chunks).

    ``granule``: the gcd of the region sizes. The largest divisor of it in [MIN_CHUNK, MAX_CHUNK] that is a
    multiple of ``multiple`` (no padding at all), else the smallest multiple of ``multiple`` >= MIN_CHUNK.
    """
    if granule:
        fits = [c for c in range(multiple, min(granule, MAX_CHUNK) + 1, multiple)
                if granule % c == 0 and c >= MIN_CHUNK]
        if fits:
            return fits[-1]
    return -(-min(MIN_CHUNK, max(num_tokens, 1)) // multiple) * multiple



def region_layout(regions, token_shape, multiple=1, chunk=None):
    """:class:`RegionLayout` of ``regions`` for inputs of shape token_shape + (d,), cached by the ids' values
    (the layout costs a sort and a host sync; the network passes the same ids on every call). Chunks by
    :func:`choose_chunk`, or exactly ``chunk`` tokens when given."""
    choose = (lambda granule: chunk) if chunk else (lambda granule: choose_chunk(token_shape[-1], granule, multiple))
    build = lambda: RegionLayout(regions, token_shape, choose)  # noqa: E731
    if is_tracing():
        return build()
    key = (tuple(regions.shape), regions.dtype, regions.device, tuple(token_shape), multiple, chunk, MIN_CHUNK,
           MAX_CHUNK, regions.detach().cpu().numpy().tobytes())
    layout = _layout_cache.pop(key, None) or build()
    _layout_cache[key] = layout  # most recent last
    while len(_layout_cache) > LAYOUT_CACHE_SIZE:
        _layout_cache.pop(next(iter(_layout_cache)))
    return layout


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
        self._rows = {}

    def for_rows(self, batch):
        """The layout per flattened row of a (batch..., N) input: (gather (rows, L) flat indices into (rows·N)
        tokens, slot (rows, N), key_weight (rows, L), chunk_region (rows, L / chunk)); cached per batch shape."""
        batch = tuple(batch)
        if batch not in self._rows:
            rows, num_tokens = math.prod(batch), self.slot.shape[-1]
            flat = lambda t: t.expand(batch + t.shape[-1:]).reshape(rows, t.shape[-1])
            offsets = torch.arange(rows, device=self.slot.device)[:, None] * num_tokens
            self._rows[batch] = (flat(self.source) + offsets, flat(self.slot), flat(self.key_weight),
                                 flat(self.chunk_region))
        return self._rows[batch]

