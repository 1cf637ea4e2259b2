"""Memory and speed of TaylorShift attention and TaylorSwinIR against softmax attention and BasicSR's SwinIR.

Suites (all on one device, side by side in one run):
  op       attention op on a batch of windows: SwinIR's explicit softmax (N×N with relative position bias),
           torch's scaled_dot_product_attention, TaylorShift direct / efficient (/ triton on CUDA);
           N = 8², 16², 24², 32², 48², 64² tokens, head dim 30 (and 16, 32), forward and forward+backward.
  model    whole networks, same width and depth (embed 180, 6 RSTB × 6 blocks, 6 heads, mlp 2, pixelshuffle
           x2): BasicSR's SwinIR at window 8 and 48, TaylorSwinIR at window 48; inference on LR 64², 96²,
           128² (CPU; up to 512² on CUDA) and one training step (L1 + Adam) at the recipe's LR patch 48,
           batch 4.
  scaling  one RSTB (6 blocks, 180 dims): inference time and memory against the window size at LR 96², and
           against the LR size at window 48 (SwinIR also at window 8).

Time: median of ``--repeats`` runs after ``--warmup`` runs. Peak memory: the increase over the memory held
before the call; on CUDA torch.cuda.max_memory_allocated, on CPU the running sum of the allocation and free
events that torch.profiler records with profile_memory=True (it sees every tensor allocation of the CPU
allocator), measured in a separate profiled run (the warm-up run for the slow model configurations).
A configuration that runs out of memory is recorded as OOM; on CPU the process's data segment is capped
(``--cpu-mem-cap-gb``, RLIMIT_DATA) so that an oversized allocation fails cleanly instead of swapping.

Writes <out>/results.csv and <out>/results.md after every configuration and <out>/*.png after every suite
(atomically: temp file, then rename), so an interrupted run keeps what it measured.

    python scripts/benchmark.py --out docs/benchmarks/cpu            # full run (CPU: about 30 min)
    python scripts/benchmark.py --quick --out /tmp/bench             # tiny sizes, seconds
"""
import argparse
import csv
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from basicsr_taylor import TaylorSwinIR, taylor_shift_attention  # noqa: E402  (also makes basicsr importable)
from basicsr_taylor.taylor_shift import crossover_tokens  # noqa: E402

FIELDS = ['suite', 'case', 'method', 'mode', 'tokens', 'head_dim', 'batch', 'lr_size', 'window', 'time_s', 'peak_mb',
          'status', 'note']


# ----------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------


