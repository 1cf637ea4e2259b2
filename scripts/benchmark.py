"""Memory and speed of TaylorShift attention and TaylorSwinIR against softmax attention and BasicSR's SwinIR.

Suites (all on one device, side by side in one run):
  op       attention op on a batch of windows: SwinIR's explicit softmax (N×N with relative position bias),
           torch's scaled_dot_product_attention, TaylorShift direct / efficient (/ triton, flex on CUDA), and on
           CUDA FlexAttention with the relative position bias as a score_mod (the fair large-window softmax);
           N = 8², 16², 24², 32², 48², 64² tokens, head dim 30 (and 16, 32), forward and forward+backward;
           at windows 24, 32, 48 also with SwinIR's shifted-window mask (" +shift": -100 mask, a block mask
           for flex, regions for TaylorShift).
  model    whole networks, same width and depth (embed 180, 6 RSTB × 6 blocks, 6 heads, mlp 2, pixelshuffle
           x2): BasicSR's SwinIR at window 8 and 48, TaylorSwinIR at window 48; inference on LR 64², 96²,
           128² (CPU; up to 512² on CUDA) and one training step (L1 + Adam) at the recipe's LR patch 48,
           batch 4.
  scaling  one RSTB (6 blocks, 180 dims): inference time and memory against the window size at LR 96², and
           against the LR size at window 48 (SwinIR also at window 8).
  ops      kernels launched per training step and per inference (counted on the CPU: the leaf aten ops that
           launch a kernel, benchmarking/kernels.py), TaylorSwinIR-w48 against SwinIR-w8, light net (embed 60,
           depths [2, 2], heads 2) and recipe width (embed 180, depths [6, 6], heads 6), LR 96, x2; TaylorShift's
           blocks as on CUDA (the kernels a GPU launches) and as on the CPU (cache-sized blocks).
  targets  the target configurations, TaylorSwinIR against BasicSR's SwinIR-w8 at the same width and depth:
           config S (embed 60, depths [2, 2], heads [2, 2], LR 96², batch 1: training step and inference),
           config L (embed 48, depths [4, 4], heads [3, 3], LR 48², batch 4: training step at windows 8 and 24),
           recipe size (embed 180, 6x6, training step at LR 48² batch 4, inference at LR 96²), and the op alone
           (N = 2304, d = 30, 4 windows x 6 heads, shifted-window regions, forward and forward+backward).
  heads    TaylorSwinIR-w48 at head dimension 30 / 15 / 10 against SwinIR-w8 (6 heads, and the Taylor default's),
           light width and recipe width, LR 96: training step and inference, time, memory, kernels
           (benchmarking/recipes.py).
  light    the light recipes (options/train_light_x*.yml) against SwinIR-light: parameters, FLOPs for a 1280x720
           output at x2/x3/x4, and at x2 time, memory and kernels (benchmarking/recipes.py).

Time: median of ``--repeats`` runs after ``--warmup`` runs. Peak memory: the increase over the memory held
before the call; on CUDA torch.cuda.max_memory_allocated, on CPU the running sum of the allocation and free
events that torch.profiler records with profile_memory=True (it sees every tensor allocation of the CPU
allocator), measured in a separate profiled run (the warm-up run for the slow model configurations).
A configuration that runs out of memory is recorded as OOM; on CPU the process's data segment is capped
(``--cpu-mem-cap-gb``, RLIMIT_DATA) so that an oversized allocation fails cleanly instead of swapping.

Writes <out>/results.csv and <out>/results.md after every configuration and <out>/*.png after every suite
(atomically: temp file, then rename), so an interrupted run keeps what it measured. The code: benchmarking/
(measure.py: timing, memory, environment; suites.py: the suites; report.py: targets, tables, plots).

    python scripts/benchmark.py --out docs/benchmarks/cpu            # full run (CPU: about 30 min)
    python scripts/benchmark.py --quick                              # tiny sizes: a smoke test (1-2 min),
                                                                     # written to results/benchmark-quick/
"""
import argparse
import csv
import os
import resource
import sys

import torch

_scripts = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_scripts), _scripts]  # the repository root (basicsr_taylor) and scripts/ (benchmarking)
import basicsr_taylor  # noqa: E402,F401  (also makes basicsr importable)
from benchmarking.kernels import run_ops_suite  # noqa: E402
from benchmarking.measure import environment  # noqa: E402
from benchmarking.recipes import run_heads_suite, run_light_suite  # noqa: E402
from benchmarking.report import Records, fmt, plots, target_rows, write_tables  # noqa: E402
from benchmarking.suites import run_model_suite, run_op_suite, run_scaling_suite, run_targets_suite  # noqa: E402


