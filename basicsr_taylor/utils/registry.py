"""Registration in BasicSR's registries that survives a module being imported twice."""
import inspect
import os.path as osp

from basicsr.utils.registry import ARCH_REGISTRY

from .compat import replace_registered_arch


def _source_file(cls):
    try:
        return osp.realpath(inspect.getsourcefile(cls) or '')
    except TypeError:  # a class defined in the interpreter
        return None


def register_arch(cls):
    """Class decorator: ``ARCH_REGISTRY.register()`` that tolerates a re-import of the same class.

    BasicSR asserts when a name is registered twice. Re-executing the same file (importlib.reload, a script
    imported under two module names) registers the class again: that replaces the entry. A class of the same
    name from another file is an error naming both files (it never replaces the registered one).
    """
    name = cls.__name__
    if name in ARCH_REGISTRY:
        existing = ARCH_REGISTRY.get(name)
        same_file = _source_file(existing) is not None and _source_file(existing) == _source_file(cls)
        if not (same_file and existing.__qualname__ == cls.__qualname__):
            raise ValueError(f'ARCH_REGISTRY already has a {name} from {_source_file(existing)} '
                             f'({existing.__module__}); {cls.__module__} ({_source_file(cls)}) cannot register '
                             'another class under that name: rename one of them')
        replace_registered_arch(name, cls)  # BasicSR's Registry has no public replace (compat)
        return cls
    return ARCH_REGISTRY.register()(cls)
