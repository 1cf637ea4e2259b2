"""Bundled models (basicsr_taylor/zoo): the registry without torch, SHA-256 before loading, strict loads, infer without
--model, zoo:NAME in option files and for export, default tiling. Tiny test-made models stand in for the trained
ones (registered in a temporary folder named by BASICSR_TAYLOR_ZOO); the package's own models are checked when
there are any."""
import csv
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

import basicsr_taylor  # noqa: F401  (compat fixes before basicsr)
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.matlab_functions import imresize
from basicsr_taylor import export, infer, zoo
from basicsr_taylor.data import bicubic_downscale, sample_photo
from basicsr_taylor.options.pipeline import run_basicsr_pipeline
from basicsr_taylor.utils import tiling
from basicsr_taylor.models.checkpoint import CheckpointError
from basicsr_taylor.zoo import registry
from basicsr_taylor.zoo.bundle import bundle

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
HEAVY = re.compile(r'^(torch|basicsr|torchvision|cv2)(\.|$)')
SCALES = (2, 3, 4)
CPU = torch.device('cpu')


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny networks, see conftest


def tiny(scale):
    return dict(type='TaylorSwinIR', upscale=scale, window_size=8, embed_dim=12, depths=[1], num_heads=[2],
                mlp_ratio=2, upsampler='pixelshuffle')


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
    """A zoo folder with Tiny-x2/x3/x4, added as a trained model is (``bundle`` of a BasicSR checkpoint whose
    params and params_ema differ); returns (folder, {scale: the EMA state dict})."""
    root = tmp_path_factory.mktemp('zoo')
    folder = root / 'zoo'
    weights = {}
    for scale in SCALES:
        experiment = root / 'experiments' / f'tiny_x{scale}'
        (experiment / 'models').mkdir(parents=True)
        with open(experiment / 'train.yml', 'w') as f:
            yaml.safe_dump({'name': f'tiny_x{scale}', 'network_g': tiny(scale)}, f)
        torch.manual_seed(scale)
        plain, ema = build_network(tiny(scale)).state_dict(), build_network(tiny(scale)).state_dict()
        checkpoint = experiment / 'models' / 'net_g_latest.pth'
        torch.save({'params': plain, 'params_ema': ema}, checkpoint)
        bundle(str(checkpoint), f'Tiny-x{scale}', str(folder), set5_psnr=30.125 if scale == 2 else None)
        weights[scale] = ema
    return str(folder), weights


@pytest.fixture
def zoo_env(tiny_zoo, monkeypatch):
    monkeypatch.setenv(zoo.ZOO_ENV, tiny_zoo[0])
    return tiny_zoo


def network_of(state_dict, scale):
    """The tiny network with ``state_dict`` loaded, built here (not by the zoo)."""
    network = build_network(tiny(scale))
    network.load_state_dict(state_dict)
    return network.eval()


def photo(path, size=(40, 56)):
    """An area-downscaled crop of skimage's chelsea, BGR, written to ``path``; returns the array."""
    image = cv2.resize(sample_photo('chelsea')[:300, 50:470], size[::-1], interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), image)
    return image


def copy_zoo(folder, tmp_path):
    target = tmp_path / 'zoo_copy'
    shutil.copytree(folder, target)
    return target


def test_bundle_writes_the_ema_weights_and_a_registry_entry(tiny_zoo):
    folder, weights = tiny_zoo
    with open(osp.join(folder, 'models.json')) as f:
        models = json.load(f)['models']
    assert [model['name'] for model in models] == ['Tiny-x2', 'Tiny-x3', 'Tiny-x4']
    for model, scale in zip(models, SCALES):
        path = osp.join(folder, model['file'])
        assert model['scale'] == scale and model['network_g'] == tiny(scale)
        assert model['size'] == osp.getsize(path) <= zoo.MAX_FILE_BYTES
        assert model['sha256'] == registry.sha256_of(path)
        saved = torch.load(path, weights_only=True)
        assert list(saved) == ['params']  # BasicSR reads it with param_key_g params or params_ema
        assert all(torch.equal(saved['params'][key], value) for key, value in weights[scale].items())
    assert [model['set5_psnr'] for model in models] == [30.12, None, None]


