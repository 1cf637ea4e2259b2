"""basicsr-taylor: TaylorShift attention and TaylorSwinIR as a BasicSR plugin (TaylorIR, arXiv 2411.10231).

``import basicsr_taylor`` imports neither torch nor BasicSR: it makes basicsr 1.4.2 importable on today's
torchvision (``utils.compat.install``) and registers the architectures (``TaylorSwinIR``, ``TaylorShiftAttention``)
and the model classes (``TaylorSRModel``, ...) in BasicSR's registries as soon as ``basicsr`` is imported. The
names of ``__all__`` are imported on first use (PEP 562).

Layout (imports run one way: commands -> options -> models -> archs -> ops -> utils; data beside ops):
    train.py test.py infer.py export.py prepare_data.py quickstart.py   the commands (console scripts)
    options/            option files: read, keys and data checked, BasicSR's pipelines run with them
    models/             BasicSR model classes with mixed precision, atomic checkpoints, ...; checkpoints' networks
    archs/              what an option file's ``type:`` names (every *_arch.py is imported and registered)
    ops/taylor_shift/   the attention op: public function, naive reference forms, efficient form, Triton kernels
    data/               training data: bicubic LR, sub-images, LMDBs, sample photos
    utils/              BasicSR compat fixes, registry, image I/O, tiling, atomic files, command-line helpers
"""
import importlib
from typing import TYPE_CHECKING

from .utils import compat
from .utils.after_import import after_import

if TYPE_CHECKING:  # what __getattr__ returns, for IDEs and type checkers
    from .archs.taylor_shift_attention_arch import TaylorShiftAttention
    from .archs.taylor_swinir_arch import TaylorSwinIR
    from .ops.taylor_shift import taylor_shift_attention

__version__ = '0.3.0'
__all__ = ['taylor_shift_attention', 'TaylorShiftAttention', 'TaylorSwinIR', '__version__']
_LAZY = {'taylor_shift_attention': '.ops.taylor_shift', 'TaylorShiftAttention': '.archs.taylor_shift_attention_arch',
         'TaylorSwinIR': '.archs.taylor_swinir_arch'}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _register(basicsr):
    """Register the architectures and model classes in BasicSR's registries (imports torch)."""
    from . import archs, models  # noqa: F401


compat.install()  # before the first import of basicsr
after_import('basicsr', _register)
