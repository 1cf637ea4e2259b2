"""End to end on CPU through BasicSR's pipeline: images -> data script -> LMDB -> training with validation and
checkpoints -> a run killed mid-way and continued with --auto_resume -> the test pipeline; 2-process gloo
torchrun; resume-state loading; bad option files."""
import glob
import io
import math
import os
import os.path as osp
import re
import shutil
import shlex
import signal
import socket
import subprocess
import sys
import time

import cv2
import pytest
import torch

import basicsr_taylor  # noqa: F401
import basicsr.utils.options as basicsr_options
from basicsr.metrics import calculate_psnr
from basicsr.models.lr_scheduler import MultiStepRestartLR
from basicsr_taylor import data, quickstart
from basicsr_taylor.data import sample_photo
from basicsr_taylor.options import checks as option_checks
from basicsr_taylor.options.keys import OptionError
from basicsr_taylor.options.pipeline import parse_options, run_basicsr_pipeline
from basicsr_taylor.quickstart import quickstart_options, write_options
from basicsr_taylor.utils import compat
from basicsr_taylor.utils.cli import accept_dashed_local_rank
from basicsr_taylor.utils.compat import SafeOrderedLoader
from conftest import change_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_NET = dict(type='TaylorSwinIR', upscale=2, in_chans=3, window_size=8, embed_dim=12, depths=[2], num_heads=[2],
                mlp_ratio=2, upsampler='pixelshuffle')
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])),
           OMP_NUM_THREADS='1')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """A working folder with train LMDBs made by the data script from crops of scikit-image photos and a
    validation folder of odd-sized images."""
    root = tmp_path_factory.mktemp('train')
    train_hr, val_hr = root / 'data' / 'train_HR', root / 'data' / 'val_HR'
    os.makedirs(train_hr)
    os.makedirs(val_hr)
    for name in ('astronaut', 'camera'):
        cv2.imwrite(str(train_hr / f'{name}.png'), sample_photo(name)[:120, :144])
    cv2.imwrite(str(val_hr / 'chelsea.png'), sample_photo('chelsea')[100:171, 150:233])  # 71x83: not a window multiple
    subprocess.run([sys.executable, osp.join(REPO, 'scripts', 'prepare_div2k.py'), '--hr', str(train_hr),
                    '--scales', '2', '--crop', '48', '--step', '24', '--workers', '1'],
                   cwd=root, env=ENV, check=True, capture_output=True)
    data.make_bicubic_lr(str(val_hr), str(root / 'data' / 'val_LR' / 'X2'), 2)
    return root


