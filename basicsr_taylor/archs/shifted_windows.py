"""Window helpers of TaylorSwinIR: shifted-window region ids, window reverse, reflect padding to the window."""
import torch
from basicsr.archs.swinir_arch import window_partition

from ..utils.tracing import cache_unless_tracing


@cache_unless_tracing(maxsize=32)
def shifted_window_regions(height, width, window_size, shift_size, device):
    """Region ids (num_windows, window_size²) of a feature map rolled by -shift_size, with values in 0..3.

    Rows from the bottom shift_size rows of the rolled map wrapped around from the top, and likewise for
    columns; a window mixes at most two row groups and two column groups, so 4 ids suffice.
    Cached per size, except while torch.export or torch.compile traces the network (symbolic sizes, fake tensors).
    """
    ids = shifted_region_ids(height, width, shift_size, device)[None, :, :, None]  # (1, H, W, 1)
    return window_partition(ids, window_size).reshape(-1, window_size * window_size)


def shifted_region_ids(height, width, shift_size, device=None):
    """(H, W) region ids 0..3 of a map rolled by -shift_size: 2·[row wrapped] + [column wrapped]."""
    rows = (torch.arange(height, device=device) >= height - shift_size).long()
    cols = (torch.arange(width, device=device) >= width - shift_size).long()
    return 2 * rows[:, None] + cols[None, :]


def window_reverse(windows, window_size, height, width):
    """(B, num_windows, window_size², C) -> (B, H, W, C), the inverse of ``window_partition``.

    BasicSR's version recovers B as int(float), which graph export (ONNX) freezes to the example's batch size.
    """
    b, c = windows.shape[0], windows.shape[-1]
    x = windows.view(b, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


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
