"""Option files: checked before BasicSR uses them, and BasicSR's own train/test pipelines run with them.

A wrong option file fails at once with a message naming the option key and the file or size at fault (BasicSR
itself fails later, often with a bare KeyError or assertion).
"""
import importlib
import os
import os.path as osp
import sys

from PIL import Image

from . import compat
from .image_io import list_images


class OptionError(ValueError):
    """An option file that cannot work; the message names the key (``datasets:train:dataroot_gt``)."""


def _check_registered(registry, name, key):
    if name is None:
        raise OptionError(f'{key} is missing')
    if name not in registry:
        raise OptionError(f'{key}: unknown type {name!r}; registered: {", ".join(sorted(registry.keys()))}')


def _first_image_size(root, io_backend, key):
    """(height, width) of the first image of a dataset root: from meta_info.txt for LMDB, the file otherwise."""
    if io_backend == 'lmdb':
        meta = osp.join(root, 'meta_info.txt')
        if not root.endswith('.lmdb') or not osp.isfile(meta):
            raise OptionError(f'{key}: {root} is not an LMDB made by BasicSR (no meta_info.txt); '
                              'create it with scripts/prepare_div2k.py')
        with open(meta) as f:
            line = f.readline()
        height, width = line.split('(')[1].split(',')[:2]
        return int(height), int(width)
    if not osp.isdir(root):
        raise OptionError(f'{key}: folder not found: {root}')
    files = list_images(root)
    if not files:
        raise OptionError(f'{key}: no images in {root}')
    with Image.open(files[0]) as im:
        return im.size[1], im.size[0]


def check_dataset(phase, dataset, scale):
    """The dataset type is registered, its data roots exist, and GT is ``scale`` times LQ."""
    from basicsr.utils.registry import DATASET_REGISTRY
    prefix = f'datasets:{phase}'
    _check_registered(DATASET_REGISTRY, dataset.get('type'), f'{prefix}:type')
    if dataset['type'] != 'PairedImageDataset':
        return
    backend = (dataset.get('io_backend') or {}).get('type')
    if backend is None:
        raise OptionError(f'{prefix}:io_backend:type is missing (lmdb or disk)')
    sizes = {}
    for which in ('gt', 'lq'):
        key = f'{prefix}:dataroot_{which}'
        root = dataset.get(f'dataroot_{which}')
        if not root:
            raise OptionError(f'{key} is missing')
        if not osp.exists(root):
            raise OptionError(f'{key}: not found: {root}')
        sizes[which] = _first_image_size(root, backend, key)
    (gt_h, gt_w), (lq_h, lq_w) = sizes['gt'], sizes['lq']
    if scale and not all(0 <= g - q * scale < scale for g, q in ((gt_h, lq_h), (gt_w, lq_w))):
        raise OptionError(
            f'scale {scale} does not match the data of {prefix}: GT {gt_h}x{gt_w} ({dataset["dataroot_gt"]}) vs '
            f'LQ {lq_h}x{lq_w} ({dataset["dataroot_lq"]}), which is x{gt_h / lq_h:.3g}')
    gt_size = dataset.get('gt_size')
    if phase == 'train' and gt_size is not None:
        if gt_size % scale:
            raise OptionError(f'{prefix}:gt_size={gt_size} is not a multiple of scale {scale}')
        if gt_size > gt_h or gt_size > gt_w:
            raise OptionError(f'{prefix}:gt_size={gt_size} is larger than the GT images ({gt_h}x{gt_w})')


def check_options(opt):
    """Raise :class:`OptionError` for the first problem found in a parsed option dict (train or test)."""
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
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
    pretrained = (opt.get('path') or {}).get('pretrain_network_g')
    if pretrained and not opt.get('auto_resume') and not osp.isfile(pretrained):
        raise OptionError(f'path:pretrain_network_g: file not found: {pretrained}')


def checked(parse_options):
    """Wrap basicsr.utils.options.parse_options so that the parsed options are checked before use."""

    def parse_and_check(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        try:
            check_options(opt)
        except OptionError as err:
            raise OptionError(f'{args.opt}: {err}') from None
        return opt, args

    parse_and_check.__wrapped__ = parse_options
    return parse_and_check


def run_basicsr_pipeline(kind, argv=None):
    """``basicsr.<kind>.<kind>_pipeline`` with root_path = the current directory, so experiments/, tb_logger/ and
    results/ go where the command runs (and where --auto_resume looks). ``argv`` defaults to sys.argv[1:]."""
    compat.install_training_fixes()
    module = importlib.import_module(f'basicsr.{kind}')
    if not hasattr(module.parse_options, '__wrapped__'):  # check the option file before BasicSR uses it
        module.parse_options = checked(module.parse_options)
    sys.argv = [sys.argv[0]] + compat.accept_dashed_local_rank(sys.argv[1:] if argv is None else list(argv))
    try:
        getattr(module, f'{kind}_pipeline')(os.getcwd())
    except OptionError as err:
        raise SystemExit(f'basicsr-taylor-{kind}: error: {err}') from None
