"""Tiled inference (seamless, memory bounded by the tile) and half precision, on a real photo."""
import re
import tracemalloc

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import basicsr_taylor  # noqa: F401  (compat fixes before basicsr)
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img
from basicsr_taylor import TaylorSwinIR
from basicsr_taylor.infer import Upscaler, UnitFloatView, upscale_image
from basicsr_taylor.utils.image_io import from_unit_float, to_unit_float
from basicsr_taylor.utils.tiling import (MIN_TILE_STRIDE, band_rows, blend_ramp, check_tile_options, default_tile,
                                         smallest_tile, tile_grid, tile_spans, tiled_forward, tiled_strips)

CPU = torch.device('cpu')


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny networks, see conftest


@pytest.fixture(scope='module')
def network():
    torch.manual_seed(0)
    return TaylorSwinIR(upscale=2, window_size=8, embed_dim=12, depths=[2, 2], num_heads=[2, 2], mlp_ratio=2,
                        upsampler='pixelshuffle').eval()


@pytest.fixture(scope='module')
def photo():
    """skimage's astronaut at 128×128 (area-downscaled), (1, 3, H, W) RGB float in [0, 1], and its HR (256²)."""
    hr = skimage.data.astronaut()
    hr = cv2.resize(hr, (256, 256), interpolation=cv2.INTER_AREA)
    lr = cv2.resize(hr, (128, 128), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255, hr


def to_uint8(tensor):
    return (tensor[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_tile_spans_cover_the_image_on_the_window_grid():
    for size, tile, overlap, align in [(100, 32, 8, 1), (64, 32, 0, 8), (33, 32, 8, 8), (20, 32, 8, 8),
                                       (257, 64, 16, 8), (300, 144, 32, 48), (130, 50, 10, 16)]:
        spans = tile_spans(size, tile, overlap, align)
        covered = np.zeros(size, bool)
        for start, stop in spans:
            assert start % align == 0 and 0 <= start < stop <= size
            assert stop - start <= max(align, tile // align * align)  # never more than one tile
            covered[start:stop] = True
        assert covered.all() and spans[-1][1] == size, (size, tile, overlap, align)
        for (_, stop), (start, _) in zip(spans, spans[1:]):
            assert stop - start >= max(overlap, align if overlap else 0)  # the overlap, at least a window
    assert tile_spans(300, 144, 32, 48) == [(0, 144), (96, 240), (192, 300)]


def test_blend_ramp_fades_only_at_shared_sides():
    ramp = blend_ramp(10, 4, fade_start=True, fade_end=False)
    assert torch.allclose(ramp[:4], torch.tensor([0.125, 0.375, 0.625, 0.875])) and (ramp[4:] == 1).all()
    assert (blend_ramp(10, 4, False, False) == 1).all()
    assert torch.equal(blend_ramp(10, 4, True, True), blend_ramp(10, 4, True, True).flip(0))


def test_blending_is_exact_for_a_position_independent_network():
    """Nearest upscaling sees no context: tiles must reassemble it exactly, whatever the overlap."""
    image = torch.rand(2, 3, 45, 70)
    expected = F.interpolate(image, scale_factor=3, mode='nearest')
    for tile, overlap in [(16, 4), (32, 0), (20, 19)]:
        out = tiled_forward(lambda x: F.interpolate(x, scale_factor=3, mode='nearest'), image, 3, tile, overlap)
        assert torch.allclose(out, expected, atol=1e-6), (tile, overlap)


def test_tiled_matches_untiled_on_a_photo_and_the_network_only_sees_tiles(network, photo):
    lr, _ = photo
    seen = []

    def forward(x):
        seen.append(tuple(x.shape[-2:]))
        return network(x)

    with torch.inference_mode():
        full = network(lr)
        tiled = tiled_forward(forward, lr, 2, tile=64, overlap=16, align=8)
    assert len(seen) == 9 and max(max(size) for size in seen) == 64  # 3×3 tiles, never the whole 128² image
    psnr = calculate_psnr(to_uint8(full), to_uint8(tiled), crop_border=0)
    assert psnr > 45, psnr


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_half_precision_is_within_a_tenth_of_a_db_of_fp32_and_finite(network, photo, precision):
    lr, hr = photo
    fp32 = Upscaler(network, 2, CPU, 'fp32', tile=64, tile_overlap=16)(lr)
    half_upscaler = Upscaler(network, 2, CPU, precision, tile=64, tile_overlap=16)
    half = half_upscaler(lr)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert half_upscaler.fp32_fallbacks == 0  # the half-precision result itself was finite
    assert not torch.equal(half, fp32)  # it really ran in reduced precision
    psnr_fp32, psnr_half = calculate_psnr(to_uint8(fp32), hr, 0), calculate_psnr(to_uint8(half), hr, 0)
    assert abs(psnr_fp32 - psnr_half) < 0.1, (psnr_fp32, psnr_half)
    assert calculate_psnr(to_uint8(fp32), to_uint8(half), 0) > 40


def test_a_non_finite_half_precision_tile_is_recomputed_in_fp32(network, photo):
    lr, _ = photo

    class OverflowsInHalf(torch.nn.Module):
        upscale = 2

        def forward(self, x):
            out = network(x)
            return out * torch.inf if torch.is_autocast_enabled('cpu') else out

    upscaler = Upscaler(OverflowsInHalf(), 2, CPU, 'bf16', tile=64, tile_overlap=16)
    out = upscaler(lr[:, :, :64, :64])
    assert torch.isfinite(out).all() and upscaler.fp32_fallbacks == 1
    with torch.inference_mode():
        assert torch.allclose(out, network(lr[:, :, :64, :64]))


def test_bad_tile_options_are_rejected():
    for tile, overlap, match in [(-1, 0, '--tile'), (32, 32, '--tile-overlap'), (32, -2, '--tile-overlap')]:
        with pytest.raises(ValueError, match=match):
            check_tile_options(tile, overlap)


@pytest.mark.parametrize('window, size, tiles, overlaps', [
    (16, 96, (7, 16, 20, 32, 40, 48, 64), (1, 2, 8, 16, 32)),
    (48, 160, (48, 64, 95, 96, 100, 144), (2, 16, 32, 47)),
], ids=['window16', 'window48'])
def test_every_accepted_tile_and_overlap_is_seamless_on_a_photo(window, size, tiles, overlaps):
    """Any (tile, overlap > 0) is either refused with a tile that works, or within 45 dB of one pass; tiles of
    one window with no overlap show the seams this detects (issue 12: --tile 7 silently lost its overlap)."""
    torch.manual_seed(0)
    net = TaylorSwinIR(upscale=2, window_size=window, embed_dim=12, depths=[2, 2], num_heads=[2, 2],
                       mlp_ratio=2, upsampler='pixelshuffle').eval()
    hr = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    lr = torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        full = to_uint8(net(lr))

        layouts = {}  # pairs with the same (tile, step) give the same tiles: compute each layout once

        def psnr(tile, overlap):
            layout = tile_grid(tile, overlap, window)
            if layout not in layouts:
                tiled = Upscaler(net, 2, CPU, tile=tile, tile_overlap=overlap)(lr)
                layouts[layout] = calculate_psnr(full, to_uint8(tiled), 0)
            return layouts[layout]

        assert psnr(window, 0) < 40  # an explicit --tile-overlap 0 is allowed, and seams are visible
        refused = 0
        for tile in tiles:
            for overlap in (o for o in overlaps if o < tile):
                try:
                    check_tile_options(tile, overlap, window)
                except ValueError as err:
                    refused += 1
                    suggested = int(re.search(r'use --tile (\d+) or more', str(err)).group(1))
                    assert psnr(suggested, overlap) >= 45, (tile, overlap, suggested)
                    continue
                assert psnr(tile, overlap) >= 45, (tile, overlap)
        assert refused  # tiles of a single window with an overlap


def test_the_commands_refuse_crowded_tiles_and_name_the_smallest_tile_they_accept():
    """With the commands' MIN_TILE_STRIDE a tile is accepted exactly when it and all larger ones keep the overlap
    on the window grid and start at least half a tile apart (each pixel computed at most 4 times); every refusal is
    one line naming the window and the smallest tile accepted (--tile 40 with the default overlap on window 8 would
    start a tile every 8 pixels: 25 times the work)."""
    for window in (1, 8, 16, 24, 48):
        for overlap in (0, 1, 8, 16, 32, 47, 100):
            accepted, refused = [], []
            for tile in range(1, 4 * (overlap + window) + 2):
                try:
                    check_tile_options(tile, overlap, window, MIN_TILE_STRIDE)
                except ValueError as err:
                    message = str(err)
                    assert '\n' not in message and (window == 1 or f"network's {window}-pixel window" in message)
                    refused.append((tile, int(re.search(r'use --tile (\d+) or more', message).group(1))))
                    continue
                rounded, step = tile_grid(tile, overlap, window)
                assert 2 * step >= rounded and rounded - step >= overlap, (window, overlap, tile)
                accepted.append(tile)
            smallest = min(accepted)
            assert all(tile < smallest for tile, _ in refused) and all(tile >= smallest for tile in accepted)
            assert {suggested for _, suggested in refused} <= {smallest} and smallest_tile(
                overlap, window, MIN_TILE_STRIDE) in range(smallest, smallest + window)
    assert tile_grid(smallest_tile(32, 8, MIN_TILE_STRIDE), 32, 8) == (64, 32)
    assert default_tile(32, 8) == 256 and default_tile(32, 24) == 264 and default_tile(200, 8) == 400


def full_buffer_blend(forward, image, scale, tile, overlap, align=1):
    """The reference: every tile's weighted output added into one float32 buffer of the whole output."""
    height, width = image.shape[2:]
    if not tile or (height <= tile and width <= tile):
        return forward(image).float()
    rounded, step = tile_grid(tile, overlap, align)
    output = weight_sum = None
    for top, bottom in tile_spans(height, tile, overlap, align):
        for left, right in tile_spans(width, tile, overlap, align):
            patch = forward(image[:, :, top:bottom, left:right]).float()
            if output is None:
                output = torch.zeros(image.shape[0], patch.shape[1], height * scale, width * scale)
                weight_sum = torch.zeros(1, 1, height * scale, width * scale)
            weight = (blend_ramp((bottom - top) * scale, (rounded - step) * scale, top > 0, bottom < height)[:, None]
                      * blend_ramp((right - left) * scale, (rounded - step) * scale, left > 0, right < width))
            output[:, :, top * scale:bottom * scale, left * scale:right * scale] += patch * weight
            weight_sum[:, :, top * scale:bottom * scale, left * scale:right * scale] += weight
    return output / weight_sum


def context_dependent(scale):
    """A stand-in network whose output depends on the whole tile (bilinear borders, the tile's mean), so that
    overlapping tiles disagree and the blend weights show in the result."""
    return lambda x: F.interpolate(x, scale_factor=scale, mode='bilinear') + x.mean((2, 3), keepdim=True) ** 2


class Nearest(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode='nearest')


def assemble(strips, rows=None):
    """The strips of tiled_strips, checked to come in order, each at most ``rows`` high, and put together."""
    strips = list(strips)
    tops = [top for top, _ in strips]
    assert tops == list(np.cumsum([0] + [strip.shape[2] for _, strip in strips[:-1]]))
    assert rows is None or max(strip.shape[2] for _, strip in strips) <= rows
    return torch.cat([strip for _, strip in strips], dim=2)


@pytest.mark.parametrize('size, scale, tile, overlap, align', [
    ((45, 70), 3, 16, 4, 1),  # tiles that do not divide the image
    ((61, 67), 2, 24, 8, 8),  # on a window grid: the last tile shorter
    ((100, 37), 4, 32, 16, 8),  # one column of tiles, tiles starting half a tile apart
    ((20, 90), 2, 32, 8, 8),  # one row of tiles
    ((64, 64), 2, 32, 0, 8),  # no overlap
    ((50, 50), 3, 40, 30, 1),  # tiles starting a quarter tile apart: three rows of tiles write the same rows
    ((30, 20), 2, 32, 8, 8),  # smaller than a tile: one pass
    ((30, 20), 2, 0, 32, 8),  # no tiling
])
def test_strips_equal_a_full_buffer_blend(size, scale, tile, overlap, align):
    """Blending one band of rows at a time adds the same terms in the same order as one buffer of the whole output:
    the results are equal, not just close, whatever the strip height asked for."""
    image = torch.rand(2, 3, *size)
    forward = context_dependent(scale)
    expected = full_buffer_blend(forward, image, scale, tile, overlap, align)
    assert torch.equal(tiled_forward(forward, image, scale, tile, overlap, align), expected)
    for rows in (None, 1, 7, 1000):
        strips = tiled_strips(forward, image, scale, tile, overlap, align, rows=rows)
        assert torch.equal(assemble(strips, rows), expected), rows


class LargestTensor(TorchDispatchMode):
    """The most elements of any tensor a torch operation makes (views included) while it is active."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
        return out


def test_tiled_strips_keep_one_band_of_rows_in_float32():
    """No tensor of the whole output's size is made: the largest is the band of one row of tiles (band_rows() input
    rows), here a tenth of the output."""
    scale, tile, overlap, align = 2, 24, 8, 8
    image = torch.rand(1, 3, 240, 50)
    band = band_rows(240, tile, overlap, align)
    assert band == 24 and band_rows(20, tile, overlap, align) == 20 and band_rows(240, 0, overlap, align) == 240
    with LargestTensor() as largest:
        for _, strip in tiled_strips(context_dependent(scale), image, scale, tile, overlap, align, rows=8):
            assert strip.shape[2] <= 8
    assert largest.numel == 3 * band * scale * 50 * scale == 3 * 240 * scale * 50 * scale // 10


def reference_upscale_image(image, forward, scale, tile, overlap, align, alpha_upsampler):
    """upscale_image as one float32 image through full_buffer_blend: the whole input and output in float32."""
    pixels, _ = to_unit_float(image)
    alpha = pixels[:, :, 3] if pixels.ndim == 3 and pixels.shape[2] == 4 else None
    pixels = pixels[:, :, :3] if alpha is not None else pixels

    def channels(plane):
        bgr = np.repeat(plane[:, :, None], 3, axis=2) if plane.ndim == 2 else plane
        out = tensor2img(full_buffer_blend(forward, img2tensor(bgr, bgr2rgb=True)[None], scale, tile, overlap, align),
                         rgb2bgr=True, out_type=np.float32)
        return out.mean(axis=2) if plane.ndim == 2 else out

    sr = channels(pixels)
    if alpha is not None:
        height, width = alpha.shape
        sr_alpha = channels(alpha) if alpha_upsampler == 'model' else cv2.resize(
            alpha, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
        sr = np.dstack([sr, np.clip(sr_alpha, 0, 1)])
    return from_unit_float(sr, image.dtype)


@pytest.mark.parametrize('shape, dtype, tile, alpha_upsampler', [
    ((75, 90, 3), np.uint8, 32, 'bicubic'),
    ((150, 40), np.uint16, 40, 'bicubic'),  # gray, 16-bit, one column of tiles
    ((140, 70, 4), np.uint8, 32, 'bicubic'),  # the alpha resized in strips of ALPHA_ROWS with their context
    ((50, 60, 4), np.uint16, 32, 'model'),
    ((30, 20, 3), np.uint8, 32, 'bicubic'),  # smaller than a tile
])
def test_upscale_image_equals_blending_the_whole_image_in_float32(network, shape, dtype, tile, alpha_upsampler):
    image = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    upscaler = Upscaler(network, 2, CPU, tile=tile, tile_overlap=8)
    with torch.no_grad():
        expected = reference_upscale_image(image, network, 2, tile, 8, 8, alpha_upsampler)
    out = upscale_image(image, upscaler, 3, alpha_upsampler)
    assert out.dtype == dtype and np.array_equal(out, expected)


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('dtype', [np.uint8, np.uint16])
def test_the_alpha_resized_in_strips_equals_resizing_it_whole(scale, dtype):
    image = np.random.default_rng(scale).integers(0, np.iinfo(dtype).max + 1, (203, 31, 4), dtype=dtype)
    upscaler = Upscaler(Nearest(scale), scale, CPU, tile=32, tile_overlap=8, align=8)
    alpha = to_unit_float(image[:, :, 3])[0]
    expected = cv2.resize(alpha, (31 * scale, 203 * scale), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(upscale_image(image, upscaler, 3)[:, :, 3], from_unit_float(expected, dtype))


def test_unit_float_view_gives_the_tiles_of_the_converted_image():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    whole = img2tensor(to_unit_float(image)[0], bgr2rgb=True)[None]
    view = UnitFloatView(image, rgb=True)
    assert view.shape == tuple(whole.shape) and torch.equal(view[:, :, 5:15, 8:30], whole[:, :, 5:15, 8:30])
    planes = UnitFloatView(image, rgb=False)
    assert planes.shape == (3, 1, 20, 30)
    assert torch.equal(planes[:, :, 2:9, :], whole.flip(1).permute(1, 0, 2, 3)[:, :, 2:9])


def test_upscale_image_holds_the_output_in_its_dtype_not_float32():
    """NumPy's allocations while upscaling a tall photo: the uint8 output and a few float32 strips, far from the
    float32 output (4 times the uint8 one) that blending the whole image would hold."""

    image = np.random.default_rng(0).integers(0, 256, (400, 200, 3), dtype=np.uint8)
    upscaler = Upscaler(Nearest(4), 4, CPU, tile=32, tile_overlap=8, align=8)
    tracemalloc.start()
    try:
        out = upscale_image(image, upscaler, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, np.repeat(np.repeat(image, 4, axis=0), 4, axis=1))
    assert out.nbytes < peak < 2 * out.nbytes, (peak, out.nbytes)
