"""Tables and plots of the ablation runner's records: results.md, results.csv and PNG plots per experiment
(each written atomically)."""
import csv
import io
import os
import os.path as osp

from ..utils.files import atomic_path, write_atomically

COLUMNS = ('variant', 'arch', 'window_size', 'patch_size', 'taylor_order', 'temperature_init', 'lr_patch', 'batch',
           'seed', 'iters', 'params', 'sec_per_iter', 'peak_memory_mib')


def _value(record, column):
    if column in record:
        return record[column]
    network = record['network']
    defaults = {'patch_size': 1, 'taylor_order': 2, 'temperature_init': 1.0} if record['arch'] == 'TaylorSwinIR' \
        else {'patch_size': 1, 'taylor_order': 'softmax', 'temperature_init': ''}
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


def markdown_table(records, memory_kind=None):
    table, sets = rows(records)
    kind = memory_kind or (records[0].get('peak_memory_kind') if records else '')
    memory = 'peak GPU memory (MiB)' if kind == 'cuda_max_allocated' else 'peak RSS (MiB)'
    header = ['variant', 'window', 'p', 'order', 'τ₀', 'LR patch × batch', 'params', 's/iter', memory]
    header += [f'{s} PSNR / SSIM' for s in sets]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for row in table:
        cells = [row['variant'], str(row['window_size']), str(row['patch_size']), str(row['taylor_order']),
                 str(row['temperature_init']), f'{row["lr_patch"]} × {row["batch"]}', f'{row["params"]:,}',
                 f'{row["sec_per_iter"]:.3f}', f'{row["peak_memory_mib"]:.0f}']
        cells += [f'{row[f"{s}_psnr"]:.2f} / {row[f"{s}_ssim"]:.4f}' if row[f'{s}_psnr'] != '' else '-' for s in sets]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_reports(records, out_dir, experiment, spec, args):
    """results.md, results.csv and plots for one experiment; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    table, sets = rows(records)
    csv_path = osp.join(out_dir, 'results.csv')
    rows_csv = io.StringIO(newline='')
    writer = csv.DictWriter(rows_csv, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    write_atomically(csv_path, rows_csv.getvalue())
    md_path = osp.join(out_dir, 'results.md')
    write_atomically(md_path, (
        f'# Ablation: {experiment}\n\n{" ".join(str(spec.get("description", "")).split())}\n\n'
        f'x{args.scale}, {args.iters} iterations per variant, seed {args.seed}, base LR patch '
        f'{args.lr_patch} × batch {args.batch} (equal LR pixels per step), embed {args.embed_dim}, '
        f'depths {list(args.depths)}, heads {list(args.heads)}. Y-channel PSNR/SSIM, crop = scale. '
        's/iter: one training step (forward, backward, optimizer, EMA; data loading excluded).\n\n'
        + markdown_table(records) + '\n'))
    return [md_path, csv_path] + plot(table, sets, out_dir, spec.get('x'))


def plot(table, sets, out_dir, x_key):
    """PSNR, s/iter and peak memory per variant (bars); against x_key for the TaylorSwinIR variants when given."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed (pip install -e ".[bench]"): no plots')
        return []
    metrics = [(f'{sets[0]}_psnr', f'{sets[0]} PSNR (dB)')] if sets else []
    metrics += [('sec_per_iter', 's / iteration'), ('peak_memory_mib', 'peak memory (MiB)')]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.2))
    names = [r['variant'] for r in table]
    for ax, (key, label) in zip(axes, metrics):
        values = [r[key] if r[key] != '' else float('nan') for r in table]
        ax.bar(range(len(values)), values, color=['C1' if r['arch'] == 'SwinIR' else 'C0' for r in table])
        ax.set_xticks(range(len(values)), names, rotation=60, ha='right', fontsize=7)
        ax.set_ylabel(label)
        if key.endswith('_psnr'):
            finite = [v for v in values if v == v]
            if finite:
                ax.set_ylim(min(finite) - 0.3, max(finite) + 0.15)
    fig.tight_layout()
    paths = [osp.join(out_dir, 'variants.png')]
    _save(fig, paths[0])
    plt.close(fig)
    taylor = [r for r in table if r['arch'] == 'TaylorSwinIR' and r[x_key] != ''] if x_key else []
    if len(taylor) >= 2:
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
        for ax, (key, label) in zip(axes, metrics):
            groups = {}
            for r in taylor:
                groups.setdefault((r['lr_patch'], r['batch']), []).append(r)
            for (patch, batch), group in sorted(groups.items()):
                group = sorted(group, key=lambda r: r[x_key])
                ax.plot([r[x_key] for r in group], [r[key] for r in group], 'o-',
                        label=f'TaylorSwinIR, LR {patch} × {batch}')
            for r in table:
                if r['arch'] == 'SwinIR' and r[key] != '':
                    ax.axhline(r[key], color='C3', lw=0.8, ls='--')
                    ax.annotate(r['variant'], (0.01, r[key]), xycoords=('axes fraction', 'data'), fontsize=7)
            ax.set_xlabel(x_key)
            ax.set_ylabel(label)
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(osp.join(out_dir, f'vs_{x_key}.png'))
        _save(fig, paths[-1])
        plt.close(fig)
    return paths


def _save(fig, path):
    """A figure as PNG, written atomically (an interrupted run never leaves half a plot)."""
    with atomic_path(path) as temp_path:
        fig.savefig(temp_path, format='png', dpi=110)
