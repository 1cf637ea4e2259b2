"""train:precision / val:precision (models/precision.py, models/taylor_mixin.py): the plugin's model classes
(TaylorSRModel, TaylorSRGANModel, TaylorESRGANModel, TaylorRealESRNetModel, TaylorRealESRGANModel: what an option
file naming BasicSR's class gets) trained and validated under autocast, fp16 with a GradScaler saved in and restored
from the training state; fp32 runs BasicSR's own code. Tiny network, random data, in process (the train command
itself: tests/test_train.py)."""
import copy
import logging
import math

import pytest
import torch

import basicsr_taylor  # noqa: F401
from basicsr.models import build_model as basicsr_build_model
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr_taylor.models import TaylorMixin, TaylorSRGANModel, TaylorSRModel, precision
from basicsr_taylor.options.pipeline import taylor_model_type

TINY_NET = dict(type='TaylorSwinIR', upscale=2, in_chans=3, window_size=8, embed_dim=12, depths=[2], num_heads=[2],
                mlp_ratio=2, upsampler='pixelshuffle')
ORIGINAL_BACKWARD = torch.Tensor.backward


def model_options(tmp_path, train_precision=None, val_precision=None, ema_decay=0.9, is_train=True):
    opt = {'model_type': 'SRModel', 'num_gpu': 0, 'is_train': is_train, 'dist': False, 'scale': 2,
           'network_g': dict(TINY_NET), 'path': {'training_states': str(tmp_path), 'models': str(tmp_path)},
           'train': {'ema_decay': ema_decay, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
           'val': {}}
    if train_precision is not None:
        opt['train']['precision'] = train_precision
    if val_precision is not None:
        opt['val']['precision'] = val_precision
    return opt


def build(opt, seed=0):
    """A model as the train and test commands build it: BasicSR's model_type replaced by the plugin's class."""
    torch.manual_seed(seed)
    opt = copy.deepcopy(opt)
    taylor_model_type(opt)
    return basicsr_build_model(opt)


def batch(seed):
    generator = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(2, 3, 16, 16, generator=generator), 'gt': torch.rand(2, 3, 32, 32, generator=generator)}


def train(model, iterations, first=1):
    for it in range(first, first + iterations):
        torch.manual_seed(it)  # TaylorSwinIR's stochastic depth (drop_path_rate 0.1) draws from the global RNG
        model.feed_data(batch(it))
        model.optimize_parameters(it)


def weights(model):
    return {k: v.detach().clone() for k, v in model.net_g.state_dict().items()}


def watch_linears(model):
    """dtypes of every Linear's forward output, and whether autocast was on when their gradients were computed."""
    seen = {'forward': set(), 'backward autocast': set()}

    def hook(module, inputs, output):
        seen['forward'].add(output.dtype)
        if output.requires_grad:
            output.register_hook(lambda grad: seen['backward autocast'].add(torch.is_autocast_enabled('cpu')))

    for module in model.net_g.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize('train_precision', [None, 'fp32'])
def test_fp32_is_basicsrs_own_model_bit_for_bit(tmp_path, one_thread, train_precision):
    ours = build(model_options(tmp_path, train_precision))
    torch.manual_seed(0)
    basicsrs = basicsr_build_model(model_options(tmp_path))
    assert type(ours) is TaylorSRModel and type(basicsrs) is SRModel  # fp32: BasicSR's optimize_parameters, test
    train(ours, 2)
    train(basicsrs, 2)
    for name, value in weights(basicsrs).items():
        assert torch.equal(weights(ours)[name], value), name


