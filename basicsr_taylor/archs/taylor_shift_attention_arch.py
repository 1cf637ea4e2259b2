"""TaylorShiftAttention: multi-head self-attention on (B, N, C) tokens with TaylorShift in place of softmax."""
import torch
from torch import nn

from ..ops.taylor_shift import DEFAULT_ORDER, FORMS, check_order, taylor_shift_attention
from ..utils.registry import register_arch


@register_arch
class TaylorShiftAttention(nn.Module):
    """Multi-head TaylorShift self-attention (the layer of TaylorIR; the functional form is
    :func:`basicsr_taylor.taylor_shift_attention`).

    Args:
        dim (int): token width C.
        num_heads (int): number of heads; C must be divisible by it.
        qkv_bias (bool): bias in the q/k/v projection.
        proj_drop (float): dropout after the output projection.
        form (str): "auto", "direct", "efficient" or "triton" (see the functional form).
        output_norm (bool): scale the attention output by sqrt(N/d).
        order (int): Taylor order k in 1..4 of the weights p_k(x) (default 2; see the functional form for the
            forms each order has and how odd orders stay positive).
        temperature_init (float): initial value of every head's temperature τ (default 1.0, the reference's).
    """

    def __init__(self, dim, num_heads=6, qkv_bias=True, proj_drop=0., form='auto', output_norm=True,
                 order=DEFAULT_ORDER, temperature_init=1.0):
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f'dim must be a positive int, got {dim!r}')
        if not isinstance(num_heads, int) or num_heads <= 0 or dim % num_heads:
            raise ValueError(f'num_heads must be a positive divisor of dim={dim}, got {num_heads!r}')
        if form not in FORMS:
            raise ValueError(f'form must be one of {FORMS}, got {form!r}')
        check_order(order, form)
        if isinstance(temperature_init, bool) or not isinstance(temperature_init, (int, float)) \
                or not temperature_init > 0 or temperature_init == float('inf'):
            raise ValueError(f'temperature_init must be a positive finite number, got {temperature_init!r}')
        self.dim = dim
        self.order = order
        self.num_heads = num_heads
        self.form = form
        self.output_norm = output_norm
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        # τ per head, x = τ·cos(q, k)
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), float(temperature_init)))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, regions=None):
        """x: (B, N, C). regions: optional, a token attends only within its region: a ``RegionChunks`` layout
        (what TaylorSwinIR passes) or integer (B, N) or (N,) ids (the efficient form then syncs to sort them)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if isinstance(regions, torch.Tensor):
            regions = regions.unsqueeze(-2)  # (B, 1, N): shared by all heads
        x = taylor_shift_attention(q, k, v, self.temperature, regions, self.form, self.output_norm, order=self.order)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))

    def extra_repr(self):
        return (f'dim={self.dim}, num_heads={self.num_heads}, form={self.form!r}, output_norm={self.output_norm}, '
                f'order={self.order}')
