"""HR sub-images and the matching LR sub-images (BasicSR's extract_subimages recipe)."""
import math
import os.path as osp

import cv2
import numpy as np

from ..utils.image_io import list_images, read_image
from .folders import DataPreparationError, build_dir_atomically, image_key, image_size, run_jobs

PNG_COMPRESSION = 3  # BasicSR's extract_subimages default


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
    img = read_image(path, orient=False, error=DataPreparationError)
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


def check_sub_image_sizes(scales, crop, step, align):
    """crop and step are positive multiples of align, and align of every scale (checked before any work)."""
    for name, value in (('crop', crop), ('step', step)):
        if value <= 0 or value % align:
            raise DataPreparationError(f'{name}={value} must be a positive multiple of align={align}')
    for scale in scales:
        if align % scale:
            raise DataPreparationError(f'align={align} must be a multiple of the scale {scale} (--align: a common '
                                       f'multiple of the scales, e.g. {math.lcm(align, scale)})')


def extract_sub_images(hr_dir, src_dir, out_dir, scale=1, crop=480, step=240, align=12, workers=1, overwrite=False):
    """Write the sub-images of ``src_dir`` (HR when scale == 1, else its x``scale`` LR) to ``out_dir``.

    Boxes come from the HR image sizes in ``hr_dir``, so HR and LR sub-images share names and positions.
    """
    check_sub_image_sizes((scale, ), crop, step, align)
    hr_files = list_images(hr_dir, error=DataPreparationError)
    src = {image_key(p, scale): p for p in list_images(src_dir, error=DataPreparationError)} if scale > 1 else None
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
        out_dir, lambda tmp: run_jobs(_write_sub_images, [j + (tmp, ) for j in jobs], workers, desc), overwrite)



def sub_dir_names(hr_dir, scale):
    """(HR sub folder name, LR sub folder name): DIV2K_train_HR -> DIV2K_train_HR_sub, DIV2K_train_LR_bicubic_X2_sub."""
    hr_name = osp.basename(osp.normpath(hr_dir))
    base = hr_name[:-len('_HR')] if hr_name.endswith('_HR') else hr_name
    return f'{hr_name}_sub', f'{base}_LR_bicubic_X{scale}_sub'

