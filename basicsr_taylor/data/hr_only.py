"""HR-only data for real-world SR (BasicSR's RealESRGANDataset): sub-images, a meta_info file and an LMDB.

The LR images are synthesised during training (Real-ESRGAN's degradations, in the option file), so only HR
sub-images are written. Optionally Real-ESRGAN's multiscale step first adds smaller copies of every HR image
(Lanczos at 3/4, 1/2, 1/3, and with the shorter side 400), named ``<key>T0`` ... ``<key>T3``.

    <out>/<hr>_multiscale/                    the smaller copies (--multiscale)
    <out>/<hr>[_multiscale]_sub/              sub-images of the HR images (and of the copies)
    <out>/meta_info/meta_info_<sub>.txt       one path per line, relative to <out>: dataroot_gt <out>, io_backend disk
    <out>/<sub>.lmdb                          the same sub-images: dataroot_gt <sub>.lmdb, io_backend lmdb
"""
import os.path as osp

import cv2
import numpy as np
from PIL import Image

from ..utils.files import write_atomically
from ..utils.image_io import list_images, read_image
from .folders import DataPreparationError, build_dir_atomically, image_key, image_size, run_jobs
from .lmdb_files import make_lmdb
from .sub_images import _write_sub_images

MULTISCALE_FACTORS = (0.75, 0.5, 1 / 3)  # Real-ESRGAN's scripts/generate_multiscale_DF2K.py
MULTISCALE_SHORT_SIDE = 400  # and one copy whose shorter side is 400 px (made only when that shrinks the image)


def lanczos_resize(img, width, height):
    """PIL's Lanczos resampling (what Real-ESRGAN uses) of an (H, W[, C]) array of any depth, channel by channel
    in float32, rounded back to the input's dtype."""
    planes = img[:, :, None] if img.ndim == 2 else img
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[:, :, c], dtype=np.float32))
                               .resize((width, height), Image.LANCZOS)) for c in range(planes.shape[2])], axis=2)
    if np.issubdtype(img.dtype, np.integer):
        out = np.clip(np.round(out), 0, np.iinfo(img.dtype).max)
    out = out.astype(img.dtype)
    return out[:, :, 0] if img.ndim == 2 else out


def multiscale_sizes(height, width):
    """[(width, height)] of the smaller copies of a height×width image, in Real-ESRGAN's T0..T3 order."""
    sizes = [(int(width * f), int(height * f)) for f in MULTISCALE_FACTORS]
    if min(height, width) > MULTISCALE_SHORT_SIDE:
        short = MULTISCALE_SHORT_SIDE
        sizes.append((short, int(short * height / width)) if width < height else (int(short * width / height), short))
    return [(w, h) for w, h in sizes if w > 0 and h > 0]


def _write_multiscale(job):
    path, out_dir = job
    img, key = read_image(path, orient=False, error=DataPreparationError), image_key(path)
    for idx, (width, height) in enumerate(multiscale_sizes(*img.shape[:2])):
        cv2.imwrite(osp.join(out_dir, f'{key}T{idx}.png'), lanczos_resize(img, width, height))


def make_multiscale(hr_dir, out_dir, workers=1, overwrite=False):
    """Real-ESRGAN's multiscale HR step: ``out_dir`` gets the smaller copies of every image of ``hr_dir``."""
    paths = list_images(hr_dir, error=DataPreparationError)
    return build_dir_atomically(
        out_dir, lambda tmp: run_jobs(_write_multiscale, [(p, tmp) for p in paths], workers, 'multiscale'), overwrite)


def extract_hr_sub_images(source_dirs, out_dir, crop=400, step=200, align=1, workers=1, overwrite=False):
    """Sub-images of every image of ``source_dirs`` in one folder (BasicSR's ``<key>_s001.png`` names)."""
    if crop <= 0 or step <= 0 or crop % align or step % align:
        raise DataPreparationError(f'crop={crop} and step={step} must be positive multiples of align={align}')
    jobs, owners = [], {}
    for folder in source_dirs:
        for path in list_images(folder, error=DataPreparationError):
            key = image_key(path)
            if key in owners:
                raise DataPreparationError(f'two images give the sub-image names {key}_s*.png: {owners[key]} and '
                                           f'{path}; rename one')
            owners[key] = path
            jobs.append((path, key, image_size(path), 1, crop, step, align))
    return build_dir_atomically(
        out_dir, lambda tmp: run_jobs(_write_sub_images, [j + (tmp, ) for j in jobs], workers, 'HR sub-images'),
        overwrite)


def write_meta_info(sub_dir, root, meta_path):
    """Real-ESRGAN's meta_info file: the PNGs of ``sub_dir``, one path relative to ``root`` per line."""
    names = [osp.relpath(path, root) for path in list_images(sub_dir, error=DataPreparationError)
             if path.endswith('.png')]
    write_atomically(meta_path, ''.join(f'{name}\n' for name in names))
    return meta_path


def prepare_hr_only(hr_dir, out_dir, crop=400, step=200, align=1, multiscale=False, workers=1, overwrite=False,
                    lmdb=True):
    """All of it for an HR folder; returns {'sub_dir', 'meta_info', 'lmdb' (None without), 'multiscale_dir'}."""
    list_images(hr_dir, error=DataPreparationError)  # a clear error for a missing or empty folder
    name = osp.basename(osp.normpath(hr_dir)) + ('_multiscale' if multiscale else '')
    sources, multiscale_dir = [hr_dir], None
    if multiscale:
        multiscale_dir = osp.join(out_dir, name)
        make_multiscale(hr_dir, multiscale_dir, workers, overwrite)
        sources.append(multiscale_dir)
    sub_dir = osp.join(out_dir, f'{name}_sub')
    extract_hr_sub_images(sources, sub_dir, crop, step, align, workers, overwrite)
    meta_info = write_meta_info(sub_dir, out_dir, osp.join(out_dir, 'meta_info', f'meta_info_{name}_sub.txt'))
    lmdb_path = sub_dir + '.lmdb' if lmdb else None
    if lmdb:
        make_lmdb(sub_dir, lmdb_path, workers, overwrite)
    return dict(sub_dir=sub_dir, meta_info=meta_info, lmdb=lmdb_path, multiscale_dir=multiscale_dir)
