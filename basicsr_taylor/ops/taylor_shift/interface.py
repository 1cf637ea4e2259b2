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

Other Taylor orders (``order`` k in 1..4, weights p_k(x) = Σ_{i<=k} x^i / i!; the default k = 2 is the above):
the direct form for every order (``naive.direct``), the efficient form for k = 1 (``linear``: p_1(q·k) =
1 + q·k = [1, q]·[1, k] is linear attention) and k = 2. Odd orders have real roots (p_1(-1) = 0, p_3(x) < 0 below
x = -1.596), so for them the temperature is bounded, |τ| <= (1 - 1e-3) ρ_k (:func:`odd_order_temperature`): every
weight is then >= ~1e-3 and the output a convex combination of the values, in every form.

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
from .blocks import plan_of
from .efficient import efficient
from .linear import linear_taylor_attention
from .regions import RegionChunks, sorted_region_chunks

FORMS = ('auto', 'direct', 'efficient', 'triton', 'flex')
ORDERS = (1, 2, 3, 4)  # Taylor orders k: p_k(x) = Σ_{i<=k} x^i / i!
EFFICIENT_ORDERS = (1, 2)  # order 3 would need C(d+3, 3) features (5456 at d = 30): more than the direct form
DEFAULT_ORDER = 2
# ρ_k: magnitude of the real root of p_k for odd k (p_1(-1) = 0, p_3(-1.5961) = 0): p_k > 0 on (-ρ_k, ∞)
ODD_ORDER_ROOTS = {1: 1.0, 3: 1.5960716379833215}
ROOT_MARGIN = 1e-3  # |τ| <= (1 - margin) ρ_k: every weight >= ~1e-3 (p_1: exactly 1e-3; p_3: 1.1e-3)
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_exportable = False


def crossover_tokens(head_dim):
    """N0 = d² + d + 1: the token count above which the efficient form needs fewer FLOPs than the direct."""
    return head_dim * head_dim + head_dim + 1


# form="auto": the efficient form from N0 = max(a·d + b, 2d) tokens on, measured (docs/benchmarks.md, "auto"):
# 1 thread, the faster of direct and efficient at d = 16 and 30, N = 64 ... 576, with and without gradients
AUTO_THRESHOLDS = {('cpu', False): (22, -120), ('cpu', True): (18, -140)}


def auto_threshold(device_type, head_dim, needs_grad):
    """Tokens from which form="auto" takes the efficient form: measured on CPU (AUTO_THRESHOLDS); elsewhere
    (not measured yet) the FLOP crossover N0 = d² + d + 1."""
    slope_intercept = AUTO_THRESHOLDS.get((device_type, bool(needs_grad)))
    if slope_intercept is None:
        return crossover_tokens(head_dim)
    slope, intercept = slope_intercept
    return max(slope * head_dim + intercept, 2 * head_dim)  # N0 = max(a·d + b, 2d)


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


def check_order(order, form='auto'):
    """ValueError unless ``order`` is one of ORDERS and ``form`` can compute it."""
    if isinstance(order, bool) or order not in ORDERS:
        raise ValueError(f'order must be one of {ORDERS} (Taylor order of the weights), got {order!r}')
    served = {'efficient': EFFICIENT_ORDERS, 'triton': (2, ), 'flex': (2, )}.get(form, ORDERS)
    if order not in served:
        raise ValueError(f'form={form!r} computes orders {served} only, got order={order}: order {order} has '
                         'only the direct form (use form="direct" or "auto")')


def auto_form_of_order(num_tokens, head_dim, order):
    """What form="auto" runs for orders other than 2 (order 2: :func:`auto_form`): for order 1 direct below its
    FLOP crossover d + 2 tokens (4N²d = 4N(d+1)² there), efficient from it on; orders 3 and 4 direct."""
    if order == 1:
        return 'direct' if num_tokens < head_dim + 2 else 'efficient'
    return 'direct'


def odd_order_temperature(temperature, order, like):
    """τ bounded to |τ| <= (1 - 1e-3) ρ_k for odd k (None means τ = 1, also bounded); unchanged for even k.

    With x = τ cos(q, k) in [-|τ|, |τ|] every weight p_k(x) is then positive (>= ~1e-3), so no row sum can vanish
    or change sign. Clamping the row sum instead would keep signed weights and let one query's output grow without
    bound; clamping each weight cannot be done in the efficient form, which never sees a weight. The bound acts on
    τ before any form, so all forms compute the same function. It passes no gradient to τ while it binds.
    """
    if order % 2 == 0:
        return temperature
    bound = (1 - ROOT_MARGIN) * ODD_ORDER_ROOTS[order]
    if temperature is None:
        temperature = like.new_ones(())
    return temperature.clamp(-bound, bound)


