"""Option checks for BasicSR's real-world SR (RealESRNetModel / RealESRGANModel and the plugin's subclasses,
RealESRGANDataset, RealESRGANPairedDataset, SingleImageDataset): what the key check (keys.py) cannot see, i.e. data
on disk, the GT crop against RealESRGANDataset's fixed 400-pixel one, and the training-pair queue against the
batch."""
import os.path as osp

from ..utils.image_io import list_images
from .keys import OptionError

REAL_ESRGAN_MODELS = ('RealESRNetModel', 'RealESRGANModel', 'TaylorRealESRNetModel', 'TaylorRealESRGANModel')
REAL_ESRGAN_CROP = 400  # RealESRGANDataset pads or crops every GT image to 400x400 before the degradations


def _check_folder(key, root, want_images=True):
    if not osp.isdir(root):
        raise OptionError(f'{key}: folder not found: {root}')
    if want_images and not list_images(root):
        raise OptionError(f'{key}: no images in {root}')


def check_real_esrgan_dataset(phase, dataset):
    """RealESRGANDataset: its GT root and meta_info (disk) or LMDB exist, one probability per kernel.
    RealESRGANPairedDataset and SingleImageDataset: their folders exist."""
    prefix, kind = f'datasets:{phase}', dataset['type']
    backend = dataset['io_backend']['type']
    if kind != 'RealESRGANDataset':
        for which in ('gt', 'lq') if kind == 'RealESRGANPairedDataset' else ('lq', ):
            _check_folder(f'{prefix}:dataroot_{which}', dataset[f'dataroot_{which}'], want_images=backend == 'disk')
        return
    _check_folder(f'{prefix}:dataroot_gt', dataset['dataroot_gt'], want_images=False)
    if backend == 'lmdb':
        if not osp.isfile(osp.join(dataset['dataroot_gt'], 'meta_info.txt')):
            raise OptionError(f'{prefix}:dataroot_gt: {dataset["dataroot_gt"]} is not an LMDB made by BasicSR (no '
                              'meta_info.txt); basicsr-taylor-prepare --hr-only makes one')
    else:
        meta = dataset.get('meta_info')
        if not meta or not osp.isfile(meta):
            raise OptionError(f'{prefix}:meta_info: file not found: {meta} '
                              '(basicsr-taylor-prepare --hr-only writes it)')
        with open(meta) as f:
            first = f.readline().strip().split(' ')[0]
        if not first or not osp.isfile(osp.join(dataset['dataroot_gt'], first)):
            raise OptionError(f'{prefix}:meta_info: its first image {first!r} is not in dataroot_gt '
                              f'{dataset["dataroot_gt"]} (the paths in {meta} are relative to dataroot_gt)')
    for suffix in ('', '2'):
        if len(dataset[f'kernel_list{suffix}']) != len(dataset[f'kernel_prob{suffix}']):
            raise OptionError(f'{prefix}:kernel_prob{suffix} needs one probability per kernel_list{suffix} entry')


def check_real_esrgan(opt):
    """RealESRNetModel / RealESRGANModel training: a RealESRGANDataset, the GT crop (top-level gt_size), the
    training-pair queue against the batch."""
    model, scale = opt['model_type'], opt['scale']
    if model not in REAL_ESRGAN_MODELS or not opt.get('is_train') or \
            not opt.get('high_order_degradation', True):
        return
    train = opt['datasets']['train']
    if train['type'] != 'RealESRGANDataset':
        raise OptionError(f'datasets:train:type must be RealESRGANDataset for {model} (it gives the blur kernels); '
                          'or set high_order_degradation: false for paired data')
    gt_size = opt['gt_size']
    if gt_size % scale or gt_size > REAL_ESRGAN_CROP:
        raise OptionError(f'gt_size={gt_size} must be a multiple of scale {scale} and at most {REAL_ESRGAN_CROP} '
                          '(RealESRGANDataset crops GT to 400)')
    if train.get('gt_size', gt_size) != gt_size:
        raise OptionError(f'datasets:train:gt_size={train["gt_size"]} differs from gt_size={gt_size}: the model crops '
                          'with the top-level one (RealESRGANDataset ignores its own); make them equal')
    batch, queue = train['batch_size_per_gpu'], opt.get('queue_size', 180)
    if queue % batch:
        raise OptionError(f'queue_size={queue} is not a multiple of datasets:train:batch_size_per_gpu={batch}')
