"""Real-world SR on the CPU, nothing downloaded: HR-only data -> the two recipe files themselves, shrunk (network,
gt_size, batch, queue_size) -> Real-ESRNet trains 2 iterations with validation, saves, resumes -> Real-ESRGAN starts
from its EMA weights (perceptual loss on an un-pretrained VGG19), trains, resumes -> basicsr-taylor-infer with tiles;
the VGG weights' download and its one-line error without a network."""
import glob
import json
import logging
import os
import os.path as osp
import re
import sys
import types
import urllib.error

import cv2
import numpy as np
import pytest
import torch

import basicsr_taylor  # noqa: F401
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr_taylor import infer, prepare_data
from basicsr_taylor.data import lanczos_resize, multiscale_sizes, sample_photo
from basicsr_taylor.quickstart import write_options
from basicsr_taylor.models.realesrgan_model import ContiguousDiffJPEG, DepthwiseUSMSharp, TaylorRealESRNetModel
from basicsr_taylor.utils import pretrained
from basicsr_taylor.models.checkpoint import load_network
from basicsr_taylor.options.checks import OptionError, check_options
from basicsr_taylor.options.file import read_option_file
from basicsr_taylor.options.pipeline import run_basicsr_pipeline

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RECIPES = {stage: osp.join(REPO, 'options', f'train_{stage}_x4.yml') for stage in ('realesrnet', 'realesrgan')}
TINY_NET = dict(window_size=4, embed_dim=8, depths=[1], num_heads=[2])  # LR 8 = 2x2 windows: shifts cross borders
VGG19_URL = 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """HR photos -> ``basicsr-taylor-prepare --hr-only --multiscale``; a real LR/HR pair folder for validation."""
    root = tmp_path_factory.mktemp('realworld')
    hr = root / 'datasets' / 'Photos_HR'
    os.makedirs(hr)
    cv2.imwrite(str(hr / 'astronaut.png'), sample_photo('astronaut')[:90, :110])
    cv2.imwrite(str(hr / 'coffee.png'), sample_photo('coffee')[:72, :96])
    prepare_data.main(['--hr', str(hr), '--hr-only', '--multiscale', '--crop', '48', '--step', '48', '--workers', '1'])
    for which, size in (('HR', 48), ('LR', 12)):
        os.makedirs(root / 'datasets' / 'val' / which)
        cv2.imwrite(str(root / 'datasets' / 'val' / which / 'chelsea.png'),
                    cv2.resize(sample_photo('chelsea')[100:196, 150:246], (size, size), interpolation=cv2.INTER_AREA))
    return root


def shrunk(stage, root, total_iter=2, pretrained=True):
    """The recipe file with a tiny network, GT crop 32 (LR 8), batch 2 and a queue of one batch (its dequeue path
    runs from the 2nd iteration); the data of ``workdir``; checkpoints every 2 iterations; stage 2 from stage 1's
    weights (``pretrained``) or from scratch."""
    opt = json.loads(json.dumps(read_option_file(RECIPES[stage])))  # plain dicts, in the file's order
    opt['network_g'].update(TINY_NET)
    opt.update(gt_size=32, queue_size=2)
    train = opt['datasets']['train']
    train.update(gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0,
                 dataroot_gt=str(root / 'datasets'),
                 meta_info=str(root / 'datasets' / 'meta_info' / 'meta_info_Photos_HR_multiscale_sub.txt'))
    if 'network_d' in opt:
        opt['network_d']['num_feat'] = 4
        opt['path']['pretrain_network_g'] = \
            str(root / 'experiments' / 'stage1' / 'models' / 'net_g_latest.pth') if pretrained else None
    opt['datasets']['val'] = dict(name='RealPair', type='RealESRGANPairedDataset', io_backend=dict(type='disk'),
                                  dataroot_gt=str(root / 'datasets' / 'val' / 'HR'),
                                  dataroot_lq=str(root / 'datasets' / 'val' / 'LR'))
    opt['val'] = dict(val_freq=2, save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=4)))
    opt['train']['total_iter'] = total_iter
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    opt['name'] = 'stage1' if stage == 'realesrnet' else 'stage2'
    return opt


