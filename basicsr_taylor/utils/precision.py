"""Mixed precision for BasicSR models: BasicSR 1.4.2 has no autocast and no GradScaler.

Option file (default fp32 for both: BasicSR's own code runs, unchanged)::

    train:
      precision: bf16     # fp32 | bf16 | fp16: forward and loss of optimize_parameters under torch.autocast
    val:
      precision: fp32     # validation and basicsr-taylor-test under autocast too (bf16 | fp16), else fp32

The weights, the optimizer and the checkpoints stay float32 (autocast casts per op). fp16 scales the loss with
``torch.amp.GradScaler``, whose state is kept in the training state so that a resumed run continues exactly.
Works for every BasicSR model (SRModel, SwinIRModel, RealESRNetModel, RealESRGANModel, ...): backward passes and
optimizer steps are intercepted, not rewritten, so models with several losses and optimizers need no change.
The names are the ones ``basicsr-taylor-infer --precision`` takes.
"""
import contextlib
import functools
import os.path as osp
import types
from copy import deepcopy

import torch

from .files import atomic_path

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
OPTION_KEYS = ('train:precision', 'val:precision')  # keys the plugin reads beyond BasicSR's own


def option_dtype(opt, key):
    """The dtype an option file's ``key`` ('train:precision', 'val:precision') names; None for fp32 or absent.
    ValueError naming the key and the allowed values otherwise."""
    section, name = key.split(':')
    value = (opt.get(section) or {}).get(name)
    if value is None:
        return None
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(f'{key}: {value!r} is not a precision; use one of {", ".join(PRECISIONS)}')
    return None if value == 'fp32' else PRECISIONS[value]


def model_device_type(opt):
    """The device BaseModel puts the model on: cuda unless num_gpu is 0 ('auto': as parse_options resolves it)."""
    num_gpu = opt.get('num_gpu', 0)
    if num_gpu == 'auto':
        num_gpu = torch.cuda.device_count()
    return 'cuda' if num_gpu != 0 else 'cpu'


def grad_scaler(device_type):
    """torch.amp.GradScaler for the device; ValueError naming train:precision where torch has none."""
    if hasattr(torch.amp, 'GradScaler'):  # torch >= 2.3, CUDA and CPU
        return torch.amp.GradScaler(device_type)
    if device_type == 'cuda':
        return torch.cuda.amp.GradScaler()
    raise ValueError(f'train:precision: fp16 on {device_type} needs torch.amp.GradScaler (torch >= 2.3, this is '
                     f'{torch.__version__}); use bf16 or fp32')


def check_options(opt):
    """ValueError naming the key for a precision that is not fp32/fp16/bf16 or that the model's device cannot run."""
    device_type = model_device_type(opt)
    for key in OPTION_KEYS:
        dtype = option_dtype(opt, key)
        if dtype == torch.bfloat16 and device_type == 'cuda' and not torch.cuda.is_bf16_supported():
            raise ValueError(f'{key}: bf16: this GPU does not support bfloat16; use fp16 or fp32')
    if opt.get('is_train') and option_dtype(opt, 'train:precision') == torch.float16:
        grad_scaler(device_type)


@contextlib.contextmanager
def autocast_forward_and_loss(device_type, dtype, optimizers, scaler=None):
    """Run a block (a model's optimize_parameters) under torch.autocast, except its backward passes and optimizer
    steps: every ``Tensor.backward`` and ``optimizer.step`` called inside leaves autocast, the backward of
    ``scaler.scale(loss)`` when a GradScaler is given, and the step through ``scaler.step``.

    Yields a record whose ``scaled_steps`` counts the scaler's steps (``scaler.update()`` is the caller's, once
    per iteration, and only if it is not 0). Tensor.backward is patched process-wide while the block runs:
    BasicSR calls it from the training thread only.
    """
    outside = functools.partial(torch.autocast, device_type, enabled=False)
    record = types.SimpleNamespace(scaled_steps=0)
    original_backward = torch.Tensor.backward

    def backward(tensor, *args, **kwargs):
        with outside():
            return original_backward(tensor if scaler is None else scaler.scale(tensor), *args, **kwargs)

    def step_outside_autocast(optimizer):
        step = optimizer.step  # the optimizer's own (bound) step

        def scaled_step(*args, **kwargs):
            with outside():
                if scaler is None:
                    return step(*args, **kwargs)
                record.scaled_steps += 1
                optimizer.step = step  # GradScaler.step calls optimizer.step: the real one
                try:
                    return scaler.step(optimizer, *args, **kwargs)  # unscale, skip on inf/NaN, step
                finally:
                    optimizer.step = scaled_step

        return scaled_step

    shadowed = [(optimizer, vars(optimizer).get('step')) for optimizer in optimizers]
    try:
        torch.Tensor.backward = backward
        for optimizer in optimizers:
            optimizer.step = step_outside_autocast(optimizer)
        with torch.autocast(device_type, dtype=dtype):
            yield record
    finally:
        torch.Tensor.backward = original_backward
        for optimizer, own_step in shadowed:
            vars(optimizer).pop('step', None)
            if own_step is not None:
                optimizer.step = own_step


