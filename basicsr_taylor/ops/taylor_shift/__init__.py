"""TaylorShift attention: the public function (``interface``) and one module per form.

    interface.py       taylor_shift_attention: checks, dtypes, choice of form, the exportable switch
    naive.py           the reference forms: direct (N×N, every Taylor order) and the plain feature form (tests, export)
    features.py        the feature map Φ of p(x) = 1 + x + x²/2 (naive feature form, export)
    regions.py         RegionChunks: tokens in one-region chunks (the network's layout, or ids sorted and padded)
    blocks.py          the block plan: chunk rows per block within a budget (per device, plan or network)
    efficient.py       the blocked autograd Function (linear in N): outer products of [1, x], SDPA-like memory
    linear.py          the efficient form of Taylor order 1: linear attention with features [1, x]
    triton_kernels.py  the efficient form's fused Triton kernels (statistics, per-token: output, dq, dk + dv)
    triton_form.py     form="triton": the kernels in an autograd Function (CUDA; imported only for that form)
    triton_aot.py      the kernels compiled ahead of time for a GPU architecture, without a GPU (tests, scripts)
    flex.py            the direct form by torch's FlexAttention (imported only for form="flex")

What a user calls is exported here; everything else is imported from its own module
(``from basicsr_taylor.ops.taylor_shift.interface import auto_form, check_order``):

    taylor_shift_attention   the op
    exportable               the graph-export switch (torch.export / ONNX run the naive forms)
    RegionChunks             the region layout ``taylor_shift_attention(..., regions=...)`` takes
    FORMS, ORDERS            the valid ``form`` and ``order`` arguments (the architectures check their options
                             against them and name them in their errors)
    DEFAULT_ORDER            the default ``order`` (also the architectures' ``taylor_order`` default)

Internals (``auto_form``, ``auto_threshold``, ``crossover_tokens``, ``check_order``, ``odd_order_temperature``,
``is_exportable``, ``EFFICIENT_ORDERS`` in ``interface``; ``taylor_feature_dim`` in ``features``; the block plan in
``blocks``) are the op's own choices and may change between versions.
"""
from .interface import DEFAULT_ORDER, FORMS, ORDERS, exportable, taylor_shift_attention
from .regions import RegionChunks

__all__ = ['DEFAULT_ORDER', 'FORMS', 'ORDERS', 'RegionChunks', 'exportable', 'taylor_shift_attention']
