"""The TaylorIR ablations with one command: softmax vs Taylor, window size, temperature, patch size, Taylor order.

    basicsr-taylor-ablation window --iters 1000 --train-hr T91/ BSD200/ --test Set5=Set5/HR,Set5/LRbicx2
    python -m basicsr_taylor.ablation taylor-vs-softmax temperature --iters 20000 --train-lmdb GT.lmdb LQ.lmdb ...

For every variant of the named experiments (``options/ablation/experiments.yml``) it

1. writes a BasicSR option file from ``options/ablation/base.yml`` (the same seed, data, width, depth, budget
   and LR pixels per step for every variant: a variant with a larger LR patch gets a smaller batch);
2. trains it through BasicSR's own pipeline (``utils.options.run_basicsr_pipeline``, ``--auto_resume``: an
   interrupted variant continues from its last checkpoint) and tests it with BasicSR's test pipeline (Y-channel PSNR/SSIM,
   crop = scale) on every ``--test`` set;
3. records parameters, seconds per training step, peak memory and the metrics in a JSON file; a variant with a
   record is skipped when the command runs again (variants with identical options are shared between experiments).

Then it writes, per experiment, ``results.md`` (markdown table), ``results.csv`` and plots (``*.png``, with
matplotlib) under ``ROOT/ablation/<experiment>/``. BasicSR's folders (experiments/, tb_logger/, results/) are
under ROOT. ``--launcher pytorch --nproc-per-node N`` trains each variant with torchrun on N GPUs.
"""
import argparse
import copy
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time

import yaml

from . import data as prepare_data
from .ablation_report import write_reports

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEMPLATES = osp.join(REPO, 'options', 'ablation')
ARCHS = {'SwinIR': 'SwinIRModel', 'TaylorSwinIR': 'SRModel'}
TAYLOR_DEFAULTS = {'taylor_order': 2, 'temperature_init': 1.0, 'patch_size': 1}  # omitted: shared with defaults


class AblationError(ValueError):
    """A wrong experiment, variant or data argument."""


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def fill(template, values):
    """Replace every string '<key>' in a nested dict/list by values[key]."""
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    if isinstance(template, str) and template.startswith('<') and template.endswith('>'):
        return values[template[1:-1]]
    return template


def ema_decay(iters):
    return round(min(0.999, 1 - 10 / max(iters, 20)), 6)