def test_bundling_a_name_again_replaces_its_entry_in_place(tiny_zoo, tmp_path):
    folder = copy_zoo(tiny_zoo[0], tmp_path)
    checkpoint = osp.join(osp.dirname(tiny_zoo[0]), 'experiments', 'tiny_x3', 'models', 'net_g_latest.pth')
    entry = bundle(checkpoint, 'Tiny-x3', str(folder), set5_psnr=31.5)
    models = json.loads((folder / 'models.json').read_text())['models']
    assert [model['name'] for model in models] == ['Tiny-x2', 'Tiny-x3', 'Tiny-x4'] and models[1] == entry
    assert entry['set5_psnr'] == 31.5 and entry['sha256'] == registry.sha256_of(str(folder / 'Tiny-x3.pth'))


def test_a_registered_model_loads_strictly_into_the_network_its_entry_names(zoo_env, tmp_path):
    folder, weights = zoo_env
    network, network_opt, source, entry = zoo.load_network('zoo:Tiny-x3')
    assert source == 'bundled model Tiny-x3' and entry['name'] == 'Tiny-x3' and network_opt == tiny(3)
    assert type(network).__name__ == 'TaylorSwinIR' and network.upscale == 3 and not network.training
    state = network.state_dict()
    assert state.keys() == weights[3].keys() and all(torch.equal(state[k], v) for k, v in weights[3].items())
    assert zoo.load_network('Tiny-x3')[3]['name'] == 'Tiny-x3'  # the bare name works where no such file exists

    broken = copy_zoo(folder, tmp_path)  # the same weights registered with another width
    models = json.loads((broken / 'models.json').read_text())
    models['models'][1]['network_g']['embed_dim'] = 16
    (broken / 'models.json').write_text(json.dumps(models))
    with pytest.raises(CheckpointError, match=r'width \(embed_dim\): checkpoint 12, network 16'):
        zoo.load_network('zoo:Tiny-x3', folders=[str(broken)])


def test_a_changed_byte_fails_the_hash_check_in_one_line(zoo_env, tmp_path, capsys, monkeypatch):
    folder, _ = zoo_env
    changed = copy_zoo(folder, tmp_path)
    path = changed / 'Tiny-x2.pth'
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    expected = registry.find('Tiny-x2')['sha256']
    actual = registry.sha256_of(str(path))
    assert actual != expected
    with pytest.raises(zoo.ZooError) as error:
        zoo.load_network('zoo:Tiny-x2', folders=[str(changed)])
    message = str(error.value)
    assert '\n' not in message and str(path) in message and expected in message and actual in message

    monkeypatch.setenv(zoo.ZOO_ENV, str(changed))
    image = tmp_path / 'cat.png'
    photo(image)
    assert infer.main(['-i', str(image), '-o', str(tmp_path / 'out'), '--model', 'Tiny-x2']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: ') and 'SHA-256' in err[-1] and actual in err[-1]
    assert not osp.exists(tmp_path / 'out')


@pytest.mark.parametrize('scale', [None, *SCALES])
def test_infer_without_model_uses_the_bundled_model_of_the_scale(zoo_env, tmp_path, capsys, scale):
    _, weights = zoo_env
    image = photo(tmp_path / 'cat.png')
    args = ['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out')] + (['--scale', str(scale)] if scale else [])
    assert infer.main(args) == 0
    scale = scale or 2
    assert f'using bundled model Tiny-x{scale} (x{scale}, ' in capsys.readouterr().out
    out = cv2.imread(str(tmp_path / 'out' / f'cat_x{scale}.png'))
    assert out.shape == (40 * scale, 56 * scale, 3)
    expected = infer.upscale_image(image, infer.Upscaler(network_of(weights[scale], scale), scale, CPU), 3)
    assert np.array_equal(out, expected)  # that model's EMA weights, no other


