"""Training data the BasicSR way: MATLAB-bicubic LR, sub-images, LMDBs; scikit-image's sample photos.

    folders.py        LMDB keys, image sizes, folders built atomically, progress over jobs
    bicubic.py        MATLAB-bicubic LR images
    sub_images.py     HR/LR sub-images at the same places (BasicSR's extract_subimages recipe)
    lmdb_files.py     LMDBs with BasicSR's lmdb_util and meta_info.txt
    prepare.py        all of it for an HR folder (``basicsr-taylor-prepare``)
    hr_only.py        HR sub-images, meta_info and LMDB for real-world SR (``basicsr-taylor-prepare --hr-only``)
    sample_photos.py  scikit-image's sample photos as a tiny dataset (``basicsr-taylor-quickstart``)
"""
from .bicubic import bicubic_downscale, make_bicubic_lr
from .folders import DataPreparationError, build_dir_atomically, image_key, image_size
from .hr_only import lanczos_resize, make_multiscale, multiscale_sizes, prepare_hr_only
from .lmdb_files import lmdb_is_complete, make_lmdb
from .prepare import prepare
from .sample_photos import prepare_sample_photos, sample_photo, write_photos
from .sub_images import crop_positions, extract_sub_images, sub_dir_names, sub_image_boxes

__all__ = ['DataPreparationError', 'bicubic_downscale', 'build_dir_atomically', 'crop_positions', 'extract_sub_images',
           'image_key', 'image_size', 'lanczos_resize', 'lmdb_is_complete', 'make_bicubic_lr',
           'make_lmdb', 'make_multiscale', 'multiscale_sizes', 'prepare', 'prepare_hr_only', 'prepare_sample_photos',
           'sample_photo', 'sub_dir_names', 'sub_image_boxes', 'write_photos']
