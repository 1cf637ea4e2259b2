"""Compatibility fixes that let the PyPI release basicsr 1.4.2 run on today's PyTorch stack.

Everything that papers over a BasicSR 1.4.2 breakage lives here, and nowhere else. Each fix is a no-op
where BasicSR (or its dependencies) already works, so users running a fixed BasicSR from source are not
affected. ``install()`` must run before the first ``import basicsr``; ``basicsr_taylor/__init__.py`` does it.
"""
import importlib.util
import logging
import math
import os
import os.path as osp
import subprocess
import sys
import time
from collections import OrderedDict

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch.nn.parallel import DistributedDataParallel

from . import pretrained
from .cli import accept_dashed_local_rank  # noqa: F401  (BasicSR's parser and torch.distributed.launch)
from .files import atomic_path

_installed = False


def _shim_torchvision_functional_tensor():
    """basicsr/data/degradations.py imports ``torchvision.transforms.functional_tensor``, removed in
    torchvision 0.17 (BasicSR issues #533, #649): a finder supplies it, aliasing the module that replaced it,
    when it is imported and torchvision lacks it. Installed at start-up by basicsr_taylor_hook.pth (so that
    ``import basicsr`` works before ``import basicsr_taylor``), and here for a checkout on PYTHONPATH."""
    import basicsr_taylor_hook
    basicsr_taylor_hook.install()


def _provide_distutils():
    """basicsr/archs/arch_util.py imports ``distutils.version`` (gone in Python 3.12). Importing setuptools
    installs its bundled distutils (a declared dependency on Python >= 3.12)."""
    if sys.version_info >= (3, 12) and importlib.util.find_spec('distutils') is None:
        import setuptools  # noqa: F401  (side effect: registers setuptools' distutils)


def install():
    """Apply every import-time fix once. Safe to call repeatedly."""
    global _installed
    if _installed:
        return
    _provide_distutils()
    _shim_torchvision_functional_tensor()
    _installed = True


# --- Training-time fixes (options.run_basicsr_pipeline applies them; GPU runs keep BasicSR's code paths) ----

def _init_dist_on_cpu(launcher, backend='nccl', **kwargs):
    """Like basicsr.utils.dist_util.init_dist, for machines without CUDA: gloo backend, no cuda.set_device."""
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    if launcher == 'slurm':  # the environment BasicSR's _init_dist_slurm sets, without the GPU index
        port = kwargs.pop('port', None)
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f"scontrol show hostname {os.environ['SLURM_NODELIST']} | head -n1")
        os.environ['MASTER_PORT'] = str(port or os.environ.get('MASTER_PORT', '29500'))
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    elif launcher != 'pytorch':
        raise ValueError(f'Invalid launcher type: {launcher}')
    dist.init_process_group(backend='gloo', **kwargs)


def _cpu_aware_init_dist(launcher, backend='nccl', **kwargs):
    from basicsr.utils import dist_util
    if torch.cuda.is_available():
        return dist_util.init_dist(launcher, backend, **kwargs)  # BasicSR's own (NCCL, one GPU per rank)
    return _init_dist_on_cpu(launcher, backend, **kwargs)


