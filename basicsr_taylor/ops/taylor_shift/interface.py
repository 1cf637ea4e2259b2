"""TaylorShift attention (arXiv 2403.02920): softmax's exp replaced by its 2nd-order Taylor polynomial.

    x_ij = τ · cos(q_i, k_j),   p(x) = 1 + x + x²/2 (>= 1/2),   y_i = Σ_j p(x_ij) v_j / Σ_j p(x_ij)

The public function: argument checks, dtypes and the choice of form. The forms (all exact, agreeing to rounding):

- ``direct`` (``naive.direct``): builds the N×N weights; O(N²d) time, O(N²) memory.
- ``efficient`` (``efficient.efficient``): p(q·k) = ψ(q)ᵀ C ψ(k) with the monomials ψ(x) = [1, x, x_a x_b]
  (``features``), key statistics S = C Σ_j ψ(k_j) [1, v_j]ᵀ and y'_i = ψ(q_i)ᵀ S; O(N d³) time, linear in N,
  in blocks of tokens inside a custom autograd Function.
- ``triton`` (``triton_form``, ``triton_kernels``): the efficient form as fused Triton kernels, forward and
  backward, for CUDA; reads float16 / bfloat16 inputs as they are and accumulates in float32.
- ``flex`` (``flex``): the direct form through torch's FlexAttention (torch >= 2.5), flash-style: no N×N tensor
  on CUDA (score_mod = log p, regions as a block mask).

Regions (the exact replacement of SwinIR's -100 mask, which a polynomial ignores: p(-100) = 4901): a query
attends only to keys with its own region id.

Graph export (timm's "exportable" switch): while torch.export / torch.onnx trace, or inside :func:`exportable`,
the naive forms run instead (``naive.direct`` below N0 = d² + d + 1 tokens, ``naive.feature_form`` from N0 on):
plain tensor ops with static shapes, no data-dependent region layout, no custom autograd Function.
"""
import contextlib
import math

import torch

from ...utils.tracing import is_exporting
from . import naive
from .efficient import efficient

FORMS = ('auto', 'direct', 'efficient', 'triton', 'flex')
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_exportable = False


def crossover_tokens(head_dim):
    """N0 = d² + d + 1: the token count above which the efficient form needs fewer FLOPs than the direct."""
    return head_dim * head_dim + head_dim + 1


# form="auto": the efficient form from N0 = a·d + b tokens on, measured (docs/benchmarks.md, "auto"): 1 thread,
# the fastest of direct and efficient at d = 16 and 30, N = 64 ... 576, with and without gradients
AUTO_THRESHOLDS = {('cpu', False): (10, 30), ('cpu', True): (7, 15)}


def auto_threshold(device_type, head_dim, needs_grad):
    """Tokens from which form="auto" takes the efficient form: measured on CPU (AUTO_THRESHOLDS); elsewhere
    (not measured yet) the FLOP crossover N0 = d² + d + 1."""
    slope_intercept = AUTO_THRESHOLDS.get((device_type, bool(needs_grad)))
    if slope_intercept is None:
        return crossover_tokens(head_dim)
    slope, intercept = slope_intercept
    return slope * head_dim + intercept  # N0 = a·d + b


def auto_form(device_type, head_dim, num_tokens, needs_grad):
    """The form "auto" runs: "direct" below auto_threshold, "efficient" from it on."""
    return 'direct' if num_tokens < auto_threshold(device_type, head_dim, needs_grad) else 'efficient'


@contextlib.contextmanager
def exportable(enabled=True):
    """Within the block, :func:`taylor_shift_attention` uses the traceable naive forms (for graph export)."""
    global _exportable
    previous, _exportable = _exportable, enabled
    try:
        yield
    finally:
        _exportable = previous


def is_exportable():
    """True inside :func:`exportable` or while torch.export / torch.onnx trace."""
    return _exportable or is_exporting()