def test_model_and_scale_disagreeing_and_other_usage_errors_are_one_line(zoo_env, tmp_path, capsys):
    folder, _ = zoo_env
    photo(tmp_path / 'cat.png')
    base = ['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out')]
    cases = [(['--model', 'Tiny-x2', '--scale', '3'], '--scale 3: --model Tiny-x2 is a x2 model'),
             (['--model', osp.join(folder, 'missing.pth')], 'checkpoint not found: '),
             (['--model', 'zoo:Tiny-x5'], "no bundled model named 'Tiny-x5' (bundled: Tiny-x2, Tiny-x3, Tiny-x4"),
             (['--model', 'zoo:Tiny-x2', '--opt', 'train.yml'], 'the bundled model Tiny-x2 has its own network'),
             (['--opt', 'train.yml'], '--opt train.yml needs --model')]
    for extra, message in cases:
        assert infer.main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith('error: ') and message in err, (extra, err)
    assert not osp.exists(tmp_path / 'out')
    assert infer.main(base + ['--model', 'Tiny-x3']) == 0  # a name, no --scale: the model's own
    assert cv2.imread(str(tmp_path / 'out' / 'cat_x3.png')).shape == (120, 168, 3)


def test_a_checkpoint_and_a_contradicting_scale(tmp_path, capsys):
    experiment = tmp_path / 'experiments' / 'x2'
    (experiment / 'models').mkdir(parents=True)
    (experiment / 'train.yml').write_text(yaml.safe_dump({'network_g': tiny(2)}))
    torch.save({'params': build_network(tiny(2)).state_dict()}, experiment / 'models' / 'net.pth')
    photo(tmp_path / 'cat.png')
    checkpoint = str(experiment / 'models' / 'net.pth')
    base = ['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out'), '--model', checkpoint]
    assert infer.main(base + ['--scale', '4']) == 2
    assert 'is a x2 model (leave --scale out' in capsys.readouterr().err
    assert infer.main(base + ['--scale', '2']) == 0
    assert infer.main(base) == 0


def infer_error_with_only(folder, scale, tmp_path, monkeypatch, capsys):
    """The last stderr line of basicsr-taylor-infer --scale SCALE without --model when the package's zoo is
    ``folder`` and BASICSR_TAYLOR_ZOO is unset; the exit code must be 2. The package folder stays patched."""
    monkeypatch.setattr(registry, 'PACKAGE_FOLDER', str(folder))
    monkeypatch.delenv(zoo.ZOO_ENV, raising=False)
    photo(tmp_path / 'cat.png')
    assert infer.main(['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out'), '--scale', str(scale)]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_no_bundled_model_is_one_line(tmp_path, monkeypatch, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'models.json').write_text('{"models": []}\n')
    assert infer_error_with_only(empty, 3, tmp_path, monkeypatch, capsys) == \
        'error: no bundled model for x3 yet (bundled: none); pass --model CHECKPOINT'
    with pytest.raises(SystemExit) as done:
        infer.parse_args(['--list-models'])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == 'no bundled models yet: pass --model CHECKPOINT (a BasicSR checkpoint)'
    monkeypatch.setenv(zoo.ZOO_ENV, str(tmp_path / 'nowhere'))
    with pytest.raises(SystemExit) as done:
        infer.parse_args(['--list-models'])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == \
        f'error: no models.json in the zoo folder {tmp_path / "nowhere"} (named by BASICSR_TAYLOR_ZOO)'


