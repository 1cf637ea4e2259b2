"""TaylorSwinIR: SwinIR with 1×1 pixel tokens and 48×48 TaylorShift windows (TaylorIR, arXiv 2411.10231).

Differences from BasicSR's ``SwinIR`` (same constructor arguments, so an option file only changes ``type``):

- every window attention is :class:`TaylorShiftAttention` (linear in the window's token count);
- shifted windows are always on (shift = window_size // 2 in every second block), whatever the patch size,
  and masked exactly with region ids instead of SwinIR's additive -100 (which a polynomial ignores);
- position enters through a depth-wise 3×3 convolution at the start of every block (a conditional
  positional encoding), computed outside the attention, so the direct and efficient forms agree;
  SwinIR's relative position bias cannot be factorised into the efficient form;
- any input size: forward pads to a multiple of window_size and crops the output;
- nothing depends on img_size: no masks or index tables in the state dict;
- ``patch_size`` p in {1, 2, 4, 8} (default 1, SwinIR's pixel tokens): p×p pixels per token. The shallow
  features (full resolution) are embedded by a p×p convolution with stride p (a linear map of each patch's
  p²·C values to C, ViT's patch embedding) and unembedded by a 1×1 convolution to p²·C channels and a pixel
  shuffle (the inverse layout: each token's C values -> its p×p pixels; equal to a transposed convolution
  with kernel = stride = p, without its overlap artefacts since patches do not overlap). The full-resolution
  skip around the body and the 3×3 conv after it smooth the patch borders. Windows are counted in tokens,
  so a window covers (window_size·p)² pixels and inputs are padded to multiples of window_size·p.
  p = 1 adds no modules (state dicts as before);
- ``taylor_order`` and ``temperature_init``: passed to every :class:`TaylorShiftAttention`.
"""
import math
import warnings

import torch
import torch.nn.functional as F
from basicsr.archs.swinir_arch import DropPath, Mlp, PatchEmbed, PatchUnEmbed, Upsample, UpsampleOneStep
from torch import nn
from torch.utils import checkpoint

from ..ops.taylor_shift import DEFAULT_ORDER, FORMS
from ..ops.taylor_shift.interface import check_order
from ..utils.registry import register_arch
from .shifted_windows import (PaddedWindows, chunk_side, pad_to_multiple, partition_windows, reverse_windows,
                              shifted_window_layout)
from .taylor_shift_attention_arch import TaylorShiftAttention, check_block_mb

UPSAMPLERS = ('pixelshuffle', 'pixelshuffledirect', 'nearest+conv', '')
POS_ENCODINGS = ('conv', 'none')
PATCH_SIZES = (1, 2, 4, 8)


