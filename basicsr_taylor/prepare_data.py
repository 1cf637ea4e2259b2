"""Prepare super-resolution training data the BasicSR way: sub-images, then LMDBs with meta_info.txt.

    python scripts/prepare_div2k.py --root datasets/DIV2K                 # DIV2K, x2/x3/x4
    python scripts/prepare_div2k.py --hr my_photos --out datasets/mine --scales 2   # any HR folder

Steps (each one skipped when its output already exists, so the script can be run again):

1. For every scale whose LR folder is missing, create it from the HR images with MATLAB bicubic
   (``basicsr.utils.matlab_functions.imresize``) after cropping HR to a multiple of the scale.
2. Cut HR into ``crop``×``crop`` sub-images every ``step`` pixels (BasicSR's extract_subimages recipe:
   480/240 for DIV2K) and LR into the matching ``crop/s``×``crop/s`` sub-images at the same places.
   HR positions are multiples of ``align`` (12 = lcm(2, 3, 4)), so one HR set pairs exactly with x2, x3 and x4.
3. Pack every sub-image folder into an LMDB with ``basicsr.utils.lmdb_util.make_lmdb_from_imgs``.

Every output is written under a ``.partial`` name and renamed when complete: an interrupted run never leaves a
folder or LMDB that looks finished.
"""
import argparse
import math
import os
import os.path as osp
import shutil
from multiprocessing import Pool

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from .image_io import IMAGE_EXTENSIONS

PNG_COMPRESSION = 3  # BasicSR's extract_subimages default


class DataPreparationError(ValueError):
    """A problem with the input data (missing folder, unreadable image, size mismatch)."""


