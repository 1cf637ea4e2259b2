"""MATLAB-bicubic LR images (``basicsr.utils.matlab_functions.imresize``), the SR benchmarks' degradation."""
import os.path as osp

import cv2
import numpy as np

from ..utils.image_io import list_images, read_image
from .folders import DataPreparationError, build_dir_atomically, image_key, run_jobs


def bicubic_downscale(img, scale):
    """MATLAB-bicubic LR of an HR image (H, W[, C]), after cropping H and W to multiples of ``scale``."""
    from basicsr.utils.matlab_functions import imresize
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    if h == 0 or w == 0:
        raise DataPreparationError(f'image of size {img.shape[:2]} is smaller than the scale {scale}')
    peak = float(np.iinfo(img.dtype).max) if np.issubdtype(img.dtype, np.integer) else 1.  # 255 for uint8
    lr = np.asarray(imresize(img[:h, :w].astype(np.float32) / peak, 1 / scale))
    return np.clip(np.round(lr * peak), 0, peak).astype(img.dtype)



def _write_bicubic(job):
    hr_path, out_dir, scale = job
    out = osp.join(out_dir, image_key(hr_path) + '.png')
    cv2.imwrite(out, bicubic_downscale(read_image(hr_path, orient=False, error=DataPreparationError), scale))


def make_bicubic_lr(hr_dir, lr_dir, scale, workers=1, overwrite=False):
    """Create ``lr_dir`` with the MATLAB-bicubic x``scale`` LR image of every HR image (PNG, same key)."""
    jobs = lambda tmp: [(p, tmp, scale) for p in list_images(hr_dir, error=DataPreparationError)]  # noqa: E731
    return build_dir_atomically(lr_dir, lambda tmp: run_jobs(_write_bicubic, jobs(tmp), workers, f'bicubic x{scale}'),
                                overwrite)

