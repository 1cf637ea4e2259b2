"""scikit-image's sample photos (shipped inside the package) as a tiny SR dataset: no download needed."""
import os.path as osp

import cv2
import numpy as np
from .bicubic import make_bicubic_lr
from .folders import Progress, build_dir_atomically
from .prepare import prepare

# Held out for validation, as (name, top, left, height, width) HR crops: a cat's face, a cup and plate, a rocket
# on its launch pad. Crops keep the validation passes short on a CPU.
VAL_PHOTOS = (('chelsea', 20, 100, 192, 256), ('coffee', 40, 100, 192, 256), ('rocket', 100, 200, 192, 256))
TRAIN_PHOTOS = ('astronaut', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'stereo_motorcycle',
                'camera', 'coins', 'moon', 'brick', 'grass', 'gravel', 'cell', 'clock', 'text', 'page',
                'colorwheel')


def sample_photo(name):
    """A scikit-image sample photo as a 3-channel BGR uint8 image (grey photos repeated, alpha dropped)."""
    import skimage.data
    img = getattr(skimage.data, name)()
    if name == 'stereo_motorcycle':
        img = img[0]  # (left, right, disparity): the left view
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., 2::-1])  # RGB(A) -> BGR


def write_photos(folder, photos):
    """Write the photos (names, or (name, top, left, height, width) crops) as PNGs into ``folder`` (skipped when
    the folder is already complete)."""

    def build(tmp):
        for photo in Progress(photos, desc=f'photos -> {folder}', unit='image'):
            name, *box = (photo, ) if isinstance(photo, str) else photo
            img = sample_photo(name)
            if box:
                top, left, height, width = box
                img = img[top:top + height, left:left + width]
            cv2.imwrite(osp.join(tmp, f'{name}.png'), img)

    return build_dir_atomically(folder, build)


def prepare_sample_photos(data_dir, scale, train_photos=TRAIN_PHOTOS, val_photos=VAL_PHOTOS, workers=1):
    """HR photos -> (train LMDB pair, validation folders) at x``scale``. Returns the dataroots for an option file."""
    train_hr, val_hr = osp.join(data_dir, 'train_HR'), osp.join(data_dir, 'val_HR')
    write_photos(train_hr, train_photos)
    write_photos(val_hr, val_photos)
    outputs = prepare(train_hr, osp.join(data_dir, 'train_LR_bicubic', 'X{scale}'), data_dir,
                                   scales=(scale, ), crop=192, step=96, align=12, workers=workers)
    val_lr = osp.join(data_dir, 'val_LR_bicubic', f'X{scale}')
    make_bicubic_lr(val_hr, val_lr, scale, workers)
    return dict(train_gt=outputs['hr'][1], train_lq=outputs[scale][1], val_gt=val_hr, val_lq=val_lr)
