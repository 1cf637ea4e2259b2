"""Window helpers of TaylorSwinIR: chunk-major windows and their region layout (shifted windows), region ids,
and reflect padding to the window."""
import math

import torch
from basicsr.archs.swinir_arch import window_partition

from ..ops.taylor_shift.regions import PADDING_REGION, RegionChunks, permute_rows
from ..utils.tracing import cache_unless_tracing


def chunk_side(window_size, shift_size):
    """g = gcd(window - shift, shift): a shifted window's regions are unions of g×g squares (g = window / 2 for
    TaylorSwinIR's half-window shift and an even window; 1 for an odd one). No shift: the whole window."""
    return math.gcd(window_size - shift_size, shift_size) if shift_size else window_size


def partition_windows(x, window_size, side):
    """(B, H, W, C) -> (B·nW, ws², C), each window's tokens chunk-major: (ws/g)² chunks of g×g tokens (raster
    order of the chunks, then of the tokens inside a chunk). Attention does not depend on the token order."""
    b, h, w, c = x.shape
    cells = window_size // side
    x = x.view(b, h // window_size, cells, side, w // window_size, cells, side, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, window_size * window_size, c)


def reverse_windows(windows, window_size, side, height, width):
    """The inverse of :func:`partition_windows`: (B·nW, ws², C) -> (B, H, W, C)."""
    c, cells = windows.shape[-1], window_size // side
    x = windows.view(-1, height // window_size, width // window_size, cells, cells, side, side, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, height, width, c)


def needs_padding(window_size, shift_size):
    """True when a shifted window's regions are not unions of (window - shift)² squares (gcd(window - shift, shift)
    < window - shift, e.g. every odd window): such windows take :func:`padded_window_layout`."""
    return bool(shift_size) and chunk_side(window_size, shift_size) < max(window_size - shift_size, shift_size)


def shifted_window_layout(height, width, window_size, shift_size, device):
    """The layout of the shifted blocks: :func:`shifted_window_chunks` (a :class:`RegionChunks`), or for windows
    that need padding (:func:`needs_padding`) a :class:`PaddedWindows`."""
    if needs_padding(window_size, shift_size):
        return padded_window_layout(height, width, window_size, shift_size, device)
    return shifted_window_chunks(height, width, window_size, shift_size, device)


def shifted_window_chunks(height, width, window_size, shift_size, device):
    """The region layout (a :class:`RegionChunks`) of a (H, W) map rolled by -shift_size, partitioned by
    :func:`partition_windows`: built from the sizes alone (no host sync), once per forward, shared by every shifted
    block and head. Chunk ids are 2·[rows wrapped] + [columns wrapped], in 0..3."""
    side = chunk_side(window_size, shift_size)
    ids = shifted_region_ids(height // side, width // side, shift_size // side, device)[None, :, :, None]
    cells = window_size // side
    return RegionChunks(window_partition(ids, cells).reshape(-1, cells * cells), side * side)


class PaddedWindows:
    """Windows (raster order, :func:`partition_windows` with side 1) gathered region by region into C chunks of
    ``chunk`` slots each, every region padded to whole chunks (padding slots repeat a token of the window and weigh
    0 as keys). ``gather`` (B·nW, N, f) -> (B·nW, L, f) before the attention, ``scatter`` back after it; ``chunks``:
    the :class:`RegionChunks` (with key weights and the real token count) the attention takes."""

    def __init__(self, chunks, source, slot, real):
        self.chunks, self.source, self.slot, self.real = chunks, source, slot, real

    def _rows(self, index, batch):
        return index if batch == index.shape[0] else index.repeat(batch // index.shape[0], 1)

    def gather(self, windows):
        b = windows.shape[0]
        return permute_rows(windows, self._rows(self.source, b), self._rows(self.slot, b))

    def scatter(self, windows):
        b = windows.shape[0]  # padding slots get no gradient: ``real`` is 1 on each token's own slot only
        return permute_rows(windows, self._rows(self.slot, b), self._rows(self.source, b), self._rows(self.real, b))


@cache_unless_tracing(maxsize=16)
def _window_type_layouts(window_size, shift_size, device):
    """(source (4, L), slot (4, N), key weight (4, L), real (4, L), chunk regions (4, C), chunk) of the four kinds of
    window of a
    map rolled by -shift (2·[last row of windows] + [last column]): tokens sorted by region (ids as
    :func:`shifted_region_ids`), each region padded to whole chunks of max(window - shift, shift)² slots."""
    n = window_size
    chunk = max(n - shift_size, shift_size) ** 2
    num_chunks = max(4, -(-n * n // chunk))
    length = num_chunks * chunk
    sources, slots, weights, reals, regions = [], [], [], [], []
    for kind in range(4):
        rows = [2 * int(kind >= 2 and r >= n - shift_size) for r in range(n)]
        cols = [int(kind % 2 == 1 and c >= n - shift_size) for c in range(n)]
        ids = [rows[r] + cols[c] for r in range(n) for c in range(n)]
        source, slot, weight, chunk_ids = [], [0] * (n * n), [], []
        for region in sorted(set(ids)):
            tokens = [t for t, i in enumerate(ids) if i == region]
            padded = -(-len(tokens) // chunk) * chunk
            for j in range(padded):
                if j < len(tokens):
                    slot[tokens[j]] = len(source)
                source.append(tokens[j] if j < len(tokens) else tokens[0])
                weight.append(1.0 if j < len(tokens) else 0.0)
            chunk_ids += [region] * (padded // chunk)
        real = list(weight)  # the tokens' own slots
        pad = length - len(source)  # whole chunks of padding at the end: a region of their own (weight 1, so
        source, weight, real = source + [0] * pad, weight + [1.0] * pad, real + [0.0] * pad
        chunk_ids += [PADDING_REGION] * (pad // chunk)
        sources.append(source), slots.append(slot), weights.append(weight), reals.append(real)
        regions.append(chunk_ids)
    # that their own queries have keys: no real token sees them)
    as_tensor = lambda x, dtype: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
    return (as_tensor(sources, torch.long), as_tensor(slots, torch.long), as_tensor(weights, torch.float32),
            as_tensor(reals, torch.float32), as_tensor(regions, torch.long), chunk)


def padded_window_layout(height, width, window_size, shift_size, device):
    """The :class:`PaddedWindows` of a (H, W) map rolled by -shift_size: every window in 4 chunks of
    max(window - shift, shift)² slots (an odd window pads to its even neighbour's size, e.g. 23² -> 4·12²), built
    from the sizes (the four kinds of window cached per window and shift), once per forward."""
    source, slot, weight, real, regions, chunk = _window_type_layouts(window_size, shift_size, torch.device(device))
    rows, cols = height // window_size, width // window_size
    last_row = (torch.arange(rows, device=device) == rows - 1).long()
    last_col = (torch.arange(cols, device=device) == cols - 1).long()
    kind = (2 * last_row[:, None] + last_col[None, :]).flatten()  # (nW,) in window_partition's order
    chunks = RegionChunks(regions[kind], chunk, key_weight=weight[kind], real_tokens=window_size * window_size)
    return PaddedWindows(chunks, source[kind], slot[kind], real[kind])


def shifted_window_regions(height, width, window_size, shift_size, device):
    """Region ids (num_windows, window_size²) of every token of a map rolled by -shift_size, in BasicSR's
    window_partition (raster) order, with values in 0..3 (the token-level form, for tests and benchmarks).

    Rows from the bottom shift_size rows of the rolled map wrapped around from the top, and likewise for
    columns; a window mixes at most two row groups and two column groups, so 4 ids suffice.
    """
    ids = shifted_region_ids(height, width, shift_size, device)[None, :, :, None]  # (1, H, W, 1)
    return window_partition(ids, window_size).reshape(-1, window_size * window_size)


def shifted_region_ids(height, width, shift_size, device=None):
    """(H, W) region ids 0..3 of a map rolled by -shift_size: 2·[row wrapped] + [column wrapped]."""
    rows = (torch.arange(height, device=device) >= height - shift_size).long()
    cols = (torch.arange(width, device=device) >= width - shift_size).long()
    return 2 * rows[:, None] + cols[None, :]


def pad_to_multiple(x, multiple):
    """Reflect-pad the bottom and right of (B, C, H, W) to multiples of ``multiple``.

    Padding wider than the image keeps reflecting (period 2(n-1)); a 1-pixel side is replicated. Index
    arithmetic on tensors, so an exported (ONNX) graph pads correctly for every input size.
    """
    for dim in (-2, -1):
        size = x.shape[dim]
        pad = (-size) % multiple
        period = max(2 * size - 2, 1)
        pos = torch.arange(size, size + pad, device=x.device)
        pos = pos.remainder(torch.full_like(pos, period))  # position in the reflection period
        index = torch.where(pos < size, pos, period - pos)  # i -> i, then mirrored back: period - i
        x = torch.cat([x, x.index_select(dim, index)], dim=dim)
    return x
