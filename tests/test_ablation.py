"""basicsr-taylor-ablation end to end on tiny data with a 2-iteration budget: option files, training and testing
through BasicSR's pipelines, records, table, CSV; a second run skips finished variants and resumes an
interrupted one. Plus the option files of every experiment (equal pixels per step, shared variants)."""
import argparse
import csv
import json
import math
import os
import os.path as osp
import shutil
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


def test_validation_curves_and_constant_learning_rate(data):
    """--val-freq validates on every test set during training and the record keeps each set's curve (iterations
    and process CPU time from the run's start); --lr-schedule constant holds the learning rate; the record names
    its options relative to the root and the commit it ran."""
    work = data / 'curves'
    args = ['long-budget', '--iters', '2', '--train-hr', str(data / 'train_hr'), '--test', f'Tiny={data / "test_hr"}',
            f'Again={data / "test_hr"}', '--root', str(work), '--variants', 'TaylorSwinIR-w8', '--val-freq', '1',
            '--lr-schedule', 'constant', *TINY]
    run(args, data)
    [record_file] = os.listdir(work / 'ablation' / 'records')
    record = json.load(open(work / 'ablation' / 'records' / record_file))
    assert sorted(record['curves']) == ['Again', 'Tiny'] and record['segments'] == 1
    for points in record['curves'].values():
        assert [p['iter'] for p in points] == [1, 2]
        assert 0 < points[0]['cpu_seconds'] < points[1]['cpu_seconds'] <= record['train_cpu_seconds']
        assert 5 < points[1]['psnr'] < 60 and 0 < points[1]['ssim'] <= 1
    assert not osp.isabs(record['options']) and osp.isfile(work / record['options'])
    assert len(record['commits']) == 1 and len(record['commits'][0].rstrip('+')) == 40
    opt = yaml.safe_load(open(work / record['options']))
    assert opt['train']['scheduler'] == {'type': 'MultiStepLR', 'milestones': [3], 'gamma': 1.0}
    assert opt['val']['val_freq'] == 1 and opt['datasets']['val_2']['name'] == 'Again'


def test_validation_sets_and_frequency_stay_out_of_run_names(tmp_path):
    """The curves' options (--val-freq, the validation sets after the first) do not rename a run, so that earlier
    records keep matching; the learning-rate schedule does."""
    def names(*extra):
        root = tmp_path / str(len(os.listdir(tmp_path)))
        assert ablation.main(['taylor-vs-softmax', '--iters', '10', '--train-lmdb', 'gt.lmdb', 'lq.lmdb', '--test',
                              'Set=hr,lr', 'Other=hr2,lr2', '--root', str(root), '--dry-run', '--variants',
                              'TaylorSwinIR-w8', *extra]) == 0
        return os.listdir(root / 'ablation' / 'options')
    plain = names()
    assert names('--val-freq', '5') == plain
    assert names('--lr-schedule', 'constant') != plain


def test_merge_curves_counts_cpu_time_across_segments():
    """A run killed and resumed: the second segment's CPU time starts where the first one's last save left it, and
    an iteration validated twice keeps the later point."""
    from basicsr_taylor.ablations.runner import merge_curves
    first = dict(cpu_seconds=100.0, curves={'Set': [dict(iter=10, psnr=30.0, cpu_seconds=50.0),
                                                    dict(iter=20, psnr=31.0, cpu_seconds=90.0)]})
    second = dict(cpu_seconds=60.0, curves={'Set': [dict(iter=20, psnr=31.5, cpu_seconds=30.0),
                                                     dict(iter=30, psnr=32.0, cpu_seconds=55.0)]})
    curve = merge_curves([first, second])['Set']
    assert [(p['iter'], p['psnr'], p['cpu_seconds']) for p in curve] == [(10, 30.0, 50.0), (20, 31.5, 130.0),
                                                                          (30, 32.0, 155.0)]


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
    assert 'batch' in err[0]
    assert 'unknown experiment(s) nope; known: taylor-vs-softmax, taylor-vs-softmax-w24, window, heads' in err[1]
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


