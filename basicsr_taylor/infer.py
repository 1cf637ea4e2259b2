"""Super-resolve your own images with a bundled TaylorSwinIR or a trained (any BasicSR network_g) checkpoint.

    basicsr-taylor-infer -i INPUT -o OUTDIR [--scale 2|3|4]          the bundled model of that scale (default 2)
    basicsr-taylor-infer -i INPUT -o OUTDIR --model net_g_latest.pth [--opt options/train_x2.yml]
                         [--tile 256] [--tile-overlap 32] [--precision fp32|fp16|bf16] [--device auto|cpu|cuda]
    basicsr-taylor-infer --list-models                              the bundled models (without importing torch)

INPUT is an image file or a folder of them. Outputs keep the input names plus a suffix (``baby.png`` ->
``baby_x2.png``). Grayscale, RGBA (alpha upscaled separately), 16-bit (written back 16-bit) and EXIF-rotated
images are handled; unreadable files are reported and skipped. Exit code: 0 if every image was written,
1 if any failed, 2 for a usage error (bad checkpoint, option file or arguments).
"""
import argparse
import logging
import sys
import time
from os import path as osp

from basicsr_taylor.utils.cli import answer_help_early

PRECISION_NAMES = ('fp32', 'fp16', 'bf16')  # = models.precision.PRECISIONS (imported below, with torch)
ALPHA_UPSAMPLERS = ('bicubic', 'model')
SCALES = (2, 3, 4)
DEFAULT_SCALE = 2


