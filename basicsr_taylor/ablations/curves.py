"""Validation curves of the records that carry them (``--val-freq``): the rows of curves.csv, the markdown tables
of results.md with the EMA's caveat, and the figure of curves.png (PSNR against iterations and CPU-hours)."""
import math
import os.path as osp

import yaml

from .variants import ema_decay

INIT_LEFT = 0.02  # points where the EMA holds less of the random initial weights than this are compared


def with_curves(records):
    return [r for r in records if r.get('curves')]


def curve_rows(records):
    """One dict per record, test set and validated iteration: PSNR, SSIM, process CPU-hours and wall hours."""
    return [dict(variant=r['variant'], seed=r['seed'], dataset=dataset, iter=p['iter'], psnr=p['psnr'],
                 ssim=p.get('ssim', ''), cpu_hours=p['cpu_seconds'] / 3600,
                 wall_hours=p['wall_seconds'] / 3600 if 'wall_seconds' in p else '')
            for r in with_curves(records) for dataset, points in r['curves'].items() for p in points]


def _by_variant(records):
    """{variant: [record, ...]} in order of first appearance."""
    out = {}
    for record in with_curves(records):
        out.setdefault(record['variant'], []).append(record)
    return out


def _datasets(records):
    return list(dict.fromkeys(d for r in with_curves(records) for d in r['curves']))


def _mean(values):
    return sum(values) / len(values) if values else None


def decay_of(record, root):
    """The EMA decay of a record's training options (its option file, relative to ``root``), or the runner's
    default for its iterations when that file is not there; (decay, from the option file)."""
    path = osp.join(root, record['options']) if record.get('options') else None
    try:
        with open(path) as f:
            return float(yaml.safe_load(f)['train'].get('ema_decay', 0)), True
    except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
        return ema_decay(record['iters']), False


def first_compared(decay):
    """The iteration from which the EMA holds less than INIT_LEFT of the initial weights (0 without an EMA)."""
    return math.ceil(math.log(INIT_LEFT) / math.log(decay)) if 0 < decay < 1 else 0


def ema_note(records, root):
    """What the validated weights are and how much of the random initialisation the EMA still holds per point."""
    iters = sorted({p['iter'] for r in with_curves(records) for ps in r['curves'].values() for p in ps})
    decays = {}
    for record in with_curves(records):
        decays.setdefault(decay_of(record, root), []).append(record)
    notes = []
    for (decay, from_file), group in decays.items():
        who = ', '.join(dict.fromkeys(r['variant'] for r in group)) + ', ' if len(decays) > 1 else ''
        if decay <= 0:
            notes.append(f'No EMA ({who.rstrip(", ") or "every run"}): the points validate net_g itself.')
            continue
        source = 'from the option file' if from_file else \
            f'`ema_decay({group[0]["iters"]})`, the runner\'s default min(0.999, 1 - 10 / iterations): the option ' \
            'file was not readable'
        start = first_compared(decay)
        later = [t for t in iters if t >= start]
        shown = [t for t in iters if t < start][:5] + later[:1]
        notes.append(f'd = {decay:g} ({who}{source}): ' + ', '.join(f'{100 * decay**t:.1f}% at {t:,}' for t in shown)
                     + (f'; compare from iteration {later[0]:,} on.' if later else
                        f'; under {100 * INIT_LEFT:.0f}% from iteration {start:,} on, which no point here reaches.'))
    if len(notes) == sum(n.startswith('No EMA') for n in notes):
        return ' '.join(notes)
    return ('BasicSR validates the EMA weights (net_g_ema, as the final test does) when ema_decay > 0. The EMA '
            'starts as a copy of the random initial weights and still holds d^t of them at iteration t, so early '
            f'points are biased low: compare the points where d^t < {100 * INIT_LEFT:.0f}%. ' + ' '.join(notes))


