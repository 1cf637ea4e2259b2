"""Reports: the targets table, results.md, results.csv and the plots (every file written atomically)."""
import csv
import io
import os


from basicsr_taylor.utils.files import atomic_path, write_atomically

from .measure import FIELDS


def _lookup(records, **key):
    for r in records:
        if all(r.get(k) == v for k, v in key.items()):
            return r
    return None


def _ratio(a, b, field):
    if a is None or b is None or a['status'] != 'ok' or b['status'] != 'ok' or not b[field]:
        return None
    return a[field] / b[field]


def target_rows(records, device):
    """(target, measured ratio, limit) for every target of the issue that this run measured."""
    rows = []
    op = dict(suite='op', tokens=2304, head_dim=30, mode='forward+backward')
    taylor = _lookup(records, method='taylor_efficient', **op)
    explicit = _lookup(records, method='softmax_explicit', **op)
    sdpa = _lookup(records, method='sdpa', **op)
    if taylor:
        rows.append(('op N=2304 d=30 fwd+bwd: TaylorShift peak memory / explicit softmax',
                     _ratio(taylor, explicit, 'peak_mb'), 0.25))
        rows.append(('op N=2304 d=30 fwd+bwd: TaylorShift peak memory / SDPA', _ratio(taylor, sdpa, 'peak_mb'), 2.0))
        if device.type == 'cpu':
            rows.append(('op N=2304 d=30 fwd+bwd: TaylorShift time / explicit softmax',
                         _ratio(taylor, explicit, 'time_s'), 0.4))
        else:
            candidates = (taylor, _lookup(records, method='taylor_triton', **op))
            best = min((r for r in candidates if r and r['status'] == 'ok'), key=lambda r: r['time_s'], default=taylor)
            rows.append((f'op N=2304 d=30 fwd+bwd: TaylorShift ({best["method"]}) time / SDPA',
                         _ratio(best, sdpa, 'time_s'), 1.0))
            # the GPU targets (bfloat16 inputs: --dtypes bfloat16): against SDPA and FlexAttention with the bias
            flex_bias = _lookup(records, method='flex_bias', **op)
            rows.append((f'op N=2304 d=30 fwd+bwd: TaylorShift ({best["method"]}) time / SDPA (GPU target)',
                         _ratio(best, sdpa, 'time_s'), 0.5))
            rows.append((f'op N=2304 d=30 fwd+bwd: TaylorShift ({best["method"]}) time / Flex + relative bias',
                         _ratio(best, flex_bias, 'time_s'), 0.3))
            rows.append((f'op N=2304 d=30 fwd+bwd: TaylorShift ({best["method"]}) peak memory / SDPA',
                         _ratio(best, sdpa, 'peak_mb'), 1.0))
    small = _lookup(records, suite='targets', case='S', mode='train')
    small_window = int(small['method'].rsplit('-w', 1)[1]) if small else 8
    swinir = f'SwinIR-w{small_window}'
    for case, mode, taylor_name, limit in (('S', 'train', None, 2.0), ('S', 'inference', None, 1.5),
                                           ('L', 'train', 'large', 1.5), ('recipe', 'train', None, 2.0),
                                           ('recipe', 'inference', None, 1.4)):
        rows_ = [r for r in records if r['suite'] == 'targets' and r['case'] == case and r['mode'] == mode]
        base = next((r for r in rows_ if r['method'] == swinir), None)
        taylors = sorted((r for r in rows_ if r['method'].startswith('Taylor')), key=lambda r: r['window'])
        if base is None or not taylors:
            continue
        taylor = taylors[-1]
        rows.append((f'{case} {mode}: {taylor["method"]} time / {swinir}', _ratio(taylor, base, 'time_s'), limit))
        if mode == 'train':
            rows.append((f'{case} {mode}: {taylor["method"]} peak memory / {swinir}', _ratio(taylor, base, 'peak_mb'),
                         1.2))
    for r in records:  # launch counts (the CUDA block plan): TaylorSwinIR <= 2x SwinIR-w8
        if r['suite'] == 'ops' and r['method'].startswith('Taylor') and r['note'].startswith('cuda'):
            base = next((b for b in records if b['suite'] == 'ops' and not b['method'].startswith('Taylor') and
                         (b['case'], b['mode']) == (r['case'], r['mode'])), None)
            if base:
                rows.append((f'ops {r["case"]} {r["mode"]}: {r["method"]} kernels / {base["method"]}',
                             r['kernels'] / base['kernels'], 2.0))
    op_t = _lookup(records, suite='targets', case='op', method='taylor_efficient', mode='forward+backward')
    op_s = _lookup(records, suite='targets', case='op', method='sdpa', mode='forward+backward')
    if op_t:
        rows.append(('op N=2304 d=30 shifted fwd+bwd: TaylorShift peak memory / SDPA', _ratio(op_t, op_s, 'peak_mb'),
                     2.0))
    sizes = [96, 128] if device.type == 'cpu' else [96, 128, 256, 512]
    for size in sizes:
        key = dict(suite='model', mode='inference', lr_size=size)
        taylor = _lookup(records, method='TaylorSwinIR-w48', **key)
        w48 = _lookup(records, method='SwinIR-w48', **key)
        w8 = _lookup(records, method='SwinIR-w8', **key)
        if taylor is None:
            continue
        rows.append((f'model LR {size}²: TaylorSwinIR-w48 time / SwinIR-w48', _ratio(taylor, w48, 'time_s'), 0.15))
        rows.append((f'model LR {size}²: TaylorSwinIR-w48 time / SwinIR-w8', _ratio(taylor, w8, 'time_s'), 2.0))
        rows.append((f'model LR {size}²: TaylorSwinIR-w48 peak memory / SwinIR-w48', _ratio(taylor, w48, 'peak_mb'),
                     0.3))
    return rows