def list_images(folder):
    """Sorted image file paths in ``folder`` (not recursive)."""
    if not osp.isdir(folder):
        raise DataPreparationError(f'image folder not found: {folder}')
    files = sorted(osp.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DataPreparationError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
    return files


def image_key(path, scale=None):
    """LMDB key of an image: its file stem, without DIV2K's LR suffix ``x{scale}`` (0001x2.png -> 0001)."""
    key = osp.splitext(osp.basename(path))[0]
    if scale is not None and key.endswith(f'x{scale}'):
        key = key[:-len(f'x{scale}')]
    if '.' in key or not key.isascii() or ' ' in key:
        raise DataPreparationError(f'image name {osp.basename(path)!r} cannot be an LMDB key '
                                   '(BasicSR needs ASCII names without dots or spaces): rename it')
    return key


def read_image(path):
    """cv2.imread (BGR, any depth), with a clear error for an unreadable file."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataPreparationError(f'cannot read image {path}')
    return img


def image_size(path):
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as err:  # noqa: BLE001  (Pillow raises several types for bad files)
        raise DataPreparationError(f'cannot read image {path}: {err}') from err
    return height, width


def bicubic_downscale(img, scale):
    """MATLAB-bicubic LR of an HR image (H, W[, C]), after cropping H and W to multiples of ``scale``."""
    from basicsr.utils.matlab_functions import imresize
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    if h == 0 or w == 0:
        raise DataPreparationError(f'image of size {img.shape[:2]} is smaller than the scale {scale}')
    peak = float(np.iinfo(img.dtype).max) if np.issubdtype(img.dtype, np.integer) else 1.  # 255 for uint8
    lr = np.asarray(imresize(img[:h, :w].astype(np.float32) / peak, 1 / scale))
    return np.clip(np.round(lr * peak), 0, peak).astype(img.dtype)


def build_dir_atomically(final_dir, build, overwrite=False):
    """Build ``final_dir`` through ``build(tmp_dir)`` in a sibling temp folder, then rename it into place.
    Skipped (returns False) when ``final_dir`` exists and not ``overwrite``."""
    if osp.isdir(final_dir) and not overwrite:
        return False
    tmp_dir = final_dir.rstrip('/') + '.partial'
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    build(tmp_dir)
    if osp.isdir(final_dir):
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    return True


def _run(worker, jobs, workers, desc):
    """Map ``worker`` over ``jobs`` with a progress bar, in ``workers`` processes (1: in this process)."""
    with tqdm(total=len(jobs), unit='image', desc=desc) as pbar:
        if workers <= 1:
            for job in jobs:
                worker(job)
                pbar.update(1)
        else:
            with Pool(workers) as pool:
                for _ in pool.imap_unordered(worker, jobs):
                    pbar.update(1)


def _write_bicubic(job):
    hr_path, out_dir, scale = job
    out = osp.join(out_dir, image_key(hr_path) + '.png')
    cv2.imwrite(out, bicubic_downscale(read_image(hr_path), scale))


def make_bicubic_lr(hr_dir, lr_dir, scale, workers=1, overwrite=False):
    """Create ``lr_dir`` with the MATLAB-bicubic x``scale`` LR image of every HR image (PNG, same key)."""
    jobs = lambda tmp: [(p, tmp, scale) for p in list_images(hr_dir)]  # noqa: E731
    return build_dir_atomically(lr_dir, lambda tmp: _run(_write_bicubic, jobs(tmp), workers, f'bicubic x{scale}'),
                                overwrite)


def crop_positions(length, crop, step, align):
    """Top-left corners along one axis: 0, step, 2·step, ... and a last one (a multiple of ``align``) that
    reaches as close to the border as alignment allows. An image shorter than ``crop`` gives one corner 0."""
    if length < crop:
        return [0]
    positions = list(range(0, length - crop + 1, step))
    last = (length - crop) // align * align
    if last > positions[-1]:
        positions.append(last)
    return positions


def sub_image_boxes(height, width, crop, step, align):
    """(top, left, size_h, size_w) of the HR sub-images of a height×width image, in BasicSR's s001 order.
    Sides shorter than ``crop`` are kept whole (cropped to a multiple of ``align``)."""
    size_h = crop if height >= crop else height // align * align
    size_w = crop if width >= crop else width // align * align
    if size_h == 0 or size_w == 0:
        raise DataPreparationError(f'image of size {height}x{width} is smaller than the alignment {align}')
    return [(top, left, size_h, size_w) for top in crop_positions(height, crop, step, align)
            for left in crop_positions(width, crop, step, align)]


def _write_sub_images(job):
    path, key, hr_size, scale, crop, step, align, out_dir = job
    img = read_image(path)
    if scale > 1:  # LR: must be HR / scale (floor or ceil, as MATLAB's imresize gives either)
        expected = [(math.floor(n / scale), math.ceil(n / scale)) for n in hr_size]
        if not all(lo <= got <= hi for got, (lo, hi) in zip(img.shape[:2], expected)):
            raise DataPreparationError(
                f'LR image {path} is {img.shape[0]}x{img.shape[1]}, but its HR image is {hr_size[0]}x{hr_size[1]}:'
                f' expected {expected[0][0]}x{expected[1][0]} for scale {scale}')
    for idx, (top, left, size_h, size_w) in enumerate(sub_image_boxes(*hr_size, crop, step, align), start=1):
        patch = img[top // scale:(top + size_h) // scale, left // scale:(left + size_w) // scale]
        cv2.imwrite(osp.join(out_dir, f'{key}_s{idx:03d}.png'), np.ascontiguousarray(patch),
                    [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])


def extract_sub_images(hr_dir, src_dir, out_dir, scale=1, crop=480, step=240, align=12, workers=1, overwrite=False):
    """Write the sub-images of ``src_dir`` (HR when scale == 1, else its x``scale`` LR) to ``out_dir``.

    Boxes come from the HR image sizes in ``hr_dir``, so HR and LR sub-images share names and positions.
    """
    for name, value in (('crop', crop), ('step', step)):
        if value <= 0 or value % align:
            raise DataPreparationError(f'{name}={value} must be a positive multiple of align={align}')
    if align % scale:
        raise DataPreparationError(f'align={align} must be a multiple of the scale {scale}')
    hr_files = list_images(hr_dir)
    src = {image_key(p, scale): p for p in list_images(src_dir)} if scale > 1 else None
    jobs = []
    for hr_path in hr_files:
        key = image_key(hr_path)
        path = hr_path if scale == 1 else src.get(key)
        if path is None:
            raise DataPreparationError(f'no x{scale} LR image for {hr_path} in {src_dir} '
                                       f'(looked for {key}.png or {key}x{scale}.png)')
        jobs.append((path, key, image_size(hr_path), scale, crop, step, align))
    desc = f'sub-images {osp.basename(out_dir)}'
    return build_dir_atomically(
        out_dir, lambda tmp: _run(_write_sub_images, [j + (tmp, ) for j in jobs], workers, desc), overwrite)


def lmdb_is_complete(lmdb_path, image_dir):
    """An LMDB (renamed into place only when finished) that lists every image of ``image_dir``."""
    meta = osp.join(lmdb_path, 'meta_info.txt')
    if not (osp.isfile(meta) and osp.isfile(osp.join(lmdb_path, 'data.mdb'))):
        return False
    with open(meta) as f:
        listed = {line.split(' ')[0] for line in f if line.strip()}
    return listed == {osp.splitext(f)[0] + '.png' for f in os.listdir(image_dir) if f.endswith('.png')}


def make_lmdb(image_dir, lmdb_path, workers=1, overwrite=False):
    """LMDB of the PNGs in ``image_dir`` via basicsr.utils.lmdb_util.make_lmdb_from_imgs (keys = file stems)."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    if not lmdb_path.endswith('.lmdb'):
        raise DataPreparationError(f'LMDB path must end with .lmdb: {lmdb_path}')
    if not overwrite and lmdb_is_complete(lmdb_path, image_dir):
        return False
    names = sorted(f for f in os.listdir(image_dir) if f.endswith('.png'))
    if not names:
        raise DataPreparationError(f'no PNG images in {image_dir}')
    data_bytes = sum(osp.getsize(osp.join(image_dir, f)) for f in names)
    tmp_path = lmdb_path[:-len('.lmdb')] + '.partial.lmdb'
    shutil.rmtree(tmp_path, ignore_errors=True)
    make_lmdb_from_imgs(image_dir, tmp_path, names, [osp.splitext(f)[0] for f in names],
                        multiprocessing_read=workers > 1, n_thread=max(workers, 1),
                        map_size=4 * data_bytes + (64 << 20))  # PNG level 1 may be ~2x larger than level 3
    shutil.rmtree(lmdb_path, ignore_errors=True)
    os.replace(tmp_path, lmdb_path)
    return True


def sub_dir_names(hr_dir, scale):
    """(HR sub folder name, LR sub folder name): DIV2K_train_HR -> DIV2K_train_HR_sub, DIV2K_train_LR_bicubic_X2_sub."""
    hr_name = osp.basename(osp.normpath(hr_dir))
    base = hr_name[:-len('_HR')] if hr_name.endswith('_HR') else hr_name
    return f'{hr_name}_sub', f'{base}_LR_bicubic_X{scale}_sub'


def prepare(hr_dir, lr_template, out_dir, scales=(2, 3, 4), crop=480, step=240, align=12, workers=1,
            overwrite=False, lmdb=True):
    """Run the three steps; return {'hr': (sub_dir, lmdb_path), scale: (sub_dir, lmdb_path), ...}.

    ``lr_template`` is the LR folder with ``{scale}`` in it (e.g. ``.../DIV2K_train_LR_bicubic/X{scale}``).
    """
    list_images(hr_dir)  # clear error for a missing or empty HR folder
    if '{scale}' not in lr_template and len(scales) > 1:
        raise DataPreparationError(f'the LR folder {lr_template!r} needs a {{scale}} placeholder for several scales')
    os.makedirs(out_dir, exist_ok=True)
    outputs = {}
    hr_sub = osp.join(out_dir, sub_dir_names(hr_dir, scales[0])[0])
    extract_sub_images(hr_dir, hr_dir, hr_sub, 1, crop, step, align, workers, overwrite)
    outputs['hr'] = (hr_sub, hr_sub + '.lmdb')
    for scale in scales:
        lr_dir = lr_template.format(scale=scale)
        if not osp.isdir(lr_dir):
            print(f'{lr_dir} not found: creating MATLAB-bicubic x{scale} LR images from {hr_dir}')
            make_bicubic_lr(hr_dir, lr_dir, scale, workers)
        lr_sub = osp.join(out_dir, sub_dir_names(hr_dir, scale)[1])
        extract_sub_images(hr_dir, lr_dir, lr_sub, scale, crop, step, align, workers, overwrite)
        outputs[scale] = (lr_sub, lr_sub + '.lmdb')
    if lmdb:
        for sub_dir, lmdb_path in outputs.values():
            make_lmdb(sub_dir, lmdb_path, workers, overwrite)
    return outputs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default='datasets/DIV2K', help='DIV2K folder (default: %(default)s)')
    parser.add_argument('--hr', help='HR image folder (default: ROOT/DIV2K_train_HR)')
    parser.add_argument('--lr', help='LR folder with {scale} (default: ROOT/DIV2K_train_LR_bicubic/X{scale}); '
                        'created with MATLAB bicubic when missing')
    parser.add_argument('--out', help='output folder for sub-images and LMDBs (default: ROOT)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    parser.add_argument('--crop', type=int, default=480, help='HR sub-image size (default: %(default)s)')
    parser.add_argument('--step', type=int, default=240, help='HR sub-image stride (default: %(default)s)')
    parser.add_argument('--align', type=int, default=12,
                        help='HR sub-image corners are multiples of this; a multiple of every scale (default: 12)')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument('--overwrite', action='store_true', help='rebuild outputs that already exist')
    parser.add_argument('--no-lmdb', action='store_true', help='only sub-image folders')
    args = parser.parse_args(argv)
    if args.hr is None:  # DIV2K layout under --root
        args.hr = osp.join(args.root, 'DIV2K_train_HR')
        args.lr = args.lr or osp.join(args.root, 'DIV2K_train_LR_bicubic', 'X{scale}')
        args.out = args.out or args.root
    else:  # any HR folder: outputs (and missing LR folders) next to it unless --out is given
        args.out = args.out or osp.dirname(osp.abspath(args.hr))
        base = sub_dir_names(args.hr, 0)[1].split('_LR_bicubic')[0]
        args.lr = args.lr or osp.join(args.out, f'{base}_LR_bicubic', 'X{scale}')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        outputs = prepare(args.hr, args.lr, args.out, tuple(args.scales), args.crop, args.step, args.align,
                          args.workers, args.overwrite, not args.no_lmdb)
    except DataPreparationError as err:
        raise SystemExit(f'prepare_data: error: {err}') from None
    for name, (sub_dir, lmdb_path) in outputs.items():
        print(f'{"HR" if name == "hr" else f"LR x{name}"}: {sub_dir}' + ('' if args.no_lmdb else f', {lmdb_path}'))


if __name__ == '__main__':
    main()
