"""basicsr-taylor-ablation end to end on tiny data with a 2-iteration budget: option files, training and testing
through BasicSR's pipelines, records, table, CSV; a second run skips finished variants and resumes an
interrupted one. Plus the option files of every experiment (equal pixels per step, shared variants)."""
import csv
import os
import os.path as osp
import subprocess
import sys

import cv2
import pytest
import yaml

from basicsr_taylor import ablation
from basicsr_taylor.data import sample_photo

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])),
           OMP_NUM_THREADS='1')
TINY = ['--scale', '2', '--sub-image', '48', '--lr-patch', '16', '--batch', '2', '--embed-dim', '12',
        '--depths', '1', '--heads', '2', '--threads', '1', '--workers', '0']


def run(args, cwd):
    result = subprocess.run([sys.executable, '-m', 'basicsr_taylor.ablation', *args], cwd=cwd, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('ablation')
    train, test = root / 'train_hr', root / 'test_hr'
    os.makedirs(train)
    os.makedirs(test)
    for name in ('astronaut', 'camera'):
        cv2.imwrite(str(train / f'{name}.png'), sample_photo(name)[:128, :160])
    cv2.imwrite(str(train / 'small.png'), sample_photo('coins')[:40, :60])  # under --sub-image: left out
    cv2.imwrite(str(test / 'chelsea.png'), sample_photo('chelsea')[100:150, 150:222])  # 50x72
    return root


def test_runner_end_to_end_skips_and_resumes(data):
    work = data / 'work'
    args = ['taylor-vs-softmax', '--iters', '2', '--train-hr', str(data / 'train_hr'), '--test',
            f'Tiny={data / "test_hr"}', '--root', str(work), '--variants', 'SwinIR-w8', 'TaylorSwinIR-w8', *TINY]
    out = run(args, data)
    assert out.count('training 2 iterations') == 2 and 'left out' in out
    records = sorted(os.listdir(work / 'ablation' / 'records'))
    assert len(records) == 2
    option_dir = work / 'ablation' / 'options'
    options = {f: yaml.safe_load((option_dir / f).read_text()) for f in os.listdir(option_dir)}
    train_opts = {o['network_g']['type']: o for f, o in options.items() if not f.endswith('_test.yml')}
    assert train_opts['SwinIR']['model_type'] == 'SwinIRModel' and train_opts['TaylorSwinIR']['model_type'] == 'SRModel'
    for opt in train_opts.values():
        assert opt['train']['total_iter'] == 2 and opt['datasets']['train']['gt_size'] == 32
        assert opt['network_g']['window_size'] == 8 and opt['network_g']['embed_dim'] == 12
        assert opt['val']['metrics']['psnr'] == dict(type='calculate_psnr', crop_border=2, test_y_channel=True)
        assert osp.isfile(work / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth')
    table = open(work / 'ablation' / 'taylor-vs-softmax' / 'results.md').read()
    assert '| SwinIR-w8 |' in table and '| TaylorSwinIR-w8 |' in table and 'Tiny PSNR / SSIM' in table
    rows = list(csv.DictReader(open(work / 'ablation' / 'taylor-vs-softmax' / 'results.csv')))
    assert [r['variant'] for r in rows] == ['SwinIR-w8', 'TaylorSwinIR-w8']
    for row in rows:
        assert 5 < float(row['Tiny_psnr']) < 60 and 0 < float(row['Tiny_ssim']) <= 1
        assert float(row['sec_per_iter']) > 0 and float(row['peak_memory_mib']) > 0 and int(row['params']) > 0

    # again: both skipped; then an interrupted variant (no record, not marked trained) resumes from its state
    out = run(args, data)
    assert out.count('skipped') == 2 and 'training' not in out
    name = train_opts['TaylorSwinIR']['name']
    os.remove(work / 'ablation' / 'records' / f'{name}.json')
    os.remove(work / 'ablation' / 'stats' / name / 'trained')
    out = run(args, data)
    assert out.count('skipped') == 1 and '(resuming)' in out
    log = open(work / 'ablation' / 'logs' / f'{name}.log').read()
    assert 'Resuming training from epoch' in log
    assert len(os.listdir(work / 'ablation' / 'records')) == 2
    # another experiment with the same variant: shared, and its own table
    window = ['window', *args[1:args.index('--variants') + 1], 'SwinIR-w8', *TINY]
    out = run(window, data)
    assert 'skipped' in out and 'training' not in out
    assert '| SwinIR-w8 |' in open(work / 'ablation' / 'window' / 'results.md').read()


def test_option_files_of_every_experiment(tmp_path):
    """Dry run of all experiments: every option file builds its network; equal LR pixels per step; variants with
    the same options (w24 = order 2, w48-lr96 = temperature 1 = p1-w48) share one run."""
    from basicsr.archs import build_network
    args = ['all', '--iters', '10', '--train-lmdb', 'gt.lmdb', 'lq.lmdb', '--test', 'Set=hr,lr', '--root',
            str(tmp_path), '--dry-run', '--embed-dim', '12', '--depths', '1', '--heads', '2']
    assert ablation.main(args) == 0
    files = sorted(os.listdir(tmp_path / 'ablation' / 'options'))
    experiments = yaml.safe_load(open(osp.join(REPO, 'options', 'ablation', 'experiments.yml')))
    distinct = {name for spec in experiments.values() for name in spec['variants']}
    assert len(files) == len(distinct)
    hashes = {f.rsplit('_', 1)[1] for f in files}  # shared runs: w24-order2 = w24, w48-lr96-t1 = p1-w48 = w48-lr96
    assert len(hashes) == len(distinct) - 3
    for f in files:
        opt = yaml.safe_load(open(tmp_path / 'ablation' / 'options' / f))
        train = opt['datasets']['train']
        assert train['batch_size_per_gpu'] * (train['gt_size'] // 2)**2 == 4 * 48**2
        assert opt['manual_seed'] == (1 if 'seed+1' in f else 0)
        build_network(dict(opt['network_g']))
    with pytest.raises(SystemExit, match='batch'):
        ablation.main(args[:-6] + ['--batch', '2'])  # 2 x 48² pixels cannot be LR 96 patches
    with pytest.raises(SystemExit, match='unknown experiment'):
        ablation.main(['nope', *args[1:]])