def test_a_scale_without_a_bundled_model_names_the_scales_there_are(tiny_zoo, tmp_path, monkeypatch, capsys):
    folder = copy_zoo(tiny_zoo[0], tmp_path)
    content = json.loads((folder / 'models.json').read_text())
    content['models'] = [entry for entry in content['models'] if entry['scale'] != 3]
    (folder / 'models.json').write_text(json.dumps(content))
    assert infer_error_with_only(folder, 3, tmp_path, monkeypatch, capsys) == \
        'error: no bundled model for x3 yet (bundled: x2, x4); pass --model CHECKPOINT'
    assert not (tmp_path / 'out').exists()


def test_list_models_imports_neither_torch_nor_basicsr(tiny_zoo, tmp_path):
    folder, _ = tiny_zoo
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])),
               OMP_NUM_THREADS='1', **{zoo.ZOO_ENV: folder})
    script = "import sys; sys.argv = ['basicsr-taylor-infer', '--list-models']; " \
             "from basicsr_taylor.infer import main; main()"  # what the console script does
    for args in (['-c', script], ['-m', 'basicsr_taylor.infer', '--list-models']):
        done = subprocess.run([sys.executable, '-X', 'importtime', *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        modules = [line.rsplit('|', 1)[1].strip() for line in done.stderr.splitlines()
                   if line.startswith('import time:')][1:]
        assert 'argparse' in modules and not [m for m in modules if HEAVY.match(m)], args
        lines = done.stdout.strip().splitlines()
        assert re.split(r'\s{2,}', lines[0]) == ['name', 'scale', 'Set5 PSNR (Y)', 'size']
        rows = [re.split(r'\s{2,}', line) for line in lines[1:]]
        sizes = {scale: zoo.format_size(osp.getsize(osp.join(folder, f'Tiny-x{scale}.pth'))) for scale in SCALES}
        assert rows[:3] == [['Tiny-x2', 'x2', '30.12 dB', sizes[2]], ['Tiny-x3', 'x3', 'not measured', sizes[3]],
                            ['Tiny-x4', 'x4', 'not measured', sizes[4]]]


def shapes_seen(monkeypatch):
    seen = []
    forward = infer.Upscaler._forward

    def spy(self, x):
        seen.append(tuple(x.shape[-2:]))
        return forward(self, x)

    monkeypatch.setattr(infer.Upscaler, '_forward', spy)
    return seen


def test_bundled_models_tile_large_inputs_by_default(zoo_env, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tiling, 'DEFAULT_TILE', 24)  # so that a small photo counts as large
    photo(tmp_path / 'cat.png', (72, 96))
    seen = shapes_seen(monkeypatch)
    args = ['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out')]
    assert infer.main(args) == 0  # overlap 32 on window 8: the default tile grows to 64, one every 32 pixels
    assert sorted(seen) == [(40, 64), (40, 64), (64, 64), (64, 64)]  # rows 0-64 | 32-72, columns 0-64 | 32-96
    assert 'tiles of 64 pixels every 32 (window 8), neighbours share 32 (the default' in caplog.text
    tiled = cv2.imread(str(tmp_path / 'out' / 'cat_x2.png'))
    seen.clear()
    assert infer.main(args + ['--tile', '0']) == 0  # one piece
    assert seen == [(72, 96)]
    whole = cv2.imread(str(tmp_path / 'out' / 'cat_x2.png'))
    assert tiled.shape == whole.shape == (144, 192, 3) and calculate_psnr(tiled, whole, 0) > 40


def test_checkpoints_run_whole_unless_asked(tmp_path, monkeypatch, tiny_zoo):
    monkeypatch.setattr(tiling, 'DEFAULT_TILE', 24)
    experiment = tmp_path / 'experiments' / 'x2'
    (experiment / 'models').mkdir(parents=True)
    (experiment / 'train.yml').write_text(yaml.safe_dump({'network_g': tiny(2)}))
    torch.save({'params': tiny_zoo[1][2]}, experiment / 'models' / 'net.pth')
    photo(tmp_path / 'cat.png')
    seen = shapes_seen(monkeypatch)
    assert infer.main(['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out'), '--model',
                       str(experiment / 'models' / 'net.pth')]) == 0
    assert seen == [(40, 56)]


