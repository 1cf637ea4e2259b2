"""Data preparation: MATLAB-bicubic LR, aligned HR/LR sub-images, LMDBs readable by BasicSR, safe re-runs,
clear errors."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import skimage.data

import basicsr_taylor  # noqa: F401  (makes basicsr importable)
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.matlab_functions import imresize
from basicsr_taylor import data, prepare_data
from basicsr_taylor.data import DataPreparationError


def write_hr(folder, sizes=((130, 170), (97, 121))):
    """Small HR images cut from scikit-image's astronaut and coffee photos (BGR), odd sizes on purpose."""
    os.makedirs(folder, exist_ok=True)
    photos = [skimage.data.astronaut(), skimage.data.coffee()]
    for i, ((h, w), photo) in enumerate(zip(sizes, photos)):
        cv2.imwrite(osp.join(folder, f'img{i}.png'), np.ascontiguousarray(photo[:h, :w, ::-1]))
    return folder


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp('prep')
    hr = write_hr(str(root / 'Photos_HR'))
    outputs = data.prepare(hr, str(root / 'Photos_LR_bicubic' / 'X{scale}'), str(root), scales=(2, 3, 4),
                                   crop=48, step=36, align=12)
    return root, hr, outputs


def test_crop_positions_are_aligned_and_reach_the_border():
    assert data.crop_positions(130, 48, 36, 12) == [0, 36, 72]  # last (130 - 48) // 12 * 12 = 72
    positions = data.crop_positions(170, 48, 36, 12)
    assert positions[:4] == [0, 36, 72, 108] and positions[-1] == 120  # (170 - 48) // 12 * 12
    assert all(p % 12 == 0 for p in positions)
    assert data.crop_positions(40, 48, 36, 12) == [0]  # shorter than crop: one piece


def test_bicubic_lr_matches_basicsr_imresize(tmp_path):
    hr = write_hr(str(tmp_path / 'HR'))
    assert data.make_bicubic_lr(hr, str(tmp_path / 'LR'), 3)
    img = cv2.imread(osp.join(hr, 'img1.png'))  # 97x121 -> cropped to 96x120 -> 32x40
    lr = cv2.imread(str(tmp_path / 'LR' / 'img1.png'))
    assert lr.shape == (32, 40, 3)
    expected = np.clip(np.round(imresize(img[:96, :120] / 255., 1 / 3) * 255), 0, 255)
    np.testing.assert_array_equal(lr, expected)
    assert not data.make_bicubic_lr(hr, str(tmp_path / 'LR'), 3)  # exists: skipped


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_lr_sub_images_are_the_bicubic_of_their_hr_sub_images(prepared, scale):
    _, _, outputs = prepared
    hr_sub, lr_sub = outputs['hr'][0], outputs[scale][0]
    names = sorted(os.listdir(hr_sub))
    assert names == sorted(os.listdir(lr_sub)) and len(names) > 4
    for name in names:
        gt, lq = cv2.imread(osp.join(hr_sub, name)), cv2.imread(osp.join(lr_sub, name))
        assert gt.shape[0] == lq.shape[0] * scale and gt.shape[1] == lq.shape[1] * scale
        # away from the sub-image border the bicubic kernel sees the same pixels: equal up to rounding;
        # a sub-image cut one LR pixel off would differ by far more
        ref = np.clip(np.round(imresize(gt / 255., 1 / scale) * 255), 0, 255)
        diff = np.abs(lq[3:-3, 3:-3].astype(np.float64) - ref[3:-3, 3:-3])
        assert diff.max() <= 1, name


def test_lmdbs_load_in_basicsr_paired_dataset(prepared):
    _, _, outputs = prepared
    dataset = PairedImageDataset(
        dict(dataroot_gt=outputs['hr'][1], dataroot_lq=outputs[3][1], io_backend=dict(type='lmdb'), scale=3,
             phase='train', gt_size=24, use_hflip=True, use_rot=True))
    assert len(dataset) == len(os.listdir(outputs['hr'][0]))
    sample = dataset[0]
    assert sample['gt'].shape == (3, 24, 24) and sample['lq'].shape == (3, 8, 8)
    with open(osp.join(outputs[3][1], 'meta_info.txt')) as f:
        assert f.readline().endswith('(16,16,3) 1\n')  # 48 / 3


