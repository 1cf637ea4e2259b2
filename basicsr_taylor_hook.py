"""Makes ``import basicsr`` work before (or without) ``import basicsr_taylor``, in any script or notebook.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, which torchvision 0.17 removed. Installing
basicsr-taylor puts ``basicsr_taylor_hook.pth`` in site-packages (as setuptools does for its distutils); Python
runs its one line at start-up, which appends :class:`FunctionalTensorFinder` to ``sys.meta_path``. The finder
imports nothing: only when a program imports ``torchvision.transforms.functional_tensor`` and torchvision has
no such module does it supply one, aliasing ``torchvision.transforms._functional_tensor``. Everything else
(other programs, pip) is untouched. ``basicsr_taylor.utils.compat`` uses the same finder when the .pth is not
installed (a checkout on PYTHONPATH).
"""
import importlib.abc
import importlib.machinery
import sys

MODULE = 'torchvision.transforms.functional_tensor'


class FunctionalTensorFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Asked last (it is appended to sys.meta_path), for one module name only."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != MODULE:
            return None
        return importlib.machinery.ModuleSpec(fullname, self,
                                              origin='alias of torchvision.transforms._functional_tensor')

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        from torchvision.transforms import _functional_tensor
        module.__dict__.update({k: v for k, v in vars(_functional_tensor).items() if not k.startswith('__')})
        module.__doc__ = 'basicsr_taylor_hook: alias of torchvision.transforms._functional_tensor'


def install():
    """Append the finder to sys.meta_path once. Cheap: imports nothing."""
    if not any(isinstance(finder, FunctionalTensorFinder) for finder in sys.meta_path):
        sys.meta_path.append(FunctionalTensorFinder())
