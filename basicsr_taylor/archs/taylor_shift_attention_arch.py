"""TaylorShiftAttention: multi-head self-attention on (B, N, C) tokens with TaylorShift in place of softmax."""
import contextlib
import math

import torch
from torch import nn

from ..ops.taylor_shift import DEFAULT_ORDER, FORMS, taylor_shift_attention
from ..ops.taylor_shift.blocks import block_budget
from ..ops.taylor_shift.interface import check_order
from ..utils.registry import register_arch

TEMPERATURE_PARAMS = ('linear', 'log')
LOG_TEMPERATURE_RANGE = (1e-2, 1e2)  # τ of temperature_param 'log' (Swin V2 clamps its logit scale at 100)


def check_block_mb(block_mb):
    """ValueError unless ``block_mb`` is None or a positive finite number of MiB."""
    if block_mb is not None and (isinstance(block_mb, bool) or not isinstance(block_mb, (int, float))
                                 or not 0 < block_mb < float('inf')):
        raise ValueError(f'attn_block_mb must be a positive number of MiB (or null for the device\'s plan), got '
                         f'{block_mb!r}')


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
        temperature_param (str): how τ is learned: "linear" (default: the parameter ``temperature`` is τ) or "log"
            (the parameter ``log_temperature`` is s, τ = exp(s) with s clamped to log of LOG_TEMPERATURE_RANGE,
            [1e-2, 1e2], as Swin V2 learns its logit scale: steps move τ multiplicatively).
        block_mb (float): the efficient form's budget of temporary memory per block in MiB (default None: the
            device's plan, ``ops/taylor_shift/blocks.py``); smaller blocks hold less memory and launch more kernels.
    """

    def __init__(self, dim, num_heads=6, qkv_bias=True, proj_drop=0., form='auto', output_norm=True,
                 order=DEFAULT_ORDER, temperature_init=1.0, temperature_param='linear', block_mb=None):
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
        if temperature_param not in TEMPERATURE_PARAMS:
            raise ValueError(f'temperature_param must be one of {TEMPERATURE_PARAMS}, got {temperature_param!r}')
        low, high = LOG_TEMPERATURE_RANGE
        if temperature_param == 'log' and not low <= temperature_init <= high:
            raise ValueError(f'temperature_init must lie in [{low:g}, {high:g}] with temperature_param "log", got '
                             f'{temperature_init!r}')
        check_block_mb(block_mb)
        self.block_mb = block_mb
        self.dim = dim
        self.order = order
        self.num_heads = num_heads
        self.form = form
        self.output_norm = output_norm
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.temperature_param = temperature_param
        if temperature_param == 'linear':  # τ per head, x = τ·cos(q, k)
            self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), float(temperature_init)))
        else:  # s per head, τ = exp(clamp(s, log low, log high))
            self.log_temperature = nn.Parameter(torch.full((num_heads, 1, 1), math.log(temperature_init)))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def tau(self):
        """The temperature τ of every head, (num_heads, 1, 1)."""
        if self.temperature_param == 'linear':
            return self.temperature
        low, high = LOG_TEMPERATURE_RANGE
        return self.log_temperature.clamp(math.log(low), math.log(high)).exp()  # τ = exp(s), s clamped

    def forward(self, x, regions=None):
        """x: (B, N, C). regions: optional, a token attends only within its region: a ``RegionChunks`` layout
        (what TaylorSwinIR passes) or integer (B, N) or (N,) ids (the efficient form then syncs to sort them)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.contiguous().unbind(0)  # one copy: (B, heads, N, d) each, contiguous
        if isinstance(regions, torch.Tensor):
            regions = regions.unsqueeze(-2)  # (B, 1, N): shared by all heads
        budget = contextlib.nullcontext() if self.block_mb is None else block_budget(self.block_mb * 2**20)
        with budget:
            x = taylor_shift_attention(q, k, v, self.tau(), regions, self.form, self.output_norm, order=self.order)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))

    def extra_repr(self):
        return (f'dim={self.dim}, num_heads={self.num_heads}, form={self.form!r}, output_norm={self.output_norm}, '
                f'order={self.order}' + (', temperature_param=\'log\'' if self.temperature_param == 'log' else ''))
