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
"""
from .features import taylor_feature_dim
from .interface import (DEFAULT_ORDER, EFFICIENT_ORDERS, FORMS, ORDERS, auto_form, auto_form_of_order, auto_threshold,
                        check_order, crossover_tokens, exportable, is_exportable, odd_order_temperature,
                        taylor_shift_attention)

__all__ = ['DEFAULT_ORDER', 'EFFICIENT_ORDERS', 'FORMS', 'ORDERS', 'auto_form', 'auto_form_of_order', 'auto_threshold',
           'check_order', 'crossover_tokens', 'exportable', 'is_exportable', 'odd_order_temperature',
           'taylor_feature_dim', 'taylor_shift_attention']
