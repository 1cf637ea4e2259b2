"""Super-resolve an image of any size tile by tile, blending overlapping tiles so no seams show.

The network only ever sees one tile (plus its padding to the window size), so its memory is bounded by the
tile, not the image; the output is accumulated on the CPU. Each tile's output is weighted by a linear ramp
across the overlap on every side that has a neighbour, and the weighted outputs are averaged:

    out = Σ_t w_t · sr(tile_t) / Σ_t w_t
"""
import math

import torch
from tqdm import tqdm


def tile_starts(size, tile, overlap):
    """Start offsets of the fewest tiles of length ``tile`` that cover 0..size with >= ``overlap`` shared pixels.

    n = ceil((size - overlap) / (tile - overlap)) tiles, spread evenly from 0 to size - tile, so that every
    tile has the same full length (and padding) and the overlaps are as equal as possible.
    """
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [i * (size - tile) // (count - 1) for i in range(count)]


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


def check_tile_options(tile, overlap):
    if tile is not None and (not isinstance(tile, int) or tile < 0):
        raise ValueError(f'--tile must be a non-negative number of pixels (0: no tiling), got {tile!r}')
    if not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f'--tile-overlap must be a non-negative number of pixels, got {overlap!r}')
    if tile and overlap >= tile:
        raise ValueError(f'--tile-overlap ({overlap}) must be smaller than --tile ({tile})')


def tiled_forward(forward, image, scale, tile, overlap, progress=False):
    """Apply ``forward`` ((B, C, h, w) -> (B, C', h·scale, w·scale), any device) tile by tile.

    Args:
        forward: the network call; it receives CPU tensors and may move them to its device.
        image: (B, C, H, W) float CPU tensor.
        scale: output/input size ratio of ``forward``.
        tile: tile side in input pixels; 0 or None (or an image no larger than one tile) runs it whole.
        overlap: input pixels shared by neighbouring tiles, blended with a linear ramp.
        progress: show a progress bar over the tiles.

    Returns:
        (B, C', H·scale, W·scale) float32 CPU tensor.
    """
    check_tile_options(tile, overlap)
    batch, _, height, width = image.shape
    if not tile or (height <= tile and width <= tile):
        return forward(image).float().cpu()
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, cols = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    output = weight_sum = None
    for top, left in tqdm([(top, left) for top in rows for left in cols], desc='tiles', unit='tile', leave=False,
                          disable=not progress):
        patch = forward(image[:, :, top:top + tile_h, left:left + tile_w]).float().cpu()
        if output is None:
            output = torch.zeros(batch, patch.shape[1], height * scale, width * scale)
            weight_sum = torch.zeros(1, 1, height * scale, width * scale)
        ramp = overlap * scale
        weight_y = blend_ramp(tile_h * scale, ramp, top > 0, top + tile_h < height)
        weight_x = blend_ramp(tile_w * scale, ramp, left > 0, left + tile_w < width)
        weight = weight_y[:, None] * weight_x[None, :]  # separable: w(y, x) = w_y(y) · w_x(x)
        out_y, out_x = slice(top * scale, (top + tile_h) * scale), slice(left * scale, (left + tile_w) * scale)
        output[:, :, out_y, out_x] += patch * weight
        weight_sum[:, :, out_y, out_x] += weight
    return output / weight_sum
