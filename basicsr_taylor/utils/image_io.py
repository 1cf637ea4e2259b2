"""Read, list and write images as they come: 8/16-bit, grayscale, alpha, EXIF orientation; atomic writes.

The one ``list_images`` and the one ``read_image`` of the package (inference, data preparation, option checks).
OpenCV reads the pixels with IMREAD_UNCHANGED (keeps 16 bits and alpha) but then ignores the EXIF orientation
tag, which OpenCV only applies in its 8-bit colour/gray modes. The tag is read with Pillow and applied here for
the photos a user upscales (``orient=True``, the default); data preparation reads the pixels as stored
(``orient=False``), as BasicSR's own preparation (``lmdb_util``, ``extract_subimages``: cv2.IMREAD_UNCHANGED)
does and as the sizes it plans crops with (Pillow's header size) are.
"""
import os
from os import path as osp

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .files import atomic_path

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
EXIF_ORIENTATION = 0x0112
PIXEL_MAX = {np.dtype(np.uint8): 255., np.dtype(np.uint16): 65535.}


class ImageReadError(ValueError):
    """An image file that cannot be decoded."""


def exif_orientation(image_path):
    """The EXIF orientation tag (1..8; 1 = upright) of a file, 1 when it has none or Pillow cannot read it."""
    try:
        with Image.open(image_path) as image:
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1
    return orientation if orientation in range(1, 9) else 1


def apply_orientation(image, orientation):
    """Turn an (H, W[, C]) array stored with EXIF ``orientation`` upright (as Pillow's ImageOps.exif_transpose)."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored horizontally
        3: lambda a: a[::-1, ::-1],  # rotated 180°
        4: lambda a: a[::-1],  # mirrored vertically
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, k=-1),  # stored rotated 90° counter-clockwise: turn it clockwise
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transversed
        8: lambda a: np.rot90(a, k=1),  # stored rotated 90° clockwise: turn it counter-clockwise
    }
    return np.ascontiguousarray(transforms[orientation](image))


def read_image(image_path, orient=True, error=ImageReadError):
    """An (H, W) or (H, W, 3|4) BGR[A] uint8/uint16 array, turned upright by its EXIF orientation unless
    ``orient=False`` (the pixels as stored). Raises ``error`` (an exception class, ImageReadError by default)
    with a one-line message if the file cannot be read or decoded."""
    try:
        data = np.fromfile(image_path, dtype=np.uint8)  # np.fromfile + imdecode: also non-ASCII paths
    except OSError as err:
        raise error(f'cannot read image {image_path}: {err}') from err
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise error(f'cannot read image {image_path}: not an image, corrupt, or an unsupported format')
    if image.dtype not in PIXEL_MAX:
        raise error(f'{image_path} has {image.dtype} pixels; only 8- and 16-bit images are supported')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 2:  # gray + alpha (from TIFF): as BGRA
        image = np.dstack([image[:, :, 0]] * 3 + [image[:, :, 1]])
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise error(f'{image_path} has shape {image.shape}; expected gray, BGR or BGRA')
    return apply_orientation(image, exif_orientation(image_path)) if orient else image


def to_unit_float(image):
    """uint8/uint16 -> float32 in [0, 1], and the factor to go back."""
    pixel_max = PIXEL_MAX[image.dtype]
    return image.astype(np.float32) / pixel_max, pixel_max


def from_unit_float(image, dtype):
    """float in [0, 1] -> uint8/uint16 (clipped and rounded)."""
    pixel_max = PIXEL_MAX[np.dtype(dtype)]
    return (np.clip(image, 0, 1) * pixel_max).round().astype(dtype)


def is_image_file(name):
    """True for a file name with an image extension (any case: .PNG like .png), not hidden."""
    return osp.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not osp.basename(name).startswith('.')


def list_images(path, error=None, files=False):
    """Sorted paths of the image files directly in folder ``path`` (extensions in any case; hidden files skipped);
    with ``files=True`` a file ``path`` gives ``[path]`` (a command's input: one image or a folder of them).

    With ``error`` (an exception class, e.g. data preparation's DataPreparationError) a missing folder and a folder
    without images raise it with a one-line message; without, a missing path raises FileNotFoundError and a folder
    without images gives [].
    """
    if files and osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise (error or FileNotFoundError)(f'image folder not found: {path}')
    found = sorted(osp.join(path, name) for name in os.listdir(path) if is_image_file(name)
                   and osp.isfile(osp.join(path, name)))
    if not found and error is not None:
        raise error(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {path}')
    return found


def write_image(image, image_path):
    """Write atomically: encode, write to a temporary file in the target folder, then rename over the target."""
    extension = osp.splitext(image_path)[1].lower()
    ok, encoded = cv2.imencode(extension, image)
    if not ok:
        raise OSError(f'OpenCV cannot encode a {image.dtype} {image.shape} image as {extension} ({image_path})')
    with atomic_path(image_path) as temp_path:
        with open(temp_path, 'wb') as f:
            f.write(encoded.tobytes())