def tiny_options(root, name, total_iter, checkpoint_every):
    dataroots = dict(train_gt=str(root / 'data' / 'train_HR_sub.lmdb'),
                     train_lq=str(root / 'data' / 'train_LR_bicubic_X2_sub.lmdb'),
                     val_gt=str(root / 'data' / 'val_HR'), val_lq=str(root / 'data' / 'val_LR' / 'X2'))
    opt = quickstart_options(dataroots, total_iter=total_iter, network=TINY_NET, name=name)
    opt['datasets']['train'].update(gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt['val']['val_freq'] = checkpoint_every
    opt['logger'].update(print_freq=1, save_checkpoint_freq=checkpoint_every)
    return opt


def train_cmd(opt_path, *args, as_module=False):
    entry = ['-m', 'basicsr_taylor.train'] if as_module else [osp.join(REPO, 'basicsr_taylor', 'train.py')]
    return [sys.executable, *entry, '-opt', str(opt_path), *args]


def states(root, name):
    return sorted(int(osp.basename(p)[:-len('.state')])
                  for p in glob.glob(str(root / 'experiments' / name / 'training_states' / '*.state')))


def read_logs(root, name, kind='train'):
    return ''.join(open(p).read() for p in sorted(glob.glob(str(root / 'experiments' / name / f'{kind}_*.log'))))


def test_kill_auto_resume_then_test_pipeline(workdir, monkeypatch, capsys):
    root, name = workdir, 'e2e_tiny'
    opt = tiny_options(root, name, total_iter=60, checkpoint_every=4)
    opt_path = write_options(opt, str(root / 'e2e.yml'))

    # 1. train as a script (sys.path[0] = basicsr_taylor/) and kill it once it has logged an iteration past its
    # second checkpoint (BasicSR logs each iteration after the checkpoints of that iteration)
    proc = subprocess.Popen(train_cmd(opt_path), cwd=root, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        while not re.search(r'iter:\s+9, lr', read_logs(root, name)) and proc.poll() is None:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err[-3000:]  # killed, not finished or failed
    saved = states(root, name)
    assert saved[:2] == [4, 8] and max(saved) < 60
    assert not osp.exists(root / 'experiments' / name / 'models' / 'net_g_latest.pth')  # really killed mid-run
    # checkpoints are written under a temporary name and renamed: whatever bears a final name is complete
    for path in glob.glob(str(root / 'experiments' / name / '*' / '*.state')) + \
            glob.glob(str(root / 'experiments' / name / 'models' / 'net_g_*.pth')):
        torch.load(path, map_location='cpu', weights_only=False)

    # 2. the same command with --auto_resume (as a module, started by the quickstart's runner) continues from
    # the newest readable state
    monkeypatch.chdir(root)
    monkeypatch.setenv('PYTHONPATH', ENV['PYTHONPATH'])
    capsys.readouterr()
    quickstart.run_training(opt_path, 60, threads=1)
    printed = capsys.readouterr()  # not a terminal: no bar, BasicSR's lines and one line at the end
    assert '\r' not in printed.out + printed.err and re.search(r'\[epoch:\s*\d+, iter:\s+60, lr', printed.out)
    assert 'Validation SamplePhotosVal' in printed.out and re.search(r'\ntraining: 60/60 iters in \d+', printed.out)
    log = read_logs(root, name)
    resumed = int(re.search(r'Resuming training from epoch: \d+, iter: (\d+)\.', log).group(1))
    assert resumed in saved and resumed >= max(saved) - 4
    assert re.search(r'iter:\s+60, lr', log)  # ran to the end
    resumed_log = log[log.index('Resuming training from'):]
    # validated every 4 iterations up to 60, and not again after the last one ("Best: ... @ 60 iter" names the best)
    assert resumed_log.count('Validation SamplePhotosVal') == (60 - resumed) // 4
    assert f'iter:{resumed + 1:8,d}, lr' in log
    assert re.search(r'Validation SamplePhotosVal\s+# psnr: \d+\.\d+.*\s+# ssim: 0\.\d+', log)
    models = root / 'experiments' / name / 'models'
    assert osp.isfile(models / 'net_g_latest.pth') and osp.isfile(models / 'net_g_60.pth')
    assert glob.glob(str(root / 'tb_logger' / name / 'events.out.tfevents.*'))
    latest = torch.load(models / 'net_g_latest.pth', weights_only=True)
    assert set(latest) == {'params', 'params_ema'}

    # 3. the test pipeline on the validation images: PSNR/SSIM logged, images saved at 2x the LR size
    test_opt = quickstart.options_for_test(opt, str(models / 'net_g_latest.pth'))  # the quickstart's test file
    assert test_opt['name'] == 'e2e_tiny_test' and test_opt['network_g'] == opt['network_g']
    test_yml = write_options(test_opt, str(root / 'e2e_test.yml'))
    done = subprocess.run([sys.executable, osp.join(REPO, 'basicsr_taylor', 'test.py'), '-opt', test_yml], cwd=root,
                          env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = root / 'results' / 'e2e_tiny_test'
    sr = cv2.imread(str(result / 'visualization' / 'SamplePhotosVal' / 'chelsea_e2e_tiny_test.png'))
    assert sr.shape == (70, 82, 3)  # LR 35x41 (71x83 cropped to even) x 2
    log = ''.join(open(p).read() for p in glob.glob(str(result / 'test_*.log')))
    logged_psnr = float(re.search(r'# psnr: (\d+\.\d+)', log).group(1))
    gt = cv2.imread(str(root / 'data' / 'val_HR' / 'chelsea.png'))[:70, :82]
    assert logged_psnr == pytest.approx(calculate_psnr(sr, gt, 2, test_y_channel=True), abs=1e-3)

    # 4. the quickstart's summary evaluates the same EMA weights: same PSNR, next to bicubic
    rows = quickstart.evaluate(opt, str(models / 'net_g_latest.pth'))
    assert [r['image'] for r in rows] == ['chelsea']
    assert rows[0]['TaylorSwinIR'][0] == pytest.approx(logged_psnr, abs=1e-3)
    assert 20 < rows[0]['bicubic'][0] < 50 and 0 < rows[0]['bicubic'][1] < 1
    table, gain = quickstart.format_results(rows)
    assert gain == pytest.approx(rows[0]['TaylorSwinIR'][0] - rows[0]['bicubic'][0])
    assert 'chelsea' in table and ('above bicubic' if gain > 0 else 'below bicubic') in table

    # 5. the quickstart's picture: bicubic | TaylorSwinIR | ground truth, the same crop zoomed 2x under a label
    picture = quickstart.comparison_image(rows[0], box=(10, 20, 24, 30), zoom=2)
    band, width = 28, 60
    assert picture.shape == (band + 48, 3 * width + 2 * 4, 3)
    images = rows[0]['images']
    for i, method in enumerate(('bicubic', 'TaylorSwinIR', 'ground truth')):
        panel = picture[:, i * (width + 4):i * (width + 4) + width]
        crop = images[method][10:34, 20:50].repeat(2, axis=0).repeat(2, axis=1)
        assert (panel[band:] == crop).all(), method
        assert (panel[:band] < 128).any()  # a label is drawn
    assert (images['ground truth'] == gt).all() and (images['TaylorSwinIR'] == sr).all()


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch, capsys):
    """Data preparation draws tqdm bars on a terminal only; in a log file their redraws garbled the lines around
    them: there, one line per stage."""
    hr = tmp_path / 'hr'
    os.makedirs(hr)
    for name in ('astronaut', 'camera'):
        cv2.imwrite(str(hr / f'{name}.png'), sample_photo(name)[:48, :48])
    data.make_bicubic_lr(str(hr), str(tmp_path / 'lr'), 2)
    data.make_lmdb(str(tmp_path / 'lr'), str(tmp_path / 'lr.lmdb'))  # BasicSR's writer, with its bar replaced
    printed = capsys.readouterr()
    assert printed.err == '' and '\r' not in printed.out
    assert re.match(r'bicubic x2: 2/2 images in \d+\.\d s\n', printed.out)
    assert re.search(r'\nLMDB lr.lmdb: 2/2 images in \d+\.\d s\n', printed.out)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, 'stderr', Terminal())
    data.make_bicubic_lr(str(hr), str(tmp_path / 'lr2'), 2)
    data.make_lmdb(str(tmp_path / 'lr2'), str(tmp_path / 'lr2.lmdb'))
    assert 'images in' not in capsys.readouterr().out
    bars = sys.stderr.getvalue()
    assert '\rbicubic x2: 100%' in bars and '\rLMDB lr2.lmdb: 100%' in bars and 'Write ' not in bars


def test_mixed_precision_training_through_the_command(workdir):
    """train:precision bf16 (validation too), then continued in fp16 from the bf16 state, which has no GradScaler
    state (models/taylor_mixin.py; in-process tests: tests/test_precision.py). The option file names BasicSR's
    SRModel: the run gets the plugin's TaylorSRModel, with a notice."""
    root, name = workdir, 'amp_tiny'
    opt = tiny_options(root, name, total_iter=2, checkpoint_every=2)
    opt['model_type'] = 'SRModel'  # BasicSR's name, as in option files written for BasicSR alone
    opt['train']['precision'] = 'bf16'
    opt['val']['precision'] = 'bf16'
    opt['train']['scheduler'] = dict(type='MultiStepLR', milestones=[100], gamma=0.5)  # total_iter can grow
    opt_path = write_options(opt, str(root / 'amp.yml'))
    done = subprocess.run(train_cmd(opt_path, as_module=True), cwd=root, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_logs(root, name)
    assert done.stdout.count('model_type: SRModel runs as TaylorSRModel') == 1
    assert 'Precision: training bf16, validation bf16.' in log and 'Model [TaylorSRModel] is created.' in log
    losses = [float(x) for x in re.findall(r'l_pix: ([-+.e\d]+)', log)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert re.search(r'Validation SamplePhotosVal\s+# psnr: \d+\.\d+', log)
    saved = torch.load(root / 'experiments' / name / 'models' / 'net_g_2.pth', weights_only=True)
    assert {v.dtype for params in saved.values() for v in params.values() if v.is_floating_point()} == {torch.float32}
    assert 'grad_scaler' not in torch.load(root / 'experiments' / name / 'training_states' / '2.state',
                                           weights_only=False)

    done = subprocess.run(train_cmd(opt_path, '--auto_resume', '--force_yml', 'train:precision=fp16',
                                    'train:total_iter=4', as_module=True),
                          cwd=root, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_logs(root, name)
    assert 'Resuming training from epoch: 0, iter: 2.' in log and re.search(r'iter:\s+4, lr', log)
    assert 'the training state has no GradScaler state (not trained in fp16): loss scaling starts afresh' in log
    state = torch.load(root / 'experiments' / name / 'training_states' / '4.state', weights_only=False)
    assert state['iter'] == 4 and state['grad_scaler']['scale'] > 0


def test_resume_skips_an_unreadable_newest_state(tmp_path):
    opt = {'name': 'r', 'auto_resume': True, 'path': {'models': str(tmp_path / 'models')}, 'network_g': {}}
    state_dir = tmp_path / 'experiments' / 'r' / 'training_states'
    os.makedirs(state_dir)
    # BasicSR's own scheduler: its state holds a collections.Counter, which torch.load(weights_only=True) refuses
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    scheduler = MultiStepRestartLR(optimizer, milestones=[10, 20], gamma=0.5)
    torch.save({'epoch': 0, 'iter': 4, 'optimizers': [optimizer.state_dict()], 'schedulers': [scheduler.state_dict()]},
               state_dir / '4.state')
    with open(state_dir / '8.state', 'wb') as f:
        f.write(b'PK\x03\x04 truncated')  # a run killed while writing its newest state
    cwd = os.getcwd()
    os.chdir(tmp_path)  # BasicSR's auto-resume looks under ./experiments
    try:
        state = compat.load_resume_state(opt)
    finally:
        os.chdir(cwd)
    assert state['iter'] == 4 and opt['path']['resume_state'].endswith('4.state')
    assert state['schedulers'][0]['milestones'] == {10: 1, 20: 1}
    assert opt['path']['pretrain_network_g'] == osp.join(str(tmp_path / 'models'), 'net_g_4.pth')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo(workdir):
    root, name = workdir, 'ddp_tiny'
    opt = tiny_options(root, name, total_iter=4, checkpoint_every=4)
    opt['val']['val_freq'] = 100  # validation only at the end
    opt_path = write_options(opt, str(root / 'ddp.yml'))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
           osp.join(REPO, 'basicsr_taylor', 'train.py'), '-opt', opt_path, '--launcher', 'pytorch']
    done = subprocess.run(cmd, cwd=root, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    log = read_logs(root, name)
    assert 'World size (gpu number): 2' in log
    assert re.search(r'iter:\s+4, lr', log) and 'Validation SamplePhotosVal' in log
    assert states(root, name) == [4]
    assert osp.isfile(root / 'experiments' / name / 'models' / 'net_g_latest.pth')


def test_dashed_local_rank_from_torch_distributed_launch():
    assert accept_dashed_local_rank(['-opt', 'a.yml', '--local-rank=3', '--launcher', 'pytorch']) == \
        ['-opt', 'a.yml', '--local_rank=3', '--launcher', 'pytorch']
    assert accept_dashed_local_rank(['--local-rank', '1']) == ['--local_rank', '1']


def checked_options(root, **changes):
    opt = tiny_options(root, 'bad', total_iter=4, checkpoint_every=4)
    opt['is_train'] = True
    option_checks.check_options(change_options(opt, changes))


def test_good_tiny_options_pass_the_checks(workdir):
    checked_options(workdir)


@pytest.mark.parametrize('change, message', [
    ({'datasets:train:dataroot_gt': None}, 'datasets:train:dataroot_gt is missing'),
    ({'datasets:train:dataroot_lq': 'datasets/nowhere.lmdb'}, 'datasets:train:dataroot_lq: not found: '
     'datasets/nowhere.lmdb'),
    ({'datasets:val:dataroot_gt': None}, 'datasets:val:dataroot_gt is missing'),
    ({'network_g:type': 'TaylorSwinIRR'}, "network_g:type: unknown type 'TaylorSwinIRR'; registered: .*TaylorSwinIR"),
    ({'model_type': 'SRModell'}, "model_type: unknown type 'SRModell'"),
    ({'datasets:train:type': 'PairedDataset'}, "datasets:train:type: unknown type 'PairedDataset'"),
    ({'scale': 3, 'network_g:upscale': 3}, r'scale 3 does not match the data of datasets:train: GT 48x48 .* vs LQ '
     r'24x24 .*, which is x2'),
    ({'scale': 4}, 'network_g:upscale=2 differs from scale=4'),
    ({'datasets:train:gt_size': 96}, r'datasets:train:gt_size=96 is larger than 40 of the 40 GT images; the '
     r'smallest is .*\.png \(48x48\) in .*train_HR_sub.lmdb: use gt_size <= 48'),
    ({'network_g:window_size': 0}, r'network_g \(TaylorSwinIR\): window_size must be a positive int, got 0'),
    ({'network_g:depths': [2, 2]}, r'network_g \(TaylorSwinIR\): depths and num_heads must have the same length'),
    ({'train:precision': 'bf15'}, r"^train:precision: 'bf15' is not a precision; use one of fp32, fp16, bf16$"),
    ({'val:precision': 'half'}, r"^val:precision: 'half' is not a precision; use one of fp32, fp16, bf16$"),
])
def test_bad_options_name_the_problem(workdir, change, message):
    with pytest.raises(OptionError, match=message):
        checked_options(workdir, **change)


def test_image_folders_with_upper_case_extensions_pass_the_checks(workdir, tmp_path):
    """BasicSR's loader and basicsr-taylor-infer read .PNG files: the option check must see them too."""
    for which in ('gt', 'lq'):
        folder = tmp_path / which
        source = workdir / 'data' / ('val_HR' if which == 'gt' else 'val_LR/X2')
        os.makedirs(folder)
        for name in os.listdir(source):
            shutil.copy(source / name, folder / name.replace('.png', '.PNG'))
    checked_options(workdir, **{'datasets:val:dataroot_gt': str(tmp_path / 'gt'),
                                'datasets:val:dataroot_lq': str(tmp_path / 'lq')})


def test_bad_option_file_stops_the_training_command(workdir):
    opt = tiny_options(workdir, 'bad_cli', total_iter=4, checkpoint_every=4)
    opt['datasets']['train']['dataroot_lq'] = str(workdir / 'data' / 'missing_X2.lmdb')
    opt_path = write_options(opt, str(workdir / 'bad.yml'))
    done = subprocess.run(train_cmd(opt_path, as_module=True), cwd=workdir, env=ENV, capture_output=True, text=True)
    assert done.returncode != 0
    assert re.search(r'basicsr-taylor-train: error: .*bad.yml: datasets:train:dataroot_lq: not found: .*missing_X2',
                     done.stderr)
    assert not osp.exists(workdir / 'experiments' / 'bad_cli' / 'models')


def test_gt_size_is_checked_against_every_training_image(workdir, tmp_path):
    """Not just the first: BasicSR's random crop fails mid-run on any image smaller than gt_size."""
    gt, lq = tmp_path / 'gt', tmp_path / 'lq'
    os.makedirs(gt)
    os.makedirs(lq)
    photo = sample_photo('astronaut')
    for name, (height, width) in {'a': (64, 64), 'b': (40, 50), 'c': (30, 60), 'd': (64, 48)}.items():
        cv2.imwrite(str(gt / f'{name}.png'), photo[:height, :width])
        cv2.imwrite(str(lq / f'{name}.png'), photo[:height // 2, :width // 2])
    folders = {'datasets:train:dataroot_gt': str(gt), 'datasets:train:dataroot_lq': str(lq),
               'datasets:train:io_backend': {'type': 'disk'}}
    checked_options(workdir, **folders, **{'datasets:train:gt_size': 30})
    with pytest.raises(OptionError, match=r'gt_size=48 is larger than 2 of the 4 GT images; the smallest is c.png '
                       r'\(30x60\) .*: use gt_size <= 30'):
        checked_options(workdir, **folders, **{'datasets:train:gt_size': 48})
    lmdb = tmp_path / 'sizes.lmdb'  # the LMDB check reads meta_info.txt only
    os.makedirs(lmdb)
    (lmdb / 'meta_info.txt').write_text('x.png (96,96,3) 1\ny.png (96,40,3) 1\nz.png (64,96,3) 1\n')
    with pytest.raises(OptionError, match=r'gt_size=48 is larger than 1 of the 3 GT images; the smallest is y.png '
                       r'\(96x40\) in .*sizes.lmdb: use gt_size <= 40'):
        option_checks.check_dataset('train', dict(type='PairedImageDataset', io_backend={'type': 'lmdb'},
                                                  dataroot_gt=str(lmdb), dataroot_lq=str(lmdb), gt_size=48), 1)


def run_command(kind, argv, cwd):
    return subprocess.run([sys.executable, '-m', f'basicsr_taylor.{kind}', *argv], cwd=cwd, env=ENV,
                          capture_output=True, text=True)


def test_a_failed_start_moves_nothing(workdir, tmp_path):
    """A network option that cannot build stops train and test before BasicSR archives experiments/<name>,
    tb_logger/<name> or results/<name> (it used to rename them, then raise a traceback)."""
    for folder in ('experiments', 'tb_logger', 'results'):
        os.makedirs(tmp_path / folder / 'kept')
        (tmp_path / folder / 'kept' / 'net_g_latest.pth').write_bytes(b'trained')
    opt = tiny_options(workdir, 'kept', total_iter=4, checkpoint_every=4)
    opt['network_g']['window_size'] = 0
    opt_path = write_options(opt, str(tmp_path / 'kept.yml'))
    for kind in ('train', 'test'):
        done = run_command(kind, ['-opt', opt_path], tmp_path)
        assert done.returncode != 0
        assert done.stderr.strip().splitlines() == [
            f'basicsr-taylor-{kind}: error: {opt_path}: network_g (TaylorSwinIR): window_size must be a positive '
            'int, got 0'], done.stderr[-3000:]
        for folder in ('experiments', 'tb_logger', 'results'):
            assert os.listdir(tmp_path / folder) == ['kept']
            assert os.listdir(tmp_path / folder / 'kept') == ['net_g_latest.pth']


@pytest.mark.parametrize('kind', ['train', 'test'])
def test_unreadable_option_files_are_one_line_errors(tmp_path, monkeypatch, capsys, kind):
    """A missing file, broken YAML (with its line) and a Python tag, which BasicSR 1.4.2's full loader ran."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', [f'basicsr-taylor-{kind}'])
    (tmp_path / 'broken.yml').write_text('name: x\nscale: 2\n  network_g: [\n')
    (tmp_path / 'evil.yml').write_text('name: x\nscale: !!python/object/apply:os.makedirs ["code_ran"]\n')
    for path, message in [('missing.yml', 'missing.yml: cannot read the option file: No such file or directory'),
                          ('broken.yml', 'broken.yml: line 3: mapping values are not allowed'),
                          ('evil.yml', "evil.yml: line 2: could not determine a constructor for the tag "
                           "'tag:yaml.org,2002:python/object/apply:os.makedirs' (option files are read with a safe")]:
        with pytest.raises(SystemExit) as exit_:
            run_basicsr_pipeline(kind, ['-opt', path])
        assert str(exit_.value).startswith(f'basicsr-taylor-{kind}: error: {message}'), str(exit_.value)
        assert '\n' not in str(exit_.value)
    assert sorted(os.listdir(tmp_path)) == ['broken.yml', 'evil.yml']  # no code_ran, nothing else written
    # BasicSR's own reader (the full loader of basicsr.utils.options.ordered_yaml) is not used: its pipelines run
    # the plugin's parse_options
    import basicsr.test
    import basicsr.train
    assert basicsr.train.parse_options.func is basicsr.test.parse_options.func is parse_options
    assert basicsr_options.ordered_yaml()[0] is not SafeOrderedLoader and not osp.exists(tmp_path / 'code_ran')


def test_train_and_test_help_describe_every_flag(capsys):
    for kind in ('train', 'test'):
        with pytest.raises(SystemExit) as exit_:
            run_basicsr_pipeline(kind, ['--help'])
        assert exit_.value.code == 0
        text = ' '.join(capsys.readouterr().out.split())
        flags = [('-opt FILE', 'option file'), ('--launcher', 'torchrun'), ('--force_yml', 'override options')]
        if kind == 'train':  # the test command accepts them, as BasicSR's parser does, without listing them
            flags += [('--auto_resume', 'newest state'), ('--debug', 'validation every 8')]
        for flag, words in flags:
            assert re.search(re.escape(flag) + r'.*? ' + words, text), (kind, flag)


def test_training_runs_total_iter_on_a_small_dataset(workdir):
    """40 sub-images at batch 16: BasicSR counted 3 iterations per epoch, its loader gives 2 (drop_last), and
    train_pipeline stopped after 21 epochs = 42 of 60 iterations."""
    import basicsr.train
    from basicsr.utils import get_root_logger
    compat.install_training_fixes(parse_options)
    opt = tiny_options(workdir, 'small', total_iter=60, checkpoint_every=60)
    opt['datasets']['train']['batch_size_per_gpu'] = 16
    opt.update(dist=False, rank=0, world_size=1, num_gpu=0)
    for phase, dataset in opt['datasets'].items():
        dataset.update(phase=phase, scale=2)
    train_loader, _, _, total_epochs, total_iters = basicsr.train.create_train_val_dataloader(
        opt, get_root_logger('basicsr_taylor_test'))
    assert len(train_loader) == 2 and total_iters == 60
    assert (total_epochs + 1) * len(train_loader) >= 60  # train_pipeline runs epochs 0..total_epochs


def test_quickstart_prints_commands_the_user_can_type(monkeypatch, tmp_path):
    """The README's quickstart installs into .venv without activating it: the printed next commands carry .venv/bin/
    when the console scripts are not on PATH, and fall back to ``python -m`` when there is no script at all."""
    bin_dir = tmp_path / '.venv' / 'bin'
    bin_dir.mkdir(parents=True)
    (bin_dir / 'basicsr-taylor-test').write_text('#!/bin/sh\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'executable', str(bin_dir / 'python3'))
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    assert quickstart.command('test') == osp.join('.venv', 'bin', 'basicsr-taylor-test')
    assert quickstart.command('infer') == f'{bin_dir / "python3"} -m basicsr_taylor.infer'
    monkeypatch.setenv('PATH', str(bin_dir))
    (bin_dir / 'basicsr-taylor-test').chmod(0o755)
    assert quickstart.command('test') == 'basicsr-taylor-test'


def test_the_quickstarts_train_further_command_runs(workdir):
    """The quickstart printed `train -opt <its file> --auto_resume  # raise train:total_iter`, which crashed in
    BasicSR's scheduler (TypeError) because the resumed state brought back the old cosine periods. Now it prints
    a command for an option file with a second cosine period; that command runs. Starting a finished run again
    does not validate its last weights again."""
    root, name = workdir, 'further'
    opt = tiny_options(root, name, total_iter=8, checkpoint_every=4)
    opt_path = write_options(opt, str(root / 'further.yml'))
    done = subprocess.run(train_cmd(opt_path, as_module=True), cwd=root, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    first = read_logs(root, name)
    done = subprocess.run(train_cmd(opt_path, '--auto_resume', as_module=True), cwd=root, env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    again = read_logs(root, name)[len(first):]
    assert re.search(r'Resuming training from epoch: \d+, iter: 8\.', again) and 'Validation' not in again

    further_path = write_options(quickstart.options_to_train_further(opt), str(root / 'train_further.yml'))
    line = quickstart.next_commands(further_path, 'test.yml', 'lq', 'net.pth')[-1]
    args = shlex.split(line.split('#')[0])
    done = subprocess.run([sys.executable, '-m', 'basicsr_taylor.train', *args[args.index('-opt'):]], cwd=root, env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_logs(root, name)[len(first) + len(again):]
    assert re.search(r'Resuming training from epoch: \d+, iter: 8\.', log) and re.search(r'iter:\s+16, lr', log)
    assert log.count('Validation SamplePhotosVal') == 2  # at 12 and 16
    lrs = [float(x) for x in re.findall(r'iter:\s+\d+, lr:\(([\d.e+-]+),\)', log)]
    # BasicSR logs the rate before each step: the first cycle's end, then the second cycle at half the peak
    assert len(lrs) == 8 and lrs[0] == 1e-5
    assert lrs[1] == pytest.approx(1e-5 + 0.25 * (4e-3 - 1e-5) * (1 + math.cos(math.pi / 8)), rel=1e-3)
    assert states(root, name) == [4, 8, 12, 16]


def test_a_checkpoint_of_another_scale_is_a_one_line_error(workdir, tmp_path, monkeypatch):
    """basicsr-taylor-test with a x4 checkpoint for a x2 network printed BasicSR's 215-line state_dict traceback;
    infer and export already said it in one line."""
    from basicsr.archs import build_network
    model_path = str(tmp_path / 'net_g_x4.pth')
    torch.save({'params': build_network(dict(TINY_NET, upscale=4)).state_dict()}, model_path)
    opt = quickstart.options_for_test(tiny_options(workdir, 'x4_on_x2', total_iter=4, checkpoint_every=4), model_path)
    opt_path = write_options(opt, str(tmp_path / 'test.yml'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_basicsr_pipeline('test', ['-opt', opt_path])
    assert str(exit_.value) == (f'basicsr-taylor-test: error: {opt_path}: path:pretrain_network_g: checkpoint '
                                f'{model_path} does not fit the network of network_g: scale (upscale): checkpoint 4, '
                                'network 2. Use the option file the checkpoint was trained with.')
    assert sorted(os.listdir(tmp_path)) == ['net_g_x4.pth', 'test.yml']
