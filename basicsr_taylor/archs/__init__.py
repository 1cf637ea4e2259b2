"""Import every ``*_arch.py`` of this folder so that its networks land in BasicSR's ARCH_REGISTRY."""
import importlib
from os import path as osp

from basicsr.utils import scandir

_arch_folder = osp.dirname(osp.abspath(__file__))
_arch_names = sorted(osp.splitext(osp.basename(v))[0] for v in scandir(_arch_folder) if v.endswith('_arch.py'))
_arch_modules = [importlib.import_module(f'{__name__}.{name}') for name in _arch_names]
