"""Tables and plots of the ablation runner's records: results.md, results.csv and PNG plots per experiment, and
curves.csv/curves.png when the records carry validation curves (each written atomically)."""
import os
import os.path as osp

from ..utils.files import atomic_path, write_atomically, write_csv_atomically
from . import curves
from .intervals import AS_GOOD_MARGIN, mean_std, paired_difference, verdict

COLUMNS = ('variant', 'arch', 'window_size', 'num_heads', 'patch_size', 'taylor_order', 'temperature_init',
           'temperature_param', 'lr_patch', 'batch', 'seed', 'iters', 'params', 'sec_per_iter', 'peak_memory_mib',
           'jobs', 'load_15min_end')


def _value(record, column):
    if column in record:
        return record[column]
    if column == 'jobs':  # records before --jobs existed ran one at a time
        return 1
    if column == 'load_15min_end':  # records before load_average existed: unknown
        return record['load_average']['end'][2] if 'load_average' in record else ''
    network = record['network']
    if column == 'num_heads':
        return network['num_heads'][0]
    defaults = {'patch_size': 1, 'taylor_order': 2, 'temperature_init': 1.0, 'temperature_param': 'linear'} \
        if record['arch'] == 'TaylorSwinIR' else {'patch_size': 1, 'taylor_order': 'softmax'}
    return network.get(column, defaults.get(column, ''))


def rows(records):
    """One flat dict per record: the COLUMNS, then <set>_psnr and <set>_ssim per test set."""
    sets = []
    for record in records:
        sets += [s for s in record['test'] if s not in sets]
    out = []
    for record in records:
        row = {c: _value(record, c) for c in COLUMNS}
        for s in sets:
            metrics = record['test'].get(s, {})
            row[f'{s}_psnr'], row[f'{s}_ssim'] = metrics.get('psnr', ''), metrics.get('ssim', '')
        out.append(row)
    return out, sets


def _tau(row):
    return '' if row['temperature_init'] == '' else f'{row["temperature_init"]}' + (
        ' (log)' if row['temperature_param'] == 'log' else '')


def markdown_table(records, memory_kind=None):
    """Every run (variant and seed) on its own line."""
    table, sets = rows(records)
    kind = memory_kind or (records[0].get('peak_memory_kind') if records else '')
    memory = 'peak GPU memory (MiB)' if kind == 'cuda_max_allocated' else 'peak RSS (MiB)'
    header = ['variant', 'seed', 'window', 'heads', 'p', 'order', 'τ₀', 'LR patch × batch', 'params', 's/iter',
              'jobs', 'load', memory] + [f'{s} PSNR / SSIM' for s in sets]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for row in table:
        cells = [row['variant'], str(row['seed']), str(row['window_size']), str(row['num_heads']),
                 str(row['patch_size']), str(row['taylor_order']), _tau(row), f'{row["lr_patch"]} × {row["batch"]}',
                 f'{row["params"]:,}', f'{row["sec_per_iter"]:.3f}', str(row['jobs']),
                 '-' if row['load_15min_end'] == '' else f'{row["load_15min_end"]:.1f}', f'{row["peak_memory_mib"]:.0f}']
        cells += [f'{row[f"{s}_psnr"]:.2f} / {row[f"{s}_ssim"]:.4f}' if row[f'{s}_psnr'] != '' else '-' for s in sets]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def summarise(records, baseline):
    """Per variant (in order of first appearance): the runs' mean ± std and, per test set, the paired PSNR
    difference to ``baseline`` over the common seeds with its 95% t-interval and the rule's verdict."""
    table, sets = rows(records)
    by_variant = {}
    for row in table:
        by_variant.setdefault(row['variant'], []).append(row)
    psnr = {v: {s: {r['seed']: r[f'{s}_psnr'] for r in rs if r[f'{s}_psnr'] != ''} for s in sets}
            for v, rs in by_variant.items()}
    out = []
    for variant, rs in by_variant.items():
        first = rs[0]
        item = dict(variant=variant, arch=first['arch'], window_size=first['window_size'],
                    num_heads=first['num_heads'], tau=_tau(first), layout=f'{first["lr_patch"]} × {first["batch"]}',
                    params=first['params'], seeds=sorted(r['seed'] for r in rs),
                    sec_per_iter=mean_std([r['sec_per_iter'] for r in rs]), first=first, sets={})
        for s in sets:
            values = list(psnr[variant][s].values())
            ssim = [r[f'{s}_ssim'] for r in rs if r[f'{s}_ssim'] != '']
            diff = None if variant == baseline or baseline not in psnr else \
                paired_difference(psnr[variant][s], psnr[baseline][s])
            item['sets'][s] = dict(psnr=_mean_std_n(values), ssim=_mean_std_n(ssim),
                                   diff=diff, verdict='baseline' if variant == baseline else verdict(diff))
        out.append(item)
    return out, sets