def markdown(records, root):
    """The 'Validation curves' section: the EMA note, then per test set one row per iteration and one column per
    variant (PSNR, mean over its seeds), and the CPU-hours at each variant's last point."""
    by_variant = _by_variant(records)
    lines = ['## Validation curves', '',
             'PSNR (dB) on every test set during training (one seed, or the mean over the seeds with a curve); '
             'curves.csv has every point per seed with SSIM and the CPU-hours (process CPU time of the training run, '
             'all its threads and the validations, from its start across resumed segments), curves.png plots PSNR '
             'against iterations and against CPU-hours (its y axes span the points compared, see below, when there '
             'are any: earlier ones lie below them; a dotted line marks the first). ' + ema_note(records, root), '']
    header = [f'{v} (mean of {len(rs)})' if len(rs) > 1 else v for v, rs in by_variant.items()]
    for dataset in _datasets(records):
        points = {v: {} for v in by_variant}
        last = {}
        for variant, rs in by_variant.items():
            for record in rs:
                curve = record['curves'].get(dataset, [])
                for p in curve:
                    points[variant].setdefault(p['iter'], []).append(p['psnr'])
                if curve:
                    last.setdefault(variant, []).append(curve[-1]['cpu_seconds'] / 3600)
        lines += [f'### {dataset}', '', '| iteration | ' + ' | '.join(header) + ' |',
                  '|' + ' --- |' * (len(header) + 1)]
        for t in sorted({t for ps in points.values() for t in ps}):
            cells = [f'{_mean(points[v][t]):.2f}' if t in points[v] else '-' for v in by_variant]
            lines.append(f'| {t:,} | ' + ' | '.join(cells) + ' |')
        cells = [f'{_mean(last[v]):.2f}' if v in last else '-' for v in by_variant]
        lines += ['| CPU-hours at the last point | ' + ' | '.join(cells) + ' |', '']
    return '\n'.join(lines)


def figure(plt, records, root):
    """Per test set a row of two panels, PSNR against iterations and against CPU-hours, one line per variant and
    seed (colour: variant, line style: seed); the y axis spans the points past the EMA's start-up when there are
    any (earlier points lie below it), a dotted line marks that iteration."""
    datasets, by_variant = _datasets(records), _by_variant(records)
    start = max(first_compared(decay_of(r, root)[0]) for r in with_curves(records))
    styles = ['-', '--', ':', '-.']
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 4.2 * len(datasets)), squeeze=False)
    for (ax_iter, ax_cpu), dataset in zip(axes, datasets):
        late = []
        for color, (variant, rs) in enumerate(by_variant.items()):
            for i, record in enumerate(rs):
                curve = record['curves'].get(dataset, [])
                if not curve:
                    continue
                psnr = [p['psnr'] for p in curve]
                late += [p['psnr'] for p in curve if p['iter'] >= start]
                style = dict(color=f'C{color % 10}', ls=styles[i % len(styles)], marker='o', ms=3,
                             label=f'{variant} seed {record["seed"]}')
                ax_iter.plot([p['iter'] for p in curve], psnr, **style)
                ax_cpu.plot([p['cpu_seconds'] / 3600 for p in curve], psnr, **style)
        if late and start:
            span = max(late) - min(late)
            for ax in (ax_iter, ax_cpu):
                ax.set_ylim(min(late) - max(0.5 * span, 0.2), max(late) + max(0.2 * span, 0.05))
            ax_iter.axvline(start, color='grey', lw=0.8, ls=':')
        ax_iter.set_xlabel('iteration')
        ax_cpu.set_xlabel('process CPU-hours')
        for ax, against in ((ax_iter, 'iterations'), (ax_cpu, 'CPU-hours')):
            ax.set_ylabel(f'{dataset} PSNR (dB)')
            ax.set_title(f'{dataset}: PSNR against {against}', fontsize=9)
            ax.grid(alpha=0.3)
        ax_iter.legend(fontsize=7)
    fig.tight_layout()
    return fig
