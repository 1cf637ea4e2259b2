"""Loading BasicSR checkpoints for inference: params_ema first, weights-only, option-file discovery, mismatches."""
import os

import pytest
import torch
import yaml

import basicsr_taylor  # noqa: F401  (compat fixes before basicsr)
from basicsr_taylor.models.checkpoint import (CheckpointError, describe_weights, find_option_file, load_network,
                                       load_state_dict)

TINY = dict(type='TaylorSwinIR', upscale=2, window_size=8, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2,
            upsampler='pixelshuffle')


def build(seed=0, **overrides):
    from basicsr.archs import build_network
    torch.manual_seed(seed)
    return build_network({**TINY, **overrides})


def write_options(path, **overrides):
    with open(path, 'w') as f:
        yaml.safe_dump({'name': 'tiny', 'model_type': 'SRModel', 'scale': 2, 'network_g': {**TINY, **overrides}}, f)
    return str(path)


def experiment(tmp_path, checkpoint):
    """BasicSR's layout: experiments/<name>/<option>.yml and experiments/<name>/models/net_g_*.pth."""
    models = tmp_path / 'experiments' / 'tiny' / 'models'
    models.mkdir(parents=True)
    opt_path = write_options(tmp_path / 'experiments' / 'tiny' / 'train_tiny.yml')
    model_path = str(models / 'net_g_latest.pth')
    torch.save(checkpoint, model_path)
    return model_path, opt_path


def test_params_ema_is_preferred_and_the_experiment_option_file_is_found(tmp_path):
    plain, ema = build(seed=1).state_dict(), build(seed=2).state_dict()
    model_path, opt_path = experiment(tmp_path, {'params': plain, 'params_ema': ema})
    network, network_opt, found = load_network(model_path)
    assert found == opt_path and network_opt['embed_dim'] == 12
    assert not network.training
    for key, value in network.state_dict().items():
        assert torch.equal(value, ema[key]), key
    assert any(not torch.equal(plain[key], ema[key]) for key in ema)  # the two really differ


def test_params_only_and_bare_state_dicts_load(tmp_path):
    weights = build(seed=3).state_dict()
    for name, checkpoint in [('params.pth', {'params': weights}), ('bare.pth', weights),
                             ('ddp.pth', {'params': {'module.' + k: v for k, v in weights.items()}})]:
        path = str(tmp_path / name)
        torch.save(checkpoint, path)
        state_dict, _ = load_state_dict(path)
        assert state_dict.keys() == weights.keys()
        assert all(torch.equal(state_dict[key], weights[key]) for key in weights)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker, )


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = str(tmp_path / 'code_ran')
    path = str(tmp_path / 'evil.pth')
    torch.save({'params': {'conv_first.weight': torch.zeros(1)}, 'payload': _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match='weights-only'):
        load_state_dict(path)
    assert not os.path.exists(marker)


def test_a_file_that_is_no_checkpoint_says_so(tmp_path):
    (tmp_path / 'notes.pth').write_text('hello world, not weights\n')  # torch.load says only "KeyError: 101"
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'notes.pth is not a PyTorch checkpoint \(neither the zip archive'):
        load_state_dict(str(tmp_path / 'notes.pth'))
    with pytest.raises(CheckpointError, match=r'empty.pth is not a PyTorch checkpoint \(empty file\)'):
        load_state_dict(str(tmp_path / 'empty.pth'))
    (tmp_path / 'truncated.pth').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(CheckpointError, match='weights-only checkpoint .*: RuntimeError: .*zip archive'):
        load_state_dict(str(tmp_path / 'truncated.pth'))


def test_a_mismatching_checkpoint_names_scale_width_and_depth(tmp_path):
    other = build(upscale=4, embed_dim=24, depths=[2, 2], num_heads=[2, 2]).state_dict()
    model_path = str(tmp_path / 'net_g_x4.pth')
    torch.save({'params': other}, model_path)
    opt_path = write_options(tmp_path / 'x2.yml')
    with pytest.raises(CheckpointError) as error:
        load_network(model_path, opt_path)
    message = str(error.value)
    assert 'scale (upscale): checkpoint 4, network 2' in message
    assert 'width (embed_dim): checkpoint 24, network 12' in message
    assert 'depth (depths): checkpoint [2, 2], network [2]' in message
    assert model_path in message and opt_path in message