def _mean_std_n(values):
    return (*mean_std(values), len(values)) if values else None


def _pm(ms, digits):
    if ms is None:
        return '-'
    return f'{ms[0]:.{digits}f} (n 1)' if ms[2] == 1 else f'{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}'


def _diff_cell(diff):
    if diff is None:
        return '-'
    if diff['low'] is None:
        return f'{diff["mean"]:+.3f} (n 1)'
    return f'{diff["mean"]:+.3f} [{diff["low"]:+.3f}, {diff["high"]:+.3f}] (n {diff["n"]})'


def summary_table(summary, sets, baseline):
    header = ['variant', 'window', 'heads', 'τ₀', 'LR patch × batch', 'params', 'seeds', 's/iter']
    for s in sets:
        header += [f'{s} PSNR', f'{s} SSIM', f'{s} Δ PSNR vs {baseline} [95% CI]', f'{s} rule']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for item in summary:
        cells = [item['variant'], str(item['window_size']), str(item['num_heads']), item['tau'], item['layout'],
                 f'{item["params"]:,}', ','.join(map(str, item['seeds'])), f'{item["sec_per_iter"][0]:.3f}']
        for s in sets:
            m = item['sets'][s]
            cells += [_pm(m['psnr'], 2), _pm(m['ssim'], 4), _diff_cell(m['diff']), m['verdict']]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def summary_rows(summary, sets):
    out = []
    for item in summary:
        row = {k: item[k] for k in ('variant', 'arch', 'window_size', 'num_heads', 'tau', 'layout', 'params')}
        row.update(seeds=' '.join(map(str, item['seeds'])), sec_per_iter=item['sec_per_iter'][0])
        for s in sets:
            m = item['sets'][s]
            d = m['diff'] or {}
            row.update({f'{s}_psnr_mean': m['psnr'] and m['psnr'][0], f'{s}_psnr_std': m['psnr'] and m['psnr'][1],
                        f'{s}_ssim_mean': m['ssim'] and m['ssim'][0], f'{s}_ssim_std': m['ssim'] and m['ssim'][1],
                        f'{s}_dpsnr': d.get('mean'), f'{s}_dpsnr_low': d.get('low'), f'{s}_dpsnr_high': d.get('high'),
                        f'{s}_n_paired': d.get('n'), f'{s}_rule': m['verdict']})
        out.append(row)
    return out