def variant_options(base, variant, args, dataroots):
    """The BasicSR training option dict of one variant (without its name)."""
    variant = dict(variant)
    arch = variant.pop('arch')
    if arch not in ARCHS:
        raise AblationError(f'unknown arch {arch!r}; one of {sorted(ARCHS)}')
    lr_patch = variant.pop('lr_patch', args.lr_patch)
    seed = args.seed + variant.pop('seed_offset', 0)
    pixels = args.batch * args.lr_patch**2
    if pixels % lr_patch**2:
        raise AblationError(f'LR patch {lr_patch} cannot keep {args.batch} x {args.lr_patch}^2 pixels per step: '
                            'choose --batch so that the batch stays an integer')
    batch = pixels // lr_patch**2
    gt_size = lr_patch * args.scale
    if gt_size > args.sub_image:
        raise AblationError(f'GT patch {gt_size} exceeds the training sub-images ({args.sub_image}); raise --sub-image')
    values = dict(scale=args.scale, seed=seed, train_name='ablation_train', train_gt=dataroots['gt'],
                  train_lq=dataroots['lq'], gt_size=gt_size, workers=args.workers, batch=batch, iters=args.iters,
                  ema_decay=ema_decay(args.iters), print_freq=max(1, min(100, args.iters // 10)),
                  checkpoint_freq=max(1, min(args.checkpoint_freq, args.iters)))
    opt = fill(copy.deepcopy(base), values)
    opt['model_type'] = ARCHS[arch]
    network = dict(opt['network_g'])
    network.update(type=arch, upscale=args.scale, img_size=lr_patch, embed_dim=args.embed_dim,
                   depths=list(args.depths), num_heads=list(args.heads))
    if arch == 'TaylorSwinIR':
        variant = {k: v for k, v in variant.items() if not (k in TAYLOR_DEFAULTS and v == TAYLOR_DEFAULTS[k])}
    network.update(variant)
    if arch == 'SwinIR' and lr_patch <= network.get('window_size', 7):  # BasicSR's SwinIR: img_size <= window
        print(f'warning: BasicSR\'s SwinIR turns its shifted windows off when img_size ({lr_patch}) <= window_size '
              f'({network.get("window_size", 7)}): no communication between windows', file=sys.stderr)
    opt['network_g'] = network
    test_sets = list(args.test.items())
    opt['datasets']['val'] = _paired_disk(*test_sets[0])  # validation (once, at the end) on the first test set
    return opt


def _paired_disk(name, roots):
    return dict(name=name, type='PairedImageDataset', dataroot_gt=roots[0], dataroot_lq=roots[1],
                filename_tmpl='{}', io_backend=dict(type='disk'))


def run_name(opt, variant_name):
    """BasicSR experiment name: the variant's name and a hash of everything that defines its training."""
    key = json.dumps({k: v for k, v in opt.items() if k not in ('name', 'logger', 'val')}, sort_keys=True)
    return f'abl_{variant_name}_{hashlib.sha1(key.encode()).hexdigest()[:8]}'


def find_shared_record(ablation_dir, name):
    """The record of another variant whose options hash like ``name``'s, or None."""
    records_dir, suffix = osp.join(ablation_dir, 'records'), name.rsplit('_', 1)[1] + '.json'
    if not osp.isdir(records_dir):
        return None
    for f in sorted(os.listdir(records_dir)):
        if f.endswith('_' + suffix):
            return load_json(osp.join(records_dir, f))
    return None


def test_options(train_opt, name, model_path, test_sets):
    metrics = train_opt['val']['metrics']
    opt = {'name': name, 'model_type': train_opt['model_type'], 'scale': train_opt['scale'], 'num_gpu': 'auto',
           'manual_seed': train_opt['manual_seed'],
           'datasets': {f'test_{i + 1}': dict(_paired_disk(n, roots), phase='test')
                        for i, (n, roots) in enumerate(test_sets.items())},
           'network_g': train_opt['network_g'],
           'path': dict(pretrain_network_g=model_path, strict_load_g=True,
                        param_key_g='params_ema' if train_opt['train'].get('ema_decay', 0) > 0 else 'params'),
           'val': dict(save_img=False, suffix=None, metrics=metrics)}
    return opt


def write_yaml(opt, path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path + '.partial', 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    os.replace(path + '.partial', path)
    return path


def count_parameters(network_opt):
    import torch
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net = build_network(copy.deepcopy(network_opt))
    return sum(p.numel() for p in net.parameters())


def _worker_cmd(kind, opt_path, stats_path, args):
    worker = ['-m', 'basicsr_taylor.ablation_worker', kind, '--stats', stats_path, '-opt', opt_path]
    if kind == 'train':
        worker.append('--auto_resume')
    if kind == 'train' and args.launcher == 'pytorch':
        return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={args.nproc_per_node}', *worker,
                '--launcher', 'pytorch']
    return [sys.executable, *worker] + (['--launcher', args.launcher] if kind == 'train' and args.launcher != 'none'
                                        else [])


def run_child(cmd, log_path, args):
    """Run a worker; its output is appended to log_path (one line per 100 on the console)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    with open(log_path, 'a') as log:
        log.write(f'$ {" ".join(cmd)}\n')
        log.flush()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=args.root)
    if code:
        with open(log_path) as f:
            tail = f.readlines()[-30:]
        sys.stderr.write(''.join(tail))
        raise SystemExit(f'basicsr-taylor-ablation: {cmd[cmd.index("-opt") - 3]} failed (exit code {code}); '
                         f'log: {log_path}')


def summarise_training(stats_files):
    """Mean seconds per step over every training segment (warm-up steps of each segment left out)."""
    from .ablation_worker import WARMUP_STEPS
    steps, peak, kind, wall = [], 0, None, 0.0
    for path in stats_files:
        record = load_json(path)
        times = record['step_seconds']
        steps += times[WARMUP_STEPS:] if len(times) > 2 * WARMUP_STEPS else times
        peak = max(peak, record['peak_memory_bytes'])
        kind = record['peak_memory_kind']
        wall += record['wall_seconds']
    return dict(sec_per_iter=sum(steps) / len(steps) if steps else float('nan'), timed_steps=len(steps),
                peak_memory_mib=peak / 2**20, peak_memory_kind=kind, train_wall_seconds=wall)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def run_variant(experiment, variant_name, variant, base, args, dataroots):
    """Train and test one variant unless its record exists; return the record."""
    opt = variant_options(base, variant, args, dataroots)
    name = run_name(opt, variant_name)
    opt['name'] = name
    ablation_dir = osp.join(args.root, 'ablation')
    record_path = osp.join(ablation_dir, 'records', f'{name}.json')
    if osp.isfile(record_path):
        print(f'[{experiment}] {variant_name}: done ({record_path}), skipped', flush=True)
        return load_json(record_path)
    shared = find_shared_record(ablation_dir, name)
    if shared:  # another variant with the same options (e.g. TaylorSwinIR-w24 and TaylorSwinIR-w24-order2)
        print(f'[{experiment}] {variant_name}: same options as {shared["run"]} ({shared["variant"]}), shared',
              flush=True)
        return dict(shared, variant=variant_name)
    opt_dir, log_dir = osp.join(ablation_dir, 'options'), osp.join(ablation_dir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    train_path = write_yaml(opt, osp.join(opt_dir, f'{name}.yml'))
    if args.dry_run:
        print(f'[{experiment}] {variant_name}: wrote {train_path}', flush=True)
        return None
    log_path = osp.join(log_dir, f'{name}.log')
    stats_dir = osp.join(ablation_dir, 'stats', name)
    os.makedirs(stats_dir, exist_ok=True)
    model_path = osp.join(args.root, 'experiments', name, 'models', 'net_g_latest.pth')
    done_marker = osp.join(stats_dir, 'trained')
    if not osp.isfile(done_marker):
        segment = len([f for f in os.listdir(stats_dir) if f.startswith('train_')])
        print(f'[{experiment}] {variant_name}: training {args.iters} iterations'
              f'{" (resuming)" if segment else ""}, log {log_path}', flush=True)
        run_child(_worker_cmd('train', train_path, osp.join(stats_dir, f'train_{segment}.json'), args), log_path, args)
        open(done_marker, 'w').close()
    test_path = write_yaml(test_options(opt, name + '_test', osp.abspath(model_path), args.test),
                           osp.join(opt_dir, f'{name}_test.yml'))
    print(f'[{experiment}] {variant_name}: testing on {", ".join(args.test)}', flush=True)
    run_child(_worker_cmd('test', test_path, osp.join(stats_dir, 'test.json'), args), log_path, args)
    train_stats = sorted(osp.join(stats_dir, f) for f in os.listdir(stats_dir)
                         if f.startswith('train_') and '.rank' not in f)
    record = dict(variant=variant_name, run=name, arch=opt['network_g']['type'], options=train_path,
                  iters=args.iters, seed=opt['manual_seed'], lr_patch=opt['datasets']['train']['gt_size'] // args.scale,
                  batch=opt['datasets']['train']['batch_size_per_gpu'], network=opt['network_g'],
                  params=count_parameters(opt['network_g']), **summarise_training(train_stats),
                  test=load_json(osp.join(stats_dir, 'test.json'))['metrics'], finished=time.strftime('%Y-%m-%d %H:%M:%S'))
    os.makedirs(osp.dirname(record_path), exist_ok=True)
    with open(record_path + '.partial', 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(record_path + '.partial', record_path)
    test = ', '.join(f'{d} {m["psnr"]:.2f} dB / {m["ssim"]:.4f}' for d, m in record['test'].items())
    print(f'[{experiment}] {variant_name}: {test}; {record["sec_per_iter"]:.3f} s/iter, '
          f'{record["peak_memory_mib"]:.0f} MiB', flush=True)
    return record


def training_dataroots(args):
    """{'gt': lmdb, 'lq': lmdb}: the given LMDBs, or where :func:`prepare_training_data` puts them."""
    if args.train_lmdb:
        return dict(gt=osp.abspath(args.train_lmdb[0]), lq=osp.abspath(args.train_lmdb[1]))
    data_dir = osp.join(args.root, 'data')
    hr_sub, lr_sub = prepare_data.sub_dir_names(osp.join(data_dir, f'train_min{args.sub_image}_HR'), args.scale)
    return dict(gt=osp.join(data_dir, hr_sub + '.lmdb'), lq=osp.join(data_dir, lr_sub + '.lmdb'))


def prepare_training_data(args):
    """{'gt': lmdb, 'lq': lmdb}: given LMDBs, or HR folders -> one folder of links -> the data script."""
    if args.train_lmdb:
        return training_dataroots(args)
    data_dir = osp.join(args.root, 'data')
    hr_dir = osp.join(data_dir, f'train_min{args.sub_image}_HR')

    def link(tmp):
        skipped = 0
        for folder in args.train_hr:
            prefix = osp.basename(osp.normpath(folder))
            for path in prepare_data.list_images(folder):
                height, width = prepare_data.image_size(path)
                if min(height, width) < args.sub_image:  # every variant gets the same sub-images
                    skipped += 1
                    continue
                stem, ext = osp.splitext(osp.basename(path))
                os.symlink(osp.abspath(path), osp.join(tmp, f'{prefix}_{stem}{ext}'))
        print(f'training HR: {len(os.listdir(tmp))} images ({skipped} with a side under {args.sub_image} px left out)')

    prepare_data.build_dir_atomically(hr_dir, link)
    outputs = prepare_data.prepare(hr_dir, osp.join(data_dir, f'train_min{args.sub_image}_LR_bicubic', 'X{scale}'),
                                   data_dir, scales=(args.scale, ), crop=args.sub_image, step=args.sub_image // 2,
                                   align=12, workers=args.data_workers)
    roots = dict(gt=osp.abspath(outputs['hr'][1]), lq=osp.abspath(outputs[args.scale][1]))
    assert roots == training_dataroots(args), (roots, training_dataroots(args))
    return roots


def parse_test_sets(specs, scale, root):
    """NAME=HR[,LR] -> {name: (hr, lr)}; a missing LR folder is made with MATLAB bicubic under ROOT/data."""
    sets = {}
    for spec in specs:
        if '=' not in spec:
            raise AblationError(f'--test expects NAME=HR_FOLDER[,LR_FOLDER], got {spec!r}')
        name, folders = spec.split('=', 1)
        hr, _, lr = folders.partition(',')
        if not lr:
            lr = osp.join(root, 'data', 'test', name, f'LRbicx{scale}')
            prepare_data.make_bicubic_lr(hr, lr, scale)
        sets[name] = (osp.abspath(hr), osp.abspath(lr))
    return sets


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='basicsr-taylor-ablation', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('experiments', nargs='+', help='experiment names from EXPERIMENTS.yml, or "all"')
    parser.add_argument('--iters', type=int, required=True, help='training iterations of every variant')
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument('--train-hr', nargs='+', metavar='HR_DIR', help='HR training folders (prepared with the '
                      'data script: MATLAB-bicubic LR, sub-images, LMDBs under ROOT/data)')
    data.add_argument('--train-lmdb', nargs=2, metavar=('GT_LMDB', 'LQ_LMDB'), help='prepared training LMDBs')
    parser.add_argument('--test', nargs='+', required=True, metavar='NAME=HR[,LR]',
                        help='test sets (the first one also validates at the end of training)')
    parser.add_argument('--scale', type=int, default=2)
    parser.add_argument('--root', default='.', help='working folder (default: current directory)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--lr-patch', type=int, default=48, help='base LR patch side (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=4, help='batch at the base LR patch (default: %(default)s)')
    parser.add_argument('--embed-dim', type=int, default=60)
    parser.add_argument('--depths', type=int, nargs='+', default=[2, 2])
    parser.add_argument('--heads', type=int, nargs='+', default=[2, 2])
    parser.add_argument('--sub-image', type=int, default=None,
                        help='HR sub-image side for --train-hr (default: 96 x scale, the largest LR patch of the '
                        'templates); images with a shorter side are left out')
    parser.add_argument('--variants', nargs='+', help='run only these variant names')
    parser.add_argument('--workers', type=int, default=1, help='data loader workers per GPU')
    parser.add_argument('--data-workers', type=int, default=1, help='processes for data preparation')
    parser.add_argument('--threads', type=int, default=None, help='OMP_NUM_THREADS of the training processes')
    parser.add_argument('--checkpoint-freq', type=int, default=500, help='iterations between checkpoints')
    parser.add_argument('--launcher', choices=('none', 'pytorch', 'slurm'), default='none')
    parser.add_argument('--nproc-per-node', type=int, default=1, help='GPUs per variant with --launcher pytorch')
    parser.add_argument('--templates', default=TEMPLATES, help='folder with base.yml and experiments.yml')
    parser.add_argument('--dry-run', action='store_true', help='write the option files only')
    parser.add_argument('--report-only', action='store_true', help='only rewrite the tables and plots from records')
    args = parser.parse_args(argv)
    args.sub_image = args.sub_image or 96 * args.scale
    args.root = osp.abspath(args.root)
    return args


def main(argv=None):
    args = parse_args(argv)
    experiments = load_yaml(osp.join(args.templates, 'experiments.yml'))
    base = load_yaml(osp.join(args.templates, 'base.yml'))
    names = list(experiments) if args.experiments == ['all'] else args.experiments
    unknown = [n for n in names if n not in experiments]
    if unknown:
        raise SystemExit(f'basicsr-taylor-ablation: unknown experiment(s) {unknown}; known: {list(experiments)}')
    if len(args.depths) != len(args.heads):
        raise SystemExit('basicsr-taylor-ablation: --depths and --heads need the same length')
    os.makedirs(args.root, exist_ok=True)
    import basicsr_taylor  # noqa: F401  (before basicsr: compat fixes, archs registered)
    try:
        args.test = parse_test_sets(args.test, args.scale, args.root)
        dataroots = training_dataroots(args) if args.report_only else prepare_training_data(args)
        for experiment in names:
            records = []
            for variant_name, variant in experiments[experiment]['variants'].items():
                if args.variants and variant_name not in args.variants:
                    continue
                if args.report_only:
                    opt = variant_options(base, variant, args, dataroots)
                    name = run_name(opt, variant_name)
                    path = osp.join(args.root, 'ablation', 'records', f'{name}.json')
                    record = load_json(path) if osp.isfile(path) else \
                        find_shared_record(osp.join(args.root, 'ablation'), name)
                    record = record and dict(record, variant=variant_name)
                else:
                    record = run_variant(experiment, variant_name, variant, base, args, dataroots)
                if record is not None:
                    records.append(record)
            if records and not args.dry_run:
                out_dir = osp.join(args.root, 'ablation', experiment)
                paths = write_reports(records, out_dir, experiment, experiments[experiment], args)
                print(f'[{experiment}] wrote {", ".join(paths)}', flush=True)
    except (AblationError, prepare_data.DataPreparationError) as err:
        raise SystemExit(f'basicsr-taylor-ablation: error: {err}') from None
    return 0


if __name__ == '__main__':
    sys.exit(main())