@pytest.mark.parametrize('tile', [4, 8, 12])
def test_a_tile_too_small_for_the_window_names_the_window_and_the_tile_to_use(zoo_env, tmp_path, capsys, tile):
    photo(tmp_path / 'cat.png')
    assert infer.main(['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out'), '--tile', str(tile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f'error: --tile {tile} is too small for --tile-overlap 32 on the network\'s 8-pixel window '
                       'grid: use --tile 64 or more (or a smaller --tile-overlap)')


def test_a_tile_that_would_compute_each_pixel_many_times_is_refused_with_a_better_size(zoo_env, tmp_path, capsys,
                                                                                         monkeypatch):
    photo(tmp_path / 'cat.png', (72, 72))
    args = ['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out')]
    assert infer.main(args + ['--tile', '40']) == 2  # one 40-pixel tile every 8 pixels: 25x the work
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --tile 40 with --tile-overlap 32 on the network's 8-pixel window grid starts a tile every 8 pixels, "
        'computing each pixel about 25 times: use --tile 64 or more (or a smaller --tile-overlap)')
    seen = shapes_seen(monkeypatch)
    assert infer.main(args + ['--tile', '64']) == 0  # the size it named works: 2 x 2 tiles
    assert len(seen) == 4 and max(max(shape) for shape in seen) == 64
    seen.clear()
    assert infer.main(args + ['--tile', '40', '--tile-overlap', '16']) == 0  # or a smaller overlap
    assert len(seen) == 9


def test_zoo_name_in_a_test_option_file(zoo_env, tmp_path, monkeypatch):
    folder, weights = zoo_env
    hr_dir, lr_dir = tmp_path / 'HR', tmp_path / 'LR'
    hr_dir.mkdir()
    lr_dir.mkdir()
    hr = sample_photo('coffee')[40:88, 100:164]
    lr = bicubic_downscale(hr, 2)
    cv2.imwrite(str(hr_dir / 'cup.png'), hr)
    cv2.imwrite(str(lr_dir / 'cup.png'), lr)
    opt = {'name': 'zoo_test', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'test_1': dict(name='Cup', type='PairedImageDataset', dataroot_gt=str(hr_dir),
                                       dataroot_lq=str(lr_dir), io_backend=dict(type='disk'))},
           'network_g': tiny(2), 'path': dict(pretrain_network_g='zoo:Tiny-x2', strict_load_g=True),
           'val': dict(save_img=True, suffix=None,
                       metrics=dict(psnr=dict(type='calculate_psnr', crop_border=2, test_y_channel=True)))}
    opt_path = tmp_path / 'test.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    run_basicsr_pipeline('test', ['-opt', str(opt_path)])
    sr = cv2.imread(str(tmp_path / 'results' / 'zoo_test' / 'visualization' / 'Cup' / 'cup_zoo_test.png'))
    with torch.no_grad():
        expected = tensor2img(network_of(weights[2], 2)(img2tensor(lr / 255., bgr2rgb=True, float32=True)[None]))
    assert sr.shape == (48, 64, 3) and np.abs(sr.astype(int) - expected).max() <= 1

    for value, message in [('zoo:Tiny-x9', "path:pretrain_network_g: no bundled model named 'Tiny-x9'"),
                           ('zoo:Tiny-x3', 'scale (upscale): checkpoint 3, network 2')]:
        opt['path']['pretrain_network_g'] = value
        opt['name'] = 'zoo_test_' + value[-2:]
        opt_path.write_text(yaml.safe_dump(opt))
        with pytest.raises(SystemExit) as exit_:
            run_basicsr_pipeline('test', ['-opt', str(opt_path)])
        assert str(exit_.value).startswith(f'basicsr-taylor-test: error: {opt_path}: path:pretrain_network_g: ')
        assert message in str(exit_.value) and '\n' not in str(exit_.value)
        assert not osp.exists(tmp_path / 'results' / opt['name'])