def write_reports(records, out_dir, experiment, spec, args):
    """results.md, results.csv (every run), summary.csv (per variant), plots and, for records with validation
    curves, curves.csv and a 'Validation curves' section, for one experiment; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    baseline = spec.get('baseline') or next(iter(spec['variants']))
    table, sets = rows(records)
    summary, _ = summarise(records, baseline)
    csv_path, summary_path = osp.join(out_dir, 'results.csv'), osp.join(out_dir, 'summary.csv')
    write_csv_atomically(csv_path, table)
    write_csv_atomically(summary_path, summary_rows(summary, sets))
    md_path = osp.join(out_dir, 'results.md')
    curve_rows = curves.curve_rows(records)
    extra = [osp.join(out_dir, 'curves.csv')] if curve_rows else []
    if curve_rows:
        write_csv_atomically(extra[0], curve_rows)
    write_atomically(md_path, (
        f'# Ablation: {experiment}\n\n{" ".join(str(spec.get("description", "")).split())}\n\n'
        f'x{args.scale}, {args.iters} iterations per run, seeds {",".join(map(str, args.seeds))}, base LR patch '
        f'{args.lr_patch} × batch {args.batch} (equal LR pixels per step), embed {args.embed_dim}, '
        f'depths {list(args.depths)}, heads {list(args.heads)} unless the variant sets them. Y-channel PSNR/SSIM, '
        'crop = scale. s/iter: one training step (forward, backward, optimizer, EMA; data loading excluded), '
        'comparable only between runs with jobs 1 and the same load (the machine\'s 15-minute load average at the '
        'end of the run: about 1 when the run had the machine to itself).\n\n'
        f'## Per variant (mean ± std over seeds; paired difference to {baseline} over the same seeds)\n\n'
        f'Rule: "as good" when the lower 95% bound of the paired difference is above -{AS_GOOD_MARGIN} dB; '
        '"better"/"worse" when the interval excludes 0; "n < 2": one common seed, no interval.\n\n'
        + summary_table(summary, sets, baseline) + '\n\n## Every run\n\n' + markdown_table(records) + '\n'
        + ('\n' + curves.markdown(records, args.root) if curve_rows else '')))
    return [md_path, csv_path, summary_path] + extra + plot(summary, sets, out_dir, spec.get('x'), baseline,
                                                            records if curve_rows else None, args.root)


def plot(summary, sets, out_dir, x_key, baseline, curve_records=None, root='.'):
    """Per variant: PSNR mean ± std, paired PSNR difference to the baseline with its 95% interval, s/iter (bars
    with error bars); against x_key for the TaylorSwinIR variants when given; curves.png for curve_records."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed (pip install -e ".[bench]"): no plots')
        return []
    names = [item['variant'] for item in summary]
    colors = ['C1' if item['arch'] == 'SwinIR' else 'C0' for item in summary]
    panels = [('psnr', f'{s} PSNR (dB), mean ± std') for s in sets[:2]]
    panels += [('diff', f'{sets[0]} Δ PSNR vs {baseline} (dB), 95% CI')] if sets else []
    panels += [('sec', 's / iteration, mean ± std')]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (kind, label), s in zip(axes[0], panels, sets[:2] + sets[:1] + [None]):
        x = range(len(summary))
        if kind == 'psnr':
            ms = [item['sets'][s]['psnr'] or (float('nan'), 0) for item in summary]
            ax.bar(x, [m[0] for m in ms], yerr=[m[1] for m in ms], color=colors, capsize=3)
            finite = [m for m in ms if m[0] == m[0]]
            if finite:  # bars start near the smallest value, error bars stay visible
                ax.set_ylim(min(m[0] - m[1] for m in finite) - 0.3, max(m[0] + m[1] for m in finite) + 0.15)
        elif kind == 'diff':
            ds = [item['sets'][s]['diff'] for item in summary]
            mean = [d['mean'] if d else 0. for d in ds]
            err = [[d['mean'] - d['low'] if d and d['low'] is not None else 0. for d in ds],
                   [d['high'] - d['mean'] if d and d['low'] is not None else 0. for d in ds]]
            ax.errorbar(x, mean, yerr=err, fmt='o', capsize=4, color='k')
            ax.axhline(0, color='grey', lw=0.8)
            ax.axhline(-AS_GOOD_MARGIN, color='C3', lw=0.8, ls='--')
        else:
            ax.bar(x, [item['sec_per_iter'][0] for item in summary], yerr=[item['sec_per_iter'][1] for item in summary],
                   color=colors, capsize=3)
        ax.set_xticks(list(x), names, rotation=60, ha='right', fontsize=7)
        ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    paths = [osp.join(out_dir, 'variants.png')]
    _save(fig, paths[0])
    plt.close(fig)
    taylor = [i for i in summary if i['arch'] == 'TaylorSwinIR' and i['first'].get(x_key, '') != ''] \
        if x_key else []
    if len(taylor) >= 2 and sets:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        groups = {}
        for item in taylor:
            groups.setdefault((item['layout'], item['first']['temperature_param']), []).append(item)
        for (layout, param), group in sorted(groups.items()):
            group = sorted(group, key=lambda i: i['first'][x_key])
            ms = [item['sets'][sets[0]]['psnr'] or (float('nan'), 0) for item in group]
            ax.errorbar([item['first'][x_key] for item in group], [m[0] for m in ms], yerr=[m[1] for m in ms],
                        fmt='o-', capsize=4, label=f'TaylorSwinIR, LR {layout}, τ {param}')
        for item in summary:
            m = item['sets'][sets[0]]['psnr']
            if item['arch'] == 'SwinIR' and m:
                ax.axhline(m[0], color='C3', lw=0.8, ls='--')
                ax.annotate(item['variant'], (0.01, m[0]), xycoords=('axes fraction', 'data'), fontsize=7)
        ax.set_xlabel(x_key)
        ax.set_ylabel(f'{sets[0]} PSNR (dB), mean ± std')
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(osp.join(out_dir, f'vs_{x_key}.png'))
        _save(fig, paths[-1])
        plt.close(fig)
    if curve_records:
        fig = curves.figure(plt, curve_records, root)
        paths.append(osp.join(out_dir, 'curves.png'))
        _save(fig, paths[-1])
        plt.close(fig)
    return paths


def _save(fig, path):
    """A figure as PNG, written atomically (an interrupted run never leaves half a plot)."""
    with atomic_path(path) as temp_path:
        fig.savefig(temp_path, format='png', dpi=110)
