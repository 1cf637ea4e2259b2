"""Tiled inference (seamless, memory bounded by the tile) and half precision, on a real photo."""
import re

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

import basicsr_taylor  # noqa: F401  (compat fixes before basicsr)
from basicsr.metrics import calculate_psnr
from basicsr_taylor import TaylorSwinIR
from basicsr_taylor.infer import Upscaler
from basicsr_taylor.utils.tiling import (MIN_TILE_STRIDE, blend_ramp, check_tile_options, default_tile, smallest_tile,
                                         tile_grid, tile_spans, tiled_forward)

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