def _window_args(root, train_hr):
    args = ablation.parse_args(['window', '--iters', '1000', '--train-hr', *train_hr, '--test', 'Set5=/x/Set5/HR',
                                '--root', root, '--depths', '2', '--heads', '2', '--embed-dim', '60'])
    args.test = {'Set5': ('/x/Set5/HR', f'{root}/data/test/Set5/LRbicx2')}
    return args


def test_run_names_hash_the_data_by_name_not_by_place(tmp_path):
    """Records found under any root: the same data under two roots (and mount points) gives the same run name, other
    training folders another; a record under the old name (0.3.0) is renamed when found, and an interrupted run
    of that name keeps it (it resumes)."""
    from basicsr_taylor.ablations.inputs import training_dataroots
    from basicsr_taylor.ablations.runner import existing_record, run_names, training_name
    from basicsr_taylor.ablations.variants import TEMPLATES, load_yaml, variant_options
    base = load_yaml(osp.join(TEMPLATES, 'base.yml'))
    spec = {'arch': 'TaylorSwinIR', 'window_size': 24}

    def names(root, train_hr):
        args = _window_args(root, train_hr)
        return run_names(variant_options(base, spec, args, training_dataroots(args), 1), 'TaylorSwinIR-w24', args)

    here = names('/work/a/runs', ['/data/T91', '/data/BSD200'])
    assert here[0] == names('/mnt/b/other', ['/mnt/x/T91', '/mnt/x/BSD200/'])[0] != here[1]
    assert here[0] != names('/work/a/runs', ['/data/T91', '/data/DIV2K'])[0]  # other training data
    assert here[1] != names('/mnt/b/other', ['/mnt/x/T91', '/mnt/x/BSD200'])[1]  # the old names: by place
    root = str(tmp_path)
    new, old = names(root, ['/data/T91', '/data/BSD200'])
    ablation_dir = tmp_path / 'ablation'
    os.makedirs(ablation_dir / 'stats' / old)
    assert training_name(str(ablation_dir), (new, old)) == old  # started under the old name: resumes under it
    os.makedirs(ablation_dir / 'records')
    (ablation_dir / 'records' / f'{old}.json').write_text(json.dumps(dict(variant='TaylorSwinIR-w24', run=old)))
    args = _window_args(root, ['/data/T91', '/data/BSD200'])
    for flag in ('dry_run', 'report_only'):  # they read the old record and change no file
        record = existing_record('TaylorSwinIR-w24', spec, base, argparse.Namespace(**{**vars(args), flag: True}),
                                 training_dataroots(args), 1)
        assert record['run'] == old and os.listdir(ablation_dir / 'records') == [f'{old}.json']
    record = existing_record('TaylorSwinIR-w24', spec, base, args, training_dataroots(args), 1)
    assert record['run'] == old and os.listdir(ablation_dir / 'records') == [f'{new}.json']
    assert training_name(str(ablation_dir), (new, 'abl_never_started')) == new


def test_training_data_of_a_root_is_not_reused_for_other_folders(tmp_path):
    """A root's prepared training data remembers the --train-hr folder names it was made from: the same names pass,
    other names stop with an error that names both (instead of training on the old data)."""
    from basicsr_taylor.ablations.inputs import check_sources
    from basicsr_taylor.ablations.variants import AblationError
    hr_dir = str(tmp_path / 'train_min192_HR')
    check_sources(hr_dir, ['/data/T91', '/data/BSD200/'])
    assert (tmp_path / 'train_min192_HR.sources').read_text() == 'T91 BSD200\n'
    check_sources(hr_dir, ['/elsewhere/T91', '/elsewhere/BSD200'])  # the same folders, mounted elsewhere
    with pytest.raises(AblationError, match=r'prepared from --train-hr T91 BSD200, not DIV2K: use another --root'):
        check_sources(hr_dir, ['/data/DIV2K'])