class MixedPrecisionModel:
    """Mixin for BasicSR models that reads ``train:precision`` and ``val:precision``.

    ``class MyModel(MixedPrecisionModel, SRModel)``; the train and test commands build every model_type this way
    when an option file asks for bf16 or fp16 (:func:`install`)."""

    def __init__(self, opt):
        super().__init__(opt)
        self.train_dtype = option_dtype(self.opt, 'train:precision') if self.is_train else None
        self.val_dtype = option_dtype(self.opt, 'val:precision')
        self.grad_scaler = grad_scaler(self.device.type) if self.train_dtype == torch.float16 else None

    def optimize_parameters(self, current_iter):
        if self.train_dtype is None:
            return super().optimize_parameters(current_iter)
        with autocast_forward_and_loss(self.device.type, self.train_dtype, self.optimizers,
                                       self.grad_scaler) as record:
            result = super().optimize_parameters(current_iter)
        if record.scaled_steps:
            self.grad_scaler.update()  # scale x 0.5 after inf/NaN gradients, x 2 after 2000 clean steps
        return result

    def test(self):
        if self.val_dtype is None:
            return super().test()
        with torch.autocast(self.device.type, dtype=self.val_dtype):
            super().test()
        if not torch.isfinite(self.output).all():  # as basicsr-taylor-infer does for a tile
            from basicsr.utils import get_root_logger
            get_root_logger().warning(f'val:precision: non-finite {self.val_dtype} output: recomputed in fp32')
            super().test()
        self.output = self.output.float()
        return None

    def save_training_state(self, epoch, current_iter):
        """BaseModel's state (epoch, iter, optimizers, schedulers) plus ``grad_scaler`` in fp16, written atomically."""
        if self.grad_scaler is None or current_iter == -1:
            return super().save_training_state(epoch, current_iter)
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [optimizer.state_dict() for optimizer in self.optimizers],
                 'schedulers': [scheduler.state_dict() for scheduler in self.schedulers],
                 'grad_scaler': self.grad_scaler.state_dict()}
        with atomic_path(osp.join(self.opt['path']['training_states'], f'{current_iter}.state')) as temp_path:
            torch.save(state, temp_path)
        return None

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.grad_scaler is None:
            return
        if resume_state.get('grad_scaler'):
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
        else:
            from basicsr.utils import get_root_logger
            get_root_logger().warning('train:precision: the training state has no GradScaler state (not trained in '
                                      f'fp16): loss scaling starts afresh at {self.grad_scaler.get_scale():g}')


@functools.lru_cache(maxsize=None)
def mixed_precision_class(model_class):
    """``model_class`` with :class:`MixedPrecisionModel` mixed in (same name; one class per model class)."""
    if issubclass(model_class, MixedPrecisionModel):
        return model_class
    return type(model_class.__name__, (MixedPrecisionModel, model_class),
                {'__module__': model_class.__module__, '__qualname__': model_class.__qualname__})


def _builds_mixed_precision_models(build_model):
    """basicsr.models.build_model, unchanged for fp32 option files; for bf16/fp16 the registered model_type with
    :class:`MixedPrecisionModel` mixed in."""

    def build_with_precision(opt):
        train_dtype = option_dtype(opt, 'train:precision') if opt.get('is_train') else None
        val_dtype = option_dtype(opt, 'val:precision')
        if train_dtype is None and val_dtype is None:
            return build_model(opt)
        from basicsr.utils import get_root_logger
        from basicsr.utils.registry import MODEL_REGISTRY
        opt = deepcopy(opt)
        model = mixed_precision_class(MODEL_REGISTRY.get(opt['model_type']))(opt)
        names = {dtype: name for name, dtype in PRECISIONS.items()}
        logger = get_root_logger()
        phases = {'training': train_dtype} if opt.get('is_train') else {}
        phases['validation'] = val_dtype
        described = ', '.join(f'{phase} {names[dtype or torch.float32]}' for phase, dtype in phases.items())
        logger.info(f'Model [{model.__class__.__name__}] is created; precision: {described}.')
        if model.device.type == 'cpu':
            logger.warning('train:precision / val:precision on the CPU: slower than fp32 unless the CPU has bf16/fp16 '
                           'units (docs/training.md); meant for GPUs')
        return model

    build_with_precision.__wrapped__ = build_model
    return build_with_precision


def install():
    """Let basicsr.train and basicsr.test build models through :func:`_builds_mixed_precision_models`. Idempotent."""
    import basicsr.test
    import basicsr.train
    for module in (basicsr.train, basicsr.test):
        if not hasattr(module.build_model, '__wrapped__'):
            module.build_model = _builds_mixed_precision_models(module.build_model)
