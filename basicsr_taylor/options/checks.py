"""The checks of a whole option file beyond its keys: registered types, data on disk and its sizes, the network
built once, the schedule, precision and a pretrained network that fits.

A wrong option file fails at once, before BasicSR creates or archives anything under experiments/, tb_logger/
or results/, with one line naming the option key at fault (BasicSR itself fails later, often with a bare KeyError
or assertion, after renaming the experiment folder). The file's name is added by pipeline.parse_options.
"""
import os
import os.path as osp
import warnings

from PIL import Image

from ..models import precision
from ..utils.image_io import list_images
from .keys import OptionError, _registered, check_keys
from .real_esrgan import check_real_esrgan, check_real_esrgan_dataset

__all__ = ['OptionError', 'check_options', 'check_dataset', 'check_network', 'check_schedule']

# the data roots each real-world dataset reads (real_esrgan_options checks the rest)
REAL_ESRGAN_ROOTS = {'RealESRGANDataset': ('gt', ), 'RealESRGANPairedDataset': ('gt', 'lq'),
                     'SingleImageDataset': ('lq', )}


def _check_registered(registry, name, key):
    _registered(registry, name, key)


def _not_found(key, path, what='not found'):
    """OptionError for a path that does not exist; a relative one names the current directory it was looked up
    from (as in BasicSR) and keeps the path for parse_options, which knows the option file."""
    if osp.isabs(osp.expanduser(path)):
        return OptionError(f'{key}: {what}: {path}')
    err = OptionError(f'{key}: {what}: {path} (relative paths are relative to the current directory, {os.getcwd()}, '
                      'as in BasicSR)')
    err.relative_path = path
    return err


def _exists_from_option_file(err, opt_path):
    """``err`` with, for a relative path that is missing from the current directory, the option file's folder (or
    the nearest folder above it) where it exists."""
    path = getattr(err, 'relative_path', None)
    start = folder = osp.dirname(osp.abspath(opt_path))
    while path:
        if osp.exists(osp.join(folder, path)):
            where = "the option file's folder" if folder == start else 'above the option file'
            found = OptionError(f'{err}; it exists relative to {folder} ({where}): run from {folder} or use an '
                                'absolute path')
            if hasattr(err, 'key'):
                found.key = err.key
            return found
        if osp.dirname(folder) == folder:
            break
        folder = osp.dirname(folder)
    return err


def _image_sizes(root, io_backend, key, first_only=False):
    """[(name, height, width)] of a dataset root's images: from meta_info.txt for LMDB, image headers otherwise."""
    if io_backend == 'lmdb':
        meta = osp.join(root, 'meta_info.txt')
        if not root.endswith('.lmdb') or not osp.isfile(meta):
            raise OptionError(f'{key}: {root} is not an LMDB made by BasicSR (no meta_info.txt); '
                              'create it with scripts/prepare_div2k.py')
        sizes = []
        with open(meta) as f:
            for line in f:  # "0001_s001.png (480,480,3) 1"
                if line.strip():
                    name, shape = line.split(' (', 1)
                    height, width = shape.split(',')[:2]
                    sizes.append((name, int(height), int(width)))
                    if first_only:
                        break
        return sizes
    if not osp.isdir(root):
        raise OptionError(f'{key}: folder not found: {root}')
    files = list_images(root)
    if not files:
        raise OptionError(f'{key}: no images in {root}')
    sizes = []
    for path in files[:1] if first_only else files:
        with Image.open(path) as im:  # reads the header only
            sizes.append((osp.basename(path), im.size[1], im.size[0]))
    return sizes


def check_dataset(phase, dataset, scale):
    """The dataset type is registered, its data roots exist, and GT is ``scale`` times LQ."""
    from basicsr.utils.registry import DATASET_REGISTRY
    prefix = f'datasets:{phase}'
    _check_registered(DATASET_REGISTRY, dataset.get('type'), f'{prefix}:type')
    if dataset['type'] in REAL_ESRGAN_ROOTS:
        for which in REAL_ESRGAN_ROOTS[dataset['type']]:
            root = dataset.get(f'dataroot_{which}')
            if isinstance(root, str) and not osp.exists(osp.expanduser(root)):
                raise _not_found(f'{prefix}:dataroot_{which}', root)
        return check_real_esrgan_dataset(phase, dataset)
    if dataset['type'] != 'PairedImageDataset':
        return
    backend = (dataset.get('io_backend') or {}).get('type')
    if backend is None:
        raise OptionError(f'{prefix}:io_backend:type is missing (lmdb or disk)')
    gt_size = dataset.get('gt_size') if phase == 'train' else None
    sizes = {}
    for which in ('gt', 'lq'):
        key = f'{prefix}:dataroot_{which}'
        root = dataset.get(f'dataroot_{which}')
        if not root:
            raise OptionError(f'{key} is missing')
        if not osp.exists(osp.expanduser(root)):  # BasicSR expands ~ in dataroot_gt/lq
            raise _not_found(key, root)
        sizes[which] = _image_sizes(osp.expanduser(root), backend, key, first_only=not (gt_size and which == 'gt'))
    (_, gt_h, gt_w), (_, lq_h, lq_w) = sizes['gt'][0], sizes['lq'][0]
    if scale and not all(0 <= g - q * scale < scale for g, q in ((gt_h, lq_h), (gt_w, lq_w))):
        raise OptionError(
            f'scale {scale} does not match the data of {prefix}: GT {gt_h}x{gt_w} ({dataset["dataroot_gt"]}) vs '
            f'LQ {lq_h}x{lq_w} ({dataset["dataroot_lq"]}), which is x{gt_h / lq_h:.3g}')
    if gt_size is not None:
        if gt_size % scale:
            raise OptionError(f'{prefix}:gt_size={gt_size} is not a multiple of scale {scale}')
        small = [size for size in sizes['gt'] if min(size[1:]) < gt_size]  # BasicSR's random crop would fail
        if small:
            name, height, width = min(small, key=lambda size: min(size[1:]))
            fits = min(height, width) // scale * scale
            raise OptionError(f'{prefix}:gt_size={gt_size} is larger than {len(small)} of the {len(sizes["gt"])} '
                              f'GT images; the smallest is {name} ({height}x{width}) in {dataset["dataroot_gt"]}: '
                              f'use gt_size <= {fits} or leave the small images out')