def test_seeds_jobs_and_hold_out(data):
    """One variant x two seeds, both at once, one training image held out as a second test set: two records (seed
    in manual_seed and run name, jobs stored), a report with mean ± std; a later third seed adds only its run."""
    work = data / 'seeds'
    args = ['taylor-vs-softmax', '--iters', '2', '--train-hr', str(data / 'train_hr'), '--hold-out', 'train_hr=1',
            '--test', f'Tiny={data / "test_hr"}', '--root', str(work), '--variants', 'TaylorSwinIR-w8',
            '--seeds', '0,1', '--jobs', '2', *TINY]
    out = run(args, data)
    assert '2 run(s) in the grid, 0 with a record' in out and 'estimate: 2 run(s)' in out and '--jobs 2' in out
    assert '1 held out for testing' in out and out.count('training 2 iterations') == 2
    assert all(line.count('[taylor-vs-softmax]') <= 1 for line in out.splitlines())  # two runs' lines never glued
    held = work / 'data' / 'test' / 'train_hr-held1'
    assert os.listdir(held / 'HR') == ['astronaut.png'] and os.listdir(held / 'LRbicx2') == ['astronaut.png']
    lmdb = work / 'data' / 'train_min48_minus_train_hr-held1_HR_sub.lmdb'
    train_keys = open(lmdb / 'meta_info.txt').read()
    assert 'astronaut' not in train_keys and 'camera' in train_keys
    records = {f: json.load(open(work / 'ablation' / 'records' / f)) for f in os.listdir(work / 'ablation' / 'records')}
    assert sorted((r['variant'], r['seed'], r['jobs'], r['threads']) for r in records.values()) == [
        ('TaylorSwinIR-w8', 0, 2, 1), ('TaylorSwinIR-w8', 1, 2, 1)]
    assert all(('_s1_' in f) == (r['seed'] == 1) for f, r in records.items())
    assert all(set(r['test']) == {'Tiny', 'train_hr-held1'} for r in records.values())
    # training inside the run's wall time, the run inside run()'s 600 s timeout (seconds, not a timestamp)
    assert all(0 < r['train_wall_seconds'] < r['wall_seconds'] < 600 for r in records.values())
    loads = [r['load_average'] for r in records.values()]  # the machine's load, start and end of each run
    assert all(len(load['start']) == len(load['end']) == 3 and min(load['end']) >= 0 for load in loads)
    results = list(csv.DictReader(open(work / 'ablation' / 'taylor-vs-softmax' / 'results.csv')))
    assert sorted(float(r['load_15min_end']) for r in results) == sorted(load['end'][2] for load in loads)
    summary = list(csv.DictReader(open(work / 'ablation' / 'taylor-vs-softmax' / 'summary.csv')))
    psnr = [r['test']['train_hr-held1']['psnr'] for r in records.values()]
    assert summary[0]['seeds'] == '0 1'
    assert float(summary[0]['train_hr-held1_psnr_mean']) == pytest.approx(sum(psnr) / 2)
    # a later session with a third seed: the two finished runs are skipped, one is new (dry run)
    out = run([*args[:args.index('--seeds')], '--seeds', '0,1,2', '--dry-run', *TINY], data)
    assert '3 run(s) in the grid, 2 with a record' in out and out.count('seed 2: wrote') == 1
    # the records, committed and copied to another root on another machine (the data elsewhere too), are found
    moved, other = data / 'moved', data / 'other-root'
    shutil.copytree(data / 'train_hr', moved / 'train_hr')
    shutil.copytree(data / 'test_hr', moved / 'test_hr')
    shutil.copytree(work / 'ablation' / 'records', other / 'ablation' / 'records')
    elsewhere = [a.replace(str(data / 'train_hr'), str(moved / 'train_hr')).replace(
        str(data / 'test_hr'), str(moved / 'test_hr')).replace(str(work), str(other)) for a in args]
    out = run([*elsewhere, '--dry-run'], data)
    assert '2 run(s) in the grid, 2 with a record' in out
    out = run([*elsewhere, '--report-only'], data)
    assert 'wrote' in out and len(list(csv.DictReader(open(other / 'ablation' / 'taylor-vs-softmax' /
                                                           'results.csv')))) == 2


def _record(variant, seed, psnr, arch='TaylorSwinIR'):
    network = dict(type=arch, window_size=8, num_heads=[2], embed_dim=12)
    return dict(variant=variant, run=f'abl_{variant}_s{seed}', arch=arch, iters=2, seed=seed, lr_patch=16, batch=2,
                network=network, params=100, sec_per_iter=0.5 + seed, peak_memory_mib=10.,
                peak_memory_kind='cpu_max_rss', jobs=1,
                test={'A': dict(psnr=psnr, ssim=0.9), 'B': dict(psnr=psnr - 1, ssim=0.8)})