@pytest.fixture
def random_vgg(monkeypatch):
    """BasicSR's VGGFeatureExtractor builds torchvision's vgg19 with pretrained=True: give it the features of an
    un-pretrained VGG19 (20 M parameters in memory, no file), and record the weights check."""
    from torchvision.models import vgg
    asked = []
    monkeypatch.setattr(vgg, 'vgg19', lambda pretrained=False, **kwargs: types.SimpleNamespace(
        features=vgg.make_layers(vgg.cfgs['E'])))
    monkeypatch.setattr(pretrained, 'ensure_vgg_weights', lambda vgg_type='vgg19': asked.append(vgg_type))
    return asked


@pytest.fixture
def loads(monkeypatch):
    """Every network weights file BasicSR loads: (file name, param_key, the loaded network's first tensor)."""
    seen, original = [], BaseModel.load_network

    def load_network(self, net, load_path, strict=True, param_key='params'):
        original(self, net, load_path, strict, param_key)
        first = next(iter(self.get_bare_model(net).state_dict().values()))
        seen.append((osp.basename(load_path), param_key, first.clone()))

    monkeypatch.setattr(BaseModel, 'load_network', load_network)
    return seen


class Messages(logging.Handler):
    """The messages of BasicSR's logger (its log file is the first run's of the process, which may be another
    test's)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __contains__(self, text):
        return any(text in message for message in self.messages)


@pytest.fixture
def basicsr_log():
    logger, handler = logging.getLogger('basicsr'), Messages()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # BasicSR's train pipeline sets it only where it starts the logger
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def train(root, opt, monkeypatch, *args):
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, 'argv', ['basicsr-taylor-train'])
    run_basicsr_pipeline('train', ['-opt', write_options(opt, str(root / f'{opt["name"]}.yml')), *args])
    return root / 'experiments' / opt['name']


def saved(experiment, kind='models'):
    return sorted(osp.basename(p) for p in glob.glob(str(experiment / kind / '*')))


def test_two_stages_train_save_resume_and_infer(workdir, monkeypatch, random_vgg, loads, one_thread, tmp_path,
                                                basicsr_log):
    root, validations, validate = workdir, [], SRModel.nondist_validation

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):  # BasicSR's log file is per process
        validate(self, dataloader, current_iter, tb_logger, save_img)
        validations.append((dataloader.dataset.opt['name'], current_iter, self.metric_results['psnr']))

    monkeypatch.setattr(SRModel, 'nondist_validation', nondist_validation)
    # stage 1: Real-ESRNet, 2 iterations (validated at 2), then resumed to 4
    stage1 = train(root, shrunk('realesrnet', root), monkeypatch)
    assert 'Model [TaylorRealESRNetModel] is created.' in basicsr_log  # the recipe names BasicSR's RealESRNetModel
    assert saved(stage1) == ['net_g_2.pth', 'net_g_latest.pth'] and saved(stage1, 'training_states') == ['2.state']
    train(root, shrunk('realesrnet', root, total_iter=4), monkeypatch, '--auto_resume')
    assert saved(stage1) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert [(name, key) for name, key, _ in loads] == [('net_g_2.pth', 'params'), ('net_g_2.pth', 'params_ema')]
    assert [(dataset, it) for dataset, it, _ in validations] == [('RealPair', 2), ('RealPair', 4)]
    assert all(0 < psnr < 100 for _, _, psnr in validations)
    stage1_ema = torch.load(stage1 / 'models' / 'net_g_latest.pth', weights_only=True)['params_ema']

    # stage 2: Real-ESRGAN from stage 1's EMA weights; the perceptual loss asked for its VGG19 weights first
    loads.clear()
    stage2 = train(root, shrunk('realesrgan', root), monkeypatch)
    assert 'Model [TaylorRealESRGANModel] is created.' in basicsr_log
    assert random_vgg == ['vgg19'] * 2  # before BasicSR starts, and by TaylorRealESRGANModel's training settings
    assert [(name, key) for name, key, _ in loads] == [('net_g_latest.pth', 'params_ema')] * 2  # net_g, net_g_ema
    assert all(torch.equal(first, next(iter(stage1_ema.values()))) for _, _, first in loads)
    assert saved(stage2) == ['net_d_2.pth', 'net_d_latest.pth', 'net_g_2.pth', 'net_g_latest.pth']
    loads.clear()
    train(root, shrunk('realesrgan', root, total_iter=4), monkeypatch, '--auto_resume')
    assert [(name, key) for name, key, _ in loads] == [('net_g_2.pth', 'params'), ('net_g_2.pth', 'params_ema'),
                                                       ('net_d_2.pth', 'params')]
    assert 'net_g_4.pth' in saved(stage2) and 'net_d_4.pth' in saved(stage2)
    assert saved(stage2, 'training_states') == ['2.state', '4.state']
    assert [(dataset, it) for dataset, it, _ in validations[2:]] == [('RealPair', 2), ('RealPair', 4)]  # stage 2

    # basicsr-taylor-infer on a photo with the final checkpoint: x4, tiles, the EMA weights
    photo = tmp_path / 'cat.jpg'
    cv2.imwrite(str(photo), sample_photo('chelsea')[60:90, 120:158])  # 30x38, JPEG like a real photo
    checkpoint = stage2 / 'models' / 'net_g_latest.pth'
    assert infer.main(['-i', str(photo), '-o', str(tmp_path / 'out'), '--model', str(checkpoint), '--tile', '16',
                       '--tile-overlap', '4', '--device', 'cpu']) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'cat_x4.jpg'))
    assert out.shape == (120, 152, 3)
    network, _, _ = load_network(str(checkpoint))  # params_ema; the training weights give another picture
    params = torch.load(checkpoint, weights_only=True)['params']
    image = infer.read_image(str(photo))
    ema_sr = infer.upscale_image(image, infer.Upscaler(network, 4, torch.device('cpu'), tile=16, tile_overlap=4), 3)
    network.load_state_dict(params)
    sr = infer.upscale_image(image, infer.Upscaler(network, 4, torch.device('cpu'), tile=16, tile_overlap=4), 3)
    assert np.abs(out.astype(int) - ema_sr).mean() < np.abs(out.astype(int) - sr).mean()


def test_recipes_mirror_real_esrgan_and_pass_the_checks(workdir):
    net, gan = (read_option_file(RECIPES[stage]) for stage in ('realesrnet', 'realesrgan'))
    for opt in (net, gan):
        assert opt['network_g']['type'] == 'TaylorSwinIR' and opt['network_g']['window_size'] == 48
        assert opt['network_g']['upsampler'] == 'nearest+conv' and opt['scale'] == 4
        assert opt['gt_size'] == opt['datasets']['train']['gt_size'] == 384
        assert opt['gt_size'] // opt['scale'] == 2 * opt['network_g']['window_size']  # LR patch: 2x2 windows
        assert opt['queue_size'] % opt['datasets']['train']['batch_size_per_gpu'] == 0
        assert opt['resize_prob'] == [0.2, 0.7, 0.1] and opt['jpeg_range2'] == [30, 95]
    assert net['model_type'] == 'TaylorRealESRNetModel' and gan['model_type'] == 'TaylorRealESRGANModel'
    assert gan['path']['pretrain_network_g'] == f'experiments/{net["name"]}/models/net_g_latest.pth'
    assert gan['path']['param_key_g'] == 'params_ema' and gan['network_g'] == net['network_g']
    assert gan['network_d']['type'] == 'UNetDiscriminatorSN' and gan['train']['gan_opt']['loss_weight'] == 0.1
    assert (net['train']['total_iter'], gan['train']['total_iter']) == (1000000, 400000)
    test = read_option_file(osp.join(REPO, 'options', 'test_realesrgan_x4.yml'))
    assert test['datasets']['test_1']['type'] == 'SingleImageDataset' and test['network_g'] == net['network_g']
    assert test['path']['pretrain_network_g'] == f'experiments/{gan["name"]}/models/net_g_latest.pth'
    opt = shrunk('realesrgan', workdir, pretrained=False)
    opt['is_train'] = True
    check_options(opt)  # the shrunk recipe is accepted (network_d builds, the data is there)


@pytest.mark.parametrize('change, message', [
    (lambda o: o.update(queue_size=3), 'queue_size=3 is not a multiple of datasets:train:batch_size_per_gpu=2'),
    (lambda o: o.pop('resize_prob'), 'resize_prob is missing'),
    (lambda o: o.update(gt_size=416), 'gt_size=416 must be a multiple of scale 4 and at most 400'),
    (lambda o: o.pop('network_d'), 'network_d is missing'),
    (lambda o: o['network_d'].update(num_feet=4), "network_d:num_feet: unknown key; did you mean 'num_feat'?"),
    (lambda o: o['network_d'].update(num_in_ch='rgb'), 'network_d (UNetDiscriminatorSN): TypeError'),
    (lambda o: o['datasets']['train'].update(meta_info='nowhere.txt'), 'datasets:train:meta_info: file not found'),
    (lambda o: o['datasets']['train'].pop('kernel_prob2'), 'datasets:train:kernel_prob2 is missing'),
    (lambda o: o['datasets']['train'].update(gt_sise=32),
     "datasets:train:gt_sise: unknown key; did you mean 'gt_size'?"),
    (lambda o: o['datasets'].update(train=dict(o['datasets']['val'], gt_size=32, use_hflip=True, use_rot=False,
                                               batch_size_per_gpu=2, num_worker_per_gpu=0)),
     'datasets:train:type must be RealESRGANDataset for TaylorRealESRGANModel'),
    (lambda o: o['datasets']['train'].update(gt_size=256), 'datasets:train:gt_size=256 differs from gt_size=32'),
    (lambda o: o['datasets']['train'].update(kernel_prob=[1.0]), 'datasets:train:kernel_prob needs one probability'),
])
def test_bad_real_esrgan_options_name_the_problem(workdir, change, message):
    opt = shrunk('realesrgan', workdir, pretrained=False)
    opt['is_train'] = True
    change(opt)
    with pytest.raises(OptionError, match='^' + re.escape(message)):
        check_options(opt)


def test_test_option_for_photos_without_ground_truth(workdir, monkeypatch, tmp_path):
    """options/test_realesrgan_x4.yml, shrunk to the tiny network: BasicSR's test pipeline writes x4 images."""
    opt = json.loads(json.dumps(read_option_file(osp.join(REPO, 'options', 'test_realesrgan_x4.yml'))))
    opt['network_g'].update(TINY_NET)
    network = basicsr_taylor.TaylorSwinIR(**{k: v for k, v in opt['network_g'].items() if k != 'type'})
    torch.save({'params_ema': network.state_dict()}, tmp_path / 'net.pth')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'net.pth')
    opt['datasets']['test_1']['dataroot_lq'] = str(workdir / 'datasets' / 'val' / 'LR')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['basicsr-taylor-test'])
    run_basicsr_pipeline('test', ['-opt', write_options(opt, str(tmp_path / 'test.yml'))])
    out = cv2.imread(str(tmp_path / 'results' / opt['name'] / 'visualization' / 'RealPhotos' /
                         f'chelsea_{opt["name"]}.png'))
    assert out.shape == (48, 48, 3)


