"""basicsr-taylor: TaylorShift attention and TaylorSwinIR as a BasicSR plugin (TaylorIR, arXiv 2411.10231).

Importing this package makes basicsr 1.4.2 importable on today's torch/torchvision (``utils.compat``) and
registers ``TaylorShiftAttention`` and ``TaylorSwinIR`` in ``basicsr.utils.registry.ARCH_REGISTRY``.

Layout (imports run one way: commands -> archs -> ops -> utils; data beside ops):
    train.py test.py infer.py export.py prepare_data.py quickstart.py   the commands (console scripts)
    archs/              what an option file's ``type:`` names (every *_arch.py is imported and registered)
    ops/taylor_shift/   the attention op: public function, naive reference forms, efficient form, Triton kernels
    data/               training data: bicubic LR, sub-images, LMDBs, sample photos
    utils/              compat fixes, registry, option checks, checkpoints, image I/O, tiling, atomic files,
                        mixed precision (train:precision, val:precision)
"""
from .utils.cli import answering_help

__version__ = '0.3.0'
__all__ = ['taylor_shift_attention', 'TaylorShiftAttention', 'TaylorSwinIR', '__version__']


def _load():
    """Apply the compatibility fixes and register the architectures (imports torch and BasicSR)."""
    from .utils import compat
    compat.install()
    from . import archs  # noqa: F401  (registers the architectures)
    from .archs.taylor_shift_attention_arch import TaylorShiftAttention
    from .archs.taylor_swinir_arch import TaylorSwinIR
    from .ops.taylor_shift import taylor_shift_attention
    globals().update(TaylorShiftAttention=TaylorShiftAttention, TaylorSwinIR=TaylorSwinIR,
                     taylor_shift_attention=taylor_shift_attention)


if answering_help():  # a command's --help: answered without torch or BasicSR; loaded on first use if ever

    def __getattr__(name):
        if name in __all__:
            _load()
            return globals()[name]
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
else:
    _load()