SUITES = ['op', 'model', 'scaling', 'ops', 'targets', 'heads', 'light']
FULL_OUT = 'docs/benchmarks/cpu'
QUICK_OUT = 'results/benchmark-quick'
QUICK_NOTE = ('--quick: tiny sizes, a smoke test of the code; these times and ratios mean nothing about the '
              'real sizes (their limits apply to the full run)')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--suites', default=','.join(SUITES), help=f'comma-separated: {", ".join(SUITES)}')
    parser.add_argument('--quick', action='store_true',
                        help=f'tiny sizes: a smoke test of the code (1-2 min), its numbers mean nothing; written to '
                        f'{QUICK_OUT}/ unless --out is given')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per configuration (median)')
    parser.add_argument('--slow-repeats', type=int, default=1,
                        help='timed runs for the slow model configurations (SwinIR-w48, training steps)')
    parser.add_argument('--model-repeats', type=int, default=None,
                        help='timed runs for the fast model configurations (default: --repeats)')
    parser.add_argument('--warmup', type=int, default=1)
    ints = lambda text: [int(x) for x in text.split(',') if x]
    parser.add_argument('--op-sides', type=ints, default=None, help='op suite: window sides, e.g. 24,32,48,64')
    parser.add_argument('--op-dims', type=ints, default=None, help='op suite: head dims, e.g. 30')
    parser.add_argument('--dtypes', type=lambda t: t.split(','), default=['float32'],
                        help='op suite: q, k, v dtypes, e.g. float32,bfloat16 (the GPU targets: bfloat16)')
    parser.add_argument('--model-sizes', type=ints, default=None, help='model suite: LR sizes, e.g. 256,512')
    parser.add_argument('--replot', metavar='CSV', default=None,
                        help='only rebuild results.md and the plots in --out from an earlier results.csv')
    parser.add_argument('--cpu-mem-cap-gb', type=float, default=16.0,
                        help='CPU: cap on the process data segment, so that OOM fails cleanly (0: none)')
    parser.add_argument('--out', default=None, help=f'output folder (default: {FULL_OUT}, with --quick {QUICK_OUT})')
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.suites.split(',') if s.strip()]
    unknown = set(suites) - set(SUITES)
    if unknown:
        parser.error(f'--suites: unknown suite(s) {sorted(unknown)}; choose from {", ".join(SUITES)}')
    args.suites = suites
    if args.out is None:  # a quick run never replaces the committed measurements by default
        args.out = QUICK_OUT if args.quick else FULL_OUT
    if args.repeats < 1 or args.warmup < 0 or args.slow_repeats < 1:
        parser.error('--repeats and --slow-repeats must be >= 1 and --warmup >= 0')
    return args


def read_csv(path):
    """Rows of an earlier results.csv with their numbers parsed back."""
    numeric = {'tokens': int, 'head_dim': int, 'window': int, 'time_s': float, 'peak_mb': float, 'gflops': float}
    with open(path, newline='', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, kind in numeric.items():
            row[key] = kind(row[key]) if row.get(key) not in (None, '') else None
        for key in ('batch', 'lr_size', 'kernels', 'params'):  # a number, or text such as '4x6' or '360x640'
            if (row.get(key) or '').isdigit():
                row[key] = int(row[key])
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        records = read_csv(args.replot)
        env_path = os.path.join(args.out, 'results.md')
        env = {'replotted_from': args.replot}
        device = torch.device('cuda' if any(r['method'] == 'taylor_triton' for r in records) else 'cpu')
        if os.path.exists(env_path):  # keep the environment table of the run
            with open(env_path, encoding='utf-8') as f:
                for line in f.read().split('## Targets')[0].splitlines()[4:]:
                    cells = [c.strip() for c in line.strip('|').split('|')]
                    if len(cells) == 2 and cells[0]:
                        env[cells[0]] = cells[1]
        write_tables(records, env, device, args.out)
        plots(records, args.out)
        return records
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    if args.threads:
        torch.set_num_threads(args.threads)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot  # noqa: F401  (load its shared libraries before the memory cap)
    if device.type == 'cpu' and args.cpu_mem_cap_gb > 0:
        cap = int(args.cpu_mem_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    env = environment(device, torch.get_num_threads())
    if device.type == 'cpu' and args.cpu_mem_cap_gb > 0:
        env['cpu_memory_cap'] = f'{args.cpu_mem_cap_gb:g} GiB (RLIMIT_DATA)'
    env['memory_method'] = ('torch.cuda.max_memory_allocated' if device.type == 'cuda' else
                            'torch.profiler(profile_memory=True): peak of the running sum of allocation events')
    records = Records(env, device, args.out)
    suites = dict(op=run_op_suite, model=run_model_suite, scaling=run_scaling_suite, ops=run_ops_suite,
                  targets=run_targets_suite, heads=run_heads_suite, light=run_light_suite)
    written = []
    for suite in args.suites:
        suites[suite](args, device, records)
        written = plots(records, args.out)  # after every suite
    print(f'wrote {os.path.join(args.out, "results.csv")}, results.md and {len(written)} plot(s)')
    if args.quick:
        print(QUICK_NOTE)
    for name, ratio, limit in target_rows(records, device):
        print(f'{name}: {fmt(ratio)} (limit {limit})' + (' [quick sizes]' if args.quick else ''))
    return records


if __name__ == '__main__':
    main()