def _is_oom(error):
    text = str(error).lower()
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or 'out of memory' in text or \
        "can't allocate memory" in text or 'not enough memory' in text


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def cpu_peak_bytes(fn):
    """Peak increase of allocated CPU tensor memory during fn(): running sum of profiler memory events."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def peak_bytes(fn, device, reset=None):
    if reset is not None:
        reset()
    if device.type == 'cuda':
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    return cpu_peak_bytes(fn)


def measure(fn, device, repeats, warmup, memory_as_warmup=False, reset=None):
    """(median seconds, peak MB, status). With memory_as_warmup the profiled run is the (only) warm-up.

    ``reset`` runs before every call, outside the timing and the memory measurement (it frees the previous
    call's gradients, so that each call's peak counts the memory it allocates itself).
    """
    reset = reset or (lambda: None)
    try:
        peak = None
        if memory_as_warmup:
            peak = peak_bytes(fn, device, reset)
        for _ in range(0 if memory_as_warmup else warmup):
            reset()
            fn()
        times = []
        for _ in range(repeats):
            reset()
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        if peak is None:
            peak = peak_bytes(fn, device, reset)
        return statistics.median(times), peak / 2**20, 'ok'
    except (RuntimeError, MemoryError) as error:
        _release_memory(device)
        if not _is_oom(error):
            return None, None, f'error: {type(error).__name__}: {str(error)[:80]}'
        return None, None, 'OOM'


def _release_memory(device):
    """After a failed (OOM) run: give freed memory back, so that later configurations are not refused for
    what the failed one left in the allocator's heap (RLIMIT_DATA counts it)."""
    import gc
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        return
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def environment(device, threads):
    info = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'platform': platform.platform(),
        'cpu': _cpu_name(),
        'cpu_cores': os.cpu_count(),
        'torch_threads': threads,
        'load_average_at_start': ' '.join(f'{x:.2f}' for x in os.getloadavg()),
        'date_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime()),
    }
    try:
        import triton
        info['triton'] = triton.__version__
    except ImportError:
        info['triton'] = 'not installed'
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info['gpu'] = f'{props.name}, {props.total_memory / 2**30:.0f} GiB'
        info['cuda'] = torch.version.cuda
        try:
            import subprocess
            info['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info['driver'] = 'unknown'
    return info


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


# ----------------------------------------------------------------------------------------------------------
# Attention op
# ----------------------------------------------------------------------------------------------------------


def relative_position_index(window):
    """SwinIR's index into the (2w-1)² bias table for every pair of tokens of a w×w window: (N, N)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1  # row offset, shifted to start at 0
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def softmax_explicit(q, k, v, bias_table, index):
    """SwinIR's window attention core: softmax(q kᵀ/√d + B) v with B gathered from the bias table."""
    n, heads = index.shape[0], q.shape[1]
    attn = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    bias = bias_table[index.reshape(-1)].view(n, n, heads).permute(2, 0, 1)  # B_ij per head
    attn = (attn + bias.unsqueeze(0)).softmax(dim=-1)
    return attn @ v


def op_methods(device):
    methods = {
        'softmax_explicit': lambda q, k, v, extra: softmax_explicit(q, k, v, extra[0], extra[1]),
        'sdpa': lambda q, k, v, extra: F.scaled_dot_product_attention(q, k, v),
        'taylor_direct': lambda q, k, v, extra: taylor_shift_attention(q, k, v, extra[2], form='direct'),
        'taylor_efficient': lambda q, k, v, extra: taylor_shift_attention(q, k, v, extra[2], form='efficient'),
    }
    if device.type == 'cuda':
        methods['taylor_triton'] = lambda q, k, v, extra: taylor_shift_attention(q, k, v, extra[2], form='triton')
    return methods


def run_op_suite(args, device, records):
    if args.quick:
        sides, dims, heads, tokens_total = [4, 8], [8], 2, 128
    else:
        sides, dims, heads, tokens_total = [8, 16, 24, 32, 48, 64], [30, 16, 32], 6, 9216  # a 96² LR image
    methods = op_methods(device)
    configs = [(d, side, mode, name) for d in dims for side in sides for mode in ('forward', 'forward+backward')
               for name in methods]
    for d, side, mode, name in tqdm(configs, desc='op', file=sys.stdout):
        n = side * side
        batch = max(1, tokens_total // n)  # windows of one 96² image (two 64² windows at N = 4096)
        gen = torch.Generator(device='cpu').manual_seed(0)
        q, k, v = (torch.randn(batch, heads, n, d, generator=gen).to(device) for _ in range(3))
        bias_table = (torch.randn((2 * side - 1)**2, heads, generator=gen) * 0.02).to(device)
        temperature = torch.ones(heads, 1, 1, device=device)
        grad = torch.randn(batch, heads, n, d, generator=gen).to(device)
        backward = mode == 'forward+backward'
        leaves = [q, k, v, bias_table, temperature]
        for t in leaves:
            t.requires_grad_(backward)
        extra = (bias_table, relative_position_index(side).to(device), temperature)
        fn = methods[name]

        def reset():
            for t in leaves:
                t.grad = None

        def step():
            if backward:
                fn(q, k, v, extra).backward(grad)
            else:
                with torch.no_grad():
                    fn(q, k, v, extra)

        seconds, peak, status = measure(step, device, args.repeats, args.warmup, reset=reset)
        records.append(dict(suite='op', case=f'N={n} d={d}', method=name, mode=mode, tokens=n, head_dim=d,
                            batch=f'{batch}x{heads}', time_s=seconds, peak_mb=peak, status=status))


# ----------------------------------------------------------------------------------------------------------
# Whole models
# ----------------------------------------------------------------------------------------------------------


def model_config(quick):
    if quick:
        return dict(embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2, upscale=2, upsampler='pixelshuffle',
                    resi_connection='1conv', in_chans=3, img_range=1.)
    return dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, mlp_ratio=2, upscale=2, upsampler='pixelshuffle',
                resi_connection='1conv', in_chans=3, img_range=1.)


def padded(size, window):
    return -(-size // window) * window


def build_model(kind, window, lr_size, config):
    """('swinir' | 'taylor', window) -> (model, note). SwinIR's masks are built for the padded LR size."""
    if kind == 'taylor':
        return TaylorSwinIR(window_size=window, **config), ''
    from basicsr.archs.swinir_arch import SwinIR
    img_size = padded(lr_size, window)
    note = ''
    if img_size <= window:
        note = f'BasicSR SwinIR: img_size {img_size} <= window {window}: window = img_size, no shift'
    return SwinIR(img_size=img_size, window_size=window, **config), note


def run_model(kind, window, lr_size, config, device, batch=1, train=False):
    """A closure running one inference (or one training step) of the model on a padded LR batch."""
    model, note = build_model(kind, window, lr_size, config)
    model = model.to(device).train(train)
    gen = torch.Generator(device='cpu').manual_seed(0)
    size = lr_size if kind == 'taylor' else padded(lr_size, window)  # SwinIRModel.test pads; TaylorSwinIR pads itself
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    target = torch.rand(batch, 3, 2 * size, 2 * size, generator=gen).to(device)
    if not train:
        def step():
            with torch.no_grad():
                model(x)
        return step, None, note
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99))

    def reset():
        optimizer.zero_grad(set_to_none=True)

    def step():
        F.l1_loss(model(x), target).backward()
        optimizer.step()
    return step, reset, note


