"""Registration in BasicSR's registries that survives a module being imported twice."""
from basicsr.utils.registry import ARCH_REGISTRY


def register_arch(cls):
    """Class decorator: ``ARCH_REGISTRY.register()`` that tolerates a re-import of the same class.

    BasicSR asserts when a name is registered twice. Re-executing the same module (importlib.reload, a
    script imported under two names) registers the same class again; that replaces the entry. A different
    class under a taken name still fails, as in BasicSR.
    """
    existing = ARCH_REGISTRY.get(cls.__name__) if cls.__name__ in ARCH_REGISTRY else None
    if existing is not None and existing.__qualname__ == cls.__qualname__ and \
            existing.__module__.split('.')[-1] == cls.__module__.split('.')[-1]:
        ARCH_REGISTRY._obj_map[cls.__name__] = cls  # noqa: SLF001  (BasicSR's Registry has no public replace)
        return cls
    return ARCH_REGISTRY.register()(cls)
