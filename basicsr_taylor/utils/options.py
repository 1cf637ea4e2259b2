"""Option files: checked before BasicSR uses them, and BasicSR's own train/test pipelines run with them.

A wrong option file fails at once, before BasicSR creates or archives anything under experiments/, tb_logger/
or results/, with one line naming the file and the option key or YAML line at fault (BasicSR itself fails
later, often with a bare KeyError or assertion, after renaming the experiment folder).
"""
import argparse
import importlib
import os
import os.path as osp
import sys
import warnings

import yaml
from PIL import Image

from . import compat
from .image_io import list_images


class OptionError(ValueError):
    """An option file that cannot work; the message names the key (``datasets:train:dataroot_gt``)."""


def registered(registry, name):
    """What ``registry.get(name)`` returns, or None; without its print. BasicSR registers its Real-ESRGAN classes as
    ``<name>_basicsr`` (RealESRGANModel_basicsr, UNetDiscriminatorSN_basicsr, ...) and looks them up by either name."""
    keys = registry.keys()
    found = name if name in keys else f'{name}_basicsr' if f'{name}_basicsr' in keys else None
    return registry.get(found) if found else None


def _check_registered(registry, name, key):
    if name is None:
        raise OptionError(f'{key} is missing')
    if registered(registry, name) is None:
        names = sorted(k[:-len('_basicsr')] if k.endswith('_basicsr') else k for k in registry.keys())
        raise OptionError(f'{key}: unknown type {name!r}; registered: {", ".join(names)}')


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
    if dataset['type'] in ('RealESRGANDataset', 'RealESRGANPairedDataset', 'SingleImageDataset'):
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
        if not osp.exists(root):
            raise OptionError(f'{key}: not found: {root}')
        sizes[which] = _image_sizes(root, backend, key, first_only=not (gt_size and which == 'gt'))
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


# --- Real-ESRGAN (BasicSR's RealESRNetModel / RealESRGANModel and their datasets) --------------------------
DEGRADATION_KEYS = ('resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range', 'poisson_scale_range',
                    'gray_noise_prob', 'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2',
                    'gaussian_noise_prob2', 'noise_range2', 'poisson_scale_range2', 'gray_noise_prob2', 'jpeg_range2',
                    'gt_size')  # top level, read by the models' feed_data
USM_KEYS = {'RealESRNetModel': ('gt_usm', ), 'RealESRGANModel': ('l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm')}
KERNEL_KEYS = ('blur_kernel_size', 'kernel_list', 'kernel_prob', 'sinc_prob', 'blur_sigma', 'betag_range',
               'betap_range', 'blur_kernel_size2', 'kernel_list2', 'kernel_prob2', 'sinc_prob2', 'blur_sigma2',
               'betag_range2', 'betap_range2', 'final_sinc_prob', 'use_hflip', 'use_rot')  # RealESRGANDataset
REAL_ESRGAN_CROP = 400  # RealESRGANDataset pads or crops every GT image to 400x400 before the degradations


def _check_folder(key, root, want_images=True):
    if not root:
        raise OptionError(f'{key} is missing')
    if not osp.isdir(root):
        raise OptionError(f'{key}: folder not found: {root}')
    if want_images and not list_images(root):
        raise OptionError(f'{key}: no images in {root}')