def fmt(value, digits=3):
    if value is None or value == '':
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}g}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value)


def markdown(records, env, device):
    lines = ['# Benchmark results', '', '| | |', '| --- | --- |']
    lines += [f'| {k} | {v} |' for k, v in env.items()]
    targets = target_rows(records, device)
    lines += ['', '## Targets', '']
    lines += ['| target | measured | limit | verdict |', '| --- | --- | --- | --- |'] if targets else [
        'This run measured none of the targets\' cases (--quick, or other suites).']
    for name, ratio, limit in targets:
        if ratio is None:
            verdict = 'not measured'
        elif ratio <= limit:
            verdict = 'met'
        else:
            verdict = f'missed by {ratio / limit:.2f}x'
        lines.append(f'| {name} | {fmt(ratio)} | {limit} | {verdict} |')
    suites = []
    for r in records:
        if r['suite'] not in suites:
            suites.append(r['suite'])
    for suite in suites:
        rows = [r for r in records if r['suite'] == suite]
        lines += ['', f'## {suite}', '']
        if suite == 'op':
            lines += _op_table(rows)
        elif suite == 'ops':
            lines += _ops_table(rows)
        elif suite in ('heads', 'light'):
            lines += _versus_table(rows)
        else:
            lines += ['| case | method | mode | time (s) | peak (MB) | status | note |',
                      '| --- | --- | --- | --- | --- | --- | --- |']
            for r in rows:
                lines.append(f'| {r["case"]} | {r["method"]} | {r["mode"]} | {fmt(r["time_s"])} | '
                             f'{fmt(r["peak_mb"])} | {r["status"]} | {r.get("note") or ""} |')
    return '\n'.join(lines) + '\n'


