"""Training and testing one variant in a child process (the worker), with its record written once complete."""
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time

from ..utils.files import write_atomically
from .variants import REPO, count_parameters, data_names, run_name, test_options, variant_options, write_yaml
from .worker import WARMUP_STEPS


_OUTPUT_LOCK = threading.Lock()


def say(text, stream=None):
    """Write text and a newline in one piece: with --jobs > 1, print()'s separate writes of text and newline from two
    threads glue lines together."""
    stream = stream or sys.stdout
    with _OUTPUT_LOCK:
        stream.write(text + '\n')
        stream.flush()


def find_shared_record(ablation_dir, name):
    """The record of another variant whose options hash like ``name``'s, or None."""
    records_dir, suffix = osp.join(ablation_dir, 'records'), name.rsplit('_', 1)[1] + '.json'
    if not osp.isdir(records_dir):
        return None
    for f in sorted(os.listdir(records_dir)):
        if f.endswith('_' + suffix):
            return load_json(osp.join(records_dir, f))
    return None


def run_names(opt, variant_name, args):
    """(name, old name): the run's name with the data hashed by name (found under any root), and the one
    with absolute data paths that earlier runners gave it."""
    return (run_name(opt, variant_name, data_names(args.root, None if args.train_lmdb else args.train_hr)),
            run_name(opt, variant_name))


def find_record(ablation_dir, names, rename=True):
    """The record of a run (its own, then an identical variant's), or None. A record under the old name is
    renamed to the new one (atomically) when found, so that the records directory can be copied anywhere; with
    ``rename=False`` (--dry-run, --report-only: they change no file) it is only read."""
    records_dir = osp.join(ablation_dir, 'records')
    name, old = names
    path, old_path = osp.join(records_dir, f'{name}.json'), osp.join(records_dir, f'{old}.json')
    if not osp.isfile(path) and osp.isfile(old_path):
        if not rename:
            return load_json(old_path)
        os.replace(old_path, path)
    if osp.isfile(path):
        return load_json(path)
    return find_shared_record(ablation_dir, name) or find_shared_record(ablation_dir, old)


def training_name(ablation_dir, names):
    """The name to train under: the 0.3.0 one if a run of that name was started (it resumes), else the new."""
    name, old = names
    return old if osp.isdir(osp.join(ablation_dir, 'stats', old)) else name


def _worker_cmd(kind, opt_path, stats_path, args):
    worker = ['-m', 'basicsr_taylor.ablations.worker', kind, '--stats', stats_path, '-opt', opt_path]
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
        say(''.join(tail).rstrip('\n'), sys.stderr)
        raise SystemExit(f'basicsr-taylor-ablation: {cmd[cmd.index("-opt") - 3]} failed (exit code {code}); '
                         f'log: {log_path}')


def training_segments(stats_dir):
    """The stats files of a run's training processes (train_0.json, train_1.json, ...: one per start), in order."""
    names = [f for f in os.listdir(stats_dir) if f.startswith('train_') and f.endswith('.json') and '.rank' not in f]
    return [osp.join(stats_dir, f) for f in sorted(names, key=lambda f: int(f[len('train_'):-len('.json')]))]


def merge_curves(records):
    """{dataset: [point, ...]} of the validation points of a run's training segments in order, each point's
    ``cpu_seconds`` counted from the run's start (the CPU time of the earlier segments added, a killed one's up to
    its last save); an iteration validated again after a resume keeps its last point."""
    curves, offset = {}, 0.0
    for record in records:
        for dataset, points in record.get('curves', {}).items():
            merged = curves.setdefault(dataset, {})
            for point in points:
                merged[point['iter']] = dict(point, cpu_seconds=point['cpu_seconds'] + offset)
        offset += record.get('cpu_seconds', 0.0)
    return {dataset: [points[i] for i in sorted(points)] for dataset, points in curves.items()}


def summarise_training(stats_files):
    """Mean seconds per step over every training segment (warm-up steps of each segment left out), the peak
    memory, the wall and process CPU time of all segments, and the validation curves (when there were any)."""
    steps, peak, kind, wall, cpu, records = [], 0, None, 0.0, 0.0, []
    for path in stats_files:
        record = load_json(path)
        records.append(record)
        times = record['step_seconds']
        steps += times[WARMUP_STEPS:] if len(times) > 2 * WARMUP_STEPS else times
        peak = max(peak, record['peak_memory_bytes'])
        kind = record['peak_memory_kind']
        wall += record['wall_seconds']
        cpu += record.get('cpu_seconds', 0.0)
    summary = dict(sec_per_iter=sum(steps) / len(steps) if steps else float('nan'), timed_steps=len(steps),
                   peak_memory_mib=peak / 2**20, peak_memory_kind=kind, train_wall_seconds=wall)
    curves = merge_curves(records)
    if curves:
        summary.update(train_cpu_seconds=cpu, segments=len(records), curves=curves)
    return summary