def check_real_esrgan_dataset(phase, dataset):
    """RealESRGANDataset: its GT root and meta_info (disk) or LMDB exist, every kernel option is there.
    RealESRGANPairedDataset and SingleImageDataset: their folders exist."""
    prefix, kind = f'datasets:{phase}', dataset.get('type')
    backend = (dataset.get('io_backend') or {}).get('type')
    if kind == 'SingleImageDataset':
        return _check_folder(f'{prefix}:dataroot_lq', dataset.get('dataroot_lq'), backend != 'lmdb')
    if kind == 'RealESRGANPairedDataset':
        for which in ('gt', 'lq'):
            _check_folder(f'{prefix}:dataroot_{which}', dataset.get(f'dataroot_{which}'), False)
        return None
    if backend not in ('disk', 'lmdb'):
        raise OptionError(f'{prefix}:io_backend:type must be disk or lmdb, got {backend!r}')
    _check_folder(f'{prefix}:dataroot_gt', dataset.get('dataroot_gt'), want_images=False)
    if backend == 'lmdb':
        _image_sizes(dataset['dataroot_gt'], 'lmdb', f'{prefix}:dataroot_gt', first_only=True)
    else:
        meta = dataset.get('meta_info')
        if not meta or not osp.isfile(meta):
            raise OptionError(f'{prefix}:meta_info: file not found: {meta} (basicsr-taylor-prepare --hr-only writes it)')
        with open(meta) as f:
            first = f.readline().strip().split(' ')[0]
        if not first or not osp.isfile(osp.join(dataset['dataroot_gt'], first)):
            raise OptionError(f'{prefix}:meta_info: its first image {first!r} is not in dataroot_gt '
                              f'{dataset["dataroot_gt"]} (the paths in {meta} are relative to dataroot_gt)')
    for key in KERNEL_KEYS:
        if key not in dataset:
            raise OptionError(f'{prefix}:{key} is missing (RealESRGANDataset reads it)')
    for suffix in ('', '2'):
        if len(dataset[f'kernel_list{suffix}']) != len(dataset[f'kernel_prob{suffix}']):
            raise OptionError(f'{prefix}:kernel_prob{suffix} needs one probability per kernel_list{suffix} entry')
    return None


def check_real_esrgan(opt):
    """The top-level degradation options of RealESRNetModel / RealESRGANModel, the GT crop, the training-pair queue
    against the batch, and network_d."""
    from basicsr.utils.registry import ARCH_REGISTRY
    model, scale = opt.get('model_type'), opt.get('scale')
    if model not in USM_KEYS or not opt.get('is_train') or not opt.get('high_order_degradation', True):
        return
    for key in DEGRADATION_KEYS + USM_KEYS[model]:
        if key not in opt:
            raise OptionError(f'{key} is missing ({model} reads it at the top level of the option file)')
    train = opt['datasets']['train']
    if train.get('type') != 'RealESRGANDataset':
        raise OptionError(f'datasets:train:type must be RealESRGANDataset for {model} (it gives the blur kernels); '
                          'or set high_order_degradation: false for paired data')
    gt_size = opt['gt_size']
    if gt_size % scale or gt_size > REAL_ESRGAN_CROP:
        raise OptionError(f'gt_size={gt_size} must be a multiple of scale {scale} and at most {REAL_ESRGAN_CROP} '
                          '(RealESRGANDataset crops GT to 400)')
    batch, queue = train.get('batch_size_per_gpu'), opt.get('queue_size', 180)
    if not batch or queue % batch:
        raise OptionError(f'queue_size={queue} is not a multiple of datasets:train:batch_size_per_gpu={batch}')
    if model == 'RealESRGANModel':
        network_d = opt.get('network_d')
        if not network_d:
            raise OptionError('network_d is missing (RealESRGANModel trains a discriminator)')
        _check_registered(ARCH_REGISTRY, network_d.get('type'), 'network_d:type')
        check_network(network_d, 'network_d')


def check_network(network, key='network_g'):
    """Build ``network_g`` once (on the CPU, warnings left to the real build): a bad argument fails here, before
    BasicSR archives the experiment folder. Not basicsr's build_network: its logger must not start yet."""
    from basicsr.utils.registry import ARCH_REGISTRY
    kwargs = {k: v for k, v in network.items() if k != 'type'}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            registered(ARCH_REGISTRY, network['type'])(**kwargs)
    except Exception as err:  # noqa: BLE001  (ValueError/TypeError/assertions of any architecture)
        detail = str(err) if isinstance(err, ValueError) else f'{type(err).__name__}: {err}'
        raise OptionError(f'{key} ({network["type"]}): {" ".join(detail.split())}') from None


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
    check_network(network)
    check_real_esrgan(opt)
    pretrained = (opt.get('path') or {}).get('pretrain_network_g')
    if pretrained and not opt.get('auto_resume') and not osp.isfile(pretrained):
        raise OptionError(f'path:pretrain_network_g: file not found: {pretrained}')


