"""A relative data root or checkpoint path that does not exist from the current directory: the error says what it
is relative to (the current directory, as in BasicSR) and where it does exist relative to the option file."""
import os
import sys

import cv2
import pytest

from basicsr_taylor.data import sample_photo
from basicsr_taylor.quickstart import quickstart_options, write_options
from basicsr_taylor.options import checks as option_checks
from basicsr_taylor.options.pipeline import run_basicsr_pipeline
from basicsr_taylor.options.keys import OptionError

TINY_NET = dict(type='TaylorSwinIR', upscale=2, in_chans=3, window_size=8, embed_dim=12, depths=[1], num_heads=[2],
                mlp_ratio=2, upsampler='pixelshuffle')
ROOTS = dict(train_gt='datasets/q/train_HR_sub.lmdb', train_lq='datasets/q/train_LR_X2_sub.lmdb',
             val_gt='datasets/q/val_HR', val_lq='datasets/q/val_LR')


def train_error(opt_path, monkeypatch):
    """The one-line error of ``basicsr-taylor-train -opt opt_path``."""
    monkeypatch.setattr(sys, 'argv', ['basicsr-taylor-train'])
    with pytest.raises(SystemExit) as exit_:
        run_basicsr_pipeline('train', ['-opt', str(opt_path)])
    message = str(exit_.value)
    assert '\n' not in message
    return message


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A quickstart-like layout: data under root/datasets/q/, the option file next to it, run from elsewhere."""
    root = tmp_path / 'root'
    os.makedirs(root / ROOTS['train_gt'])
    os.makedirs(tmp_path / 'elsewhere')
    monkeypatch.chdir(tmp_path / 'elsewhere')
    return root


def test_relative_root_found_above_the_option_file(checkout, tmp_path, monkeypatch):
    opt_path = write_options(quickstart_options(ROOTS, total_iter=2, network=TINY_NET),
                             str(checkout / 'datasets' / 'q' / 'train.yml'))
    assert train_error(opt_path, monkeypatch) == (
        f'basicsr-taylor-train: error: {opt_path}: datasets:train:dataroot_gt: not found: {ROOTS["train_gt"]} '
        f'(relative paths are relative to the current directory, {tmp_path / "elsewhere"}, as in BasicSR); '
        f'it exists relative to {checkout} (above the option file): run from {checkout} or use an absolute path')


def test_relative_root_found_in_the_option_files_folder(checkout, monkeypatch):
    opt_path = write_options(quickstart_options(ROOTS, total_iter=2, network=TINY_NET), str(checkout / 'train.yml'))
    assert train_error(opt_path, monkeypatch).endswith(
        f"it exists relative to {checkout} (the option file's folder): run from {checkout} or use an absolute path")


def test_relative_root_found_nowhere_says_only_what_it_is_relative_to(checkout, tmp_path, monkeypatch):
    opt = quickstart_options(dict(ROOTS, train_gt='datasets/q/nowhere.lmdb'), total_iter=2, network=TINY_NET)
    opt_path = write_options(opt, str(checkout / 'train.yml'))
    assert train_error(opt_path, monkeypatch).endswith(
        'datasets:train:dataroot_gt: not found: datasets/q/nowhere.lmdb (relative paths are relative to the current '
        f'directory, {tmp_path / "elsewhere"}, as in BasicSR)')


def test_absolute_and_home_paths(checkout, monkeypatch):
    missing = str(checkout / 'missing.lmdb')
    with pytest.raises(OptionError, match=f'^datasets:train:dataroot_gt: not found: {missing}$'):
        option_checks.check_dataset('train', dict(type='PairedImageDataset', io_backend={'type': 'lmdb'},
                                                  dataroot_gt=missing, dataroot_lq=missing), 2)
    monkeypatch.setenv('HOME', str(checkout))  # BasicSR expands ~ in the data roots: found, then read as an LMDB
    with pytest.raises(OptionError, match=r'dataroot_gt: .*train_HR_sub.lmdb is not an LMDB made by BasicSR'):
        option_checks.check_dataset('train', dict(type='PairedImageDataset', io_backend={'type': 'lmdb'},
                                                  dataroot_gt='~/' + ROOTS['train_gt'], dataroot_lq=missing), 2)


def test_real_world_roots_and_the_pretrained_network(checkout, tmp_path, monkeypatch):
    dataset = dict(type='SingleImageDataset', io_backend={'type': 'disk'}, dataroot_lq='photos')
    with pytest.raises(OptionError, match=r'^datasets:test_1:dataroot_lq: not found: photos \(relative paths are '
                       r'relative to the current directory, .*elsewhere, as in BasicSR\)$'):
        option_checks.check_dataset('test_1', dataset, 4)
    os.makedirs(checkout / 'datasets' / 'q' / 'val_HR')
    os.makedirs(checkout / 'datasets' / 'q' / 'val_LR')
    os.makedirs(checkout / 'datasets' / 'q' / 'train_LR_X2_sub.lmdb')
    opt = quickstart_options({k: str(checkout / v) for k, v in ROOTS.items()}, total_iter=2, network=TINY_NET)
    opt['path']['pretrain_network_g'] = 'models/net_g.pth'
    os.makedirs(checkout / 'models')
    (checkout / 'models' / 'net_g.pth').write_bytes(b'')
    # the LMDB check comes first: make the two training roots LMDBs in name only
    for key in ('train_gt', 'train_lq'):
        (checkout / ROOTS[key] / 'meta_info.txt').write_text('a.png (64,64,3) 1\n' if key == 'train_gt' else
                                                             'a.png (32,32,3) 1\n')
    cv2.imwrite(str(checkout / ROOTS['val_gt'] / 'a.png'), sample_photo('camera')[:64, :64])
    cv2.imwrite(str(checkout / ROOTS['val_lq'] / 'a.png'), sample_photo('camera')[:32, :32])
    opt_path = write_options(opt, str(checkout / 'train.yml'))
    assert train_error(opt_path, monkeypatch).endswith(
        'path:pretrain_network_g: file not found: models/net_g.pth (relative paths are relative to the current '
        f"directory, {tmp_path / 'elsewhere'}, as in BasicSR); it exists relative to {checkout} (the option file's "
        f'folder): run from {checkout} or use an absolute path')
