"""Every option file in options/ loads with the commands' safe YAML loader, builds its network and describes the
datasets, patch sizes and metrics the recipes promise."""
import glob
import os.path as osp
import re

import pytest
import torch

import basicsr_taylor  # noqa: F401  (registers TaylorSwinIR)
from basicsr.archs import build_network
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY
from basicsr_taylor import TaylorSwinIR
from basicsr_taylor.options.file import read_option_file

OPTIONS = sorted(glob.glob(osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'options', '*.yml')))
def registered(registry, name):  # BasicSR registers its Real-ESRGAN classes as <name>_basicsr
    return name in registry or f'{name}_basicsr' in registry


CLASSICAL = [p for p in OPTIONS if re.search(r'/(train|test)_x\d\.yml$', p)]  # bicubic SR; the others: real-world
BENCHMARKS = ['Set5', 'Set14', 'BSD100', 'Urban100', 'Manga109']


def load(path):
    return read_option_file(path)


def scale_of(path):
    return int(re.search(r'_x(\d)\.yml$', path).group(1))


def is_light(path):
    return osp.basename(path).split('_')[1] == 'light'


def test_all_recipes_are_there():
    names = {osp.basename(p) for p in OPTIONS}
    assert {f'{kind}_{light}x{s}.yml' for kind in ('train', 'test') for light in ('', 'light_') for s in (2, 3, 4)} \
        <= names


@pytest.mark.parametrize('path', OPTIONS, ids=osp.basename)
def test_option_file_builds_its_network(path):
    opt = load(path)
    scale = scale_of(path)
    assert opt['scale'] == scale and opt['network_g']['upscale'] == scale
    assert registered(MODEL_REGISTRY, opt['model_type']) and opt['num_gpu'] == 'auto'
    assert opt['model_type'].startswith('Taylor')  # the plugin's model classes, no notice
    net = build_network(dict(opt['network_g']))  # the full network: built, not run
    assert isinstance(net, TaylorSwinIR) and net.window_size == 48 and net.upscale == scale
    params = sum(p.numel() for p in net.parameters())
    if is_light(path):  # SwinIR-light's size: 60 channels, 4 groups of 6 blocks, heads of dimension 30
        assert len(net.layers) == 4 and net.conv_first.out_channels == 60 and 800_000 < params < 1_000_000
        assert all(block.attn.num_heads == 2 for layer in net.layers for block in layer.blocks)
        assert opt['network_g']['upsampler'] == 'pixelshuffledirect'
    else:  # SwinIR's classical size: 180 channels, 6 groups of 6 blocks
        assert len(net.layers) == 6 and net.conv_first.out_channels == 180 and params > 10_000_000
    for dataset in opt['datasets'].values():
        assert registered(DATASET_REGISTRY, dataset['type'])
    for metric in (opt['val']['metrics'] if path in CLASSICAL else {}).values():  # the papers' protocol
        assert metric['test_y_channel'] is True and metric['crop_border'] == scale


@pytest.mark.parametrize('path', [p for p in CLASSICAL if osp.basename(p).startswith('train_')], ids=osp.basename)
def test_train_recipe(path):
    opt, scale = load(path), scale_of(path)
    train = opt['datasets']['train']
    assert train['io_backend']['type'] == 'lmdb'
    assert train['dataroot_gt'] == 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb'
    assert train['dataroot_lq'] == f'datasets/DIV2K/DIV2K_train_LR_bicubic_X{scale}_sub.lmdb'
    lr_patch, window = train['gt_size'] // scale, opt['network_g']['window_size']
    assert train['gt_size'] % scale == 0 and lr_patch % window == 0 and lr_patch > window  # 96 = 2x2 windows of 48
    assert train['gt_size'] <= 480  # fits the 480x480 DIV2K HR sub-images
    val = opt['datasets']['val']
    assert (val['dataroot_gt'], val['dataroot_lq']) == ('datasets/Set5/GTmod12', f'datasets/Set5/LRbicx{scale}')
    # BasicSR's SwinIR recipe: Adam 2e-4, MultiStepLR, 500k iterations, L1, EMA 0.999, batch 4 per GPU
    assert opt['train']['optim_g'] == {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]}
    assert opt['train']['scheduler']['milestones'] == [250000, 400000, 450000, 475000]
    assert opt['train']['total_iter'] == 500000 and opt['train']['ema_decay'] == 0.999
    assert opt['train']['pixel_opt']['type'] == 'L1Loss' and train['batch_size_per_gpu'] == 4