def _yaml_error(err):
    mark = getattr(err, 'problem_mark', None)
    where = f'line {mark.line + 1}: ' if mark is not None else ''
    problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
    if 'python/' in problem:
        problem += ' (option files are read with a safe YAML loader: tags that build Python objects are refused)'
    return where + problem


def read_option_file(path):
    """The option file as an OrderedDict, parsed with the safe loader; :class:`OptionError` naming the file (and
    the YAML line) if it cannot be read or parsed."""
    try:
        with open(path) as f:
            opt = yaml.load(f, Loader=compat.SafeOrderedLoader)
    except OSError as err:
        raise OptionError(f'{path}: cannot read the option file: {err.strerror or err}') from None
    except yaml.YAMLError as err:
        raise OptionError(f'{path}: {_yaml_error(err)}') from None
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: not a YAML mapping of options')
    return opt


def checked(parse_options):
    """Wrap basicsr.utils.options.parse_options so that the parsed options are checked before use."""

    def parse_and_check(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        try:
            check_options(opt)
        except OptionError as err:
            raise OptionError(f'{args.opt}: {err}') from None
        perceptual = (opt.get('train') or {}).get('perceptual_opt') if opt.get('is_train') else None
        if perceptual:  # download the VGG weights (or fail in one line) before BasicSR creates the experiment
            compat.ensure_vgg_weights(perceptual.get('vgg_type', 'vgg19'))
        return opt, args

    parse_and_check.__wrapped__ = parse_options
    return parse_and_check


def pipeline_parser(kind):
    """BasicSR's command-line flags (basicsr.utils.options.parse_options), described for --help."""
    verb = {'train': 'Train', 'test': 'Test (PSNR/SSIM, saved images)'}[kind]
    where = {'train': 'experiments/<name>/ and tb_logger/<name>/', 'test': 'results/<name>/'}[kind]
    parser = argparse.ArgumentParser(
        prog=f'basicsr-taylor-{kind}',
        description=f'{verb} with BasicSR\'s own pipeline, TaylorSwinIR registered. Writes {where} under the '
        'current directory. The option file is checked (data, sizes, network) before anything is written.')
    parser.add_argument('-opt', required=True, metavar='FILE', help=f'BasicSR option file, e.g. options/{kind}_x2.yml')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='none: one process (default); pytorch: started by torchrun; slurm: started by srun')
    parser.add_argument('--auto_resume', action='store_true',
                        help='continue from the newest state in experiments/<name>/training_states (training)')
    parser.add_argument('--debug', action='store_true',
                        help='BasicSR debug mode: name prefixed with debug_, validation every 8 iterations, '
                        'logs every iteration, no tensorboard')
    parser.add_argument('--local_rank', type=int, default=0, help='set by torch.distributed.launch (unused)')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override existing options, e.g. train:total_iter=1000 '
                        'datasets:train:batch_size_per_gpu=2')
    return parser


def run_basicsr_pipeline(kind, argv=None):
    """``basicsr.<kind>.<kind>_pipeline`` with root_path = the current directory, so experiments/, tb_logger/ and
    results/ go where the command runs (and where --auto_resume looks). ``argv`` defaults to sys.argv[1:]."""
    compat.install_training_fixes()
    argv = compat.accept_dashed_local_rank(sys.argv[1:] if argv is None else list(argv))
    args = pipeline_parser(kind).parse_args(argv)  # --help, and usage errors before anything runs
    module = importlib.import_module(f'basicsr.{kind}')
    if not hasattr(module.parse_options, '__wrapped__'):  # check the option file before BasicSR uses it
        module.parse_options = checked(module.parse_options)
    sys.argv = [sys.argv[0]] + argv
    try:
        read_option_file(args.opt)
        getattr(module, f'{kind}_pipeline')(os.getcwd())
    except (OptionError, compat.MissingWeightsError) as err:
        raise SystemExit(f'basicsr-taylor-{kind}: error: {err}') from None
