"""What the plugin adds to training, as methods of a mixin over BasicSR's model classes (BasicSR's own way to change
training: a model class registered in MODEL_REGISTRY).

``TaylorSRModel(TaylorMixin, SRModel)`` and its siblings (this package) get:

- mixed precision (``train:precision``, ``val:precision``, models/precision.py): forward and losses under
  ``torch.autocast``, backward passes and optimizer steps outside it, fp16 through a ``GradScaler`` whose state is
  saved in the training state and restored on resume; fp32 runs BasicSR's own ``optimize_parameters``;
- checkpoints and training states written to a temporary name and renamed (a killed run never leaves a truncated
  ``net_g_*.pth`` or ``*.state``);
- a resumed run keeps the schedule of its option file (BasicSR restored the first run's, so a longer
  ``train:total_iter`` ended the cosine at the old periods);
- the validation after the last iteration skipped when those weights were just validated;
- DDP without CUDA (CPU module, gloo all-reduce); the perceptual loss's VGG weights fetched first.

A class mixing it in defines ``optimize_mixed(current_iter)``: its BasicSR ``optimize_parameters`` with the forward
pass and losses in ``with self.autocast():``, ``self.backward(loss)`` for ``loss.backward()`` and
``self.step(optimizer)`` for ``optimizer.step()``.
"""
import logging
import os.path as osp
import time
import warnings
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from ..utils import pretrained
from ..utils.files import atomic_path
from .precision import PRECISIONS, grad_scaler, option_dtype

# what a scheduler's state holds of its schedule (the rest: position and learning rates)
SCHEDULE_KEYS = ('milestones', 'gamma', 'restarts', 'restart_weights', 'periods', 'eta_min', 'cumulative_period')


def save_atomically(obj, path, what):
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


