"""Run a function right after a module is first imported, importing nothing before (how ``import basicsr_taylor``
registers its architectures and models in BasicSR's registries without importing torch itself)."""
import importlib.abc
import importlib.util
import sys


class _ThenCall(importlib.abc.Loader):
    """A module's own loader, then ``callback(module)`` once the module has run; anything else asked of the loader
    (get_source, resource readers) goes to the module's own."""

    def __init__(self, loader, callback):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.callback(module)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class AfterImportFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path until module ``name`` is imported: finds it with the other finders and has its loader
    call ``callback(module)`` after the module has run. Asked once: it removes itself."""

    def __init__(self, name, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenCall(spec.loader, self.callback)
        return spec


def after_import(name, callback):
    """``callback(module)`` once top-level module ``name`` is imported: now if it is, else right after its import."""
    if name in sys.modules:
        callback(sys.modules[name])
    elif not any(isinstance(finder, AfterImportFinder) and finder.name == name for finder in sys.meta_path):
        sys.meta_path.insert(0, AfterImportFinder(name, callback))
