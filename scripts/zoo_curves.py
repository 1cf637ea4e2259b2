"""The bundled models' validation curves (docs/models.md): PSNR / SSIM against iterations, from BasicSR's tb_logger.

    python scripts/zoo_curves.py --tb-root tb_logger --pilot docs/ablation/long-budget/curves.csv --out docs/models

Reads the ``metrics/<set>/psnr`` and ``metrics/<set>/ssim`` scalars of the runs ``zoo_TaylorSwinIR-small_x{2,3,4}``
under --tb-root (every event file of a run: one per start; a step validated again keeps its last value). The x2
model continues the pilot: the pilot's TaylorSwinIR-w24 points from --pilot (the ablation's curves.csv) come first
and the x2 run's iterations are counted after the pilot's last one. Writes curves.csv (model, dataset, iteration,
psnr, ssim, stage) and curves.png (one panel per model; the y axis spans the points from --from-iter on, where the
EMA holds under 2% of the random initial weights), both atomically.
"""
import argparse
import csv
import glob
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

RUN = 'zoo_TaylorSwinIR-small_x{}'
PILOT_VARIANT = 'TaylorSwinIR-w24'


def tb_points(run_dir):
    """{dataset: {step: {'psnr': ..., 'ssim': ...}}} from every event file of a BasicSR tb_logger run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    points = {}
    files = sorted(glob.glob(osp.join(run_dir, 'events.out.tfevents.*')), key=osp.getmtime)
    if not files:
        raise FileNotFoundError(f'{run_dir}: no tensorboard event files')
    for path in files:  # in the order written: a later start's value of a step wins
        events = EventAccumulator(path, size_guidance={'scalars': 0})
        events.Reload()
        for tag in events.Tags()['scalars']:
            parts = tag.split('/')
            if len(parts) == 3 and parts[0] == 'metrics' and parts[2] in ('psnr', 'ssim'):
                for event in events.Scalars(tag):
                    points.setdefault(parts[1], {}).setdefault(event.step, {})[parts[2]] = event.value
    return points


def pilot_points(csv_path, variant=PILOT_VARIANT):
    """{dataset: {iteration: {'psnr', 'ssim'}}} of ``variant`` in an ablation curves.csv (seed 0)."""
    points = {}
    with open(csv_path, newline='') as f:
        for row in csv.DictReader(f):
            if row['variant'] == variant and row['seed'] == '0':
                points.setdefault(row['dataset'], {})[int(row['iter'])] = {'psnr': float(row['psnr']),
                                                                           'ssim': float(row['ssim'])}
    if not points:
        raise ValueError(f'{csv_path}: no points of {variant} seed 0')
    return points


def _rounded(value, digits=4):
    return '' if value is None else round(float(value), digits)  # tensorboard stores float32


def rows(tb_root, pilot_csv=None, scales=(2, 3, 4)):
    """The curves.csv rows of every scale whose run is under ``tb_root``; x2 after the pilot's points."""
    out = []
    for scale in scales:
        run_dir = osp.join(tb_root, RUN.format(scale))
        if not osp.isdir(run_dir):
            continue
        stages = [('zoo', tb_points(run_dir), 0)]
        if scale == 2 and pilot_csv:
            pilot = pilot_points(pilot_csv)
            offset = max(step for steps in pilot.values() for step in steps)  # x2 counts on from the pilot's end
            stages = [('pilot', pilot, 0), ('zoo', stages[0][1], offset)]
        for stage, points, offset in stages:
            for dataset, steps in points.items():
                for step in sorted(steps):
                    value = steps[step]
                    out.append(dict(model=f'TaylorSwinIR-small-x{scale}', dataset=dataset, iteration=step + offset,
                                    psnr=_rounded(value.get('psnr')), ssim=_rounded(value.get('ssim')), stage=stage))
    return out


def figure(table, from_iter):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(row['model'] for row in table))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [row for row in table if row['model'] == model and row['psnr'] != '']
        shown = []
        for color, dataset in enumerate(dict.fromkeys(row['dataset'] for row in mine)):
            points = [row for row in mine if row['dataset'] == dataset]
            ax.plot([row['iteration'] for row in points], [row['psnr'] for row in points], marker='o', ms=3,
                    color=f'C{color}', label=dataset)
            shown += [row['psnr'] for row in points if row['iteration'] >= from_iter]
        pilot_end = max((row['iteration'] for row in mine if row['stage'] == 'pilot'), default=None)
        if pilot_end:
            ax.axvline(pilot_end, color='grey', lw=0.8, ls=':')
            ax.text(pilot_end, 1, ' pilot | zoo', transform=ax.get_xaxis_transform(), fontsize=7, va='top')
        if shown:
            span = max(shown) - min(shown)
            ax.set_ylim(min(shown) - max(0.3 * span, 0.2), max(shown) + max(0.2 * span, 0.1))
        ax.set_title(f'{model}: Y PSNR, validation', fontsize=9)
        ax.set_xlabel('iteration')
        ax.set_ylabel('PSNR (dB)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, plt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tb-root', default='tb_logger', help='folder with the runs zoo_TaylorSwinIR-small_x{2,3,4}')
    parser.add_argument('--pilot', default=None, help='the pilot\'s curves.csv (x2 continues its TaylorSwinIR-w24)')
    parser.add_argument('--out', default='docs/models', help='output folder for curves.csv and curves.png')
    parser.add_argument('--from-iter', type=int, default=4000,
                        help='the y axes span the points from this iteration on (default 4000: EMA 0.999 start-up)')
    args = parser.parse_args(argv)
    from basicsr_taylor.utils.files import atomic_path, write_csv_atomically
    try:
        table = rows(args.tb_root, args.pilot)
        if not table:
            raise FileNotFoundError(f'no run {RUN.format("{2,3,4}")} under {args.tb_root}')
    except (OSError, ValueError, KeyError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    write_csv_atomically(osp.join(args.out, 'curves.csv'), table)
    fig, plt = figure(table, args.from_iter)
    with atomic_path(osp.join(args.out, 'curves.png')) as temp_path:
        fig.savefig(temp_path, dpi=110, format='png')
    plt.close(fig)
    print(f'{len(table)} points -> {osp.join(args.out, "curves.csv")}, {osp.join(args.out, "curves.png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