def test_vgg_weights_are_downloaded_to_torch_hub_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    downloads = []
    monkeypatch.setattr(torch.hub, 'download_url_to_file',
                        lambda url, dst, hash_prefix=None: downloads.append((url, dst, hash_prefix)) or
                        open(dst, 'wb').close())
    cached = str(tmp_path / 'torch' / 'hub' / 'checkpoints' / 'vgg19-dcbb9e9d.pth')
    assert pretrained.ensure_vgg_weights('vgg19') == cached and pretrained.ensure_vgg_weights('vgg19') == cached
    assert downloads == [(VGG19_URL, cached, 'dcbb9e9d')]  # where torchvision's vgg19(pretrained=True) looks
    os.makedirs('experiments/pretrained_models')
    open('experiments/pretrained_models/vgg19-dcbb9e9d.pth', 'wb').close()  # BasicSR's own place comes first
    assert pretrained.ensure_vgg_weights('vgg19') == str(tmp_path / 'experiments/pretrained_models/vgg19-dcbb9e9d.pth')


@pytest.mark.parametrize('stage, precision', [('realesrnet', 'fp16'), ('realesrgan', 'bf16'), ('realesrgan', 'fp16')])
def test_the_recipes_train_in_half_precision_and_resume(workdir, monkeypatch, random_vgg, one_thread, basicsr_log,
                                                        stage, precision):
    """The shrunk recipe files with train:precision, through the train command (degradations, queue, USM targets):
    2 iterations, then resumed to 4; fp16's GradScaler state is in the training state and comes back."""
    opt = shrunk(stage, workdir, pretrained=False)
    opt['name'] = f'{stage}_{precision}'
    opt['train']['precision'] = precision
    experiment = train(workdir, opt, monkeypatch)
    state = torch.load(experiment / 'training_states' / '2.state', weights_only=False)
    assert ('grad_scaler' in state) == (precision == 'fp16')
    opt['train']['total_iter'] = 4
    train(workdir, opt, monkeypatch, '--auto_resume')
    assert 'net_g_4.pth' in saved(experiment) and saved(experiment, 'training_states') == ['2.state', '4.state']
    assert f'Precision: training {precision}, validation fp32.' in basicsr_log
    if precision == 'fp16':
        assert 'the training state has no GradScaler state' not in basicsr_log
        resumed = torch.load(experiment / 'training_states' / '4.state', weights_only=False)['grad_scaler']
        assert resumed['_growth_tracker'] in (state['grad_scaler']['_growth_tracker'] + 2, 0)  # continued
    saved_weights = torch.load(experiment / 'models' / 'net_g_4.pth', weights_only=True)['params']
    assert all(torch.isfinite(value).all() for value in saved_weights.values())