MODELS = [('swinir', 8, 'SwinIR-w8'), ('swinir', 48, 'SwinIR-w48'), ('taylor', 48, 'TaylorSwinIR-w48')]


def run_model_suite(args, device, records):
    config = model_config(args.quick)
    models = [('swinir', 4, 'SwinIR-w4'), ('swinir', 8, 'SwinIR-w8'), ('taylor', 8, 'TaylorSwinIR-w8')] \
        if args.quick else MODELS
    if args.quick:
        sizes, train_patch, train_batch = [16], 8, 2
    else:
        sizes = [64, 96, 128] if device.type == 'cpu' else [64, 96, 128, 256, 512]
        train_patch, train_batch = 48, 4
    jobs = [(kind, window, name, size, False, 1) for size in sizes for kind, window, name in models]
    jobs += [(kind, window, name, train_patch, True, train_batch) for kind, window, name in models]
    jobs.sort(key=lambda job: job[4] and job[0] == 'swinir' and job[1] >= 32)  # the likely OOM one last
    for kind, window, name, size, train, batch in tqdm(jobs, desc='model', file=sys.stdout):
        try:
            step, reset, note = run_model(kind, window, size, config, device, batch, train)
            slow = not args.quick and (kind == 'swinir' and window == 48 or train)
            repeats = min(args.repeats, args.slow_repeats) if slow else (args.model_repeats or args.repeats)
            seconds, peak, status = measure(step, device, repeats, args.warmup, memory_as_warmup=slow, reset=reset)
        except (RuntimeError, MemoryError) as error:  # building the model or its input
            seconds, peak, note = None, None, ''
            status = 'OOM' if _is_oom(error) else f'error: {type(error).__name__}: {str(error)[:80]}'
        padded_size = padded(size, window)
        if padded_size != size:
            note = '; '.join(filter(None, [f'LR padded to {padded_size}²', note]))
        records.append(dict(suite='model', case='train step' if train else f'LR {size}²', method=name,
                            mode='train' if train else 'inference', lr_size=size, window=window, batch=batch,
                            time_s=seconds, peak_mb=peak, status=status, note=note))
        step = reset = None