def test_describe_weights_reads_every_upsampler_and_scale():
    for upsampler, scales in [('pixelshuffle', [2, 3, 4]), ('pixelshuffledirect', [2, 3]), ('nearest+conv', [4]),
                              ('', [1])]:
        for scale in scales:
            info = describe_weights(build(upscale=scale, upsampler=upsampler, embed_dim=12).state_dict())
            assert info['scale (upscale)'] == scale, (upsampler, scale)
            assert info['heads (num_heads)'] == [2] and info['input channels (in_chans)'] == 3


def test_option_file_errors_are_clear(tmp_path):
    model_path = str(tmp_path / 'lonely' / 'net_g_1.pth')
    os.makedirs(os.path.dirname(model_path))
    torch.save({'params': build().state_dict()}, model_path)
    with pytest.raises(CheckpointError, match='--opt'):
        find_option_file(model_path)
    write_options(tmp_path / 'lonely' / 'a.yml')
    write_options(tmp_path / 'lonely' / 'b.yml', embed_dim=24)
    with pytest.raises(CheckpointError, match='different network_g'):
        find_option_file(model_path)
    (tmp_path / 'no_network.yml').write_text('name: x\n')
    with pytest.raises(CheckpointError, match='no network_g'):
        load_network(model_path, str(tmp_path / 'no_network.yml'))
    with pytest.raises(CheckpointError, match='not found'):
        load_network(str(tmp_path / 'missing.pth'))
    (tmp_path / 'evil.yml').write_text('network_g: !!python/object/apply:os.makedirs ["code_ran"]\n')
    with pytest.raises(CheckpointError, match=r'evil.yml: line 1: could not determine a constructor .*python/obj'):
        load_network(model_path, str(tmp_path / 'evil.yml'))
    assert not os.path.exists('code_ran') and not os.path.exists(tmp_path / 'code_ran')


def test_a_misspelled_network_key_is_an_error_not_a_default(tmp_path):
    """window_sise: 8 built a window-48 network for a window-8 checkpoint (TaylorSwinIR only warned)."""
    model_path = str(tmp_path / 'experiments' / 'tiny' / 'models' / 'net_g_1.pth')
    os.makedirs(os.path.dirname(model_path))
    torch.save({'params': build().state_dict()}, model_path)
    net = {key: value for key, value in TINY.items() if key != 'window_size'}
    with open(tmp_path / 'typo.yml', 'w') as f:
        yaml.safe_dump({'name': 'tiny', 'network_g': {**net, 'window_sise': 8}}, f)
    for opt in (str(tmp_path / 'typo.yml'), None):  # given with --opt, or found next to the checkpoint
        if opt is None:
            os.replace(tmp_path / 'typo.yml', tmp_path / 'experiments' / 'tiny' / 'train_tiny.yml')
        with pytest.raises(CheckpointError) as error:
            load_network(model_path, opt)
        assert str(error.value).endswith("train_tiny.yml: network_g:window_sise: unknown key; did you mean "
                                         "'window_size'?" if opt is None else "typo.yml: network_g:window_sise: "
                                         "unknown key; did you mean 'window_size'?"), str(error.value)


def test_basicsr_swinir_is_padded_as_its_model_pads_it():
    """BasicSR's SwinIR needs inputs of whole windows (its SwinIRModel reflect-pads them at test time): the Upscaler
    pads and crops the same way, so a SwinIR checkpoint upscales any size."""
    import torch.nn.functional as F

    from basicsr_taylor import infer
    from basicsr.archs.swinir_arch import SwinIR
    torch.manual_seed(0)
    network = SwinIR(upscale=2, img_size=8, window_size=4, embed_dim=12, depths=[1], num_heads=[2], mlp_ratio=2,
                     upsampler='pixelshuffle').eval()
    x = torch.rand(1, 3, 10, 13)
    out = infer.Upscaler(network, 2, torch.device('cpu'))(x)
    with torch.no_grad():
        expected = network(F.pad(x, (0, 3, 0, 2), 'reflect'))[..., :20, :26]  # SwinIRModel.test's padding
    assert out.shape == (1, 3, 20, 26) and torch.allclose(out, expected, atol=1e-6)
