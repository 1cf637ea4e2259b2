"""The option keys of mixed precision (BasicSR 1.4.2 has no autocast and no GradScaler); the model classes apply it.

Option file (default fp32 for both: BasicSR's own code runs, unchanged)::

    train:
      precision: bf16     # fp32 | bf16 | fp16: forward and loss of optimize_parameters under torch.autocast
    val:
      precision: fp32     # validation and basicsr-taylor-test under autocast too (bf16 | fp16), else fp32

The weights, the optimizer and the checkpoints stay float32 (autocast casts per op). fp16 scales the loss with
``torch.amp.GradScaler``, whose state is kept in the training state so that a resumed run continues exactly
(``taylor_mixin.TaylorMixin``). The names are the ones ``basicsr-taylor-infer --precision`` takes.
"""
import torch

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
