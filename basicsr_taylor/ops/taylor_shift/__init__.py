"""TaylorShift attention: the public function (``interface``) and one module per form.

    interface.py       taylor_shift_attention: checks, dtypes, choice of form, the exportable switch
    naive.py           the reference forms: direct (N×N) and the plain feature form (tests, graph export)
    features.py        the feature maps Φ / ψ of p(x) = 1 + x + x²/2
    regions.py         RegionLayout: tokens sorted by region into one-region chunks (cached per ids)
    blocks.py          the block plan: rows and tokens per block within a memory budget, scratch buffers
    efficient.py       the blocked autograd Function (linear in N)
    triton_kernels.py  the efficient form's fused Triton kernels (statistics, per-token: output, dq, dk + dv)
    triton_form.py     form="triton": the kernels in an autograd Function (CUDA; imported only for that form)
    flex.py            the direct form by torch's FlexAttention (imported only for form="flex")
"""
from .features import taylor_feature_dim
from .interface import (FORMS, auto_form, auto_threshold, crossover_tokens, exportable, is_exportable,
                        taylor_shift_attention)

__all__ = ['FORMS', 'auto_form', 'auto_threshold', 'crossover_tokens', 'exportable', 'is_exportable',
           'taylor_feature_dim', 'taylor_shift_attention']
