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
# run names the 0.2.0 runner gave (before --seeds and temperature_param), window experiment, /d/ paths
GOLDEN_NAMES = {'SwinIR-w8': 'abl_SwinIR-w8_411b2d31', 'TaylorSwinIR-w24': 'abl_TaylorSwinIR-w24_fff9f44c'}
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
    assert out.count('training 2 iterations') == 2 and 'left out' in out and 'estimate: 2 run(s)' in out
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
    assert [r['seed'] for r in rows] == ['0', '0'] and [r['jobs'] for r in rows] == ['1', '1']
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


def test_option_files_of_every_experiment(tmp_path, capsys):
    """Dry run of all experiments with two seeds: every option file builds its network; equal LR pixels per step;
    variants with the same options (w24 = order 2 = heads d30 = temperature t1, w48-lr96 = p1-w48 = ...) are one
    run per seed; the seed is BasicSR's manual_seed and in the name of every run but seed 0's."""
    from basicsr.archs import build_network
    args = ['all', '--iters', '10', '--train-lmdb', 'gt.lmdb', 'lq.lmdb', '--test', 'Set=hr,lr', '--root',
            str(tmp_path), '--dry-run', '--embed-dim', '60', '--depths', '1', '--heads', '2', '--seeds', '0,3']
    assert ablation.main(args) == 0
    files = sorted(os.listdir(tmp_path / 'ablation' / 'options'))
    experiments = yaml.safe_load(open(osp.join(REPO, 'options', 'ablation', 'experiments.yml')))
    distinct = {name for spec in experiments.values() for name in spec['variants']}
    assert 'SwinIR-w8-seed+1' not in distinct and {'heads', 'temperature'} <= set(experiments)
    shared = 6  # TaylorSwinIR-w24 = w24-order2 = w24-d30 = w24-t1; SwinIR-w8 = SwinIR-w8-d30;
    # TaylorSwinIR-w48-lr96 = w48-lr96-t1 = p1-w48
    assert len(files) == 2 * (len(distinct) - shared)
    heads = {}
    for f in files:
        opt = yaml.safe_load(open(tmp_path / 'ablation' / 'options' / f))
        train = opt['datasets']['train']
        assert train['batch_size_per_gpu'] * (train['gt_size'] // 2)**2 == 4 * 48**2
        assert opt['manual_seed'] == (3 if '_s3_' in f else 0) and opt['name'] == f[:-len('.yml')]
        heads[f.rsplit('_', 1)[0]] = opt['network_g']['num_heads']
        if opt['manual_seed'] == 0:
            build_network(dict(opt['network_g']))
    assert heads['abl_TaylorSwinIR-w24-d15'] == [4] and heads['abl_TaylorSwinIR-w24-d10_s3'] == [6]
    assert heads['abl_SwinIR-w8-d10'] == [6] and heads['abl_TaylorSwinIR-w24-logt4'] == [2]
    capsys.readouterr()
    assert ablation.main(args[:-8] + ['--batch', '2']) == 2  # 2 x 48² pixels cannot be LR 96 patches
    assert ablation.main(['nope', *args[1:]]) == 2
    assert ablation.main(['heads', *args[1:], '--variants', 'TaylorSwinIR-w8']) == 2
    assert ablation.main(['heads', *args[1:], '--report-only']) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith('basicsr-taylor-ablation: error: ') for line in err)
    assert 'batch' in err[0] and 'unknown experiment(s) nope; known: taylor-vs-softmax, window, heads' in err[1]
    assert 'unknown variant(s) TaylorSwinIR-w8 in heads; known: TaylorSwinIR-w24-d30' in err[2]
    assert 'no record of the selected runs' in err[3] and 'records there: none' in err[3]


def test_run_names_of_seed_zero_keep_their_hash():
    """The default (seed 0) run names are those of the runner before seeds and temperature_param: records made
    then still match (the hashes below are those of the 0.2.0 runner for these options)."""
    from basicsr_taylor.ablations.variants import TEMPLATES, load_yaml, run_name, variant_options
    args = ablation.parse_args(['window', '--iters', '1000', '--train-lmdb', '/d/gt.lmdb', '/d/lq.lmdb', '--test',
                                'Set5=/d/hr,/d/lr', '--depths', '2', '--heads', '2', '--embed-dim', '60'])
    base = load_yaml(osp.join(TEMPLATES, 'base.yml'))
    args.test = {'Set5': ('/d/hr', '/d/lr')}
    roots = dict(gt='/d/gt.lmdb', lq='/d/lq.lmdb')
    names = {v: run_name(variant_options(base, spec, args, roots, 0), v) for v, spec in
             [('SwinIR-w8', {'arch': 'SwinIR', 'window_size': 8}),
              ('TaylorSwinIR-w24', {'arch': 'TaylorSwinIR', 'window_size': 24, 'temperature_param': 'linear'})]}
    assert names == GOLDEN_NAMES
    one = run_name(variant_options(base, {'arch': 'SwinIR', 'window_size': 8}, args, roots, 1), 'SwinIR-w8')
    assert one.startswith('abl_SwinIR-w8_s1_') and one != names['SwinIR-w8']