def test_basicsr_vgg_asks_torchvision_for_the_same_file(monkeypatch):
    """BasicSR 1.4.2's VGGFeatureExtractor on today's torchvision: pretrained=True asks for the file that
    ensure_vgg_weights fetched (the state dict itself is not built here)."""
    import torchvision.models._api as api
    from basicsr.archs.vgg_arch import VGGFeatureExtractor
    asked = []

    def refuse(url, **kwargs):
        asked.append(url)
        raise ConnectionAbortedError('stop here')

    monkeypatch.setattr(api, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr('basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH', 'nowhere/vgg19-dcbb9e9d.pth')
    with pytest.raises(ConnectionAbortedError), torch.device('meta'):  # meta: VGG19's 143 M parameters left unset
        VGGFeatureExtractor(['conv1_2'], vgg_type='vgg19')
    assert asked == [VGG19_URL] == [pretrained.vgg_weights_url('vgg19')]


def test_without_network_a_missing_vgg_is_a_one_line_error(workdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))

    def offline(url, dst, hash_prefix=None):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    opt = shrunk('realesrgan', workdir, pretrained=False)
    opt['name'] = 'offline'
    with pytest.raises(SystemExit) as stop:
        train(workdir, opt, monkeypatch)
    message = str(stop.value)
    assert '\n' not in message and message.startswith('basicsr-taylor-train: error: the perceptual loss needs vgg19')
    assert f'downloading {VGG19_URL} failed' in message and 'name resolution' in message
    assert message.endswith(f'put that file at {workdir}/experiments/pretrained_models/vgg19-dcbb9e9d.pth or '
                            f'{tmp_path}/torch/hub/checkpoints/vgg19-dcbb9e9d.pth')
    assert not osp.exists(workdir / 'experiments' / 'offline')  # stopped before BasicSR created anything


