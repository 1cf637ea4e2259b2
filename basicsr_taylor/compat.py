"""Compatibility fixes that let the PyPI release basicsr 1.4.2 run on today's PyTorch stack.

Everything that papers over a BasicSR 1.4.2 breakage lives here, and nowhere else. Each fix is a no-op
where BasicSR (or its dependencies) already works, so users running a fixed BasicSR from source are not
affected. ``install()`` must run before the first ``import basicsr``; ``basicsr_taylor/__init__.py`` does it.
"""
import importlib.util
import sys
import types

_installed = False


def _shim_torchvision_functional_tensor():
    """basicsr/data/degradations.py imports ``torchvision.transforms.functional_tensor``, removed in
    torchvision 0.17 (BasicSR issues #533, #649). Provide it from the module that replaced it."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        if importlib.util.find_spec(name) is not None:
            return  # an old torchvision that still has it
    except ModuleNotFoundError:  # torchvision itself is missing: let basicsr raise its own error
        return
    from torchvision.transforms import _functional_tensor
    shim = types.ModuleType(name)
    shim.__dict__.update({k: v for k, v in vars(_functional_tensor).items() if not k.startswith('__')})
    shim.__doc__ = 'basicsr_taylor.compat: alias of torchvision.transforms._functional_tensor'
    sys.modules[name] = shim


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