def test_rerun_skips_and_partial_outputs_are_rebuilt(prepared):
    root, hr, outputs = prepared
    lmdb_path = outputs[2][1]
    stamp = os.stat(osp.join(lmdb_path, 'data.mdb')).st_mtime_ns
    assert not data.make_lmdb(outputs[2][0], lmdb_path)  # complete: skipped
    # an LMDB whose meta_info misses images (as if a writer had stopped half way) is not complete
    meta = osp.join(lmdb_path, 'meta_info.txt')
    lines = open(meta).readlines()
    with open(meta, 'w') as f:
        f.writelines(lines[:-1])
    assert not data.lmdb_is_complete(lmdb_path, outputs[2][0])
    assert data.make_lmdb(outputs[2][0], lmdb_path)
    assert open(meta).readlines() == lines
    assert os.stat(osp.join(lmdb_path, 'data.mdb')).st_mtime_ns != stamp
    # a leftover .partial folder from an interrupted run is neither used nor left behind
    os.makedirs(outputs[4][0] + '.partial')
    data.extract_sub_images(hr, str(root / 'Photos_LR_bicubic' / 'X4'), outputs[4][0], 4, 48, 36, 12,
                                    overwrite=True)
    assert not osp.exists(outputs[4][0] + '.partial')
    assert not [p for p in os.listdir(root) if 'partial' in p]


def test_div2k_names_and_cli(tmp_path):
    root = tmp_path / 'DIV2K'
    hr = write_hr(str(root / 'DIV2K_train_HR'), sizes=((96, 120), (96, 96)))
    lr_dir = root / 'DIV2K_train_LR_bicubic' / 'X2'
    os.makedirs(lr_dir)
    for name in os.listdir(hr):  # DIV2K names its LR images 0001x2.png
        img = cv2.imread(osp.join(hr, name))
        cv2.imwrite(str(lr_dir / name.replace('.png', 'x2.png')), data.bicubic_downscale(img, 2))
    prepare_data.main(['--root', str(root), '--scales', '2', '--crop', '48', '--step', '48', '--workers', '1'])
    for name in ('DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X2_sub.lmdb'):
        assert osp.isfile(root / name / 'meta_info.txt')
    assert sorted(os.listdir(root / 'DIV2K_train_LR_bicubic_X2_sub'))[0] == 'img0_s001.png'


def test_missing_hr_folder_is_named(tmp_path):
    with pytest.raises(SystemExit, match='image folder not found: .*nowhere'):
        prepare_data.main(['--hr', str(tmp_path / 'nowhere'), '--scales', '2'])


def test_unreadable_image_is_named(tmp_path):
    hr = write_hr(str(tmp_path / 'HR'))
    with open(osp.join(hr, 'broken.png'), 'wb') as f:
        f.write(b'not a png')
    with pytest.raises(DataPreparationError, match='cannot read image .*broken.png'):
        data.prepare(hr, str(tmp_path / 'LR' / 'X{scale}'), str(tmp_path), scales=(2, ), crop=48, step=48)


def test_lr_size_mismatch_is_named(tmp_path):
    hr = write_hr(str(tmp_path / 'HR'))
    lr = tmp_path / 'LR' / 'X2'
    data.make_bicubic_lr(hr, str(lr), 3)  # x3 images where x2 are expected
    with pytest.raises(DataPreparationError, match=r'LR image .*img0.png is 43x56, but its HR image is 130x170'):
        data.prepare(hr, str(tmp_path / 'LR' / 'X{scale}'), str(tmp_path), scales=(2, ), crop=48, step=48)


def test_missing_lr_image_is_named(tmp_path):
    hr = write_hr(str(tmp_path / 'HR'))
    lr = tmp_path / 'LR' / 'X2'
    data.make_bicubic_lr(hr, str(lr), 2)
    os.remove(lr / 'img1.png')
    with pytest.raises(DataPreparationError, match=r'no x2 LR image for .*img1.png'):
        data.prepare(hr, str(tmp_path / 'LR' / 'X{scale}'), str(tmp_path), scales=(2, ), crop=48, step=48)


def test_crop_not_multiple_of_alignment_is_rejected(tmp_path):
    hr = write_hr(str(tmp_path / 'HR'))
    with pytest.raises(DataPreparationError, match='crop=50 must be a positive multiple of align=12'):
        data.prepare(hr, str(tmp_path / 'LR' / 'X{scale}'), str(tmp_path), scales=(2, ), crop=50, step=48)


def test_a_scale_the_alignment_cannot_serve_stops_before_any_work(tmp_path):
    """--scales 5 built the whole x5 LR folder, then stopped on align=12 (and called itself prepare_data)."""
    hr = write_hr(str(tmp_path / 'HR'))
    with pytest.raises(SystemExit) as exit_:
        prepare_data.main(['--hr', hr, '--out', str(tmp_path / 'out'), '--scales', '2', '5', '--crop', '48',
                           '--step', '48'])
    assert str(exit_.value) == ('basicsr-taylor-prepare: error: align=12 must be a multiple of the scale 5 (--align: '
                                'a common multiple of the scales, e.g. 60)')
    assert sorted(os.listdir(tmp_path)) == ['HR']
