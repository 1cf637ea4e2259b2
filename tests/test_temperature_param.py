"""temperature_param (issue 17): 'linear' (the default) keeps the parameter, state dict keys and outputs of before;
'log' learns s with τ = exp(s) clamped to [1e-2, 1e2], starts at temperature_init and gets gradients."""
import math

import numpy as np
import pytest
import torch

from basicsr_taylor import TaylorShiftAttention, TaylorSwinIR
from basicsr_taylor.archs.taylor_shift_attention_arch import LOG_TEMPERATURE_RANGE

from test_taylor_options import OLD_OUTPUT

NET = dict(upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2, upsampler='pixelshuffle')


def _net(**options):
    torch.manual_seed(0)
    return TaylorSwinIR(**NET, **options).double()


def _outputs(net):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        return net(x)


def test_linear_is_the_default_with_the_keys_and_outputs_of_before():
    default, linear = _net(), _net(temperature_param='linear')
    assert list(default.state_dict()) == list(linear.state_dict())
    assert sum('attn.temperature' in k for k in default.state_dict()) == 2
    assert not any('log_temperature' in k for k in default.state_dict())
    torch.manual_seed(0)
    y = TaylorSwinIR(**NET).double()(torch.rand(1, 3, 11, 9, dtype=torch.float64)).detach()
    np.testing.assert_allclose((float(y.sum()), float(y[0, 1, 5, 7]), float((y * y).sum())), OLD_OUTPUT, rtol=1e-9)
    linear.load_state_dict(default.state_dict())  # strict: an old checkpoint loads unchanged
    assert torch.equal(_outputs(linear), _outputs(default))
    assert default.layers[0].blocks[0].attn.tau() is default.layers[0].blocks[0].attn.temperature


@pytest.mark.parametrize('tau0', [1.0, 4.0, 10.0])
def test_log_starts_at_tau0_and_matches_linear_there(tau0):
    log, linear = _net(temperature_param='log', temperature_init=tau0), _net(temperature_init=tau0)
    keys = [k for k in log.state_dict() if 'temperature' in k]
    assert keys == ['layers.0.blocks.0.attn.log_temperature', 'layers.0.blocks.1.attn.log_temperature']
    for block in log.layers[0].blocks:
        torch.testing.assert_close(block.attn.tau(), torch.full((2, 1, 1), tau0, dtype=torch.float64))
    torch.testing.assert_close(_outputs(log), _outputs(linear), rtol=1e-9, atol=1e-9)  # exp(log τ0) ≈ τ0


def test_log_gradient_flows_and_the_clamp_holds():
    layer = TaylorShiftAttention(12, 3, temperature_init=4.0, temperature_param='log').double()
    x = torch.rand(2, 10, 12, dtype=torch.float64)
    layer(x).square().sum().backward()
    grad = layer.log_temperature.grad
    assert grad is not None and grad.shape == (3, 1, 1) and bool((grad != 0).all())
    # d/ds f(exp(s)) = τ · df/dτ: the same loss through a linear layer at the same τ
    linear = TaylorShiftAttention(12, 3, temperature_init=4.0).double()
    linear.load_state_dict({k: v for k, v in layer.state_dict().items() if k != 'log_temperature'}, strict=False)
    linear(x).square().sum().backward()
    torch.testing.assert_close(grad, 4.0 * linear.temperature.grad)
    low, high = LOG_TEMPERATURE_RANGE
    with torch.no_grad():
        layer.log_temperature.copy_(torch.tensor([math.log(high) + 3, 0.0, math.log(low) - 3]).view(3, 1, 1))
    torch.testing.assert_close(layer.tau().flatten(), torch.tensor([high, 1.0, low], dtype=torch.float64))


def test_temperature_param_errors():
    with pytest.raises(ValueError, match='temperature_param must be one of'):
        TaylorShiftAttention(12, 3, temperature_param='exp')
    with pytest.raises(ValueError, match=r'temperature_init must lie in \[0.01, 100\]'):
        TaylorSwinIR(**NET, temperature_param='log', temperature_init=1000.0)
    TaylorShiftAttention(12, 3, temperature_param='linear', temperature_init=1000.0)  # linear: no range