def taylor_shift_attention(q, k, v, temperature=None, regions=None, form='auto', output_norm=True):
    """TaylorShift attention, in the spirit of ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        q, k: (..., N, d) queries and keys (batch and heads in front).
        v: (..., N, dv) values.
        temperature: optional tensor broadcastable to (..., 1, 1), e.g. (heads, 1, 1); multiplies the
            L2-normalised queries (x = τ·cos). None means τ = 1.
        regions: optional integer tensor whose shape broadcasts against (..., N) by torch's rules (pass
            (B, 1, N) for per-window ids shared by all heads). Query i attends only to keys j with
            regions[i] == regions[j].
        form: "direct", "efficient", "triton" (CUDA, or CPU under TRITON_INTERPRET=1), "flex" (torch's
            FlexAttention; CPU: forward only) or "auto" (direct below a measured token count, efficient from
            it on: :func:`auto_threshold`). While exporting, every form runs the naive forms (region ids then
            in 0..3; "auto" by the FLOP rule N0 = d² + d + 1).
        output_norm: multiply the output by sqrt(N/d), as in all of the TaylorShift paper's models.

    Returns:
        (..., N, dv) tensor in q's dtype. Half-precision inputs (and autocast) are computed in float32
        internally: the squared term and the sums over N are where float16 overflows. The "triton" form
        reads half inputs as they are and accumulates in float32 in its kernels.
    """
    if not is_exporting():  # (symbolic shapes while exporting: the checks would only add guards)
        _check_inputs(q, k, v, temperature, regions, form)
    num_tokens, head_dim = q.shape[-2], q.shape[-1]
    out_dtype = q.dtype
    compute_dtype = torch.float32 if q.dtype in _HALF_DTYPES else q.dtype
    if num_tokens == 0:  # nothing to attend to (as scaled_dot_product_attention)
        return v.new_empty(v.shape, dtype=out_dtype)
    if form == 'auto' and is_exportable():  # the graph must not depend on the device: the FLOP rule
        form = 'direct' if num_tokens < crossover_tokens(head_dim) else 'efficient'
    elif form == 'auto':
        inputs = (q, k, v) if temperature is None else (q, k, v, temperature)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        form = auto_form(q.device.type, head_dim, num_tokens, needs_grad)
    scale = math.sqrt(num_tokens / head_dim) if output_norm else 1.0  # y · sqrt(N/d)

    with torch.autocast(device_type=q.device.type, enabled=False):
        if form == 'triton' and not is_exportable():  # the kernels read half inputs and accumulate in float32
            from .triton_form import taylor_shift_triton  # imports triton: only when asked for
            return taylor_shift_triton(q, k.to(q.dtype), v.to(q.dtype), temperature, regions, scale).to(out_dtype)
        q, k, v = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
        if temperature is not None:
            temperature = temperature.to(compute_dtype)
        if form == 'direct':
            out = naive.direct(q, k, v, temperature, regions, scale)
        elif is_exportable():
            out = naive.feature_form(q, k, v, temperature, regions, scale)
        elif form == 'flex':
            from .flex import taylor_shift_flex  # imports flex_attention: only when asked for
            out = taylor_shift_flex(q, k, v, temperature, regions, scale)
        else:
            out = efficient(q, k, v, temperature, regions, scale)
    return out.to(out_dtype)


def _check_inputs(q, k, v, temperature, regions, form):
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    if q.dim() < 2 or q.shape != k.shape:
        raise ValueError(f'q and k must have the same shape (..., N, d), got q {tuple(q.shape)} and k {tuple(k.shape)}')
    if v.dim() != k.dim() or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f'v must have shape (..., N, dv) matching k {tuple(k.shape)} except the last dim, '
                         f'got {tuple(v.shape)}')
    if temperature is not None:
        try:
            torch.broadcast_shapes(temperature.shape, q.shape[:-2] + (1, 1))
        except RuntimeError:
            raise ValueError(f'temperature of shape {tuple(temperature.shape)} does not broadcast to '
                             f'{tuple(q.shape[:-2]) + (1, 1)}') from None
    if regions is not None:
        if regions.dtype.is_floating_point or regions.dtype.is_complex or regions.dtype == torch.bool:
            raise ValueError(f'regions must be an integer tensor, got {regions.dtype}')
        try:
            shape = torch.broadcast_shapes(regions.shape, q.shape[:-1])
        except RuntimeError:
            shape = None
        if shape != q.shape[:-1]:
            raise ValueError(f'regions of shape {tuple(regions.shape)} does not broadcast to (..., N) = '
                             f'{tuple(q.shape[:-1])}; for (B, heads, N, d) inputs pass (B, 1, N)')