def run_scaling_suite(args, device, records):
    config = model_config(args.quick)
    if not args.quick:
        config = dict(config, depths=[6], num_heads=[6])
    if args.quick:
        windows, fixed_size, sizes, fixed_window = [4, 8], 16, [8, 16], 8
    else:
        windows, fixed_size = [8, 16, 24, 32, 48], 96
        sizes, fixed_window = [32, 64, 96, 128, 192], 48
    jobs = [('window', kind, w, fixed_size) for w in windows for kind in ('swinir', 'taylor')]
    jobs += [('size', kind, w, s) for s in sizes for kind, w in
             (('swinir', 8 if not args.quick else 4), ('swinir', fixed_window), ('taylor', fixed_window))]
    for sweep, kind, window, size in tqdm(jobs, desc='scaling', file=sys.stdout):
        name = f'{"SwinIR" if kind == "swinir" else "TaylorSwinIR"}-w{window}'
        try:
            step, _, note = run_model(kind, window, size, config, device)
            slow = not args.quick and kind == 'swinir' and window >= 32
            repeats = min(args.repeats, args.slow_repeats) if slow else (args.model_repeats or args.repeats)
            seconds, peak, status = measure(step, device, repeats, args.warmup, memory_as_warmup=slow)
        except (RuntimeError, MemoryError) as error:  # building the model or its input
            seconds, peak, note = None, None, ''
            status = 'OOM' if _is_oom(error) else f'error: {type(error).__name__}: {str(error)[:80]}'
        if kind == 'taylor':
            form = 'direct' if window * window < crossover_tokens(config['embed_dim'] // config['num_heads'][0]) \
                else 'efficient'
            note = '; '.join(filter(None, [f'auto -> {form}', note]))
        records.append(dict(suite=f'scaling-{sweep}', case=f'LR {size}² w{window}', method=name, mode='inference',
                            lr_size=size, window=window, batch=1, time_s=seconds, peak_mb=peak, status=status,
                            note=note))
        step = None


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------


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
        rows.append(('op N=2304 d=30 fwd+bwd: TaylorShift peak memory / SDPA', _ratio(taylor, sdpa, 'peak_mb'), 1.0))
        if device.type == 'cpu':
            rows.append(('op N=2304 d=30 fwd+bwd: TaylorShift time / explicit softmax',
                         _ratio(taylor, explicit, 'time_s'), 0.4))
        else:
            candidates = (taylor, _lookup(records, method='taylor_triton', **op))
            best = min((r for r in candidates if r and r['status'] == 'ok'), key=lambda r: r['time_s'], default=taylor)
            rows.append((f'op N=2304 d=30 fwd+bwd: TaylorShift ({best["method"]}) time / SDPA',
                         _ratio(best, sdpa, 'time_s'), 1.0))
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


def _fmt(value, digits=3):
    if value is None or value == '':
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}g}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value)


def markdown(records, env, device):
    lines = ['# Benchmark results', '', '| | |', '| --- | --- |']
    lines += [f'| {k} | {v} |' for k, v in env.items()]
    lines += ['', '## Targets', '', '| target | measured | limit | verdict |', '| --- | --- | --- | --- |']
    for name, ratio, limit in target_rows(records, device):
        if ratio is None:
            verdict = 'not measured'
        elif ratio <= limit:
            verdict = 'met'
        else:
            verdict = f'missed by {ratio / limit:.2f}x'
        lines.append(f'| {name} | {_fmt(ratio)} | {limit} | {verdict} |')
    suites = []
    for r in records:
        if r['suite'] not in suites:
            suites.append(r['suite'])
    for suite in suites:
        rows = [r for r in records if r['suite'] == suite]
        lines += ['', f'## {suite}', '']
        if suite == 'op':
            lines += _op_table(rows)
        else:
            lines += ['| case | method | mode | time (s) | peak (MB) | status | note |',
                      '| --- | --- | --- | --- | --- | --- | --- |']
            for r in rows:
                lines.append(f'| {r["case"]} | {r["method"]} | {r["mode"]} | {_fmt(r["time_s"])} | '
                             f'{_fmt(r["peak_mb"])} | {r["status"]} | {r.get("note") or ""} |')
    return '\n'.join(lines) + '\n'


def _op_table(rows):
    methods = list(dict.fromkeys(r['method'] for r in rows))
    lines = ['Time (s) / peak memory (MB) per batch of windows (batch = windows x heads).', '',
             '| d | N | batch | mode | ' + ' | '.join(methods) + ' |', '| ---' * (4 + len(methods)) + ' |']
    keys = list(dict.fromkeys((r['head_dim'], r['tokens'], r['batch'], r['mode']) for r in rows))
    for d, n, batch, mode in keys:
        cells = []
        for m in methods:
            r = _lookup(rows, head_dim=d, tokens=n, mode=mode, method=m)
            cells.append('-' if r is None else (r['status'] if r['status'] != 'ok' else
                                                f'{_fmt(r["time_s"])} / {_fmt(r["peak_mb"])}'))
        lines.append(f'| {d} | {n} | {batch} | {mode} | ' + ' | '.join(cells) + ' |')
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


