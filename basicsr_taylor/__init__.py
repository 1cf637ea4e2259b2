"""basicsr-taylor: TaylorShift attention and TaylorSwinIR as a BasicSR plugin (TaylorIR, arXiv 2411.10231).

Importing this package makes basicsr 1.4.2 importable on today's torch/torchvision (see ``compat``) and
registers ``TaylorShiftAttention`` and ``TaylorSwinIR`` in ``basicsr.utils.registry.ARCH_REGISTRY``.
"""
from . import compat

compat.install()

from .taylor_shift import taylor_shift_attention  # noqa: E402
from .archs import *  # noqa: E402,F401,F403  (registers the architectures)
from .archs.taylor_shift_attention_arch import TaylorShiftAttention  # noqa: E402
from .archs.taylor_swinir_arch import TaylorSwinIR  # noqa: E402

__version__ = '0.1.0'
__all__ = ['taylor_shift_attention', 'TaylorShiftAttention', 'TaylorSwinIR', '__version__']
