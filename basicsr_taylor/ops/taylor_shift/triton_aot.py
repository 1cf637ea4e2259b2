"""Ahead-of-time compilation of the Triton form's kernels for an NVIDIA architecture, on any machine (no GPU):
``triton.compile(ASTSource(...), target=GPUTarget("cuda", capability, 32))`` runs Triton's whole pipeline down to
a cubin (ptxas included). Used by the tests (every kernel variant the form launches compiles for sm_90, one dtype
for sm_80) and by ``scripts/triton_kernel_stats.py`` (registers, spills and shared memory per kernel, ptxas -v).
"""
import os
import re
import subprocess
import tempfile
from typing import NamedTuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .triton_form import _config
from .triton_kernels import (CHUNKS, FORWARD, GRAD_KV, GRAD_Q, KEYS, NO_REGIONS, QUERIES, SORTED, _stats_kernel,
                             _token_kernel)

DTYPES = {'float32': 'fp32', 'float16': 'fp16', 'bfloat16': 'bf16'}
LAYOUTS = {NO_REGIONS: 'none', CHUNKS: 'chunks', SORTED: 'sorted ids'}
MODES = {('stats', KEYS): 'stats keys', ('stats', QUERIES): 'stats queries', ('token', FORWARD): 'forward',
         ('token', GRAD_Q): 'grad q', ('token', GRAD_KV): 'grad k v'}
_TAU = {'stats keys': (False, ), 'stats queries': (False, True), 'forward': (False, True), 'grad q': (False, True),
        'grad k v': (False, )}  # the temperature multiplies queries only
_FP32_POINTERS = ('tau_ptr', 'den_ptr', 'stats_ptr', 'dtau_ptr')
_INT_POINTERS = ('order_ptr', 'source_ptr', 'seg_ptr', 'blocks_ptr')


class Variant(NamedTuple):
    """One compiled kernel: kernel "stats" or "token", MODE, LAYOUT, HAS_TAU and the inputs' dtype name."""
    kernel: str
    mode: int
    layout: int
    has_tau: bool
    dtype: str

    @property
    def name(self):
        parts = [LAYOUTS[self.layout]] + (['tau'] if self.has_tau else []) + ([self.dtype] if self.dtype else [])
        return f"{MODES[self.kernel, self.mode]} ({', '.join(parts)})"


def variants(dtypes=tuple(DTYPES)):
    """Every kernel variant the Triton form launches (each MODE, LAYOUT and temperature case) for ``dtypes``."""
    for (kernel, mode), label in MODES.items():
        for layout in LAYOUTS:
            for has_tau in _TAU[label]:
                for dtype in dtypes:
                    yield Variant(kernel, mode, layout, has_tau, dtype)


def source(variant, head_dim=30, value_dim=30):
    """The ASTSource of ``variant`` at head dim d and value dim dv (the form's tile sizes for them)."""
    fn = _stats_kernel if variant.kernel == 'stats' else _token_kernel
    precision = 'ieee' if variant.dtype == 'float32' else 'tf32'  # as the form chooses (no TF32 for float32)
    constexprs = dict(MODE=variant.mode, LAYOUT=variant.layout, HAS_TAU=variant.has_tau, PRECISION=precision,
                      **_config(head_dim, value_dim, variant.kernel))
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = 'constexpr'
        elif name in _FP32_POINTERS:
            signature[name] = '*fp32'
        elif name in _INT_POINTERS:
            signature[name] = '*i32'
        elif name.endswith('_ptr'):  # q, k, v, gradients, outputs: the inputs' dtype
            signature[name] = '*' + DTYPES[variant.dtype]
        else:
            signature[name] = 'fp32' if name == 'scale' else 'i32'
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs)


def compile_variant(variant, capability=90, head_dim=30, value_dim=30):
    """The compiled kernel (cubin, PTX and metadata) for CUDA compute capability ``capability`` (90: H100/H200)."""
    return triton.compile(source(variant, head_dim, value_dim), target=GPUTarget('cuda', capability, 32))


def ptxas_path():
    from triton.backends.nvidia import compiler
    return os.path.join(os.path.dirname(compiler.__file__), 'bin', 'ptxas')


def resource_usage(compiled):
    """Registers, spill stores / loads (bytes) by ``ptxas -v`` on the kernel's PTX, and shared memory (bytes) from
    Triton's metadata (what the launch allocates), for the architecture it was compiled for."""
    ptx = compiled.asm['ptx']
    arch = re.search(r'^\.target\s+(\S+)', ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'kernel.ptx')
        with open(path, 'w') as f:
            f.write(ptx)
        result = subprocess.run([ptxas_path(), '-v', f'--gpu-name={arch}', path, '-o', os.path.join(folder, 'k.o')],
                                capture_output=True, text=True, check=True)
    log = result.stderr + result.stdout
    registers = int(re.search(r'Used (\d+) registers', log).group(1))
    stores, loads = re.search(r'(\d+) bytes spill stores, (\d+) bytes spill loads', log).groups()
    return dict(arch=arch, registers=registers, spill_stores=int(stores), spill_loads=int(loads),
                shared=int(compiled.metadata.shared), num_warps=int(compiled.metadata.num_warps))
