"""ONNX export with dynamic batch, height and width, checked with onnxruntime against PyTorch."""
import pytest
import torch
import yaml

import basicsr_taylor  # noqa: F401  (compat fixes before basicsr)
from basicsr_taylor.ops.taylor_shift import exportable, taylor_shift_attention
from basicsr_taylor.ops.taylor_shift.interface import is_exportable

TINY = dict(type='TaylorSwinIR', upscale=2, window_size=8, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2,
            upsampler='pixelshuffle')


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny networks, see conftest


@pytest.mark.parametrize('num_tokens,head_dim', [(30, 6), (64, 6), (300, 8)])  # direct and efficient forms
def test_exportable_forms_are_taylor_shift_attention(num_tokens, head_dim):
    generator = torch.Generator().manual_seed(num_tokens)
    q, k, v = (torch.randn(2, 3, num_tokens, head_dim, generator=generator, dtype=torch.float64) for _ in range(3))
    temperature = torch.rand(3, 1, 1, generator=generator, dtype=torch.float64) + 0.5
    regions = torch.randint(0, 4, (2, 1, num_tokens), generator=generator)
    for region_ids in (None, regions):
        for output_norm in (True, False):
            expected = taylor_shift_attention(q, k, v, temperature, region_ids, 'direct', output_norm)
            with exportable():
                assert is_exportable()
                actual = taylor_shift_attention(q, k, v, temperature, region_ids, 'efficient', output_norm)
            torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    assert not is_exportable()  # the switch is scoped to the block
    with exportable():
        half = taylor_shift_attention(q.half(), k.half(), v.half(), temperature, regions)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_exportable_switch_picks_the_traceable_form(monkeypatch):
    """Inside the switch no region layout or custom Function runs: the efficient form is never called."""
    from basicsr_taylor.ops.taylor_shift import interface
    monkeypatch.setattr(interface, 'efficient', lambda *a: pytest.fail('efficient form called while exporting'))
    q = torch.randn(1, 2, 50, 4)
    with exportable():
        taylor_shift_attention(q, q, q, regions=torch.randint(0, 4, (1, 1, 50)), form='efficient')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from basicsr.archs import build_network
    folder = tmp_path_factory.mktemp('export')
    opt_path = folder / 'train_tiny.yml'
    opt_path.write_text(yaml.safe_dump({'network_g': TINY}))
    torch.manual_seed(0)
    network = build_network(dict(TINY)).eval()
    model_path = folder / 'net_g_latest.pth'
    torch.save({'params_ema': network.state_dict()}, model_path)
    return str(model_path), str(opt_path), network


def test_onnx_export_has_dynamic_sizes_and_matches_pytorch(tmp_path, checkpoint, capsys):
    onnx = pytest.importorskip('onnx')
    onnxruntime = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    from basicsr_taylor import export
    model_path, opt_path, network = checkpoint
    onnx_path = tmp_path / 'tiny.onnx'
    assert export.main(['--model', model_path, '--opt', opt_path, '--onnx', str(onnx_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.count('max abs diff') == 2 and f'wrote {onnx_path}' in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ['tiny.onnx']  # weights inside, no temp files left

    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ['lr'] and [o.name for o in graph.output] == ['sr']
    batch, channels, height, width = graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and height.dim_param and width.dim_param and channels.dim_value == 3  # B, H, W symbolic

    session = onnxruntime.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(1)
    # 1 window padded from 1×9 pixels, 3×2 windows, and a batch of two with 2×4 windows
    for batch, height, width in [(1, 1, 9), (1, 21, 16), (2, 13, 30)]:
        x = torch.rand(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = network(x)
        (actual, ) = session.run(['sr'], {'lr': x.numpy()})
        assert actual.shape == (batch, 3, 2 * height, 2 * width)
        assert torch.allclose(torch.from_numpy(actual), expected, atol=1e-4), (height, width)


def test_export_of_a_mismatching_checkpoint_is_a_usage_error(tmp_path, checkpoint, capsys):
    from basicsr_taylor import export
    model_path, _, _ = checkpoint
    wide = tmp_path / 'wide.yml'
    wide.write_text(yaml.safe_dump({'network_g': {**TINY, 'embed_dim': 24}}))
    assert export.main(['--model', model_path, '--opt', str(wide), '--onnx', str(tmp_path / 'x.onnx')]) == 2
    assert 'width (embed_dim): checkpoint 12, network 24' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


def test_an_opset_the_exporter_cannot_write_is_a_usage_error(tmp_path, checkpoint, capsys):
    """--opset 13 printed onnx's conversion traceback, then wrote opset 18 and exited 0."""
    from basicsr_taylor import export
    model_path, opt_path, _ = checkpoint
    onnx_path = tmp_path / 'x.onnx'
    assert export.main(['--model', model_path, '--opt', opt_path, '--onnx', str(onnx_path), '--opset', '13']) == 2
    assert capsys.readouterr().err.strip() == ('error: --opset 13: the exporter (torch.onnx, dynamo) writes opset 18 '
                                               'or later; leave --opset out or give a value >= 18')
    assert not onnx_path.exists()