class TaylorMixin:
    """Mixin for a BasicSR model class: ``class TaylorSRModel(TaylorMixin, SRModel)`` (module docstring)."""

    def __init__(self, opt):
        super().__init__(opt)
        self.train_dtype = option_dtype(self.opt, 'train:precision') if self.is_train else None
        self.val_dtype = option_dtype(self.opt, 'val:precision')
        self.grad_scaler = grad_scaler(self.device.type) if self.train_dtype == torch.float16 else None
        self._scaled_steps = 0
        if self.train_dtype is not None or self.val_dtype is not None:
            names = {dtype: name for name, dtype in PRECISIONS.items()}
            phases = {'training': self.train_dtype} if self.is_train else {}
            phases['validation'] = self.val_dtype
            logger = logging.getLogger('basicsr')
            logger.info('Precision: ' + ', '.join(f'{phase} {names[dtype or torch.float32]}'
                                                  for phase, dtype in phases.items()) + '.')
            if self.device.type == 'cpu':
                logger.warning('train:precision / val:precision on the CPU: slower than fp32 unless the CPU has '
                               'bf16/fp16 units (docs/training.md); meant for GPUs')

    # --- mixed precision -------------------------------------------------------------------------------------------

    def autocast(self):
        """``torch.autocast`` at ``train:precision`` on the model's device; no-op in fp32."""
        if self.train_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.train_dtype)

    def backward(self, loss):
        """``loss.backward()``, scaled by the GradScaler in fp16 (call it outside :meth:`autocast`)."""
        (loss if self.grad_scaler is None else self.grad_scaler.scale(loss)).backward()

    def step(self, optimizer):
        """``optimizer.step()``; in fp16 ``GradScaler.step``: unscale, skip the step on inf/NaN gradients."""
        if self.grad_scaler is None:
            return optimizer.step()
        self._scaled_steps += 1
        return self.grad_scaler.step(optimizer)

    def optimize_parameters(self, current_iter):
        if self.train_dtype is None:
            return super().optimize_parameters(current_iter)  # BasicSR's own, bit for bit
        self._scaled_steps = 0
        self.optimize_mixed(current_iter)  # the model class's (module docstring)
        if self._scaled_steps:
            self.grad_scaler.update()  # scale x 0.5 after inf/NaN gradients, x 2 after 2000 clean steps
        return None

    def test(self):
        if self.val_dtype is None:
            return super().test()
        with torch.autocast(self.device.type, dtype=self.val_dtype):
            super().test()
        if not torch.isfinite(self.output).all():  # as basicsr-taylor-infer does for a tile
            logging.getLogger('basicsr').warning(
                f'val:precision: non-finite {self.val_dtype} output: recomputed in fp32')
            super().test()
        self.output = self.output.float()
        return None

    # --- checkpoints and resuming ----------------------------------------------------------------------------------

    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BaseModel.save_network, written atomically (BasicSR wrote in place: a killed run left a truncated file)."""
        nets, keys = (x if isinstance(x, list) else [x] for x in (net, param_key))
        assert len(nets) == len(keys), 'The lengths of net and param_key should be the same.'
        save_dict = {key: {(name[7:] if name.startswith('module.') else name): value.cpu()
                           for name, value in self.get_bare_model(one).state_dict().items()}
                     for one, key in zip(nets, keys)}
        label = 'latest' if current_iter == -1 else current_iter
        save_atomically(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'), 'model')

    def save_training_state(self, epoch, current_iter):
        """BaseModel.save_training_state, written atomically, with ``grad_scaler`` in fp16."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        if self.grad_scaler is not None:
            state['grad_scaler'] = self.grad_scaler.state_dict()
        save_atomically(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                        'training state')

    def resume_training(self, resume_state):
        """BaseModel.resume_training keeping the option file's schedule (the restored position and learning rates
        stay), and the GradScaler's state in fp16."""
        schedules = [s.state_dict() for s in self.schedulers]  # built from the option file
        super().resume_training(resume_state)
        for scheduler, schedule in zip(self.schedulers, schedules):
            for key in SCHEDULE_KEYS:
                if key in schedule:
                    setattr(scheduler, key, schedule[key])
        self._weights_iter = resume_state['iter']
        val_freq = (self.opt.get('val') or {}).get('val_freq')
        if val_freq and resume_state['iter'] % int(val_freq) == 0:  # validated before the state was saved
            self._validated_iters = {'resumed': resume_state['iter']}
        if self.grad_scaler is None:
            return
        if resume_state.get('grad_scaler'):
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
        else:
            logging.getLogger('basicsr').warning(
                'train:precision: the training state has no GradScaler state (not trained in fp16): loss scaling '
                f'starts afresh at {self.grad_scaler.get_scale():g}')

    # --- validation, devices, pretrained weights -------------------------------------------------------------------

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        self._weights_iter = current_iter  # train_pipeline calls it before every optimisation step
        return super().update_learning_rate(current_iter, warmup_iter)

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """train_pipeline validates once more after its last iteration, and a finished run started again validates
        its last weights again: skip a validation when no iteration has trained since the last one on that data."""
        weights = getattr(self, '_weights_iter', None)  # None: not training (test pipeline)
        done = getattr(self, '_validated_iters', {})
        if weights is not None and weights in (done.get(id(dataloader)), done.get('resumed')):
            return None
        self._validated_iters = {**done, id(dataloader): weights}
        return super().validation(dataloader, current_iter, tb_logger, save_img)

    def model_to_device(self, net):
        """BaseModel's DDP has device_ids=[torch.cuda.current_device()]; without CUDA: a CPU module, gloo."""
        if self.opt['dist'] and not torch.cuda.is_available():
            return DistributedDataParallel(
                net.to(self.device), find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    def init_training_settings(self):
        """BasicSR's, with the perceptual loss's VGG weights fetched first (or a one-line error) and torchvision's
        two warnings about BasicSR's ``pretrained=`` argument (still supported, same weights) silenced."""
        perceptual = self.opt['train'].get('perceptual_opt')
        if perceptual:
            pretrained.ensure_vgg_weights(perceptual.get('vgg_type', 'vgg19'))
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', r".*('pretrained' is deprecated|other than a weight enum)", UserWarning)
            return super().init_training_settings()
