"""Shared test set-up.

basicsr 1.4.2 only imports on today's torchvision after basicsr_taylor's compat fixes: load them first.
"""
import importlib
import os
import sys

import pytest
import torch

import basicsr_taylor  # noqa: F401

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts')


def benchmarking(name):
    """The module scripts/benchmarking/<name>.py (the benchmark script's measuring code, reused by tests)."""
    if SCRIPTS not in sys.path:
        sys.path.insert(0, SCRIPTS)
    return importlib.import_module(f'benchmarking.{name}')


@pytest.fixture
def one_thread():
    """Tiny networks run as fast on one thread, and one thread is immune to other jobs on the same cores
    (spinning OpenMP threads on a shared CPU slowed them 20-50x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def change_options(opt, changes):
    """opt with ``changes`` applied: {'a:b:c': value} sets opt['a']['b']['c'] (None deletes it)."""
    for key, value in changes.items():
        *parents, last = key.split(':')
        node = opt
        for parent in parents:
            node = node[parent]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return opt