def check_network(network, key='network_g'):
    """Build ``network_g`` once (on the CPU, warnings left to the real build): a bad argument fails here, before
    BasicSR archives the experiment folder; returns the network. Not basicsr's build_network: its logger must not
    start yet."""
    from basicsr.utils.registry import ARCH_REGISTRY
    kwargs = {k: v for k, v in network.items() if k != 'type'}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return _registered(ARCH_REGISTRY, network['type'], key)(**kwargs)
    except Exception as err:  # noqa: BLE001  (ValueError/TypeError/assertions of any architecture)
        detail = str(err) if isinstance(err, ValueError) else f'{type(err).__name__}: {err}'
        raise OptionError(f'{key} ({network["type"]}): {" ".join(detail.split())}') from None


def check_schedule(opt):
    """BasicSR's CosineAnnealingRestartLR has no learning rate past the end of its periods (a TypeError at that
    iteration) and asserts one restart weight per period."""
    scheduler, train = (opt.get('train') or {}).get('scheduler') or {}, opt.get('train') or {}
    if scheduler.get('type') != 'CosineAnnealingRestartLR' or not opt.get('is_train'):
        return
    periods, weights = list(scheduler.get('periods') or []), list(scheduler.get('restart_weights', [1]))
    if len(weights) != len(periods):
        raise OptionError(f'train:scheduler: {len(periods)} periods but {len(weights)} restart_weights')
    if sum(periods) < train.get('total_iter', 0):
        raise OptionError(f'train:scheduler:periods {periods} end at iteration {sum(periods)}, before '
                          f'train:total_iter={train["total_iter"]}: raise the periods too (a new period '
                          'restarts the cosine; restart_weights scales its peak)')


def check_options(opt):
    """Raise :class:`OptionError` for the first problem found in a parsed option dict (train or test)."""
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
    check_keys(opt)  # every key known, every required key there (keys.py)
    _check_registered(MODEL_REGISTRY, opt.get('model_type'), 'model_type')
    network = opt.get('network_g')
    if not network:
        raise OptionError('network_g is missing')
    _check_registered(ARCH_REGISTRY, network.get('type'), 'network_g:type')
    scale = opt.get('scale')
    if scale is None:
        raise OptionError('scale is missing')
    if 'upscale' in network and network['upscale'] != scale:
        raise OptionError(f'network_g:upscale={network["upscale"]} differs from scale={scale}')
    if not opt.get('datasets'):
        raise OptionError('datasets is missing')
    if opt.get('is_train') and 'train' not in opt['datasets']:
        raise OptionError('datasets:train is missing')
    for phase, dataset in opt['datasets'].items():
        check_dataset(phase, dataset, scale)
    try:
        precision.check_options(opt)
    except ValueError as err:
        raise OptionError(str(err)) from None
    built = check_network(network)
    if opt.get('network_d'):
        check_network(opt['network_d'], 'network_d')
    check_schedule(opt)
    check_real_esrgan(opt)
    path = opt.get('path') or {}
    pretrain_path = path.get('pretrain_network_g')
    if pretrain_path and not opt.get('auto_resume'):
        if not osp.isfile(osp.expanduser(pretrain_path)):  # BasicSR expands ~ here too
            raise _not_found('path:pretrain_network_g', pretrain_path, 'file not found')
        pretrain_path = osp.expanduser(pretrain_path)
        if path.get('strict_load_g', True):  # BasicSR's strict load failed with a traceback of every key
            from ..models.checkpoint import CheckpointError, check_fits, load_state_dict
            try:
                check_fits(built, load_state_dict(pretrain_path)[0], pretrain_path, 'network_g')
            except CheckpointError as err:
                raise OptionError(f'path:pretrain_network_g: {err}') from None