def test_bf16_trains_in_bf16_and_keeps_float32_weights(tmp_path, one_thread):
    model = build(model_options(tmp_path, 'bf16'))
    assert isinstance(model, SRModel) and isinstance(model, TaylorMixin)
    assert model.grad_scaler is None  # bf16 has float32's range: no loss scaling
    seen = watch_linears(model)
    before, own_step = weights(model), vars(model.optimizer_g)['step']  # torch's LR scheduler wraps step
    train(model, 2)
    assert seen == {'forward': {torch.bfloat16}, 'backward autocast': {False}}  # backward outside autocast
    assert math.isfinite(model.log_dict['l_pix'])
    assert all(not torch.equal(before[k], v) for k, v in weights(model).items() if k.endswith('qkv.weight'))
    # nothing patched: Tensor.backward and the optimizer's step as they were, autocast off
    assert torch.Tensor.backward is ORIGINAL_BACKWARD and vars(model.optimizer_g)['step'] is own_step
    assert not torch.is_autocast_enabled('cpu')
    model.save_network([model.net_g, model.net_g_ema], 'net_g', 2, param_key=['params', 'params_ema'])
    saved = torch.load(tmp_path / 'net_g_2.pth', weights_only=True)
    assert {v.dtype for params in saved.values() for v in params.values() if v.is_floating_point()} == {torch.float32}
    # the same network in fp32 computes a close, but not the same, loss
    fp32 = build(model_options(tmp_path))
    train(fp32, 1)
    bf16 = build(model_options(tmp_path, 'bf16'))
    train(bf16, 1)
    assert bf16.log_dict['l_pix'] != fp32.log_dict['l_pix']
    assert bf16.log_dict['l_pix'] == pytest.approx(fp32.log_dict['l_pix'], rel=1e-2)


def test_fp16_skips_a_step_with_non_finite_gradients_and_halves_the_scale(tmp_path, one_thread):
    model = build(model_options(tmp_path, 'fp16', ema_decay=0))
    seen = watch_linears(model)
    train(model, 1)
    assert seen['forward'] == {torch.float16} and math.isfinite(model.log_dict['l_pix'])
    assert model.grad_scaler.state_dict()['_growth_tracker'] == 1
    before, scale = weights(model), model.grad_scaler.get_scale()
    bad = batch(2)
    bad['lq'][0, 0, 0, 0] = float('inf')
    model.feed_data(bad)
    model.optimize_parameters(2)
    assert model.grad_scaler.get_scale() == scale / 2
    assert all(torch.equal(before[k], v) for k, v in weights(model).items())  # GradScaler skipped the step


def test_fp16_resume_restores_the_grad_scaler(tmp_path, one_thread, caplog):
    opt = model_options(tmp_path, 'fp16', ema_decay=0)
    run = build(opt)
    train(run, 2)
    run.grad_scaler.update(new_scale=1024.)  # a scale a fresh GradScaler (65536) would not have
    run.save_training_state(epoch=0, current_iter=2)
    state = torch.load(tmp_path / '2.state', weights_only=False)
    assert state['grad_scaler'] == run.grad_scaler.state_dict() and state['grad_scaler']['scale'] == 1024.
    at_2 = weights(run)
    train(run, 1, first=3)

    resumed = build(opt, seed=1)
    resumed.net_g.load_state_dict(at_2)  # BasicSR loads net_g_2.pth (path:pretrain_network_g) when resuming
    resumed.resume_training(copy.deepcopy(state))
    assert resumed.grad_scaler.state_dict() == state['grad_scaler']
    train(resumed, 1, first=3)
    assert resumed.grad_scaler.state_dict() == run.grad_scaler.state_dict()
    for name, value in weights(run).items():
        assert torch.equal(weights(resumed)[name], value), name

    # a training state without GradScaler state (fp32/bf16 runs, 0.2.0) still resumes, with a fresh scale
    del state['grad_scaler']
    fresh = build(opt)
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        fresh.resume_training(state)
    assert fresh.grad_scaler.get_scale() == 65536. and 'no GradScaler state' in caplog.text
    train(fresh, 1, first=3)


def test_val_precision_validates_under_autocast(tmp_path, one_thread):
    fp32 = build(model_options(tmp_path, is_train=False))
    bf16 = build(model_options(tmp_path, val_precision='bf16', is_train=False))
    assert type(fp32) is TaylorSRModel and bf16.train_dtype is None  # testing: train:precision is not read
    seen = watch_linears(bf16)
    for model in (fp32, bf16):
        model.feed_data(batch(0))
        model.test()
    assert seen['forward'] == {torch.bfloat16} and bf16.output.dtype == torch.float32
    assert not torch.equal(bf16.output, fp32.output)
    assert (bf16.output - fp32.output).abs().max() < 0.05


