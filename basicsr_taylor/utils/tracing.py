"""Caches that step aside while torch.compile or torch.export traces (tensors made then are fake)."""
import functools

import torch


def _compiler_says(name):
    compiler = getattr(torch, 'compiler', None)  # torch.compiler.is_exporting is missing on older torch
    return bool(getattr(compiler, name, lambda: False)())


def is_exporting():
    """True while torch.export (also the dynamo-based torch.onnx.export) or the TorchScript ONNX exporter traces."""
    return _compiler_says('is_exporting') or bool(getattr(torch.onnx, 'is_in_onnx_export', lambda: False)())


def is_tracing():
    """True while torch.compile or a graph exporter traces: tensors made then are fake and must not be cached."""
    return _compiler_says('is_compiling') or is_exporting()


def cache_unless_tracing(maxsize=32):
    """Decorator: ``functools.lru_cache`` on the arguments, bypassed (computed afresh) while tracing."""

    def decorate(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def wrapper(*args):
            return fn(*args) if is_tracing() else cached(*args)

        wrapper.cache_clear = cached.cache_clear
        return wrapper

    return decorate