def taylor_shift_attention(q, k, v, temperature=None, regions=None, form='auto', output_norm=True,
                           order=DEFAULT_ORDER):
    """TaylorShift attention, in the spirit of ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        q, k: (..., N, d) queries and keys (batch and heads in front).
        v: (..., N, dv) values.
        temperature: optional tensor broadcastable to (..., 1, 1), e.g. (heads, 1, 1); multiplies the
            L2-normalised queries (x = τ·cos). None means τ = 1.
        regions: optional; query i attends only to keys j of its own region. Either a
            :class:`~basicsr_taylor.ops.taylor_shift.regions.RegionChunks` (tokens in chunks of one region each,
            built from sizes, e.g. ``archs.shifted_windows.shifted_window_chunks``: no host sync, what the network
            passes), or an integer tensor of ids whose shape broadcasts against (..., N) by torch's rules (pass
            (B, 1, N) for per-window ids shared by all heads): the efficient form then sorts the tokens by id,
            which reads the ids on the host (one device-to-host sync per call).
        form: "direct", "efficient", "triton" (CUDA, or CPU under TRITON_INTERPRET=1), "flex" (torch's
            FlexAttention; CPU: forward only) or "auto" (direct below a measured token count, efficient from
            it on: :func:`auto_threshold`). While exporting, every form runs the naive forms (region ids then
            in 0..3; "auto" by the FLOP rule N0 = d² + d + 1).
        output_norm: multiply the output by sqrt(N/d), as in all of the TaylorShift paper's models.
        order: Taylor order k in 1..4 of the weights p_k(x) = Σ_{i<=k} x^i / i! (default 2, TaylorShift's).
            Every order has the direct form; orders 1 and 2 also the efficient one (order 1: linear attention
            with features [1, x]); "triton" and "flex" are order 2 only; "auto" picks direct for orders 3 and 4 (and for
            order 1 below d + 2 tokens). A form that cannot serve the order raises ValueError. Odd orders bound
            the temperature to |τ| <= (1 - 1e-3) ρ_k, ρ_1 = 1, ρ_3 = 1.596 (the roots of p_k), so that every
            weight is positive (>= ~1e-3) and the output stays a weighted average of the values: never NaN or
            inf. While exporting, orders other than 2 run the direct form.

    Returns:
        (..., N, dv) tensor in q's dtype. The efficient and triton forms compute half-precision inputs (float16,
        bfloat16) in their dtype with float32 accumulation, the values scaled by 1/N so that the key statistics
        stay in range, and the final division in float32; the other forms compute them in float32.
    """
    if not is_exporting():  # (symbolic shapes while exporting: the checks would only add guards)
        _check_inputs(q, k, v, temperature, regions, form)
        check_order(order, form)
    num_tokens, head_dim = q.shape[-2], q.shape[-1]
    out_dtype = q.dtype
    compute_dtype = torch.float32 if q.dtype in _HALF_DTYPES else q.dtype
    if num_tokens == 0:  # nothing to attend to (as scaled_dot_product_attention); still part of the graph
        empty = v * 0 + (q.sum() + k.sum()) * 0
        return empty if temperature is None else empty + temperature.sum() * 0
    if order != DEFAULT_ORDER:
        form = auto_form_of_order(num_tokens, head_dim, order) if form == 'auto' else form
        if is_exportable():
            form = 'direct'  # plain ops, static shapes (the order-1 efficient form counts regions at run time)
    elif form == 'auto' and is_exportable():  # the graph must not depend on the device: the FLOP rule
        form = 'direct' if num_tokens < crossover_tokens(head_dim) else 'efficient'
    elif form == 'auto':
        inputs = (q, k, v) if temperature is None else (q, k, v, temperature)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        form = auto_form(plan_of(q.device.type), head_dim, num_tokens, needs_grad)  # the CUDA plan: CUDA's
    real_tokens = regions.real_tokens if isinstance(regions, RegionChunks) else num_tokens  # padding not counted
    scale = math.sqrt(real_tokens / head_dim) if output_norm else 1.0  # y · sqrt(N/d)

    with torch.autocast(device_type=q.device.type, enabled=False):
        if isinstance(regions, RegionChunks) and regions.key_weight is not None and form in ('triton', 'flex'):
            ids = regions.token_regions(q.shape[0])  # padded chunks: padding as a region of its own, by id
            regions = ids.view(ids.shape[:1] + (1, ) * (q.dim() - 3) + ids.shape[1:])
        if form == 'triton' and not is_exportable():  # the kernels read half inputs and accumulate in float32
            from .triton_form import taylor_shift_triton  # imports triton: only when asked for
            return taylor_shift_triton(q, k.to(q.dtype), v.to(q.dtype), temperature, regions, scale).to(out_dtype)
        if form == 'efficient' and order == DEFAULT_ORDER and not is_exportable():
            if regions is not None and not isinstance(regions, RegionChunks):  # any ids: sorted (a host sync)
                regions = sorted_region_chunks(regions.expand(q.shape[:-1]).reshape(-1, num_tokens))
            return efficient(q, k.to(q.dtype), v.to(q.dtype), temperature, regions, scale).to(out_dtype)
        chunks_served = form == 'efficient' and order == 1 and not is_exportable()  # order 1 takes the chunks
        padded = isinstance(regions, RegionChunks) and regions.key_weight is not None  # ids 0..4 (4: padding)
        if isinstance(regions, RegionChunks) and (form != 'flex' or is_exportable()) and not chunks_served:
            ids = regions.token_regions(q.shape[0])
            regions = ids.view(ids.shape[:1] + (1, ) * (q.dim() - 3) + ids.shape[1:])
        q, k, v = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
        if temperature is not None:
            temperature = temperature.to(compute_dtype)
        if order != DEFAULT_ORDER:
            out = _other_order(q, k, v, temperature, regions, scale, order, form)
        elif form == 'direct':
            out = naive.direct(q, k, v, temperature, regions, scale)
        elif is_exportable():
            num_regions = naive.MAX_SHIFTED_WINDOW_REGIONS + (1 if padded else 0)
            out = naive.feature_form(q, k, v, temperature, regions, scale, num_regions)
        else:
            from .flex import taylor_shift_flex  # imports flex_attention: only when asked for
            out = taylor_shift_flex(q, k, v, temperature, regions, scale)
    return out.to(out_dtype)