@pytest.mark.parametrize('section, value, message', [
    ('train', 'bf15', r"train:precision: 'bf15' is not a precision; use one of fp32, fp16, bf16"),
    ('train', 'float16', r"train:precision: 'float16' is not a precision"),
    ('val', 16, r'val:precision: 16 is not a precision; use one of fp32, fp16, bf16'),
])
def test_a_wrong_precision_is_one_line_naming_the_key(section, value, message):
    opt = {'is_train': True, 'num_gpu': 0, section: {'precision': value}}
    with pytest.raises(ValueError, match=message):
        precision.check_options(opt)


def test_fp16_without_a_cpu_grad_scaler_is_a_clear_error(monkeypatch):
    precision.check_options({'is_train': True, 'num_gpu': 0, 'train': {'precision': 'fp16'}})  # torch 2.14: has it
    monkeypatch.delattr(torch.amp, 'GradScaler')  # torch < 2.3
    with pytest.raises(ValueError, match=r'train:precision: fp16 on cpu needs torch.amp.GradScaler \(torch >= 2.3'):
        precision.check_options({'is_train': True, 'num_gpu': 0, 'train': {'precision': 'fp16'}})
    precision.check_options({'is_train': True, 'num_gpu': 0, 'train': {'precision': 'bf16'}})  # bf16 needs none


def test_a_gan_model_with_two_optimizers_trains_in_fp16(tmp_path, one_thread):
    """SRGANModel -> TaylorSRGANModel (generator and discriminator, three backward passes, two optimizer steps per
    iteration)."""
    opt = model_options(tmp_path, 'fp16', ema_decay=0)
    opt['model_type'] = 'SRGANModel'
    opt['network_d'] = dict(type='UNetDiscriminatorSN', num_in_ch=3, num_feat=8)
    opt['train'].update(optim_d={'type': 'Adam', 'lr': 1e-3},
                        gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1})
    model = build(opt)
    assert type(model) is TaylorSRGANModel
    seen = {'d': set()}
    for module in model.net_d.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda module, inputs, output: seen['d'].add(output.dtype))
    before_g, before_d = weights(model), copy.deepcopy(model.net_d.state_dict())
    train(model, 2)
    assert seen['d'] == {torch.float16}
    assert all(math.isfinite(value) for value in model.log_dict.values()), model.log_dict
    assert {'l_g_pix', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)
    assert model.grad_scaler.state_dict()['_growth_tracker'] == 2  # one update per iteration, both steps taken
    assert not torch.equal(before_g['conv_first.weight'], model.net_g.conv_first.weight)
    after_d = model.net_d.state_dict()
    assert any(not torch.equal(value, after_d[key]) for key, value in before_d.items())
    assert {value.dtype for value in after_d.values() if value.is_floating_point()} == {torch.float32}


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('train_precision', ['bf16', 'fp16'])
def test_cuda_trains_in_half_and_resumes(tmp_path, train_precision):
    if train_precision == 'bf16' and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bfloat16')
    opt = model_options(tmp_path, train_precision, val_precision=train_precision)
    opt['num_gpu'] = 1
    model = build(opt)
    assert model.device.type == 'cuda'
    seen = watch_linears(model)
    train(model, 2)
    assert seen['forward'] == {precision.PRECISIONS[train_precision]} and math.isfinite(model.log_dict['l_pix'])
    assert {p.dtype for p in model.net_g.parameters()} == {torch.float32}
    model.save_training_state(epoch=0, current_iter=2)
    state = torch.load(tmp_path / '2.state', map_location='cuda', weights_only=False)
    assert ('grad_scaler' in state) == (train_precision == 'fp16')
    resumed = build(opt)
    resumed.resume_training(state)
    if train_precision == 'fp16':
        assert resumed.grad_scaler.state_dict() == model.grad_scaler.state_dict()
    model.test()
    assert model.output.dtype == torch.float32 and torch.isfinite(model.output).all()


def nets(model):
    """Copies of every network's state (net_g, net_g_ema, net_d: what BasicSR loads when resuming)."""
    return {name: copy.deepcopy(getattr(model, name).state_dict()) for name in ('net_g', 'net_g_ema', 'net_d')
            if hasattr(model, name)}


