"""The whole preparation: missing LR folders by MATLAB bicubic, HR/LR sub-images, LMDBs.

Every output is written under a ``.partial`` name and renamed when complete: an interrupted run never leaves a
folder or LMDB that looks finished, and a second run skips what is already there.
"""
import os
import os.path as osp

from ..utils.image_io import list_images
from .bicubic import make_bicubic_lr
from .folders import DataPreparationError
from .lmdb_files import make_lmdb
from .sub_images import check_sub_image_sizes, extract_sub_images, sub_dir_names


def prepare(hr_dir, lr_template, out_dir, scales=(2, 3, 4), crop=480, step=240, align=12, workers=1,
            overwrite=False, lmdb=True):
    """Run the three steps; return {'hr': (sub_dir, lmdb_path), scale: (sub_dir, lmdb_path), ...}.

    ``lr_template`` is the LR folder with ``{scale}`` in it (e.g. ``.../DIV2K_train_LR_bicubic/X{scale}``).
    """
    check_sub_image_sizes(scales, crop, step, align)  # before any work (an LR folder took minutes)
    list_images(hr_dir, error=DataPreparationError)  # clear error for a missing or empty HR folder
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

