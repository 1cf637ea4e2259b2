"""Image folders for data preparation: LMDB keys, sizes, folders built atomically, progress over jobs.

Images are listed and read with utils.image_io's ``list_images(folder, error=DataPreparationError)`` and
``read_image(path, orient=False, error=DataPreparationError)``: the pixels as stored, as BasicSR's preparation
reads them and as :func:`image_size` measures them.
"""
import os
import os.path as osp
import shutil
import sys
import time
from multiprocessing import Pool

from PIL import Image
from tqdm import tqdm


class DataPreparationError(ValueError):
    """A problem with the input data (missing folder, unreadable image, size mismatch)."""


def image_key(path, scale=None):
    """LMDB key of an image: its file stem, without DIV2K's LR suffix ``x{scale}`` (0001x2.png -> 0001)."""
    key = osp.splitext(osp.basename(path))[0]
    if scale is not None and key.endswith(f'x{scale}'):
        key = key[:-len(f'x{scale}')]
    if '.' in key or not key.isascii() or ' ' in key:
        raise DataPreparationError(f'image name {osp.basename(path)!r} cannot be an LMDB key '
                                   '(BasicSR needs ASCII names without dots or spaces): rename it')
    return key


def image_size(path):
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as err:  # noqa: BLE001  (Pillow raises several types for bad files)
        raise DataPreparationError(f'cannot read image {path}: {err}') from err
    return height, width



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


def on_terminal():
    """Whether stderr, where progress bars go, is a terminal."""
    isatty = getattr(sys.stderr, 'isatty', None)
    return bool(isatty and isatty())


class Progress(tqdm):
    """A tqdm bar on a terminal. Elsewhere (a log file, a pipe, CI) no bar, whose redraws would garble the lines
    around it, but one line on stdout when the stage ends: ``bicubic x2: 7/7 images in 0.6 s``."""

    def __init__(self, iterable=None, desc=None, total=None, unit='it', **kwargs):
        self.quiet, self.label, self.unit_name, self.began, self.summarised = not on_terminal(), desc, unit, \
            time.time(), False
        super().__init__(iterable, desc=desc, total=total, unit=unit, disable=self.quiet, **kwargs)

    def __iter__(self):
        if not self.quiet:
            yield from super().__iter__()
            return
        for item in self.iterable:
            self.n += 1
            yield item
        self.close()

    def update(self, n=1):
        if self.quiet:
            self.n += n
        return super().update(n)

    def close(self):
        if getattr(self, 'quiet', False) and not self.summarised:
            self.summarised = True
            count = self.n if self.total is None else f'{self.n}/{self.total}'
            print(f'{self.label or "done"}: {count} {self.unit_name}s in {time.time() - self.began:.1f} s', flush=True)
        super().close()

    def log(self, line):
        """Print a line between the bar's redraws (terminal) or at once to stdout (elsewhere)."""
        if self.quiet:
            print(line, flush=True)
        else:
            self.write(line)


def run_jobs(worker, jobs, workers, desc):
    """Map ``worker`` over ``jobs`` with a progress bar, in ``workers`` processes (1: in this process)."""
    with Progress(total=len(jobs), unit='image', desc=desc) as pbar:
        if workers <= 1:
            for job in jobs:
                worker(job)
                pbar.update(1)
        else:
            with Pool(workers) as pool:
                for _ in pool.imap_unordered(worker, jobs):
                    pbar.update(1)

