"""Window helpers of TaylorSwinIR: chunk-major windows and their region layout (shifted windows), region ids,
and reflect padding to the window."""
import math

import torch
from basicsr.archs.swinir_arch import window_partition

from ..ops.taylor_shift.regions import RegionChunks


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


def shifted_window_chunks(height, width, window_size, shift_size, device):
    """The region layout (a :class:`RegionChunks`) of a (H, W) map rolled by -shift_size, partitioned by
    :func:`partition_windows`: built from the sizes alone (no host sync), once per forward, shared by every shifted
    block and head. Chunk ids are 2·[rows wrapped] + [columns wrapped], in 0..3."""
    side = chunk_side(window_size, shift_size)
    ids = shifted_region_ids(height // side, width // side, shift_size // side, device)[None, :, :, None]
    cells = window_size // side
    return RegionChunks(window_partition(ids, cells).reshape(-1, cells * cells), side * side)


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