def _other_order(q, k, v, temperature, regions, scale, order, form):
    """Orders other than 2: the direct form (any order) or the linear-attention efficient form (order 1)."""
    temperature = odd_order_temperature(temperature, order, q)
    if form == 'efficient':  # order 1 (check_order admits nothing else)
        return linear_taylor_attention(q, k, v, temperature, regions, scale)
    return naive.direct(q, k, v, temperature, regions, scale, order)


def _check_inputs(q, k, v, temperature, regions, form):
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    if q.dim() < 2 or q.shape != k.shape:
        raise ValueError(f'q and k must have the same shape (..., N, d), got q {tuple(q.shape)} and k {tuple(k.shape)}')
    if v.dim() != k.dim() or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f'v must have shape (..., N, dv) matching k {tuple(k.shape)} except the last dim, '
                         f'got {tuple(v.shape)}')
    if temperature is not None:
        target = q.shape[:-2] + (1, 1)
        try:
            fits = torch.broadcast_shapes(temperature.shape, target) == target  # no extra or wider dims
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f'temperature of shape {tuple(temperature.shape)} does not broadcast to '
                             f'{tuple(target)} (one value per batch/head entry, e.g. (heads, 1, 1))')
    if isinstance(regions, RegionChunks):
        regions.check(q.shape)
    elif regions is not None:
        if regions.dtype.is_floating_point or regions.dtype.is_complex or regions.dtype == torch.bool:
            raise ValueError(f'regions must be an integer tensor, got {regions.dtype}')
        try:
            shape = torch.broadcast_shapes(regions.shape, q.shape[:-1])
        except RuntimeError:
            shape = None
        if shape != q.shape[:-1]:
            raise ValueError(f'regions of shape {tuple(regions.shape)} does not broadcast to (..., N) = '
                             f'{tuple(q.shape[:-1])}; for (B, heads, N, d) inputs pass (B, 1, N)')