def _cpu_aware_model_to_device(original):
    """BaseModel.model_to_device builds DDP with device_ids=[torch.cuda.current_device()]; without CUDA,
    DDP must get device_ids=None (CPU module, gloo all-reduce)."""

    def model_to_device(self, net):
        if self.opt['dist'] and not torch.cuda.is_available():
            return DistributedDataParallel(
                net.to(self.device), find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return original(self, net)

    model_to_device.__wrapped__ = original
    return model_to_device


def load_resume_state(opt):
    """basicsr.train.load_resume_state without its two breakages: it maps the state onto
    torch.cuda.current_device() (fails without CUDA; kept when CUDA is there) and relies on torch.load's old
    weights_only=False default (the state holds the scheduler's Counter of milestones). With --auto_resume a
    newest state that cannot be read (a run killed while writing it) is skipped for the one before it."""
    from basicsr.utils import check_resume, scandir
    if torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731  (BasicSR's choice)
    else:
        map_location = 'cpu'
    if opt['auto_resume']:
        state_dir = osp.join('experiments', opt['name'], 'training_states')
        iters = sorted((int(float(name[:-len('.state')]))
                        for name in (scandir(state_dir, suffix='state') if osp.isdir(state_dir) else [])),
                       reverse=True)
        candidates = [osp.join(state_dir, f'{it}.state') for it in iters]
    else:
        candidates = [opt['path']['resume_state']] if opt['path'].get('resume_state') else []
    for i, path in enumerate(candidates):
        try:
            resume_state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err:  # noqa: BLE001  (any unreadable file: truncated zip, empty file, ...)
            if not opt['auto_resume'] or i + 1 == len(candidates):
                raise RuntimeError(f'cannot read training state {path}: {err}') from err
            # not get_root_logger(): initialising BasicSR's logger before train_pipeline does would leave
            # the run without its log file; this goes to stderr
            logging.getLogger('basicsr').warning(f'Skipping unreadable training state {path}: {err}')
            continue
        opt['path']['resume_state'] = path
        check_resume(opt, resume_state['iter'])
        return resume_state
    return None


def _save_atomically(obj, path, what):
    """torch.save to a temporary name renamed over ``path`` when complete; BasicSR's three tries and messages."""
    logger = logging.getLogger('basicsr')
    for retry in (2, 1, 0):
        try:
            with atomic_path(path) as temp_path:
                torch.save(obj, temp_path)
            return
        except Exception as err:  # noqa: BLE001  (as BasicSR: any error is retried)
            logger.warning(f'Save {what} error: {err}, remaining retry times: {retry}')
            time.sleep(1)
    logger.warning(f'Still cannot save {path}. Just ignore it.')


def save_network(self, net, net_label, current_iter, param_key='params'):
    """BaseModel.save_network, written atomically (BasicSR wrote in place: a killed run left a truncated file)."""
    nets, keys = (x if isinstance(x, list) else [x] for x in (net, param_key))
    assert len(nets) == len(keys), 'The lengths of net and param_key should be the same.'
    save_dict = {key: {(name[7:] if name.startswith('module.') else name): value.cpu()
                       for name, value in self.get_bare_model(one).state_dict().items()}
                 for one, key in zip(nets, keys)}
    label = 'latest' if current_iter == -1 else current_iter
    _save_atomically(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'), 'model')


def save_training_state(self, epoch, current_iter):
    """BaseModel.save_training_state, written atomically."""
    if current_iter != -1:
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        _save_atomically(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                         'training state')


# what a scheduler's state holds of its schedule (the rest: position and learning rates)
SCHEDULE_KEYS = ('milestones', 'gamma', 'restarts', 'restart_weights', 'periods', 'eta_min', 'cumulative_period')


def _resume_with_the_options_schedule(original):
    """resume_training restored the schedulers' whole state, so the schedule of the first run came back with it:
    a resume with a longer train:total_iter and train:scheduler:periods still ended the cosine at the old periods
    (BasicSR's TypeError past their end). Keep the restored position and learning rates, take the schedule from
    the option file. Also notes the resumed iteration for :func:`_skip_repeated_validation`."""

    def resume_training(self, resume_state):
        schedules = [s.state_dict() for s in self.schedulers]  # built from the option file
        original(self, resume_state)
        for scheduler, schedule in zip(self.schedulers, schedules):
            for key in SCHEDULE_KEYS:
                if key in schedule:
                    setattr(scheduler, key, schedule[key])
        self._weights_iter = resume_state['iter']
        val_freq = (self.opt.get('val') or {}).get('val_freq')
        if val_freq and resume_state['iter'] % int(val_freq) == 0:  # validated before the state was saved
            self._validated_iters = {'resumed': resume_state['iter']}

    resume_training.__wrapped__ = original
    return resume_training


def _note_iteration(original):
    def update_learning_rate(self, current_iter, warmup_iter=-1):
        self._weights_iter = current_iter  # train_pipeline calls it before every optimisation step
        return original(self, current_iter, warmup_iter)

    update_learning_rate.__wrapped__ = original
    return update_learning_rate


def _skip_repeated_validation(original):
    """train_pipeline validates once more after its last iteration: when total_iter is a multiple of val_freq,
    that repeats the validation just done on the same weights (``@ 800 iter``, then ``@ 801 iter``), and a
    finished run started again with --auto_resume validated its last weights again. Skip a validation when no
    iteration has trained since the last one on the same data."""

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        weights = getattr(self, '_weights_iter', None)  # None: not training (test pipeline)
        done = getattr(self, '_validated_iters', {})
        if weights is not None and weights in (done.get(id(dataloader)), done.get('resumed')):
            return None
        self._validated_iters = {**done, id(dataloader): weights}
        return original(self, dataloader, current_iter, tb_logger, save_img)

    validation.__wrapped__ = original
    return validation


def _epochs_from_loader(original):
    """create_train_val_dataloader counts ceil(images / batch) iterations per epoch, but BasicSR's train loader
    drops the last incomplete batch: on a small dataset train_pipeline ran out of epochs before total_iter (the
    quickstart's 1600 iterations stopped at 1553). Count the epochs from the loader's own length."""

    def create_train_val_dataloader(opt, logger):
        train_loader, train_sampler, val_loaders, total_epochs, total_iters = original(opt, logger)
        if train_loader is not None and len(train_loader):
            total_epochs = max(total_epochs, math.ceil(total_iters / len(train_loader)))
        return train_loader, train_sampler, val_loaders, total_epochs, total_iters

    create_train_val_dataloader.__wrapped__ = original
    return create_train_val_dataloader


class SafeOrderedLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """PyYAML's safe loader building OrderedDicts, as BasicSR's ``ordered_yaml()`` loader does. BasicSR 1.4.2
    loads option files with the full loader, so ``!!python/object/apply:os.system [...]`` in a downloaded
    recipe ran a command; this one refuses every Python tag and keeps YAML's standard ones (``!!float 2e-4``)."""


SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                  lambda loader, node: OrderedDict(loader.construct_pairs(node)))


def _safe_ordered_yaml(original):
    def ordered_yaml():
        return SafeOrderedLoader, original()[1]

    ordered_yaml.__wrapped__ = original
    return ordered_yaml


# --- Real-ESRGAN: the models follow their device, their blur takes any layout (VGG's weights: pretrained.py) ---

def _follow_model_device(cls):
    """RealESRNetModel / RealESRGANModel.__init__ with DiffJPEG and USMSharp on the model's device, not ``.cuda()``."""

    def __init__(self, opt):
        super(cls, self).__init__(opt)  # SRModel / SRGANModel: networks, losses, optimizers on self.device
        from basicsr.utils import DiffJPEG, USMSharp
        self.jpeger, self.usm_sharpener = DiffJPEG(differentiable=False).to(self.device), USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    __init__.__wrapped__ = cls.__init__
    return __init__


def _queue_on_data_device(original):
    """_dequeue_and_enqueue made its training-pair queue with ``.cuda()``: make it where the batch is, first."""

    @torch.no_grad()
    def _dequeue_and_enqueue(self):
        if not hasattr(self, 'queue_lr'):
            batch = self.lq.size(0)
            if self.queue_size % batch:
                raise ValueError(f'queue_size {self.queue_size} is not a multiple of the batch size {batch}')
            self.queue_lr = self.lq.new_zeros((self.queue_size, *self.lq.shape[1:]))
            self.queue_gt = self.gt.new_zeros((self.queue_size, *self.gt.shape[1:]))
            self.queue_ptr = 0
        return original(self)

    _dequeue_and_enqueue.__wrapped__ = original
    return _dequeue_and_enqueue


def _filter2d_on_contiguous(original):
    """filter2D reshapes its input with ``.view``; today's F.pad keeps a channels-last input channels-last, and
    DiffJPEG's output is one, so the second degradation's blur failed ('view size is not compatible'). On the CPU a
    kernel shared by the batch (USMSharp's 51x51) runs as a depthwise conv: same sums, 8x faster than BasicSR's
    one-channel conv over b·c images (measured at 2x3x400x400, 1 thread); GPUs keep BasicSR's (not measured)."""

    def filter2D(img, kernel):  # noqa: N802  (BasicSR's name)
        img, k = img.contiguous(), kernel.size(-1)
        if img.device.type != 'cpu' or kernel.size(0) != 1 or k % 2 == 0:
            return original(img, kernel)
        b, c, h, w = img.shape
        padded = torch.nn.functional.pad(img, (k // 2, ) * 4, mode='reflect')
        out = torch.nn.functional.conv2d(padded.view(1, b * c, h + k - 1, w + k - 1),
                                         kernel.view(1, 1, k, k).expand(b * c, 1, k, k), groups=b * c)
        return out.view(b, c, h, w)

    filter2D.__wrapped__ = original
    return filter2D


_training_fixes_installed = False


def install_training_fixes():
    """Patch BasicSR's training/testing entry points for CPU-only machines and new torch. Idempotent.

    - basicsr.train.load_resume_state -> :func:`load_resume_state` (resume without CUDA, torch.load);
    - init_dist as used by basicsr.utils.options.parse_options -> gloo without CUDA, BasicSR's with CUDA;
    - BaseModel.model_to_device -> DDP without device_ids when there is no CUDA;
    - checkpoints and training states are written to a temporary name and renamed (never half-written);
    - a resumed run keeps the schedule of its option file (BasicSR restored the first run's);
    - option files are parsed with :class:`SafeOrderedLoader` (basicsr.utils.options.ordered_yaml);
    - the validation after the last iteration is skipped when the weights were just validated;
    - train_pipeline's epoch count follows the train loader's length (it drops the last incomplete batch);
    - RealESRNetModel / RealESRGANModel keep DiffJPEG, USMSharp and the training-pair queue on the model's device,
      and their blur (filter2D) takes DiffJPEG's channels-last output;
    - VGGFeatureExtractor (perceptual loss) gets its weights first, or fails in one line (utils/pretrained.py).
    """
    global _training_fixes_installed
    if _training_fixes_installed:
        return
    install()
    import basicsr.train
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel
    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    BaseModel.resume_training = _resume_with_the_options_schedule(BaseModel.resume_training)
    BaseModel.update_learning_rate = _note_iteration(BaseModel.update_learning_rate)
    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.options.init_dist = _cpu_aware_init_dist
    BaseModel.model_to_device = _cpu_aware_model_to_device(BaseModel.model_to_device)
    basicsr.utils.options.ordered_yaml = _safe_ordered_yaml(basicsr.utils.options.ordered_yaml)
    BaseModel.validation = _skip_repeated_validation(BaseModel.validation)
    basicsr.train.create_train_val_dataloader = _epochs_from_loader(basicsr.train.create_train_val_dataloader)
    from basicsr.archs.vgg_arch import VGGFeatureExtractor
    from basicsr.models.realesrgan_model import RealESRGANModel
    from basicsr.models.realesrnet_model import RealESRNetModel
    from basicsr.utils import img_process_util
    img_process_util.filter2D = _filter2d_on_contiguous(img_process_util.filter2D)  # USMSharp's
    for model in (RealESRNetModel, RealESRGANModel):
        model.__init__ = _follow_model_device(model)
        model._dequeue_and_enqueue = _queue_on_data_device(model._dequeue_and_enqueue)
        sys.modules[model.__module__].filter2D = img_process_util.filter2D  # the degradations'
    VGGFeatureExtractor.__init__ = pretrained.vgg_weights_first(VGGFeatureExtractor.__init__)
    _training_fixes_installed = True