def test_multiscale_copies_follow_real_esrgan(workdir):
    assert multiscale_sizes(1200, 900) == [(675, 900), (450, 600), (300, 400), (400, 533)]
    assert multiscale_sizes(90, 110) == [(82, 67), (55, 45), (36, 30)]  # no upscaled "shorter side 400" copy
    names = sorted(os.listdir(workdir / 'datasets' / 'Photos_HR_multiscale'))
    assert names == [f'{n}T{i}.png' for n in ('astronaut', 'coffee') for i in range(3)]
    hr = cv2.imread(str(workdir / 'datasets' / 'Photos_HR' / 'coffee.png'))
    from PIL import Image
    pil = np.asarray(Image.fromarray(hr[:, :, ::-1]).resize((48, 36), Image.LANCZOS))[:, :, ::-1]
    assert np.abs(cv2.imread(str(workdir / 'datasets' / 'Photos_HR_multiscale' / 'coffeeT1.png')).astype(int)
                  - pil).max() <= 1  # PIL's 8-bit Lanczos, up to rounding
    sixteen = (np.arange(40 * 30 * 3).reshape(30, 40, 3) * 50 % 65536).astype(np.uint16)
    assert lanczos_resize(sixteen, 20, 15).dtype == np.uint16


def test_hr_only_outputs_load_in_real_esrgan_dataset(workdir):
    from basicsr.data.realesrgan_dataset import RealESRGANDataset
    opt = shrunk('realesrnet', workdir)['datasets']['train']
    meta = open(opt['meta_info']).read().split()
    sub = sorted(os.listdir(workdir / 'datasets' / 'Photos_HR_multiscale_sub'))
    assert meta == [f'Photos_HR_multiscale_sub/{name}' for name in sub] and 'coffeeT2_s001.png' in sub
    lmdb_opt = dict(opt, dataroot_gt=str(workdir / 'datasets' / 'Photos_HR_multiscale_sub.lmdb'),
                    io_backend=dict(type='lmdb'))
    expected = cv2.imread(str(workdir / 'datasets' / 'Photos_HR_multiscale_sub' / 'astronaut_s001.png'))
    for dataset_opt in (dict(opt, io_backend=dict(type='disk')), lmdb_opt):
        dataset = RealESRGANDataset(dict(dataset_opt, use_hflip=False))
        assert len(dataset) == len(sub)
        item = dataset[sub.index('astronaut_s001.png')]
        assert item['gt'].shape == (3, 400, 400) and item['kernel1'].shape == (21, 21)  # padded to 400 by BasicSR
        corner = (item['gt'][:, :48, :48].flip(0).permute(1, 2, 0) * 255).round().numpy()  # RGB -> BGR
        assert (corner == expected).all()