def test_export_takes_a_bundled_model(zoo_env, tmp_path, monkeypatch):
    _, weights = zoo_env
    exported = []
    monkeypatch.setattr(export, 'export_onnx', lambda network, path, *args: exported.append((network, path, args)))
    for model in ('zoo:Tiny-x4', 'Tiny-x4'):
        assert export.main(['--model', model, '--onnx', str(tmp_path / 'x4.onnx'), '--no-check']) == 0
    assert len(exported) == 2
    for network, path, (in_channels, window_size, _) in exported:
        assert path == str(tmp_path / 'x4.onnx') and (in_channels, window_size) == (3, 8)
        assert all(torch.equal(network.state_dict()[key], value) for key, value in weights[4].items())
    assert export.main(['--model', 'zoo:Tiny-x7', '--onnx', str(tmp_path / 'x7.onnx')]) == 2


def test_setup_packages_the_zoo_folder(monkeypatch):
    """Wheels and editable installs carry models.json and every weight file (package data in setup.py)."""
    import fnmatch

    import setuptools  # noqa: F401  (provides distutils on python >= 3.12)
    from distutils.core import run_setup
    monkeypatch.chdir(REPO)
    patterns = run_setup('setup.py', stop_after='init').package_data['basicsr_taylor.zoo']
    for name in ['models.json', 'TaylorSwinIR-light-x2.pth'] + os.listdir(zoo.PACKAGE_FOLDER):
        if not name.endswith(('.py', '.pyc')) and name != '__pycache__':
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


PACKAGED = registry.read_registry(registry.PACKAGE_FOLDER)


@pytest.mark.parametrize('entry', PACKAGED, ids=[entry['name'] for entry in PACKAGED])
def test_each_packaged_model_matches_its_entry_and_loads_strictly(entry):
    assert osp.getsize(entry['path']) == entry['size'] <= zoo.MAX_FILE_BYTES
    network, network_opt, _ = zoo.load_bundled(entry)  # SHA-256 first, then strict
    assert network_opt == entry['network_g'] and infer.network_scale(network, network_opt) == entry['scale']


def test_the_bundled_x2_model_beats_bicubic_by_a_db_on_two_photos():
    entry = registry.for_scale(2, folders=[registry.PACKAGE_FOLDER])
    if entry is None:
        pytest.skip('no x2 model in basicsr_taylor/zoo/models.json yet (bundle one with python -m '
                    'basicsr_taylor.zoo.bundle)')
    network, _, _ = zoo.load_bundled(entry)
    upscaler = infer.Upscaler(network, 2, CPU)
    gains = {}
    for name, top, left in (('chelsea', 20, 100), ('coffee', 40, 100)):
        hr = sample_photo(name)[top:top + 192, left:left + 256]
        lr = bicubic_downscale(hr, 2)
        sr = infer.upscale_image(lr, upscaler, 3)
        bicubic = np.clip(np.round(imresize(lr.astype(np.float64) / 255., 2) * 255), 0, 255).astype(np.uint8)
        psnr = {method: calculate_psnr(image, hr, crop_border=2, test_y_channel=True)
                for method, image in (('sr', sr), ('bicubic', bicubic))}
        gains[name] = psnr['sr'] - psnr['bicubic']
    assert min(gains.values()) >= 1.0, gains


