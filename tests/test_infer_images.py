"""basicsr-taylor-infer on images as they come: gray, RGBA, 16-bit, EXIF-rotated, tiny, corrupt; exit codes."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import yaml
from PIL import Image, ImageOps

import basicsr_taylor  # noqa: F401  (compat fixes before basicsr)
from basicsr_taylor import infer
from basicsr_taylor.utils.image_io import EXIF_ORIENTATION, apply_orientation, list_images, read_image, write_image

TINY = dict(type='TaylorSwinIR', upscale=2, window_size=8, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2,
            upsampler='pixelshuffle')


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny networks, see conftest


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    """A randomly initialised tiny TaylorSwinIR saved as BasicSR does, with its option file in the experiment."""
    from basicsr.archs import build_network
    root = tmp_path_factory.mktemp('experiments') / 'tiny'
    (root / 'models').mkdir(parents=True)
    with open(root / 'train_tiny.yml', 'w') as f:
        yaml.safe_dump({'name': 'tiny', 'network_g': TINY}, f)
    torch.manual_seed(0)
    path = str(root / 'models' / 'net_g_latest.pth')
    torch.save({'params_ema': build_network(dict(TINY)).state_dict()}, path)
    return path


def photo_bgr(size=(40, 56)):
    """A crop of skimage's astronaut, area-downscaled to (H, W), as OpenCV's BGR uint8."""
    rgb = cv2.resize(skimage.data.astronaut()[:400, 50:530], size[::-1], interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def run(args):
    return infer.main([str(a) for a in args])


def test_folder_of_mixed_images_with_a_corrupt_one(tmp_path, model_path, capsys):
    inputs, outputs = tmp_path / 'in', tmp_path / 'out'
    inputs.mkdir()
    bgr = photo_bgr()
    cv2.imwrite(str(inputs / 'color.png'), bgr)
    cv2.imwrite(str(inputs / 'gray.bmp'), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    alpha = np.tile(np.linspace(0, 255, bgr.shape[1]).astype(np.uint8), (bgr.shape[0], 1))
    cv2.imwrite(str(inputs / 'rgba.png'), np.dstack([bgr, alpha]))
    cv2.imwrite(str(inputs / 'deep.png'), bgr.astype(np.uint16) * 257)  # 16-bit with the same picture
    cv2.imwrite(str(inputs / 'tiny.PNG'), bgr[:5, :3])  # smaller than one 8×8 window; upper-case extension
    (inputs / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    (inputs / 'notes.txt').write_text('not an image: ignored')

    assert run(['-i', inputs, '-o', outputs, '--model', model_path, '--tile', 32, '--tile-overlap', 8]) == 1
    captured = capsys.readouterr()
    assert 'FAILED' in captured.err and 'corrupt.png' in captured.err
    assert '5 of 6 image(s)' in captured.out
    assert sorted(os.listdir(outputs)) == ['color_x2.png', 'deep_x2.png', 'gray_x2.bmp', 'rgba_x2.png', 'tiny_x2.PNG']

    color = cv2.imread(str(outputs / 'color_x2.png'), cv2.IMREAD_UNCHANGED)
    assert color.shape == (80, 112, 3) and color.dtype == np.uint8
    gray = cv2.imread(str(outputs / 'gray_x2.bmp'), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (80, 112)
    rgba = cv2.imread(str(outputs / 'rgba_x2.png'), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (80, 112, 4)
    assert np.array_equal(rgba[:, :, :3], color)  # colour upscaled exactly as without alpha
    expected_alpha = np.clip(cv2.resize(alpha / 255., (112, 80), interpolation=cv2.INTER_CUBIC), 0, 1) * 255
    assert np.abs(rgba[:, :, 3].astype(float) - expected_alpha).max() <= 0.5 + 1e-6  # alpha: bicubic on its own
    deep = cv2.imread(str(outputs / 'deep_x2.png'), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (80, 112, 3)
    assert np.abs(deep / 257. - color).max() <= 1  # same picture, 16-bit precision kept
    assert len(np.unique(deep % 257)) > 1  # not just an 8-bit result scaled up
    assert cv2.imread(str(outputs / 'tiny_x2.PNG')).shape == (10, 6, 3)

    (inputs / 'corrupt.png').unlink()
    assert run(['-i', inputs, '-o', outputs, '--model', model_path]) == 0
    assert not [name for name in os.listdir(outputs) if name.startswith('.')]  # no temporary files left


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    rgb = photo_bgr((12, 20))[:, :, ::-1]
    path = str(tmp_path / f'o{orientation}.png')
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(rgb).save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(read_image(path)[:, :, ::-1], expected)
    assert cv2.imread(path, cv2.IMREAD_UNCHANGED).shape == rgb.shape  # OpenCV itself ignores the tag here
    # data preparation reads the pixels as stored (as BasicSR's lmdb_util and Pillow's header size see them)
    assert np.array_equal(read_image(path, orient=False), cv2.imread(path, cv2.IMREAD_UNCHANGED))


def test_one_list_images_and_read_image_for_every_caller(tmp_path):
    class Refused(ValueError):
        pass

    for name in ('b.PNG', 'a.jpg', '.hidden.png', 'notes.txt'):
        (tmp_path / name).write_bytes(b'not an image')
    (tmp_path / 'sub.png').mkdir()
    assert list_images(str(tmp_path)) == [str(tmp_path / 'a.jpg'), str(tmp_path / 'b.PNG')]
    assert list_images(str(tmp_path / 'a.jpg'), files=True) == [str(tmp_path / 'a.jpg')]
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        list_images(str(tmp_path / 'a.jpg'))
    (tmp_path / 'empty').mkdir()
    assert list_images(str(tmp_path / 'empty')) == []
    with pytest.raises(Refused, match=r'no images \(\.png, .*\) in .*empty'):
        list_images(str(tmp_path / 'empty'), error=Refused)
    with pytest.raises(Refused, match='image folder not found: .*nowhere'):
        list_images(str(tmp_path / 'nowhere'), error=Refused)
    with pytest.raises(Refused, match='cannot read image .*a.jpg: not an image'):
        read_image(str(tmp_path / 'a.jpg'), error=Refused)
    with pytest.raises(infer.ImageReadError, match='cannot read image .*nowhere.png'):
        read_image(str(tmp_path / 'nowhere.png'))


def test_an_exif_rotated_jpeg_is_super_resolved_upright(tmp_path, model_path):
    rgb = photo_bgr((24, 40))[:, :, ::-1]  # landscape pixels, stored "rotated": upright it is portrait
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(rgb).save(tmp_path / 'phone.jpg', exif=exif, quality=95)
    assert run(['-i', tmp_path / 'phone.jpg', '-o', tmp_path / 'out', '--model', model_path, '--ext', 'png']) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'phone_x2.png'))
    assert out.shape == (80, 48, 3)
    upright = apply_orientation(cv2.imread(str(tmp_path / 'phone.jpg'), cv2.IMREAD_UNCHANGED), 6)
    network, _, _ = infer.load_network(model_path)
    upscaler = infer.Upscaler(network, 2, torch.device('cpu'))
    assert np.array_equal(out, infer.upscale_image(upright, upscaler, 3))


def test_usage_errors_exit_with_2(tmp_path, model_path, capsys):
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), photo_bgr((16, 16)))
    bad_opt = tmp_path / 'x4.yml'
    bad_opt.write_text(yaml.safe_dump({'network_g': {**TINY, 'upscale': 4}}))
    assert run(['-i', image, '-o', tmp_path / 'out', '--model', model_path, '--opt', bad_opt]) == 2
    assert 'scale (upscale): checkpoint 2, network 4' in capsys.readouterr().err
    assert run(['-i', tmp_path / 'nothing', '-o', tmp_path / 'out', '--model', model_path]) == 2
    assert run(['-i', image, '-o', tmp_path / 'out', '--model', model_path, '--tile', 16, '--tile-overlap', 16]) == 2
    assert run(['-i', image, '-o', tmp_path, '--model', model_path, '--suffix', '']) == 1  # would overwrite input
    assert not os.path.exists(tmp_path / 'out')


def test_device_auto_picks_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert infer.resolve_device('auto') == torch.device('cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert infer.resolve_device('auto') == torch.device('cpu')
    with pytest.raises(ValueError, match='CUDA is not available'):
        infer.resolve_device('cuda')


def test_write_image_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / 'out.png'
    write_image(np.zeros((4, 4, 3), np.uint8), str(target))
    monkeypatch.setattr(os, 'replace', lambda *a: (_ for _ in ()).throw(OSError('disk full')))
    with pytest.raises(OSError, match='disk full'):
        write_image(np.full((4, 4, 3), 255, np.uint8), str(target))
    assert os.listdir(tmp_path) == ['out.png'] and cv2.imread(str(target)).max() == 0  # old file intact
    monkeypatch.undo()
    umask = os.umask(0o022)
    try:
        write_image(np.zeros((4, 4, 3), np.uint8), str(tmp_path / 'shared.png'))
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / 'shared.png').st_mode & 0o777 == 0o644  # as open() would make it, not 0600


def test_python_dash_m_entry_point(tmp_path, model_path):
    cv2.imwrite(str(tmp_path / 'a.jpg'), photo_bgr((16, 24)))
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run([sys.executable, '-m', 'basicsr_taylor.infer', '-i', str(tmp_path / 'a.jpg'), '-o',
                             str(tmp_path / 'out'), '--model', model_path, '--precision', 'bf16'],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'a.jpg: 24x16 -> 48x32 in' in result.stdout + result.stderr
    assert cv2.imread(str(tmp_path / 'out' / 'a_x2.jpg')).shape == (32, 48, 3)


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys):
    """--ext xyz ran the model, then died in cv2; --device gpu was a torch traceback; -o naming a file failed per
    image. The model path does not exist here: each error must come before the network is even loaded."""
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), photo_bgr((16, 16)))
    missing_model = tmp_path / 'never_loaded.pth'
    for args, message in [(['--ext', 'xyz'], '--ext xyz: OpenCV cannot write this format'),
                          (['--device', 'gpu'], '--device gpu: not a device (use auto, cpu, cuda or cuda:N)')]:
        assert run(['-i', image, '-o', tmp_path / 'out', '--model', missing_model, *args]) == 2
        assert capsys.readouterr().err.strip() == f'error: {message}' + (
            ' (use auto, png, jpg, tif, bmp, webp)' if 'ext' in message else '')
    assert run(['-i', image, '-o', image, '--model', missing_model]) == 2
    assert capsys.readouterr().err.strip() == f'error: --output {image}: exists and is not a folder'
    assert not os.path.exists(tmp_path / 'out')


def test_half_precision_on_the_cpu_warns(tmp_path, model_path, caplog):
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), photo_bgr((16, 16)))
    with caplog.at_level('INFO', logger='basicsr_taylor.infer'):
        assert run(['-i', image, '-o', tmp_path / 'out', '--model', model_path, '--precision', 'fp16',
                    '--device', 'cpu']) == 0
    assert any(r.levelname == 'WARNING' and '--precision fp16 on the CPU' in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level('INFO', logger='basicsr_taylor.infer'):
        assert run(['-i', image, '-o', tmp_path / 'out2', '--model', model_path]) == 0
    assert not any(r.levelname == 'WARNING' for r in caplog.records)