def test_hr_only_names_clashes_and_flags(tmp_path, capsys):
    hr = tmp_path / 'HR'
    os.makedirs(hr)
    photo = sample_photo('coffee')[:60, :80]
    cv2.imwrite(str(hr / 'cup.png'), photo)
    cv2.imwrite(str(hr / 'cupT0.png'), photo)  # the name of cup.png's first multiscale copy
    with pytest.raises(SystemExit, match='two images give the sub-image names cupT0_s'):
        prepare_data.main(['--hr', str(hr), '--hr-only', '--multiscale', '--workers', '1'])
    assert not osp.exists(tmp_path / 'HR_multiscale_sub')  # nothing that looks finished
    with pytest.raises(SystemExit):
        prepare_data.main(['--hr', str(hr), '--multiscale'])
    assert '--multiscale needs --hr-only' in capsys.readouterr().err
    os.remove(hr / 'cupT0.png')
    prepare_data.main(['--hr', str(hr), '--hr-only', '--no-lmdb', '--workers', '1'])  # defaults: 400/200, align 1
    assert os.listdir(tmp_path / 'HR_sub') == ['cup_s001.png']  # smaller than the crop: kept whole
    assert cv2.imread(str(tmp_path / 'HR_sub' / 'cup_s001.png')).shape == (60, 80, 3)
    assert open(tmp_path / 'meta_info' / 'meta_info_HR_sub.txt').read() == 'HR_sub/cup_s001.png\n'
    assert not osp.exists(tmp_path / 'HR_sub.lmdb')


def test_training_pair_queue_is_made_where_the_batch_is():
    """BasicSR made the queue with .cuda(); the plugin's class makes it on the batch's device (here 'meta', as a
    stand-in for any device other than the CPU) and its size check is a one-line error."""
    model = TaylorRealESRNetModel.__new__(TaylorRealESRNetModel)  # the queue only: no network
    model.queue_size, model.lq, model.gt = 4, torch.empty(2, 3, 8, 8, device='meta'), torch.empty(2, 3, 32, 32,
                                                                                                  device='meta')
    model._dequeue_and_enqueue()
    assert model.queue_lr.device.type == 'meta' and model.queue_gt.shape == (4, 3, 32, 32) and model.queue_ptr == 2
    model = TaylorRealESRNetModel.__new__(TaylorRealESRNetModel)
    model.queue_size, model.lq, model.gt = 3, torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match='^queue_size 3 is not a multiple of the batch size 2$'):
        model._dequeue_and_enqueue()


def test_jpeg_output_is_contiguous_for_basicsrs_blur_and_usm_gives_basicsrs_sums():
    """BasicSR's DiffJPEG returns a channels-last image, on which its filter2D fails ('view size is not compatible'):
    the plugin's is contiguous. Its USMSharp's depthwise blur gives BasicSR's USMSharp's result."""
    from basicsr.utils import DiffJPEG, USMSharp
    from basicsr.utils.img_process_util import filter2D
    image, quality = torch.rand(2, 3, 64, 72), torch.tensor([40., 70.])
    basicsrs = DiffJPEG(differentiable=False)(image, quality.clone())
    with pytest.raises(RuntimeError, match='view size is not compatible'):
        filter2D(basicsrs, torch.rand(2, 5, 5))
    ours = ContiguousDiffJPEG(differentiable=False)(image, quality.clone())
    assert ours.is_contiguous() and torch.equal(ours, basicsrs)
    kernel = torch.rand(2, 5, 5)
    assert torch.equal(filter2D(ours, kernel), filter2D(basicsrs.contiguous(), kernel))
    assert torch.allclose(DepthwiseUSMSharp()(ours), USMSharp()(ours), atol=1e-6)