def test_network_body_drops_the_upsampler_and_the_rest_loads_at_another_scale(tiny_zoo, tmp_path):
    """scripts/network_body.py: an x2 checkpoint's EMA weights less upsample.* load into x3 and x4 networks
    (strict=False): every kept tensor equal, only the upsampler missing (x4's first stage has x2's shape)."""
    checkpoint = tmp_path / 'x2.pth'
    torch.save({'params': network_of(tiny_zoo[1][3], 3).state_dict(), 'params_ema': tiny_zoo[1][2]}, checkpoint)
    output = tmp_path / 'pretrained' / 'body.pth'
    subprocess.run([sys.executable, osp.join(REPO, 'scripts', 'network_body.py'), str(checkpoint), str(output)],
                   check=True, capture_output=True)
    kept = torch.load(output, weights_only=True)['params']
    assert set(kept) == {key for key in tiny_zoo[1][2] if not key.startswith('upsample.')}
    for scale in (3, 4):
        network = build_network(tiny(scale))
        missing, unexpected = network.load_state_dict(kept, strict=False)
        assert unexpected == [] and missing and all(key.startswith('upsample.') for key in missing)
        for key, value in kept.items():
            assert torch.equal(network.state_dict()[key], value), key
    broken = subprocess.run([sys.executable, osp.join(REPO, 'scripts', 'network_body.py'), str(output),
                             str(tmp_path / 'again.pth')], capture_output=True, text=True)
    assert broken.returncode != 0 and 'no upsample.* weights' in broken.stderr
    assert not (tmp_path / 'again.pth').exists()


def test_zoo_curves_put_x2_after_the_pilot_and_keep_a_revalidated_step_last(tmp_path, capsys):
    """scripts/zoo_curves.py: the tb_logger scalars of each run (every event file, a later start's value winning),
    x2's iterations counted on from the pilot's last point in the ablation's curves.csv, files written."""
    import importlib.util
    import time

    from torch.utils.tensorboard import SummaryWriter
    spec = importlib.util.spec_from_file_location('zoo_curves', osp.join(REPO, 'scripts', 'zoo_curves.py'))
    zoo_curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo_curves)
    tb_root = tmp_path / 'tb_logger'
    starts = {2: [{1000: 36.1, 2000: 36.2}, {2000: 36.4, 3000: 36.5}], 3: [{1000: 30.0}]}
    for scale, segments in starts.items():
        for segment in segments:
            writer = SummaryWriter(str(tb_root / f'zoo_TaylorSwinIR-small_x{scale}'))
            for step, psnr in segment.items():
                writer.add_scalar('metrics/Set5/psnr', psnr, step)
                writer.add_scalar('metrics/Set5/ssim', psnr / 40, step)
                writer.add_scalar('losses/l_pix', 0.1, step)
            writer.close()
            time.sleep(0.05)  # the next start's event file is the newer one
    pilot = tmp_path / 'curves.csv'
    pilot.write_text('variant,seed,dataset,iter,psnr,ssim,cpu_hours,wall_hours\n'
                     'TaylorSwinIR-w24,0,Set5,4000,35.0,0.95,1.0,1.1\nTaylorSwinIR-w24,0,Set5,8000,36.0,0.95,2.0,2.2\n'
                     'SwinIR-w8,0,Set5,8000,35.5,0.95,1.0,1.1\nTaylorSwinIR-w24,1,Set5,8000,35.9,0.95,2.0,2.2\n')
    out = tmp_path / 'docs'
    assert zoo_curves.main(['--tb-root', str(tb_root), '--pilot', str(pilot), '--out', str(out)]) == 0
    with open(out / 'curves.csv', newline='') as f:
        table = [(r['model'][-2:], r['dataset'], int(r['iteration']), float(r['psnr']), r['stage'])
                 for r in csv.DictReader(f)]
    assert table == [('x2', 'Set5', 4000, 35.0, 'pilot'), ('x2', 'Set5', 8000, 36.0, 'pilot'),
                     ('x2', 'Set5', 9000, 36.1, 'zoo'), ('x2', 'Set5', 10000, 36.4, 'zoo'),
                     ('x2', 'Set5', 11000, 36.5, 'zoo'), ('x3', 'Set5', 1000, 30.0, 'zoo')]
    assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert zoo_curves.main(['--tb-root', str(tmp_path / 'none'), '--out', str(tmp_path / 'x')]) == 2
    assert 'no run zoo_TaylorSwinIR-small_x{2,3,4} under' in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()
