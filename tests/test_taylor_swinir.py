"""TaylorSwinIR: shapes, BasicSR integration, shifted windows, checkpointing, state dicts, argument checks."""
import subprocess
import sys

import warnings

import pytest
import torch

from basicsr_taylor import TaylorSwinIR  # isort: skip  (before basicsr: applies the compat fixes)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from basicsr_taylor.archs.shifted_windows import shifted_window_regions
from basicsr_taylor.archs.taylor_swinir_arch import TaylorSwinTransformerBlock

TINY = dict(window_size=8, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2, drop_path_rate=0.)


def tiny(**overrides):
    torch.manual_seed(0)
    return TaylorSwinIR(**{**TINY, 'upscale': 2, 'upsampler': 'pixelshuffle', **overrides})


@pytest.mark.parametrize('upsampler,scales', [
    ('pixelshuffle', [2, 3, 4, 8]),
    ('pixelshuffledirect', [2, 3, 4, 8]),
    ('nearest+conv', [2, 3, 4, 8]),
    ('', [1]),
])
def test_forward_on_odd_sizes_at_every_scale_and_upsampler(upsampler, scales):
    for scale in scales:
        net = tiny(upscale=scale, upsampler=upsampler).eval()
        for h, w in [(13, 21), (8, 8), (3, 17)]:
            x = torch.rand(2, 3, h, w)
            with torch.no_grad():
                out = net(x)
            assert out.shape == (2, 3, h * scale, w * scale), (upsampler, scale, h, w)
            assert torch.isfinite(out).all()


def test_grayscale_and_batch_one():
    net = tiny(in_chans=1).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 10, 9)).shape == (1, 1, 20, 18)


def test_registry_and_build_network_from_an_option_dict():
    assert ARCH_REGISTRY.get('TaylorSwinIR') is TaylorSwinIR
    opt = {'type': 'TaylorSwinIR', 'upscale': 3, 'in_chans': 3, 'img_size': 48, 'window_size': 8, 'img_range': 1.,
           'depths': [2, 2], 'embed_dim': 12, 'num_heads': [2, 3], 'mlp_ratio': 2, 'upsampler': 'pixelshuffle',
           'resi_connection': '1conv'}
    net = build_network(opt)
    assert isinstance(net, TaylorSwinIR)
    assert net.upscale == 3 and len(net.layers) == 2
    with torch.no_grad():
        assert net(torch.rand(1, 3, 9, 11)).shape == (1, 3, 27, 33)


def test_a_swinir_option_file_works_with_only_the_type_changed():
    # BasicSR's train_SwinIR_SRx2_scratch.yml network_g, with type replaced (full size: build only)
    opt = {'type': 'TaylorSwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 48, 'window_size': 8, 'img_range': 1.,
           'depths': [6, 6, 6, 6, 6, 6], 'embed_dim': 180, 'num_heads': [6, 6, 6, 6, 6, 6], 'mlp_ratio': 2,
           'upsampler': 'pixelshuffle', 'resi_connection': '1conv'}
    net = build_network(opt)
    assert sum(len(layer.blocks) for layer in net.layers) == 36
    assert [blk.shift_size for blk in net.layers[0].blocks] == [0, 4, 0, 4, 0, 4]


def test_default_window_is_48_and_the_shift_survives_small_patches():
    net = TaylorSwinIR(img_size=48, embed_dim=12, depths=[2], num_heads=[2], upscale=2, upsampler='pixelshuffle')
    blocks = net.layers[0].blocks
    assert net.window_size == 48 and [b.window_size for b in blocks] == [48, 48]
    assert [b.shift_size for b in blocks] == [0, 24]  # BasicSR's SwinIR would set 0 when img_size <= window


def test_state_dict_has_no_size_dependent_buffers_and_loads_across_img_size():
    a = tiny(img_size=16)
    keys = list(a.state_dict())
    assert not any('mask' in k or 'relative_position' in k or k == 'mean' for k in keys)
    b = TaylorSwinIR(**{**TINY, 'upscale': 2, 'upsampler': 'pixelshuffle', 'img_size': 96})
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.rand(1, 3, 20, 12)
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(x), a.eval()(x))