def _ops_table(rows):
    """Kernels per call: TaylorSwinIR (each block plan) against SwinIR at the same case and mode."""
    lines = ['Kernels launched per call (leaf aten ops that launch a kernel, counted on the CPU; '
             'scripts/benchmarking/kernels.py lists the ops left out).', '',
             '| case | mode | baseline | kernels | TaylorSwinIR | block plan | kernels | ratio |',
             '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        if not r['method'].startswith('Taylor'):
            continue
        base = next((b for b in rows if not b['method'].startswith('Taylor') and (b['case'], b['mode']) ==
                     (r['case'], r['mode'])), None)
        ratio = None if base is None else r['kernels'] / base['kernels']
        lines.append(f'| {r["case"]} | {r["mode"]} | {base["method"] if base else "-"} | '
                     f'{base["kernels"] if base else "-"} | {r["method"]} | {r["note"]} | {r["kernels"]} | '
                     f'{fmt(ratio)} |')
    return lines


def _versus_table(rows):
    """Every network against the first of its case and mode (the SwinIR baseline): time, memory, kernels, and
    (light) parameters and FLOPs."""
    lines = ['Ratios are to the first row of the same case and mode (BasicSR\'s SwinIR); time: median of interleaved '
             'runs; kernels: CUDA block plan.', '',
             '| case | network | mode | head dim | params | GFLOPs | time (s) | time ratio | peak (MB) | peak ratio | '
             'kernels | kernel ratio | note |', '| --- ' * 13 + '|']
    for r in rows:
        base = next(b for b in rows if (b['case'], b['mode']) == (r['case'], r['mode']))
        ratio = {f: (None if r.get(f) in (None, '') or not base.get(f) else float(r[f]) / float(base[f]))
                 for f in ('time_s', 'peak_mb', 'kernels', 'gflops')}
        params = f'{int(r["params"]):,}' if r.get('params') not in (None, '') else ''
        gflops = '' if r.get('gflops') in (None, '') else f'{fmt(float(r["gflops"]))} ({fmt(ratio["gflops"])}x)'
        lines.append(f'| {r["case"]} | {r["method"]} | {r["mode"]} | {r.get("head_dim") or ""} | {params} | {gflops} | '
                     f'{fmt(r.get("time_s"))} | {fmt(ratio["time_s"])} | {fmt(r.get("peak_mb"))} | '
                     f'{fmt(ratio["peak_mb"])} | {r.get("kernels") or ""} | {fmt(ratio["kernels"])} | '
                     f'{r.get("note") or ""} |')
    return lines


def _op_table(rows):
    methods = list(dict.fromkeys(r['method'] for r in rows))
    lines = ['Time (s) / peak memory (MB) per batch of windows (batch = windows x heads).', '',
             '| d | N | batch | mode | dtype | ' + ' | '.join(methods) + ' |', '| ---' * (5 + len(methods)) + ' |']
    keys = list(dict.fromkeys((r['head_dim'], r['tokens'], r['batch'], r['mode'], r.get('note') or '') for r in rows))
    for d, n, batch, mode, note in keys:
        cells = []
        for m in methods:
            r = next((r for r in rows if (r['head_dim'], r['tokens'], r['mode'], r['method'], r.get('note') or '') ==
                      (d, n, mode, m, note)), None)
            cells.append('-' if r is None else (r['status'] if r['status'] != 'ok' else
                                                f'{fmt(r["time_s"])} / {fmt(r["peak_mb"])}'))
        lines.append(f'| {d} | {n} | {batch} | {mode} | {note or "float32"} | ' + ' | '.join(cells) + ' |')
    return lines


def plots(records, out_dir):
    """PNG plots: op time and memory against N (d = 30 or the first d), scaling sweeps."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    written = []
    op = [r for r in records if r['suite'] == 'op' and r['status'] == 'ok']
    if op:
        d = 30 if any(r['head_dim'] == 30 for r in op) else op[0]['head_dim']
        for mode in ('forward', 'forward+backward'):
            fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=dict(wspace=0.3))
            for method in dict.fromkeys(r['method'] for r in op):
                rows = sorted((r for r in op if r['method'] == method and r['mode'] == mode and r['head_dim'] == d),
                              key=lambda r: r['tokens'])
                for ax, field in zip(axes, ('time_s', 'peak_mb')):
                    ax.plot([r['tokens'] for r in rows], [r[field] for r in rows], marker='o', label=method)
            tokens = sorted({r['tokens'] for r in op})
            for ax, label in zip(axes, ('time (s)', 'peak memory (MB)')):
                ax.set_xscale('log')
                ax.set_yscale('log')
                ax.set_xticks(tokens, [str(n) for n in tokens])
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
                ax.set_xlabel('tokens per window N')
                ax.set_ylabel(label)
                ax.grid(True, which='both', alpha=0.3)
            axes[0].legend()
            fig.suptitle(f'attention op, head dim {d}, {mode} (a batch of windows x heads per call)')
            written.append(_save(fig, out_dir, f'op_{mode.replace("+", "_")}.png'))
            plt.close(fig)
    for sweep, xfield, xlabel in (('scaling-window', 'window', 'window size'),
                                  ('scaling-size', 'lr_size', 'LR image side (pixels)')):
        rows = [r for r in records if r['suite'] == sweep and r['status'] == 'ok']
        if not rows:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=dict(wspace=0.3))
        groups = dict.fromkeys(r['method'].split('-w')[0] if sweep == 'scaling-window' else r['method'] for r in rows)
        for group in groups:
            sel = sorted((r for r in rows if (r['method'].split('-w')[0] if sweep == 'scaling-window'
                                              else r['method']) == group), key=lambda r: r[xfield])
            for ax, field in zip(axes, ('time_s', 'peak_mb')):
                ax.plot([r[xfield] for r in sel], [r[field] for r in sel], marker='o', label=group)
        for ax, label in zip(axes, ('time (s)', 'peak memory (MB)')):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.set_yscale('log')
            ax.grid(True, which='both', alpha=0.3)
        axes[0].legend()
        fig.suptitle(f'{sweep}: one RSTB (6 blocks, 180 dims), inference')
        written.append(_save(fig, out_dir, f'{sweep}.png'))
        plt.close(fig)
    return written


def _save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    with atomic_path(path) as temp_path:
        fig.savefig(temp_path, format='png', dpi=90, bbox_inches='tight')
    return path


def write_tables(records, env, device, out_dir):
    """results.csv and results.md (cheap: after every configuration, so a cut-short run keeps its rows)."""
    os.makedirs(out_dir, exist_ok=True)
    rows = io.StringIO(newline='')
    writer = csv.DictWriter(rows, fieldnames=FIELDS)
    writer.writeheader()
    for r in records:
        writer.writerow({k: ('' if r.get(k) is None else r.get(k)) for k in FIELDS})
    write_atomically(os.path.join(out_dir, 'results.csv'), rows.getvalue())
    write_atomically(os.path.join(out_dir, 'results.md'), markdown(records, env, device))


class Records(list):
    """The result rows; every appended row is written out at once."""

    def __init__(self, env, device, out_dir):
        super().__init__()
        self.env, self.device, self.out_dir = env, device, out_dir

    def append(self, record):
        super().append(record)
        self.env['load_average_at_end'] = ' '.join(f'{x:.2f}' for x in os.getloadavg())
        write_tables(self, self.env, self.device, self.out_dir)