@pytest.mark.parametrize('model_type, train_precision', [
    ('ESRGANModel', 'fp16'), ('RealESRNetModel', 'bf16'), ('RealESRNetModel', 'fp16'), ('RealESRGANModel', 'bf16'),
    ('RealESRGANModel', 'fp16')])
def test_gan_and_real_esrgan_models_train_in_half_and_resume_exactly(tmp_path, one_thread, model_type,
                                                                      train_precision):
    """ESRGAN's relativistic losses, Real-ESRNet (SRModel's step) and Real-ESRGAN (USM-sharpened targets, LDL loss on
    the EMA network's output) under autocast; fp16's GradScaler state saved and resumed: the resumed run takes the
    same step. Paired data (high_order_degradation: false): the degradations run in tests/test_realworld.py."""
    opt = model_options(tmp_path, train_precision, ema_decay=0.9 if model_type == 'RealESRGANModel' else 0)
    opt['model_type'] = model_type
    if 'GAN' in model_type:
        opt['network_d'] = dict(type='UNetDiscriminatorSN', num_in_ch=3, num_feat=8)
        opt['train'].update(optim_d={'type': 'Adam', 'lr': 1e-3},
                            gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1})
    if model_type.startswith('Real'):
        opt.update(high_order_degradation=False, l1_gt_usm=True, percep_gt_usm=True, gan_gt_usm=False)
    if model_type == 'RealESRGANModel':
        opt['train']['ldl_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    run = build(opt)
    assert type(run).__name__ == f'Taylor{model_type}'
    seen = watch_linears(run)
    before = weights(run)
    train(run, 2)
    assert seen == {'forward': {precision.PRECISIONS[train_precision]}, 'backward autocast': {False}}
    assert all(math.isfinite(value) for value in run.log_dict.values()), run.log_dict
    if model_type == 'RealESRGANModel':
        assert {'l_g_pix', 'l_g_ldl', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(run.log_dict)
    assert not torch.equal(before['conv_first.weight'], run.net_g.conv_first.weight)
    if train_precision == 'fp16':
        assert run.grad_scaler.state_dict()['_growth_tracker'] == 2  # one update per iteration, every step taken
        run.grad_scaler.update(new_scale=2048.)
    run.save_training_state(epoch=0, current_iter=2)
    state = torch.load(tmp_path / '2.state', weights_only=False)
    assert ('grad_scaler' in state) == (train_precision == 'fp16')
    at_2 = nets(run)
    train(run, 1, first=3)

    resumed = build(opt, seed=1)
    for name, value in at_2.items():
        getattr(resumed, name).load_state_dict(value)
    resumed.resume_training(copy.deepcopy(state))
    train(resumed, 1, first=3)
    if train_precision == 'fp16':
        assert resumed.grad_scaler.state_dict() == run.grad_scaler.state_dict()
    for name, value in nets(run).items():
        for key, tensor in value.items():
            assert torch.equal(getattr(resumed, name).state_dict()[key], tensor), (name, key)


def test_a_training_state_saved_by_basicsrs_own_model_resumes(tmp_path, one_thread):
    """Runs started before the plugin's model classes saved their states with BasicSR's SRModel: TaylorSRModel
    resumes them as SRModel does (same optimizer and scheduler state, same next step)."""
    opt = model_options(tmp_path, ema_decay=0)
    torch.manual_seed(0)
    old = basicsr_build_model(opt)  # BasicSR's SRModel, BasicSR's save_training_state
    train(old, 2)
    BaseModel.save_training_state(old, epoch=0, current_iter=2)
    state = torch.load(tmp_path / '2.state', weights_only=False)
    at_2 = weights(old)
    runs = []
    for make in (lambda: basicsr_build_model(opt), lambda: build(opt)):
        torch.manual_seed(1)
        model = make()
        model.net_g.load_state_dict(at_2)
        model.resume_training(copy.deepcopy(state))
        train(model, 1, first=3)
        runs.append(model)
    assert [type(model).__name__ for model in runs] == ['SRModel', 'TaylorSRModel']
    assert [int(model.optimizer_g.state_dict()['state'][0]['step']) for model in runs] == [3, 3]  # Adam's, restored
    for name, value in weights(runs[0]).items():
        assert torch.equal(weights(runs[1])[name], value), name