class TaylorSwinTransformerBlock(nn.Module):
    """Swin block with TaylorShift window attention and a depth-wise conv positional encoding."""

    def __init__(self, dim, num_heads, window_size=48, shift_size=0, mlp_ratio=2., qkv_bias=True, drop=0.,
                 drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm, attn_form='auto', output_norm=True,
                 pos_encoding='conv', order=DEFAULT_ORDER, temperature_init=1.0, temperature_param='linear',
                 block_mb=None):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.pos_embed = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) if pos_encoding == 'conv' else None
        self.norm1 = norm_layer(dim)
        self.attn = TaylorShiftAttention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=drop, form=attn_form,
                                         output_norm=output_norm, order=order, temperature_init=temperature_init,
                                         temperature_param=temperature_param, block_mb=block_mb)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, x_size, regions=None):
        """x (B, H·W, C); regions: the shifted windows' layout (``shifted_window_chunks``), built once per forward
        by the network, used by the shifted blocks."""
        h, w = x_size
        b, _, c = x.shape
        if self.pos_embed is not None:  # x + DWConv3x3(x): position from the local neighbourhood
            x = x + self.pos_embed(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            if regions is None:
                regions = shifted_window_layout(h, w, self.window_size, self.shift_size, x.device)
        else:
            regions = None
        side = chunk_side(self.window_size, self.window_size // 2)  # chunk-major windows, the same in every block
        windows = partition_windows(x, self.window_size, side)
        if isinstance(regions, PaddedWindows):  # regions padded to whole chunks (odd windows)
            windows = regions.scatter(self.attn(regions.gather(windows), regions=regions.chunks))
        else:
            windows = self.attn(windows, regions=regions)
        x = reverse_windows(windows, self.window_size, side, h, w)
        if self.shift_size:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self):
        return f'window_size={self.window_size}, shift_size={self.shift_size}'


class TaylorRSTB(nn.Module):
    """Residual group: ``depth`` Taylor Swin blocks (alternating shift), a conv, and a skip connection."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop, drop_path, norm_layer,
                 use_checkpoint, resi_connection, attn_form, output_norm, pos_encoding, order=DEFAULT_ORDER,
                 temperature_init=1.0, temperature_param='linear', block_mb=None):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            TaylorSwinTransformerBlock(
                dim, num_heads, window_size=window_size, shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop, drop_path=drop_path[i], norm_layer=norm_layer,
                attn_form=attn_form, output_norm=output_norm, pos_encoding=pos_encoding, order=order,
                temperature_init=temperature_init, temperature_param=temperature_param, block_mb=block_mb)
            for i in range(depth)
        ])
        self.conv = _residual_conv(dim, resi_connection)
        self.patch_embed = PatchEmbed(patch_size=1, in_chans=0, embed_dim=dim, norm_layer=None)
        self.patch_unembed = PatchUnEmbed(patch_size=1, in_chans=0, embed_dim=dim, norm_layer=None)

    def forward(self, x, x_size, regions=None):
        shortcut = x
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint.checkpoint(blk, x, x_size, regions, use_reentrant=False)
            else:
                x = blk(x, x_size, regions)
        return self.patch_embed(self.conv(self.patch_unembed(x, x_size))) + shortcut


def _residual_conv(dim, resi_connection):
    if resi_connection == '1conv':
        return nn.Conv2d(dim, dim, 3, 1, 1)
    return nn.Sequential(  # '3conv': fewer parameters
        nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(dim // 4, dim, 3, 1, 1))


class NearestConvUpsample(nn.Module):
    """Nearest-neighbour ×2 (or one ×3) steps, each followed by a conv and LeakyReLU (SwinIR's 'nearest+conv')."""

    def __init__(self, scale, num_feat):
        super().__init__()
        self.factors = [3] if scale == 3 else [2] * int(math.log2(scale))
        self.convs = nn.ModuleList(nn.Conv2d(num_feat, num_feat, 3, 1, 1) for _ in self.factors)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        for factor, conv in zip(self.factors, self.convs):
            x = self.lrelu(conv(F.interpolate(x, scale_factor=factor, mode='nearest')))
        return x


def patch_side(patch_size):
    """p from an int or a (p, p) pair; ValueError unless p is in PATCH_SIZES."""
    if isinstance(patch_size, (tuple, list)) and len(patch_size) == 2 and patch_size[0] == patch_size[1]:
        patch_size = patch_size[0]
    if isinstance(patch_size, bool) or patch_size not in PATCH_SIZES:
        raise ValueError(f'patch_size must be one of {PATCH_SIZES} (p×p pixels per token), got {patch_size!r}')
    return int(patch_size)


def _validate(upscale, in_chans, window_size, depths, num_heads, embed_dim, patch_size, ape, attn_drop_rate,
              upsampler, resi_connection, attn_form, pos_encoding):
    if not isinstance(window_size, int) or window_size <= 0:
        raise ValueError(f'window_size must be a positive int, got {window_size!r}')
    if not isinstance(in_chans, int) or in_chans <= 0:
        raise ValueError(f'in_chans must be a positive int, got {in_chans!r}')
    if len(depths) != len(num_heads):
        raise ValueError(f'depths and num_heads must have the same length, got depths={list(depths)} '
                         f'and num_heads={list(num_heads)}')
    if any(not isinstance(d, int) or d <= 0 for d in depths):
        raise ValueError(f'depths must be positive ints, got {list(depths)}')
    for heads in num_heads:
        if not isinstance(heads, int) or heads <= 0 or embed_dim % heads:
            raise ValueError(f'embed_dim={embed_dim} must be divisible by every entry of num_heads={list(num_heads)}')
    if resi_connection == '3conv' and embed_dim % 4:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by 4 with resi_connection='3conv'")
    patch_side(patch_size)
    if ape:
        raise ValueError('ape=True is not supported: an absolute position embedding ties the weights to img_size; '
                         'TaylorSwinIR encodes position with a depth-wise conv instead')
    if attn_drop_rate:
        raise ValueError(f'attn_drop_rate must be 0, got {attn_drop_rate!r}: the efficient TaylorShift form '
                         'never builds the attention matrix that this dropout would act on')
    if upsampler not in UPSAMPLERS:
        raise ValueError(f'upsampler must be one of {UPSAMPLERS}, got {upsampler!r}')
    if resi_connection not in ('1conv', '3conv'):
        raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")
    if attn_form not in FORMS:
        raise ValueError(f'attn_form must be one of {FORMS}, got {attn_form!r}')
    if pos_encoding not in POS_ENCODINGS:
        raise ValueError(f'pos_encoding must be one of {POS_ENCODINGS}, got {pos_encoding!r}')
    power_of_two = isinstance(upscale, int) and upscale > 0 and upscale & (upscale - 1) == 0
    if upsampler == '' and upscale != 1:
        raise ValueError(f"upscale must be 1 with upsampler='' (restoration without resizing), got {upscale!r}")
    if upsampler in ('pixelshuffle', 'nearest+conv') and not (power_of_two and upscale > 1 or upscale == 3):
        raise ValueError(f'upscale must be 2^n or 3 with upsampler={upsampler!r}, got {upscale!r}')
    if upsampler == 'pixelshuffledirect' and not (isinstance(upscale, int) and upscale > 1):
        raise ValueError(f"upscale must be an int > 1 with upsampler='pixelshuffledirect', got {upscale!r}")


@register_arch
class TaylorSwinIR(nn.Module):
    """SwinIR with TaylorShift window attention. Arguments as BasicSR's ``SwinIR``, plus:

    Args:
        window_size (int): window side in pixels (tokens); default 48 (2304 tokens per window).
        attn_form (str): TaylorShift form, "auto" | "direct" | "efficient" | "triton".
        output_norm (bool): TaylorShift output normalisation by sqrt(N/d).
        pos_encoding (str): "conv" (depth-wise 3×3 conv before each block) or "none".
        patch_size (int): p in {1, 2, 4, 8}, p×p pixels per token (default 1); window_size counts tokens.
        taylor_order (int): Taylor order 1..4 of the attention weights (default 2).
        temperature_init (float): initial temperature τ of every head (default 1.0).
        temperature_param (str): "linear" (default; τ learned directly, checkpoint key ``...attn.temperature``) or
            "log" (τ = exp(s), s learned and clamped to τ in [1e-2, 1e2]; key ``...attn.log_temperature``).
        attn_block_mb (float): the efficient form's budget of temporary memory per block, in MiB (default None: a
            share of the GPU's memory, cache-sized on the CPU; docs/benchmarks.md has the trade-off: smaller blocks
            hold less memory and launch more kernels).
        img_size: accepted for option-file compatibility; the network works at any input size.
        **kwargs: other keys are accepted, as BasicSR's SwinIR does, with a warning that names them.
    """

    def __init__(self, img_size=64, patch_size=1, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6),
                 num_heads=(6, 6, 6, 6), window_size=48, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0.,
                 attn_drop_rate=0., drop_path_rate=0.1, norm_layer=nn.LayerNorm, ape=False, patch_norm=True,
                 use_checkpoint=False, upscale=2, img_range=1., upsampler='', resi_connection='1conv',
                 attn_form='auto', output_norm=True, pos_encoding='conv', taylor_order=DEFAULT_ORDER,
                 temperature_init=1.0, temperature_param='linear', attn_block_mb=None, **kwargs):
        super().__init__()
        if kwargs:  # accepted like BasicSR's SwinIR (option files with extra keys still build), but never silently
            warnings.warn(f'TaylorSwinIR ignores unknown arguments: {", ".join(sorted(kwargs))} (misspelled option '
                          'keys?)', stacklevel=2)
        depths, num_heads = list(depths), list(num_heads)
        _validate(upscale, in_chans, window_size, depths, num_heads, embed_dim, patch_size, ape, attn_drop_rate,
                  upsampler, resi_connection, attn_form, pos_encoding)
        check_order(taylor_order, attn_form)
        check_block_mb(attn_block_mb)
        if isinstance(temperature_init, bool) or not isinstance(temperature_init, (int, float)) \
                or not 0 < temperature_init < float('inf'):
            raise ValueError(f'temperature_init must be a positive finite number, got {temperature_init!r}')
        # qk_scale has no meaning here: TaylorShift uses cosine similarity times a learned temperature.
        self.upscale = upscale
        self.upsampler = upsampler
        self.window_size = window_size
        self.patch_size = patch_side(patch_size)
        self.pad_multiple = window_size * self.patch_size  # a window covers (window_size·p)² pixels
        self.img_range = img_range
        mean = (0.4488, 0.4371, 0.4040) if in_chans == 3 else (0., ) * in_chans
        self.register_buffer('mean', torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)
        num_feat = 64

        # 1. shallow features
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)

        # 2. deep features
        if self.patch_size > 1:  # p×p patches -> tokens, tokens -> p×p patches (module docstring)
            p = self.patch_size
            self.token_embed = nn.Conv2d(embed_dim, embed_dim, p, p)
            self.token_unembed = nn.Sequential(nn.Conv2d(embed_dim, embed_dim * p * p, 1), nn.PixelShuffle(p))
        self.patch_embed = PatchEmbed(patch_size=1, in_chans=embed_dim, embed_dim=embed_dim,
                                      norm_layer=norm_layer if patch_norm else None)
        self.patch_unembed = PatchUnEmbed(patch_size=1, in_chans=embed_dim, embed_dim=embed_dim)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()  # stochastic depth decay
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            self.layers.append(
                TaylorRSTB(embed_dim, depth, heads, window_size, mlp_ratio, qkv_bias, drop_rate,
                           dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer, use_checkpoint, resi_connection,
                           attn_form, output_norm, pos_encoding, taylor_order, temperature_init, temperature_param,
                           attn_block_mb))
        self.norm = norm_layer(embed_dim)
        self.conv_after_body = _residual_conv(embed_dim, resi_connection)

        # 3. reconstruction
        if upsampler in ('pixelshuffle', 'nearest+conv'):
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        if upsampler == 'pixelshuffle':
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        elif upsampler == 'pixelshuffledirect':
            self.upsample = UpsampleOneStep(upscale, embed_dim, in_chans)
        elif upsampler == 'nearest+conv':
            self.upsample = NearestConvUpsample(upscale, num_feat)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        else:
            self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {'temperature'}

    def forward_features(self, x):
        if self.patch_size > 1:
            x = self.token_embed(x)
        x_size = (x.shape[2], x.shape[3])
        x = self.pos_drop(self.patch_embed(x))
        shift = self.window_size // 2  # one region layout per forward, from the sizes, for every shifted block
        regions = shifted_window_layout(*x_size, self.window_size, shift, x.device) if shift else None
        for layer in self.layers:
            x = layer(x, x_size, regions)
        x = self.patch_unembed(self.norm(x), x_size)
        return self.token_unembed(x) if self.patch_size > 1 else x

    def forward(self, x):
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        feat = self.conv_first(x)
        feat = self.conv_after_body(self.forward_features(feat)) + feat
        if self.upsampler == 'pixelshuffle':
            x = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif self.upsampler == 'pixelshuffledirect':
            x = self.upsample(feat)
        elif self.upsampler == 'nearest+conv':
            x = self.upsample(self.conv_before_upsample(feat))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        else:
            x = x + self.conv_last(feat)
        x = x / self.img_range + mean
        return x[..., :h * self.upscale, :w * self.upscale]