def segment_commits(stats_dir):
    """The distinct commits the run's training segments ran, in order (runs before this field: [])."""
    path = osp.join(stats_dir, 'commits')
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return list(dict.fromkeys(line.split()[1] for line in f if len(line.split()) == 2))


def source_commit():
    """The git commit of the code that runs (REPO's HEAD), with '+' when it has uncommitted changes; None outside
    a git checkout."""
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ('+' if dirty.stdout.strip() else '')


def load_json(path):
    with open(path) as f:
        return json.load(f)


def run_variant(experiment, variant_name, variant, base, args, dataroots, seed):
    """Train and test one variant with one seed unless its record exists; return the record (written atomically
    once training and testing are complete: an interrupted run leaves none and resumes from its checkpoint)."""
    opt = variant_options(base, variant, args, dataroots, seed)
    ablation_dir = osp.join(args.root, 'ablation')
    names = run_names(opt, variant_name, args)
    tag = f'[{experiment}] {variant_name} seed {seed}'
    found = find_record(ablation_dir, names, rename=not args.dry_run)
    if found and found['variant'] == variant_name:
        say(f'{tag}: done ({found["run"]}), skipped')
        return found
    if found:  # another variant with the same options (e.g. TaylorSwinIR-w24 and TaylorSwinIR-w24-order2)
        say(f'{tag}: same options as {found["run"]} ({found["variant"]}), shared')
        return dict(found, variant=variant_name)
    name = training_name(ablation_dir, names)
    opt['name'] = name
    record_path = osp.join(ablation_dir, 'records', f'{names[0]}.json')
    started, load_start = time.time(), os.getloadavg()
    opt_dir, log_dir = osp.join(ablation_dir, 'options'), osp.join(ablation_dir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    train_path = write_yaml(opt, osp.join(opt_dir, f'{name}.yml'))
    if args.dry_run:
        say(f'{tag}: wrote {train_path}')
        return None
    log_path = osp.join(log_dir, f'{name}.log')
    stats_dir = osp.join(ablation_dir, 'stats', name)
    os.makedirs(stats_dir, exist_ok=True)
    model_path = osp.join(args.root, 'experiments', name, 'models', 'net_g_latest.pth')
    done_marker = osp.join(stats_dir, 'trained')
    if not osp.isfile(done_marker):
        segment = len([f for f in os.listdir(stats_dir) if f.startswith('train_')])
        say(f'{tag}: training {args.iters} iterations'
            f'{" (resuming)" if segment else ""}, log {log_path}')
        with open(osp.join(stats_dir, 'commits'), 'a') as f:  # the code each training segment ran
            f.write(f'{segment} {source_commit()}\n')
        run_child(_worker_cmd('train', train_path, osp.join(stats_dir, f'train_{segment}.json'), args), log_path, args)
        open(done_marker, 'w').close()
    test_path = write_yaml(test_options(opt, name + '_test', osp.abspath(model_path), args.test),
                           osp.join(opt_dir, f'{name}_test.yml'))
    say(f'{tag}: testing on {", ".join(args.test)}')
    run_child(_worker_cmd('test', test_path, osp.join(stats_dir, 'test.json'), args), log_path, args)
    train_stats = training_segments(stats_dir)
    record = dict(variant=variant_name, run=name, arch=opt['network_g']['type'],
                  options=osp.relpath(train_path, args.root),  # relative to the root: records move between machines
                  iters=args.iters, seed=opt['manual_seed'], lr_patch=opt['datasets']['train']['gt_size'] // args.scale,
                  batch=opt['datasets']['train']['batch_size_per_gpu'], network=opt['network_g'],
                  params=count_parameters(opt['network_g']), **summarise_training(train_stats),
                  test=load_json(osp.join(stats_dir, 'test.json'))['metrics'], jobs=args.jobs,
                  threads=args.threads, wall_seconds=time.time() - started,
                  # the machine's 1/5/15-minute load averages: another job on the cores makes s/iter incomparable
                  load_average=dict(start=list(load_start), end=list(os.getloadavg())),
                  finished=time.strftime('%Y-%m-%d %H:%M:%S'), commits=segment_commits(stats_dir))
    write_atomically(record_path, json.dumps(record, indent=1))
    test = ', '.join(f'{d} {m["psnr"]:.2f} dB / {m["ssim"]:.4f}' for d, m in record['test'].items())
    say(f'{tag}: {test}; {record["sec_per_iter"]:.3f} s/iter, '
        f'{record["peak_memory_mib"]:.0f} MiB')
    return record


def existing_record(variant_name, variant, base, args, dataroots, seed):
    """The record of a finished variant and seed (its own or an identical variant's), or None."""
    names = run_names(variant_options(base, variant, args, dataroots, seed), variant_name, args)
    record = find_record(osp.join(args.root, 'ablation'), names, rename=not (args.dry_run or args.report_only))
    return record and dict(record, variant=variant_name)
