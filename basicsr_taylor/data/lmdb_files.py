"""LMDBs of sub-image folders with BasicSR's own writer (``basicsr.utils.lmdb_util``) and its meta_info.txt."""
import os
import os.path as osp
import shutil

from ..utils.compat import lmdb_writer_bars
from .folders import DataPreparationError, Progress


class _OneDescriptionBar(Progress):
    """BasicSR's LMDB writer renames its bar for every image (``Write <key>``): most of a quickstart log."""

    def set_description(self, desc=None, refresh=True):
        pass


def _bars(image_dir, lmdb_path):
    """The bars of BasicSR's writer: ``tqdm(total=n, unit='image')`` reading in parallel, ``unit='chunk'`` writing
    (one image each), named after the folder read and the LMDB written."""
    def bar(total=None, unit='it', **kwargs):
        desc = f'reading {osp.basename(image_dir)}' if unit == 'image' else f'LMDB {osp.basename(lmdb_path)}'
        return _OneDescriptionBar(total=total, desc=desc, unit='image', **kwargs)
    return bar


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
    from basicsr.utils import lmdb_util
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
    with lmdb_writer_bars(_bars(image_dir, lmdb_path)):
        lmdb_util.make_lmdb_from_imgs(image_dir, tmp_path, names, [osp.splitext(f)[0] for f in names],
                                      multiprocessing_read=workers > 1, n_thread=max(workers, 1),
                                      map_size=4 * data_bytes + (64 << 20))  # PNG level 1 may be ~2x level 3
    shutil.rmtree(lmdb_path, ignore_errors=True)
    os.replace(tmp_path, lmdb_path)
    return True