@pytest.mark.parametrize('path', [p for p in CLASSICAL if osp.basename(p).startswith('test_')], ids=osp.basename)
def test_test_recipe(path):
    opt, scale = load(path), scale_of(path)
    sets = [d['name'] for _, d in sorted(opt['datasets'].items())]
    assert sets == BENCHMARKS
    for dataset in opt['datasets'].values():
        assert dataset['dataroot_gt'] == f'datasets/{dataset["name"]}/GTmod12'
        assert dataset['dataroot_lq'] == f'datasets/{dataset["name"]}/LRbicx{scale}'
    assert opt['val']['save_img'] is True
    train = load(path.replace('test_', 'train_'))
    assert opt['network_g'] == train['network_g']  # the tested network is the trained one
    assert opt['path']['pretrain_network_g'] == f'experiments/{train["name"]}/models/net_g_latest.pth'


def test_recipe_network_runs_scaled_down():
    """The recipe's network with its sizes reduced (window 8, 12 channels) runs on an odd-sized input."""
    opt = load([p for p in OPTIONS if p.endswith('train_x3.yml')][0])['network_g']
    net = build_network(dict(opt, window_size=8, embed_dim=12, depths=[1, 1], num_heads=[2, 2])).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 13, 10))
    assert out.shape == (1, 3, 39, 30)


ZOO_OPTIONS = sorted(glob.glob(osp.join(osp.dirname(OPTIONS[0]), 'zoo', 'train_*.yml')))


def test_the_zoo_option_files_train_one_network_at_three_scales():
    """options/zoo: x2 continues the pilot (strict), x3/x4 start from its body (upsampler new); the same network
    but the upscale, LR patch 48, a checkpoint at least every 250 iterations, EMA 0.999, Y PSNR with crop = scale."""
    assert [osp.basename(p) for p in ZOO_OPTIONS] == [f'train_small_x{s}.yml' for s in (2, 3, 4)]
    networks = []
    for path in ZOO_OPTIONS:
        opt, scale = load(path), scale_of(path)
        network = dict(opt['network_g'])
        assert opt['scale'] == network.pop('upscale') == scale
        networks.append(network)
        net = build_network(dict(opt['network_g']))
        assert sum(p.numel() for p in net.parameters()) < 1_000_000 and net.upscale == scale
        train = opt['datasets']['train']
        assert train['gt_size'] == 48 * scale and f'_X{scale}_sub.lmdb' in train['dataroot_lq']
        assert f'min{48 * scale}_' in train['dataroot_gt']  # sub-images of LR patch x scale
        assert opt['logger']['save_checkpoint_freq'] <= 250 and opt['train']['ema_decay'] == 0.999
        assert sum(opt['train']['scheduler']['periods']) == opt['train']['total_iter']  # every step scheduled
        assert opt['train']['scheduler']['periods'][0] <= 20000  # a decayed model within 20k iterations
        assert opt['path']['strict_load_g'] is (scale == 2)
        assert all(m['test_y_channel'] and m['crop_border'] == scale for m in opt['val']['metrics'].values())
    assert networks[0] == networks[1] == networks[2]
    bodies = {load(p)['path']['pretrain_network_g'] for p in ZOO_OPTIONS[1:]}
    assert len(bodies) == 1


def test_basicsrs_model_types_run_as_the_plugins_subclasses():
    from basicsr.utils.registry import MODEL_REGISTRY

    from basicsr_taylor.models import TAYLOR_MODELS
    from basicsr_taylor.options.pipeline import taylor_model_type
    assert sorted(TAYLOR_MODELS) == ['ESRGANModel', 'RealESRGANModel', 'RealESRNetModel', 'SRGANModel', 'SRModel',
                                     'SwinIRModel']
    for name, cls in TAYLOR_MODELS.items():
        assert issubclass(cls, MODEL_REGISTRY.get(name)) and MODEL_REGISTRY.get(cls.__name__) is cls
    opt = {'model_type': 'RealESRNetModel'}
    assert taylor_model_type(opt) == ('model_type: RealESRNetModel runs as TaylorRealESRNetModel, its subclass with '
                                      'mixed precision, atomic checkpoints and the schedule on resume '
                                      '(docs/training.md)')
    assert opt == {'model_type': 'TaylorRealESRNetModel'} and taylor_model_type(opt) is None  # no second notice
    for name in ('RealESRGANModel_basicsr', 'MyOwnModel'):
        opt = {'model_type': name}
        taylor_model_type(opt)
        assert opt['model_type'] == {'RealESRGANModel_basicsr': 'TaylorRealESRGANModel'}.get(name, name)