def test_report_of_seeded_records(tmp_path):
    """Mean ± std per variant and the paired difference to the baseline over the common seeds, in the table, the
    CSV and the plots (error bars)."""
    from basicsr_taylor.ablations.report import write_reports
    base = {0: 30.0, 1: 30.2, 2: 30.1}
    other = {0: 30.1, 1: 30.4, 2: 30.1, 3: 35.0}  # seed 3 has no baseline: left out of the paired difference
    records = [_record('Base', s, p, 'SwinIR') for s, p in base.items()]
    records += [_record('Other', s, p) for s, p in other.items()]
    args = ablation.parse_args(['x', '--iters', '2', '--train-lmdb', 'a', 'b', '--test', 'A=a', '--seeds', '0,1,2,3'])
    spec = dict(description='test', x='window_size', variants={'Other': {}, 'Base': {}}, baseline='Base')
    paths = write_reports(records, str(tmp_path), 'x', spec, args)
    summary = list(csv.DictReader(open(tmp_path / 'summary.csv')))
    row = {r['variant']: r for r in summary}
    assert row['Base']['A_rule'] == 'baseline' and row['Base']['A_dpsnr'] == ''
    assert float(row['Base']['A_psnr_mean']) == pytest.approx(30.1)
    assert float(row['Base']['A_psnr_std']) == pytest.approx(0.1)
    diffs = [0.1, 0.2, 0.0]  # Other - Base, seeds 0..2
    half = 4.303 * 0.1 / math.sqrt(3)
    assert row['Other']['A_n_paired'] == '3' and float(row['Other']['A_dpsnr']) == pytest.approx(sum(diffs) / 3)
    assert float(row['Other']['A_dpsnr_low']) == pytest.approx(0.1 - half, abs=1e-3)
    assert float(row['Other']['B_dpsnr_high']) == pytest.approx(0.1 + half, abs=1e-3)
    assert row['Other']['A_rule'] == 'undecided' and row['Other']['seeds'] == '0 1 2 3'  # low -0.15 < -0.05
    table = open(tmp_path / 'results.md').read()
    assert 'A Δ PSNR vs Base [95% CI]' in table and '| Other | 8 | 2 |' in table and '(n 3)' in table
    assert table.count('| Other | 3 |') == 1  # every run also listed with its seed
    assert '| s/iter | jobs | load |' in table and '| 1.500 | 1 | - |' in table  # a record without a load: '-'
    pytest.importorskip('matplotlib')
    assert {osp.basename(p) for p in paths} >= {'variants.png', 'results.md', 'results.csv', 'summary.csv'}
    assert (tmp_path / 'variants.png').stat().st_size > 1000



