"""Super-resolve an image of any size tile by tile, blending overlapping tiles so no seams show.

The network only ever sees one tile (plus its padding to the window size), so its memory is bounded by the
tile, not the image; the output is accumulated on the CPU. Each tile's output is weighted by a linear ramp
across the overlap on every side that has a neighbour, and the weighted outputs are averaged:

    out = Σ_t w_t · sr(tile_t) / Σ_t w_t

Tiles run row by row, and the sums are kept in float32 only for the rows that the current row of tiles writes
(one band, a tile high and the output wide): :func:`tiled_strips` hands the rows above it on as soon as they are
finished, so a caller can store them in the output's own dtype (uint8) instead of a float32 image.

Tiles start at multiples of the attention window (``align``): a tile then partitions its pixels into the
same (shifted) windows as the whole image would, and differs from one pass only near its borders.
"""
import torch
from tqdm import tqdm

DEFAULT_TILE = 256  # input pixels, rounded up to the window grid: the bundled models' default --tile
MIN_TILE_STRIDE = 0.5  # the commands refuse tiles that start less than half a tile apart (> 4x the work)


def tile_grid(tile, overlap, align=1):
    """(tile, step) actually used: ``tile`` rounded down to a multiple of ``align`` (at least ``align``), and the
    largest multiple of ``align`` <= tile - overlap as the step. Neighbours then share tile - step >= overlap
    pixels, at least one whole window when overlap > 0; a tile too small for that is refused (ValueError)."""
    rounded = max(align, tile // align * align)
    if overlap and rounded - overlap < align:
        raise ValueError(f'--tile {tile} with --tile-overlap {overlap} leaves no overlap: tiles start on the '
                         f'{align}-pixel window grid, so use --tile {smallest_tile(overlap, align)} or more '
                         '(or --tile-overlap 0)')
    return rounded, (rounded - overlap) // align * align if overlap else rounded


def smallest_tile(overlap, align=1, min_stride=0.0):
    """The smallest tile :func:`tile_grid` accepts with ``overlap`` whose tiles start at least ``min_stride`` of a
    tile apart (each pixel is then computed at most 1 / min_stride² times)."""
    if not overlap:
        return align
    shared = -(-overlap // align) * align  # neighbours share the overlap rounded up to whole windows
    tile = shared + align
    while tile - shared < min_stride * tile:
        tile += align
    return tile


def default_tile(overlap, align=1):
    """The tile used when none is given: DEFAULT_TILE rounded up to the window grid, or the smallest tile whose
    stride is at least MIN_TILE_STRIDE of it if that is larger."""
    return max(-(-DEFAULT_TILE // align) * align, smallest_tile(overlap, align, MIN_TILE_STRIDE))


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


def check_tile_options(tile, overlap, align=1, min_stride=0.0):
    """ValueError, in one line with the tile to use, for a tile that cannot keep ``overlap`` on the ``align`` grid
    or whose tiles would start less than ``min_stride`` of a tile apart (the commands use MIN_TILE_STRIDE)."""
    if tile is not None and (not isinstance(tile, int) or tile < 0):
        raise ValueError(f'--tile must be a non-negative number of pixels (0: no tiling), got {tile!r}')
    if not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f'--tile-overlap must be a non-negative number of pixels, got {overlap!r}')
    if not tile:
        return
    need = smallest_tile(overlap, align, min_stride)
    grid = f' on the network\'s {align}-pixel window grid' if align > 1 else ''
    if overlap >= tile or (overlap and max(align, tile // align * align) - overlap < align):
        raise ValueError(f'--tile {tile} is too small for --tile-overlap {overlap}{grid}: use --tile {need} or '
                         'more (or a smaller --tile-overlap)')
    rounded, step = tile_grid(tile, overlap, align)
    if step < min_stride * rounded:
        raise ValueError(f'--tile {tile} with --tile-overlap {overlap}{grid} starts a tile every {step} pixels, '
                         f'computing each pixel about {(rounded / step) ** 2:.0f} times: use --tile {need} or more '
                         '(or a smaller --tile-overlap)')


def runs_whole(image_shape, tile):
    """True when an image of ``image_shape`` (B, C, H, W) runs in one pass: no tile, or no side longer than one."""
    return not tile or (image_shape[2] <= tile and image_shape[3] <= tile)


def band_rows(height, tile, overlap, align=1):
    """Input rows of the band :func:`tiled_strips` keeps in float32: the tallest row of tiles (the image's height
    when it runs whole)."""
    if not tile:
        return height
    return max(bottom - top for top, bottom in tile_spans(height, tile, overlap, align))


def tiled_strips(forward, image, scale, tile, overlap, align=1, progress=False, rows=None):
    """Apply ``forward`` ((B, C, h, w) -> (B, C', h·scale, w·scale), any device) tile by tile, and yield the output
    a strip of rows at a time, as soon as no later tile writes to them.

    Args:
        forward, scale, tile, overlap, align, progress: as :func:`tiled_forward`.
        image: (B, C, H, W) float CPU tensor, or anything with that ``shape`` whose ``[:, :, rows, cols]`` is the
            float CPU tensor of that region (e.g. an 8-bit image converted one tile at a time).
        rows: yield at most this many output rows at a time (default: all the rows a row of tiles finishes).

    Yields:
        (top, strip): strip is the (B, C', n, W·scale) float32 CPU tensor of output rows top..top+n, in order.
        Besides the strip, the float32 sums of one band of band_rows()·scale output rows are kept (and the weight
        sum of one channel); the sums per pixel are made in the same order as over a whole output buffer.
    """
    check_tile_options(tile, overlap, align)
    batch, _, height, width = image.shape
    if runs_whole(image.shape, tile):
        yield from _pieces(0, forward(image[:, :, :, :]).float().cpu(), None, rows)
        return
    row_spans, cols = tile_spans(height, tile, overlap, align), tile_spans(width, tile, overlap, align)
    rounded, step = tile_grid(tile, overlap, align)
    ramp = (rounded - step) * scale  # the whole shared width, not just the requested overlap
    band = band_rows(height, tile, overlap, align) * scale
    output = weight_sum = None  # the sums of output rows done..done + band
    done = 0  # output rows above this are finished and yielded
    bar = tqdm(total=len(row_spans) * len(cols), desc='tiles', unit='tile', leave=False, disable=not progress)
    try:
        for top, bottom in row_spans:
            if top * scale > done:  # no tile of this row or below reaches above its top: those rows are finished
                finished = top * scale - done
                yield from _pieces(done, output[:, :, :finished], weight_sum[:, :, :finished], rows)
                kept = band - finished  # rows the tiles above also wrote: moved to the band's start
                output[:, :, :kept] = output[:, :, finished:].clone()
                weight_sum[:, :, :kept] = weight_sum[:, :, finished:].clone()
                output[:, :, kept:] = 0
                weight_sum[:, :, kept:] = 0
                done = top * scale
            for left, right in cols:
                patch = forward(image[:, :, top:bottom, left:right]).float().cpu()
                if output is None:
                    output = torch.zeros(batch, patch.shape[1], band, width * scale)
                    weight_sum = torch.zeros(1, 1, band, width * scale)
                weight_y = blend_ramp((bottom - top) * scale, ramp, top > 0, bottom < height)
                weight_x = blend_ramp((right - left) * scale, ramp, left > 0, right < width)
                weight = weight_y[:, None] * weight_x[None, :]  # separable: w(y, x) = w_y(y) · w_x(x)
                out_y, out_x = slice(top * scale - done, bottom * scale - done), slice(left * scale, right * scale)
                output[:, :, out_y, out_x] += patch * weight
                weight_sum[:, :, out_y, out_x] += weight
                bar.update()
        last = height * scale - done
        yield from _pieces(done, output[:, :, :last], weight_sum[:, :, :last], rows)
    finally:
        bar.close()


def _pieces(top, output, weight_sum, rows):
    """(top + i, output / weight_sum) over row ranges of at most ``rows`` rows (weight_sum None: output as is)."""
    rows = rows or output.shape[2] or 1
    for start in range(0, output.shape[2], rows):
        piece = output[:, :, start:start + rows]
        yield top + start, piece if weight_sum is None else piece / weight_sum[:, :, start:start + rows]


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
        (B, C', H·scale, W·scale) float32 CPU tensor: the strips of :func:`tiled_strips` put together (to keep
        the output in its final dtype instead, take the strips).
    """
    check_tile_options(tile, overlap, align)
    if runs_whole(image.shape, tile):
        return forward(image).float().cpu()
    output = None
    for top, strip in tiled_strips(forward, image, scale, tile, overlap, align, progress):
        if output is None:
            output = torch.empty(*strip.shape[:2], image.shape[2] * scale, image.shape[3] * scale)
        output[:, :, top:top + strip.shape[2]] = strip
    return output
