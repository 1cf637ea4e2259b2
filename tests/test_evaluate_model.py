"""scripts/evaluate_model.py: the model card's Y PSNR / SSIM table, on a tiny test-made set and checkpoint."""
import hashlib
import importlib.util
import json
import math
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml

import basicsr_taylor  # noqa: F401  (compat fixes before basicsr)
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.matlab_functions import imresize
from basicsr_taylor.data import sample_photo
from basicsr_taylor.models.checkpoint import load_network

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = dict(type='TaylorSwinIR', upscale=2, window_size=8, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2,
            upsampler='pixelshuffle')
CROPS = {'astronaut': (100, 120, 48, 48), 'coffee': (60, 200, 50, 49)}  # name: top, left, height, width (50x49: odd)


@pytest.fixture(scope='module')
def script():
    spec = importlib.util.spec_from_file_location('evaluate_model', osp.join(REPO, 'scripts', 'evaluate_model.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """DATA/Tiny/HR (two crops, no LR), DATA/Photos (three images: Photos-held2), and a BasicSR experiment with a
    tiny x2 TaylorSwinIR checkpoint (experiments/tiny/train_tiny.yml, models/net_g_latest.pth)."""
    root = tmp_path_factory.mktemp('evaluate')
    hr = root / 'data' / 'Tiny' / 'HR'
    hr.mkdir(parents=True)
    for name, (top, left, height, width) in CROPS.items():
        cv2.imwrite(str(hr / f'{name}.png'), sample_photo(name)[top:top + height, left:left + width])
    photos = root / 'data' / 'Photos'
    photos.mkdir()
    for index, name in enumerate(('c_rocket', 'a_chelsea', 'b_camera')):
        cv2.imwrite(str(photos / f'{name}.png'), sample_photo(name[2:])[:40 + 8 * index, :48])
    models = root / 'experiments' / 'tiny' / 'models'
    models.mkdir(parents=True)
    with open(root / 'experiments' / 'tiny' / 'train_tiny.yml', 'w') as f:
        yaml.safe_dump({'name': 'tiny', 'model_type': 'SRModel', 'scale': 2, 'network_g': TINY}, f)
    from basicsr.archs import build_network
    torch.manual_seed(0)
    network = build_network(dict(TINY))
    checkpoint = str(models / 'net_g_latest.pth')
    torch.save({'params': network.state_dict(), 'params_ema': network.state_dict()}, checkpoint)
    return root, checkpoint


def run(script, capsys, *argv):
    code = script.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_json_and_values_match_basicsrs_metrics(script, setup, capsys, one_thread):
    root, checkpoint = setup
    data, work, out = root / 'data', root / 'work', root / 'results.json'
    code, table, err = run(script, capsys, '--model', checkpoint, '--scale', 2, '--data', data, '--sets',
                           'Tiny,Photos-held2', '--bicubic', '--out', out, '--work', work)
    assert code == 0, err
    lines = table.splitlines()
    assert lines[0] == '| set (x2, Y, crop 2) | images | tiny/net_g_latest PSNR / SSIM | bicubic PSNR / SSIM |'
    assert [line.split(' | ')[:2] for line in lines[2:]] == [['| Tiny', '2'], ['| Photos-held2', '2']]
    assert 'Tiny x2: 2 images' in err and 'Photos-held2 x2: 2 images' in err  # a progress line per set
    report = json.loads(out.read_text())
    with open(checkpoint, 'rb') as f:
        assert report['sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert report['scale'] == 2 and report['model'] == 'tiny/net_g_latest' and report['torch'] == torch.__version__
    assert report['model_path'] == osp.abspath(checkpoint) and report['date']
    held = report['sets']['Photos-held2']
    assert [image['name'] for image in held['images']] == ['a_chelsea.png', 'b_camera.png']  # first 2 by name
    for result in report['sets'].values():
        assert result['lr_made_here']
        for method in ('model', 'bicubic'):
            values = [result[method]['psnr'], result[method]['ssim']] + \
                [image[method][metric] for image in result['images'] for metric in ('psnr', 'ssim')]
            assert all(math.isfinite(value) for value in values)
            assert result[method]['psnr'] == pytest.approx(np.mean([i[method]['psnr'] for i in result['images']]))

    # the same numbers, computed here from the HR files with BasicSR's functions
    network, _, _ = load_network(checkpoint)
    tiny = report['sets']['Tiny']
    for image in tiny['images']:
        hr = cv2.imread(str(data / 'Tiny' / 'HR' / image['name']))
        height, width = hr.shape[0] // 2 * 2, hr.shape[1] // 2 * 2
        lr = np.clip(np.round(imresize(hr[:height, :width] / 255., 0.5) * 255), 0, 255).astype(np.uint8)
        assert np.array_equal(lr, cv2.imread(osp.join(tiny['lr'], image['name'])))  # the cached LR
        gt = hr[:height, :width]
        bicubic = np.clip(np.round(imresize(lr / 255., 2) * 255), 0, 255).astype(np.uint8)
        assert image['bicubic']['psnr'] == pytest.approx(calculate_psnr(bicubic, gt, 2, test_y_channel=True), abs=1e-9)
        assert image['bicubic']['ssim'] == pytest.approx(calculate_ssim(bicubic, gt, 2, test_y_channel=True), abs=1e-9)
        with torch.no_grad():
            sr = tensor2img(network(img2tensor(lr / 255., bgr2rgb=True, float32=True)[None]), rgb2bgr=True)
        assert image['model']['psnr'] == pytest.approx(calculate_psnr(sr, gt, 2, test_y_channel=True), abs=1e-6)
    assert tiny['bicubic']['psnr'] == pytest.approx(np.mean([i['bicubic']['psnr'] for i in tiny['images']]))

    # a second run reuses the cached LR and gives the same values
    code, again, _ = run(script, capsys, '--model', checkpoint, '--data', data, '--sets', 'Tiny', '--work', work)
    assert code == 0 and again.splitlines()[0].endswith('| tiny/net_g_latest PSNR / SSIM |')
    assert json.loads((work / 'tiny_net_g_latest_x2.json').read_text())['sets']['Tiny']['model'] == tiny['model']


def test_usage_errors_are_one_line(script, setup, capsys):
    root, checkpoint = setup
    data = root / 'data'
    cases = [(['--data', root / 'nowhere'], f'error: --data {root / "nowhere"}: no such folder (expected the datasets'),
             (['--data', data, '--sets', 'Set5'], f'error: Set5: no folder {data / "Set5" / "HR"} (expected the HR '
              'images of Set5'),
             (['--data', data, '--sets', 'BSD200-held20'], f'error: BSD200-held20: no folder {data / "BSD200"} '
              '(expected the BSD200 images; the first 20 by file name are the set)'),
             (['--data', data, '--sets', 'Tiny,Nope'], "error: unknown set 'Nope': the known sets are Set5, Set14, "
              'Urban100, BSD200-held20, Tiny (NAME: a folder NAME/HR in'),
             (['--data', data, '--sets', 'Tiny', '--scale', 3], f'error: --scale 3: --model {checkpoint} is a x2 '
              'model'),
             (['--data', data, '--sets', 'Photos-held3'], f'error: Photos-held3: {data / "Photos"} has 3 images; '
              'FOLDER-heldN is the first N images of a larger folder (N < 3)')]
    for argv, message in cases:
        code, out, err = run(script, capsys, '--model', checkpoint, '--work', root / 'work-errors', *argv)
        assert code == 2 and not out, (argv, out)
        assert err.startswith(message) and err.count('\n') == 1, (argv, err)
