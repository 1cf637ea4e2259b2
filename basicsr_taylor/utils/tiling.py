"""Super-resolve an image of any size tile by tile, blending overlapping tiles so no seams show.

The network only ever sees one tile (plus its padding to the window size), so its memory is bounded by the
tile, not the image; the output is accumulated on the CPU. Each tile's output is weighted by a linear ramp
across the overlap on every side that has a neighbour, and the weighted outputs are averaged:

    out = Σ_t w_t · sr(tile_t) / Σ_t w_t

Tiles start at multiples of the attention window (``align``): a tile then partitions its pixels into the
same (shifted) windows as the whole image would, and differs from one pass only near its borders.
"""
import torch
from tqdm import tqdm


def tile_grid(tile, overlap, align=1):
    """(tile, step) actually used: ``tile`` rounded down to a multiple of ``align`` (at least ``align``), and the
    largest multiple of ``align`` <= tile - overlap as the step. Neighbours then share tile - step >= overlap
    pixels, at least one whole window when overlap > 0; a tile too small for that is refused (ValueError)."""
    rounded = max(align, tile // align * align)
    if overlap and rounded - overlap < align:
        need = -(-(overlap + align) // align) * align  # smallest multiple of align >= overlap + align
        raise ValueError(f'--tile {tile} with --tile-overlap {overlap} leaves no overlap: tiles start on the '
                         f'{align}-pixel window grid, so use --tile {need} or more (or --tile-overlap 0)')
    return rounded, (rounded - overlap) // align * align if overlap else rounded


def tile_spans(size, tile, overlap, align=1):
    """(start, stop) of tiles covering 0..size, placed by :func:`tile_grid`: every tile ``tile`` long (rounded)
    except the last, which ends at ``size``."""
    tile, step = tile_grid(tile, overlap, align)
    if size <= tile:
        return [(0, size)]
    spans, start = [], 0
    while start + tile < size:
        spans.append((start, start + tile))
        start += step
    return spans + [(start, size)]


def blend_ramp(length, ramp, fade_start, fade_end):
    """1-D weights of one tile's output: rising linearly over ``ramp`` pixels at a side shared with a
    neighbour (w_i = (i + ½) / ramp), 1 elsewhere."""
    weights = torch.ones(length)
    if ramp > 0:
        rise = (torch.arange(min(ramp, length), dtype=torch.float32) + 0.5) / ramp  # (i + ½) / ramp
        if fade_start:
            weights[:rise.numel()] = torch.minimum(weights[:rise.numel()], rise)
        if fade_end:
            weights[length - rise.numel():] = torch.minimum(weights[length - rise.numel():], rise.flip(0))
    return weights


def check_tile_options(tile, overlap, align=1):
    if tile is not None and (not isinstance(tile, int) or tile < 0):
        raise ValueError(f'--tile must be a non-negative number of pixels (0: no tiling), got {tile!r}')
    if not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f'--tile-overlap must be a non-negative number of pixels, got {overlap!r}')
    if tile and overlap >= tile:
        raise ValueError(f'--tile-overlap ({overlap}) must be smaller than --tile ({tile})')
    if tile:
        tile_grid(tile, overlap, align)


def tiled_forward(forward, image, scale, tile, overlap, align=1, progress=False):
    """Apply ``forward`` ((B, C, h, w) -> (B, C', h·scale, w·scale), any device) tile by tile.

    Args:
        forward: the network call; it receives CPU tensors and may move them to its device.
        image: (B, C, H, W) float CPU tensor.
        scale: output/input size ratio of ``forward``.
        tile: tile side in input pixels; 0 or None (or an image no larger than one tile) runs it whole.
        overlap: least input pixels shared by neighbouring tiles; all they share (whole windows) is blended
            with a linear ramp.
        align: tiles start at multiples of this (the network's window size).
        progress: show a progress bar over the tiles.

    Returns:
        (B, C', H·scale, W·scale) float32 CPU tensor.
    """
    check_tile_options(tile, overlap, align)
    batch, _, height, width = image.shape
    if not tile or (height <= tile and width <= tile):
        return forward(image).float().cpu()
    rows, cols = tile_spans(height, tile, overlap, align), tile_spans(width, tile, overlap, align)
    rounded, step = tile_grid(tile, overlap, align)
    ramp = (rounded - step) * scale  # the whole shared width, not just the requested overlap
    output = weight_sum = None
    for (top, bottom), (left, right) in tqdm([(r, c) for r in rows for c in cols], desc='tiles', unit='tile',
                                             leave=False, disable=not progress):
        patch = forward(image[:, :, top:bottom, left:right]).float().cpu()
        if output is None:
            output = torch.zeros(batch, patch.shape[1], height * scale, width * scale)
            weight_sum = torch.zeros(1, 1, height * scale, width * scale)
        weight_y = blend_ramp((bottom - top) * scale, ramp, top > 0, bottom < height)
        weight_x = blend_ramp((right - left) * scale, ramp, left > 0, right < width)
        weight = weight_y[:, None] * weight_x[None, :]  # separable: w(y, x) = w_y(y) · w_x(x)
        out_y, out_x = slice(top * scale, bottom * scale), slice(left * scale, right * scale)
        output[:, :, out_y, out_x] += patch * weight
        weight_sum[:, :, out_y, out_x] += weight
    return output / weight_sum