def _publish(tmp_name, path):
    """Move a finished temp file into place with the usual file mode (mkstemp's is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    os.replace(tmp_name, path)


def _save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix='.png', delete=False) as tmp:
        fig.savefig(tmp.name, dpi=90, bbox_inches='tight')
    _publish(tmp.name, path)
    return path


def _write_text(path, text):
    with tempfile.NamedTemporaryFile('w', dir=os.path.dirname(path), delete=False, encoding='utf-8',
                                     newline='') as tmp:
        tmp.write(text)
    _publish(tmp.name, path)


def write_tables(records, env, device, out_dir):
    """results.csv and results.md (cheap: after every configuration, so a cut-short run keeps its rows)."""
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile('w', dir=out_dir, suffix='.csv', delete=False, newline='') as tmp:
        writer = csv.DictWriter(tmp, fieldnames=FIELDS)
        writer.writeheader()
        for r in records:
            writer.writerow({k: ('' if r.get(k) is None else r.get(k)) for k in FIELDS})
    _publish(tmp.name, os.path.join(out_dir, 'results.csv'))
    _write_text(os.path.join(out_dir, 'results.md'), markdown(records, env, device))


class Records(list):
    """The result rows; every appended row is written out at once."""

    def __init__(self, env, device, out_dir):
        super().__init__()
        self.env, self.device, self.out_dir = env, device, out_dir

    def append(self, record):
        super().append(record)
        self.env['load_average_at_end'] = ' '.join(f'{x:.2f}' for x in os.getloadavg())
        write_tables(self, self.env, self.device, self.out_dir)


# ----------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--suites', default='op,model,scaling', help='comma-separated: op, model, scaling')
    parser.add_argument('--quick', action='store_true', help='tiny sizes (a smoke test, seconds)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per configuration (median)')
    parser.add_argument('--slow-repeats', type=int, default=1,
                        help='timed runs for the slow model configurations (SwinIR-w48, training steps)')
    parser.add_argument('--model-repeats', type=int, default=None,
                        help='timed runs for the fast model configurations (default: --repeats)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--replot', metavar='CSV', default=None,
                        help='only rebuild results.md and the plots in --out from an earlier results.csv')
    parser.add_argument('--cpu-mem-cap-gb', type=float, default=16.0,
                        help='CPU: cap on the process data segment, so that OOM fails cleanly (0: none)')
    parser.add_argument('--out', default='docs/benchmarks/cpu', help='output folder')
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.suites.split(',') if s.strip()]
    unknown = set(suites) - {'op', 'model', 'scaling'}
    if unknown:
        parser.error(f'--suites: unknown suite(s) {sorted(unknown)}; choose from op, model, scaling')
    args.suites = suites
    if args.repeats < 1 or args.warmup < 0 or args.slow_repeats < 1:
        parser.error('--repeats and --slow-repeats must be >= 1 and --warmup >= 0')
    return args


def read_csv(path):
    """Rows of an earlier results.csv with their numbers parsed back."""
    numeric = {'tokens': int, 'head_dim': int, 'lr_size': int, 'window': int, 'time_s': float, 'peak_mb': float}
    with open(path, newline='', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, kind in numeric.items():
            row[key] = kind(row[key]) if row.get(key) not in (None, '') else None
        if row.get('batch', '').isdigit():
            row['batch'] = int(row['batch'])
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
    suites = dict(op=run_op_suite, model=run_model_suite, scaling=run_scaling_suite)
    written = []
    for suite in args.suites:
        suites[suite](args, device, records)
        written = plots(records, args.out)  # after every suite
    print(f'wrote {os.path.join(args.out, "results.csv")}, results.md and {len(written)} plot(s)')
    for name, ratio, limit in target_rows(records, device):
        print(f'{name}: {_fmt(ratio)} (limit {limit})')
    return records


if __name__ == '__main__':
    main()