def test_report_of_validation_curves(tmp_path):
    """Records with curves: curves.csv (a row per variant, seed, set and iteration), a 'Validation curves' table
    per set (mean over seeds) with the EMA's share of the initial weights from the option file, curves.png; records
    without curves write none of them."""
    from basicsr_taylor.ablations.report import write_reports
    args = ablation.parse_args(['x', '--iters', '3000', '--train-lmdb', 'a', 'b', '--test', 'A=a', '--root',
                                str(tmp_path)])
    spec = dict(description='test', variants={'Base': {}, 'Other': {}}, baseline='Base')
    plain = [_record('Base', 0, 30.0, 'SwinIR'), _record('Other', 0, 30.5)]
    paths = write_reports(plain, str(tmp_path / 'plain'), 'x', spec, args)
    assert not any('curves' in p for p in paths) and not osp.exists(tmp_path / 'plain' / 'curves.csv')
    assert 'Validation curves' not in open(tmp_path / 'plain' / 'results.md').read()

    def curves(psnr, cpu):
        return {s: [dict(iter=1000 * i, psnr=psnr + i - d, ssim=0.8, cpu_seconds=cpu * i, wall_seconds=2. * cpu * i)
                    for i in (1, 2, 3)] for d, s in enumerate(('A', 'B'))}
    os.makedirs(tmp_path / 'ablation' / 'options')
    with open(tmp_path / 'ablation' / 'options' / 'base.yml', 'w') as f:
        yaml.safe_dump({'train': {'ema_decay': 0.999}}, f)
    records = [dict(_record('Base', 0, 30.0, 'SwinIR'), iters=3000, options='ablation/options/base.yml',
                    curves=curves(20.0, 3600.)),
               dict(_record('Other', 0, 30.5), iters=3000, curves=curves(21.0, 1800.)),  # no option file
               dict(_record('Other', 1, 30.5), iters=3000, curves=curves(22.0, 1800.)),
               _record('Base', 1, 30.1, 'SwinIR')]  # no curves: in the other tables only
    paths = write_reports(records, str(tmp_path), 'x', spec, args)
    rows = list(csv.DictReader(open(tmp_path / 'curves.csv')))
    assert len(rows) == 3 * 2 * 3 and list(rows[0])[:7] == ['variant', 'seed', 'dataset', 'iter', 'psnr', 'ssim',
                                                            'cpu_hours']
    row = {(r['variant'], r['seed'], r['dataset'], r['iter']): r for r in rows}
    assert float(row['Base', '0', 'B', '3000']['psnr']) == 22.0
    assert float(row['Other', '1', 'A', '2000']['cpu_hours']) == 1.0
    table = open(tmp_path / 'results.md').read()
    assert table.index('## Every run') < table.index('## Validation curves') < table.index('### A') < \
        table.index('### B')
    assert '| iteration | Base | Other (mean of 2) |' in table
    a, b = table.split('### A')[1].split('### B')
    assert '| 1,000 | 21.00 | 22.50 |' in a and '| 3,000 | 23.00 | 24.50 |' in a
    assert '| 1,000 | 20.00 | 21.50 |' in b and '| 3,000 | 22.00 | 23.50 |' in b
    assert '| CPU-hours at the last point | 3.00 | 1.50 |' in table
    assert 'd = 0.999 (Base, from the option file): 36.8% at 1,000, 13.5% at 2,000, 5.0% at 3,000; under 2% from ' \
        'iteration 3,911 on, which no point here reaches.' in table
    assert 'd = 0.996667 (Other, `ema_decay(3000)`' in table  # min(0.999, 1 - 10 / 3000), no option file
    assert '3.5% at 1,000, 0.1% at 2,000; compare from iteration 2,000 on.' in table
    pytest.importorskip('matplotlib')
    assert osp.join(str(tmp_path), 'curves.png') in paths and (tmp_path / 'curves.png').stat().st_size > 1000

def test_intervals_and_the_decision_rule(monkeypatch):
    from basicsr_taylor.ablations import intervals
    d = intervals.paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.0, 2: 2.5, 7: 9.0})
    assert d['n'] == 3 and d['seeds'] == [0, 1, 2] and d['mean'] == pytest.approx(2 / 3)
    half = 4.303 * math.sqrt(1 / 12) / math.sqrt(3)  # diffs 0.5, 1, 0.5: sd = sqrt(1/12)
    assert (d['low'], d['high']) == pytest.approx((2 / 3 - half, 2 / 3 + half), abs=1e-3)
    assert intervals.paired_difference({0: 1.0}, {1: 1.0}) is None
    assert intervals.paired_difference({0: 1.0}, {0: 0.5})['low'] is None
    assert intervals.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and intervals.mean_std([4.0]) == (4.0, 0.0)
    rule = lambda low, high: intervals.verdict(dict(low=low, high=high))  # noqa: E731
    assert rule(0.01, 0.2) == 'better' and rule(-0.3, -0.1) == 'worse' and rule(-0.04, -0.01) == 'as good (lower)'
    assert rule(-0.04, 0.1) == 'as good' and rule(-0.06, 0.1) == 'undecided' and intervals.verdict(None) == 'n < 2'
    scipy = pytest.importorskip('scipy.stats')
    for df in range(1, 31):  # the fallback table against scipy
        assert intervals.T975[df - 1] == pytest.approx(float(scipy.t.ppf(0.975, df)), abs=6e-4)
    monkeypatch.setitem(sys.modules, 'scipy.stats', None)  # scipy missing: the table
    assert intervals.t_quantile_975(4) == 2.776 and intervals.t_quantile_975(500) == 1.960
    assert 1.980 < intervals.t_quantile_975(60) < 2.042