class ListModels(argparse.Action):
    """--list-models: print the bundled models and exit (answered while parsing, before torch is imported)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from basicsr_taylor.zoo import registry
        try:
            print(registry.format_table(registry.entries()))
        except registry.ZooError as error:
            parser.exit(2, f'error: {error}\n')
        parser.exit()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='basicsr-taylor-infer',
        description='Super-resolve images with a bundled TaylorSwinIR model or a BasicSR checkpoint.')
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder (created if missing)')
    parser.add_argument('--model', default=None,
                        help='a checkpoint (.pth; params_ema is used if present) or a bundled model\'s name '
                        '(--list-models); default: the bundled model of --scale')
    parser.add_argument('--scale', type=int, choices=SCALES, default=None,
                        help=f'without --model: the scale of the bundled model to use (default {DEFAULT_SCALE}); '
                        'with --model: checked against the model\'s own scale')
    parser.add_argument('--list-models', action=ListModels,
                        help='list the bundled models (name, scale, Set5 PSNR, size) and exit')
    parser.add_argument('--opt', default=None,
                        help='option file with network_g (default: the .yml of the experiment the checkpoint is in)')
    parser.add_argument('--tile', type=int, default=None,
                        help='tile side in input pixels, 0 = whole image; default: 256 rounded up to the window for '
                        'bundled models, 0 for checkpoints. Rounded down to a multiple of window_size; a tile too '
                        'small for the overlap, or whose tiles start less than half a tile apart, is refused with '
                        'the size to use')
    parser.add_argument('--tile-overlap', type=int, default=32, help='overlap of neighbouring tiles in input pixels')
    parser.add_argument('--precision', choices=PRECISION_NAMES, default='fp32',
                        help='fp32 (default); fp16 or bf16: autocast with float32 attention sums, for GPUs (on a '
                        'CPU they are slower than fp32)')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    parser.add_argument('--suffix', default=None, help='added to output names (default: _x<scale>)')
    parser.add_argument('--ext', default='auto', help='output format: auto (same as input) | png | jpg | tif | ...')
    parser.add_argument('--alpha-upsampler', choices=ALPHA_UPSAMPLERS, default='bicubic',
                        help='how to upscale an alpha channel: bicubic, or with the network as a gray image')
    return parser.parse_args(argv)


answer_help_early('infer', parse_args)  # --help, --list-models without torch or BasicSR; the heavy imports follow

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import basicsr_taylor  # noqa: E402,F401  (compat fixes before basicsr; registers TaylorSwinIR)
from basicsr.utils import img2tensor, tensor2img  # noqa: E402
from basicsr_taylor import zoo  # noqa: E402
from basicsr_taylor.archs.shifted_windows import pad_to_multiple  # noqa: E402
from basicsr_taylor.models.checkpoint import (  # noqa: E402,F401  (infer.load_network: a checkpoint's network)
    CheckpointError, load_network, network_in_channels, network_scale, network_window_size)
from basicsr_taylor.utils.image_io import (  # noqa: E402
    IMAGE_EXTENSIONS, ImageReadError, from_unit_float, list_images, read_image, to_unit_float, write_image)
from basicsr_taylor.models.precision import PRECISIONS  # noqa: E402  (the names of train:precision too)
from basicsr_taylor.utils.tiling import (  # noqa: E402
    MIN_TILE_STRIDE, check_tile_options, default_tile, tile_grid, tiled_forward, tiled_strips)

logger = logging.getLogger('basicsr_taylor.infer')
STRIP_ROWS = 64  # output rows converted to the image's dtype at a time (their float32 copies are all that's held)
ALPHA_ROWS = 64  # input rows of the alpha channel resized at a time


def resolve_device(name):
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == 'auto':
        if not torch.cuda.is_available():
            logger.info('--device auto: no CUDA GPU here, running on the CPU')
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f'--device {name}: not a device (use auto, cpu, cuda or cuda:N)') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: CUDA is not available on this machine (use --device cpu or auto)')
    return device


def check_precision(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f'--precision must be one of {tuple(PRECISIONS)}, got {precision!r}')
    if precision == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise ValueError('--precision bf16: this GPU does not support bfloat16 (use fp16 or fp32)')
    if precision != 'fp32' and device.type == 'cpu':
        logger.warning('--precision %s on the CPU: half precision is emulated there and several times slower than '
                       'fp32 (4-5x measured for fp16); use fp32 on CPUs', precision)


def check_output(output, extension):
    """Before any work: the output folder can be one, and cv2 can write the format."""
    if osp.exists(output) and not osp.isdir(output):
        raise ValueError(f'--output {output}: exists and is not a folder')
    if extension != 'auto' and not cv2.haveImageWriter('x.' + extension.lstrip('.')):
        raise ValueError(f'--ext {extension}: OpenCV cannot write this format (use auto, png, jpg, tif, bmp, webp)')


class Upscaler:
    """A network plus how to run it: device, precision, tiling. Call it on (B, C, H, W) float CPU tensors.

    fp16/bf16 run under autocast (weights stay float32; normalisations and TaylorShift's sums stay in float32).
    A tile whose half-precision output is not finite is recomputed in float32, with a warning.
    """

    def __init__(self, network, scale, device, precision='fp32', tile=0, tile_overlap=32, progress=False,
                 align=None):
        self.align = align or network_window_size(network, {})  # tiles start on the network's padding grid
        # BasicSR's SwinIR does not pad its input (its SwinIRModel does, at test time): pad here as it does
        self.pad = 1 if hasattr(network, 'pad_multiple') else network_window_size(network, {})
        check_tile_options(tile, tile_overlap, self.align)
        check_precision(precision, device)
        self.network = network.to(device).eval()
        self.scale = scale
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.progress = progress
        self.fp32_fallbacks = 0

    @torch.no_grad()  # not inference_mode: tensors the network caches (region ids) must stay usable in training
    def _forward(self, x):
        height, width = x.shape[-2:]
        x = x.to(self.device)
        if self.pad > 1:  # reflect-padded bottom and right, cropped off below (pad_to_multiple copies the tile)
            x = pad_to_multiple(x, self.pad)
        if self.dtype != torch.float32:
            with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                out = self.network(x).float()
            if torch.isfinite(out).all():
                return out[..., :height * self.scale, :width * self.scale]
            self.fp32_fallbacks += 1
            logger.warning('non-finite %s output on a %dx%d tile: recomputed in fp32', self.dtype, height, width)
        return self.network(x).float()[..., :height * self.scale, :width * self.scale]

    def __call__(self, x):
        return tiled_forward(self._forward, x, self.scale, self.tile, self.tile_overlap, self.align, self.progress)

    def strips(self, x, rows=None):
        """(top, float32 output rows top..top+n) in order, as tiled_strips: the output is never held whole."""
        return tiled_strips(self._forward, x, self.scale, self.tile, self.tile_overlap, self.align, self.progress,
                            rows)


class UnitFloatView:
    """An (H, W) or (H, W, 3) BGR uint8/uint16 array as the (B, C, H, W) float32 tensor in [0, 1] that a network
    takes, converted one region at a time when indexed ``[:, :, rows, cols]`` (as tiled_strips reads its tiles), so
    the image is never held whole in float32. ``rgb``: one RGB image (gray repeated to 3 channels), as img2tensor
    makes it; else each channel on its own, a batch of 1-channel images."""

    def __init__(self, pixels, rgb):
        self.pixels = pixels
        self.rgb = rgb
        height, width = pixels.shape[:2]
        self.shape = (1, 3, height, width) if rgb else (1 if pixels.ndim == 2 else pixels.shape[2], 1, height, width)

    def __getitem__(self, key):
        _, _, rows, cols = key
        region, _ = to_unit_float(self.pixels[rows, cols])
        if self.rgb:
            bgr = np.repeat(region[:, :, None], 3, axis=2) if region.ndim == 2 else region
            return img2tensor(bgr, bgr2rgb=True)[None]
        planes = region[None] if region.ndim == 2 else region.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(planes))[:, None]


def upscale_image(image, upscaler, in_channels, alpha_upsampler='bicubic'):
    """Super-resolve an (H, W) or (H, W, 3|4) BGR[A] uint8/uint16 array; same layout and dtype out.

    The output array is allocated in the image's dtype and filled strip by strip as the tiles finish it: float32
    is held for one tile of the input, one band of tile rows of the output and STRIP_ROWS rows being converted."""
    if in_channels not in (1, 3):
        raise ValueError(f'networks with in_chans={in_channels} are not supported (1 or 3)')
    height, width = image.shape[:2]
    scale = upscaler.scale
    out = np.empty((height * scale, width * scale) + image.shape[2:], image.dtype)
    alpha = image.ndim == 3 and image.shape[2] == 4
    color = out[:, :, :3] if alpha else out
    for top, sr in _upscale_channels(image[:, :, :3] if alpha else image, upscaler, in_channels):
        color[top:top + len(sr)] = from_unit_float(sr, image.dtype)
    if alpha:
        if alpha_upsampler == 'model':
            strips = _upscale_channels(image[:, :, 3], upscaler, in_channels)
        else:
            strips = _bicubic_strips(image[:, :, 3], scale)
        for top, sr_alpha in strips:
            out[top:top + len(sr_alpha), :, 3] = from_unit_float(np.clip(sr_alpha, 0, 1), image.dtype)
    return out


def _upscale_channels(pixels, upscaler, in_channels):
    """(H, W) gray or (H, W, 3) BGR uint8/uint16 -> (top, float32 output rows top..top+n in [0, 1] of the same
    layout), strip by strip."""
    gray = pixels.ndim == 2
    if in_channels == 3:  # gray is repeated to RGB, and the three outputs averaged back
        for top, strip in upscaler.strips(UnitFloatView(pixels, rgb=True), STRIP_ROWS):
            out = tensor2img(strip, rgb2bgr=True, out_type=np.float32)
            yield top, out.mean(axis=2) if gray else out
    else:  # each channel on its own, as a batch
        for top, strip in upscaler.strips(UnitFloatView(pixels, rgb=False), STRIP_ROWS):
            out = strip.clamp_(0, 1)[:, 0].numpy()
            yield top, out[0] if gray else out.transpose(1, 2, 0)


def _bicubic_strips(plane, scale):
    """(top, float32 output rows top..top+n) of cv2's bicubic resize of the (H, W) uint8/uint16 ``plane`` in [0, 1],
    ALPHA_ROWS input rows at a time with the 2 rows each side that the cubic kernel reads: the values of resizing
    the whole plane."""
    height, width = plane.shape
    for start in range(0, height, ALPHA_ROWS):
        stop = min(start + ALPHA_ROWS, height)
        above, below = min(start, 2), min(height - stop, 2)
        region, _ = to_unit_float(plane[start - above:stop + below])
        resized = cv2.resize(region, (width * scale, len(region) * scale), interpolation=cv2.INTER_CUBIC)
        yield start * scale, resized[above * scale:len(resized) - below * scale]


def output_path(image_path, output_dir, suffix, extension):
    stem, input_extension = osp.splitext(osp.basename(image_path))
    extension = input_extension if extension == 'auto' else '.' + extension.lstrip('.')
    return osp.join(output_dir, f'{stem}{suffix}{extension}')


def load_model(model=None, scale=None, opt_path=None):
    """The network of --model (a checkpoint or a bundled model's name), else the bundled model of --scale (default
    2); a --scale that differs from the model's is an error. Returns (network, network options, where it came from,
    registry entry or None for a checkpoint)."""
    if model is None:
        entry = zoo.for_scale(scale or DEFAULT_SCALE)
        if entry is None:
            have = ', '.join(sorted({f'x{known["scale"]}' for known in zoo.entries()})) or 'none'
            raise zoo.ZooError(f'no bundled model for x{scale or DEFAULT_SCALE} yet (bundled: {have}); '
                               'pass --model CHECKPOINT')
        if opt_path:
            raise ValueError(f'--opt {opt_path} needs --model (a checkpoint); the bundled models bring their options')
        model = zoo.PREFIX + entry['name']
    network, network_opt, source, entry = zoo.load_network(model, opt_path)
    own_scale = network_scale(network, network_opt)
    if scale is not None and scale != own_scale:
        raise ValueError(f'--scale {scale}: --model {model} is a x{own_scale} model (leave --scale out to use its '
                         'scale, or pass a model of that scale)')
    return network, network_opt, source, entry


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s: %(message)s')
    logger.setLevel(logging.INFO)
    try:
        check_output(args.output, args.ext)
        device = resolve_device(args.device)
        network, network_opt, source, entry = load_model(args.model, args.scale, args.opt)
        scale = network_scale(network, network_opt)
        window = network_window_size(network, network_opt)
        tile = args.tile
        if tile is None:  # bundled models tile large inputs by default; checkpoints run whole unless asked
            tile = default_tile(args.tile_overlap, window) if entry is not None else 0
        check_tile_options(tile, args.tile_overlap, window, MIN_TILE_STRIDE)
        upscaler = Upscaler(network, scale, device, args.precision, tile, args.tile_overlap, progress=True,
                            align=window)
        if not osp.exists(args.input):
            raise FileNotFoundError(f'--input {args.input}: no such file or folder')
        images = list_images(args.input, files=True)  # the file, or the images of the folder
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if not images:
        print(f'error: no images ({", ".join(IMAGE_EXTENSIONS)}) in {args.input}', file=sys.stderr)
        return 2
    if entry is not None:
        print(f'using {source} ({zoo.describe(entry)}; --list-models shows all)')
    if tile:
        tile, step = tile_grid(tile, args.tile_overlap, window)
        default = ' (the default; --tile 0 runs each image whole)' if args.tile is None else ''
        logger.info('tiles of %d pixels every %d (window %d), neighbours share %d%s', tile, step, window, tile - step,
                    default)
    in_channels = network_in_channels(network, network_opt)
    suffix = f'_x{scale}' if args.suffix is None else args.suffix
    logger.info('network_g of %s (x%d) on %s, %s; %d image(s)', source, scale, device, args.precision, len(images))
    failed = []
    for image_path in tqdm(images, desc='images', unit='img'):
        target = output_path(image_path, args.output, suffix, args.ext)
        start = time.perf_counter()
        try:
            if osp.abspath(target) == osp.abspath(image_path):
                raise ValueError('output would overwrite the input (give another --output or --suffix)')
            image = read_image(image_path)
            write_image(upscale_image(image, upscaler, in_channels, args.alpha_upsampler), target)
        except (ImageReadError, OSError, ValueError, RuntimeError) as error:
            failed.append(image_path)
            hint = ' (try a smaller --tile)' if isinstance(error, torch.cuda.OutOfMemoryError) else ''
            tqdm.write(f'FAILED {image_path}: {error}{hint}', file=sys.stderr)
            continue
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        height, width = image.shape[:2]
        tqdm.write(f'{osp.basename(image_path)}: {width}x{height} -> {width * scale}x{height * scale} '
                   f'in {time.perf_counter() - start:.2f}s -> {target}')
    print(f'{len(images) - len(failed)} of {len(images)} image(s) written to {args.output}'
          + (f'; {len(failed)} failed: {", ".join(map(osp.basename, failed))}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
