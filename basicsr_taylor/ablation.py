"""The TaylorIR ablations with one command: softmax vs Taylor, window size, heads, temperature, patch size, order.

    basicsr-taylor-ablation heads --iters 2000 --seeds 0,1,2 --train-hr T91/ BSD200/ --hold-out BSD200=20 \
        --test Set5=Set5/HR,Set5/LRbicx2
    python -m basicsr_taylor.ablation taylor-vs-softmax temperature --iters 20000 --train-lmdb GT.lmdb LQ.lmdb ...

For every variant of the named experiments (``options/ablation/experiments.yml``) and every seed it

1. writes a BasicSR option file from ``options/ablation/base.yml`` (the same data, width, depth, budget and LR
   pixels per step for every variant: a variant with a larger LR patch gets a smaller batch; the seed is
   BasicSR's manual_seed);
2. trains it through BasicSR's own pipeline (``options.pipeline.run_basicsr_pipeline``, ``--auto_resume``: an
   interrupted run continues from its last checkpoint) and tests it with BasicSR's test pipeline (Y-channel
   PSNR/SSIM, crop = scale) on every ``--test`` set (and the ``--hold-out`` images);
3. records parameters, seconds per training step, peak memory, jobs and the metrics in a JSON file, written
   atomically when the run is complete; a run with a record is skipped when the command runs again (runs with
   identical options are shared between experiments), so a grid resumes where it stopped.

Runs go seed by seed, ``--jobs`` at a time, after a printed estimate of the grid's time. Then it writes, per
experiment, ``results.md`` (mean ± std per variant, paired differences to the baseline with 95% t-intervals, every
run), ``results.csv``, ``summary.csv`` and plots (``*.png``, with matplotlib) under ``ROOT/ablation/<experiment>/``.
BasicSR's folders (experiments/, tb_logger/, results/) are under ROOT. ``--launcher pytorch --nproc-per-node N``
trains each run with torchrun on N GPUs.
"""
import argparse
import os
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a file: put the repository root, not basicsr_taylor/, on sys.path
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
    sys.path.insert(0, os.path.dirname(_here))

from basicsr_taylor.ablations.variants import TEMPLATES  # noqa: E402  (light: yaml and paths only)
from basicsr_taylor.utils.cli import answer_help_early  # noqa: E402


def parse_seeds(text):
    try:
        seeds = [int(s) for s in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers such as 0,1,2, got {text!r}') from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f'seeds must be distinct and >= 0, got {text!r}')
    return seeds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='basicsr-taylor-ablation', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('experiments', nargs='+', help='experiment names from EXPERIMENTS.yml, or "all"')
    parser.add_argument('--iters', type=int, required=True, help='training iterations of every variant')
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument('--train-hr', nargs='+', metavar='HR_DIR', help='HR training folders (prepared with the '
                      'data script: MATLAB-bicubic LR, sub-images, LMDBs under ROOT/data)')
    data.add_argument('--train-lmdb', nargs=2, metavar=('GT_LMDB', 'LQ_LMDB'), help='prepared training LMDBs')
    parser.add_argument('--hold-out', metavar='FOLDER=N', help='leave the first N images (by file name) of the '
                        '--train-hr folder named FOLDER out of training and test on them as the set FOLDER-heldN')
    parser.add_argument('--test', nargs='+', required=True, metavar='NAME=HR[,LR]',
                        help='test sets (the first one also validates at the end of training; with --val-freq, '
                        'every one validates every --val-freq iterations)')
    parser.add_argument('--val-freq', type=int, default=None, metavar='N',
                        help='validate on every test set every N iterations and keep the curves (PSNR/SSIM against '
                        'iterations and process CPU time) in the records; default: once, at the end, on the first')
    parser.add_argument('--lr-schedule', choices=('cosine', 'constant'), default='cosine',
                        help='cosine decay to 1e-6 over --iters (default), or the learning rate held constant (a '
                        'run that a longer one continues with its own decay)')
    parser.add_argument('--scale', type=int, default=2)
    parser.add_argument('--root', default='.', help='working folder (default: current directory)')
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument('--seeds', type=parse_seeds, default=[0], metavar='S[,S...]',
                       help='train every variant once per seed (BasicSR manual_seed; default: 0)')
    seeds.add_argument('--seed', type=int, dest='seed', help='one seed (same as --seeds S)')
    parser.add_argument('--jobs', type=int, default=1, help='runs trained at once (default 1); with more than one, '
                        'each gets --threads threads (default 1) and its s/iter is not comparable to a run alone')
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
    parser.add_argument('--dry-run', action='store_true',
                        help='prepare the training data and write the option files; train nothing')
    parser.add_argument('--no-estimate', action='store_true', help='do not estimate the grid\'s time first')
    parser.add_argument('--report-only', action='store_true', help='only rewrite the tables and plots from records')
    args = parser.parse_args(argv)
    if args.seed is not None:
        args.seeds = [args.seed]
    if args.jobs < 1:
        parser.error(f'--jobs must be >= 1, got {args.jobs}')
    if args.val_freq is not None and args.val_freq < 1:
        parser.error(f'--val-freq must be >= 1, got {args.val_freq}')
    if args.jobs > 1 and args.threads is None:
        args.threads = 1
    args.sub_image = args.sub_image or 96 * args.scale
    args.root = osp.abspath(args.root)
    return args


answer_help_early('ablation', parse_args)  # --help without torch or BasicSR; the heavy imports follow

import basicsr_taylor  # noqa: E402,F401  (before basicsr: compat fixes, archs registered)
from basicsr_taylor.ablations.grid import run_grid  # noqa: E402


def main(argv=None):
    """Exit code 0; 2 with a one-line error (unknown experiment or variant, no record, bad data argument); 1 when a
    run failed (the others finish first)."""
    return run_grid(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