def test_gradient_checkpointing_gives_the_same_output_and_gradients():
    plain = tiny(depths=[2, 2], num_heads=[2, 2]).train()
    ckpt = tiny(depths=[2, 2], num_heads=[2, 2], use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 16, 16)
    outs, grads = [], []
    for net in (plain, ckpt):
        out = net(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


def _block(shift, form='direct'):
    torch.manual_seed(1)
    return TaylorSwinTransformerBlock(8, 2, window_size=8, shift_size=shift, pos_encoding='none',
                                      attn_form=form).double().eval()


def _influence(block, size, source):
    """Which output tokens change when input token ``source`` (row, col) changes."""
    x = torch.randn(1, size * size, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[0, source[0] * size + source[1]] += 3.0 * torch.randn(8, dtype=torch.float64)  # LayerNorm ignores a constant
    with torch.no_grad():
        diff = (block(x2, (size, size)) - block(x, (size, size))).abs().amax(-1)
    return (diff > 1e-12).view(size, size)


def test_plain_windows_stay_inside_their_window_and_shifted_windows_cross_borders():
    changed = _influence(_block(shift=0), 16, (7, 7))
    assert changed[:8, :8].all() and not changed[8:, :].any() and not changed[:, 8:].any()
    changed = _influence(_block(shift=4), 16, (7, 7))
    assert changed[8:12, 8:12].all() and changed[4:8, 4:8].all()  # the shifted window straddles the border
    assert not changed[:4, :].any() and not changed[12:, :].any()


@pytest.mark.parametrize('form', ['direct', 'efficient'])
def test_wrapped_tokens_are_masked_exactly_in_a_single_window(form):
    # one 8x8 window rolled by 4: pixels that wrapped around must not see the others (a -100 bias would leak)
    changed = _influence(_block(shift=4, form=form), 8, (0, 0))
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:4, :4] = True  # the original top-left quadrant only
    assert torch.equal(changed, expected)


def test_shifted_window_regions_are_local_ids():
    regions = shifted_window_regions(16, 16, 8, 4, torch.device('cpu'))
    assert regions.shape == (4, 64)
    assert regions[0].unique().tolist() == [0]  # top-left window: no wrapped pixels
    assert regions[3].unique().tolist() == [0, 1, 2, 3]  # bottom-right: four regions


def test_direct_and_efficient_forms_give_the_same_network_output():
    nets = [tiny(attn_form=form).double().eval() for form in ('direct', 'efficient')]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.rand(1, 3, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(nets[1](x), nets[0](x), rtol=0, atol=1e-10)


@pytest.mark.parametrize('kwargs,name', [
    ({'window_size': 0}, 'window_size'),
    ({'window_size': -8}, 'window_size'),
    ({'embed_dim': 13}, 'embed_dim'),
    ({'depths': [2, 2], 'num_heads': [2]}, 'depths'),
    ({'upsampler': 'bicubic'}, 'upsampler'),
    ({'upscale': 5}, 'upscale'),
    ({'upsampler': '', 'upscale': 2}, 'upscale'),
    ({'resi_connection': '2conv'}, 'resi_connection'),
    ({'attn_form': 'softmax'}, 'attn_form'),
    ({'attn_drop_rate': 0.1}, 'attn_drop_rate'),
    ({'patch_size': 3}, 'patch_size'),
    ({'ape': True}, 'ape'),
])
def test_invalid_arguments_raise_value_errors_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        tiny(**kwargs)


def test_unknown_arguments_build_with_a_warning_that_names_them():
    with pytest.warns(UserWarning, match='unknown arguments: foo, windows_size'):
        net = tiny(windows_size=24, foo=1)  # misspelled: the default window stays
    assert net.window_size == tiny().window_size
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # SwinIR's own keys give no warning
        tiny(img_size=64, qk_scale=None, patch_norm=True, drop_rate=0., use_checkpoint=False)


def test_importing_twice_in_a_fresh_process_does_not_crash():
    # BasicSR's registry asserts when a name is registered a second time
    code = ('import importlib, basicsr_taylor, basicsr_taylor.archs as a; importlib.reload(a); '
            'importlib.reload(basicsr_taylor); '
            'importlib.reload(importlib.import_module("basicsr_taylor.archs.taylor_shift_attention_arch")); '
            'importlib.reload(importlib.import_module("basicsr_taylor.archs.taylor_swinir_arch")); '
            'from basicsr.utils.registry import ARCH_REGISTRY; print(ARCH_REGISTRY.get("TaylorSwinIR").__name__)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'TaylorSwinIR'
