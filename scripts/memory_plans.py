"""The efficient form's memory and kernels under the CPU's block plan and CUDA's (counted on the CPU), as markdown
tables for docs/benchmarks.md:

  op       forward + backward peak of one call (N 2304, d 30, 4 windows x 6 heads) against torch's
           scaled_dot_product_attention: no regions, shifted-window regions (RegionChunks), integer ids;
  nets     a training step (forward, L1, backward) of TaylorSwinIR-w48 against BasicSR's SwinIR-w8: kernels at
           batch 1, peak at batch 2 (light net: embed 60, depths [2, 2], heads 2) and 4 (recipe width: embed 180,
           depths [2, 2], heads 6), LR 96, x2;
  budget   the same under CUDA's plan for a range of block budgets (attn_block_mb): kernels against memory;
  odd      a training step at window 23 (LR 46) against window 24 (LR 48): peak and time (median of interleaved
           runs), embed 60, depths [2], heads 2, batch 4.

Kernels are the leaf aten ops that launch one (benchmarking/kernels.py), peaks the running sum of the profiler's
allocation events (benchmarking/measure.py). One thread. Run from the repository root in its venv:

    python scripts/memory_plans.py [--tables op,nets,budget,odd] [--budgets 32,64,96,128,160,256]
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

_scripts = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_scripts), _scripts]
import basicsr_taylor  # noqa: E402,F401  (before basicsr)
from basicsr.archs.swinir_arch import SwinIR  # noqa: E402
from benchmarking.kernels import leaf_ops  # noqa: E402
from benchmarking.measure import cpu_peak_bytes  # noqa: E402

from basicsr_taylor import TaylorSwinIR, taylor_shift_attention  # noqa: E402
from basicsr_taylor.archs.shifted_windows import shifted_window_chunks  # noqa: E402
from basicsr_taylor.ops.taylor_shift import blocks  # noqa: E402

NETS = {'light': (60, 2, 2), 'recipe': (180, 6, 4)}  # embed, heads, batch of the memory measurement
MB = 2**20


def net_config(embed, heads, depths=(2, 2)):
    return dict(upscale=2, in_chans=3, img_range=1., depths=list(depths), embed_dim=embed,
                num_heads=[heads] * len(depths), mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')


def step_fn(net, batch, lr_size):
    x, y = torch.rand(batch, 3, lr_size, lr_size), torch.rand(batch, 3, 2 * lr_size, 2 * lr_size)

    def step():
        net.zero_grad(set_to_none=True)
        F.l1_loss(net(x), y).backward()
    return step


def kernels_and_peak(net, batch, lr_size=96):
    kernels = len(leaf_ops(step_fn(net, 1, lr_size)))
    step = step_fn(net, batch, lr_size)
    step()
    return kernels, cpu_peak_bytes(step) / MB


def op_table():
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad = (torch.randn(4, 6, 2304, 30, generator=gen) for _ in range(4))
    chunks = shifted_window_chunks(96, 96, 48, 24, 'cpu')

    def peak(attention):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)] + [torch.ones(6, 1, 1, requires_grad=True)]

        def run():
            for t in leaves:
                t.grad = None
            attention(*leaves).backward(grad)
        run()
        return cpu_peak_bytes(run) / MB
    sdpa = peak(lambda q, k, v, tau: F.scaled_dot_product_attention(q, k, v))
    rows = ['| regions | CPU plan (MB) | / SDPA | CUDA plan (MB) | / SDPA |', '| --- | --- | --- | --- | --- |']
    for name, regions in (('none', None), ('shifted windows (RegionChunks)', chunks),
                          ('integer ids (sorted, padded)', chunks.token_regions(4)[:, None])):
        cells = []
        for cuda in (False, True):
            with blocks.cuda_plan(cuda):
                mb = peak(lambda q, k, v, tau: taylor_shift_attention(q, k, v, tau, regions, form='efficient'))
            cells += [f'{mb:.1f}', f'{mb / sdpa:.2f}x']
        rows.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return [f'SDPA: {sdpa:.1f} MB'] + rows


def nets_table():
    rows = ['| net | model | plan | kernels / step (batch 1) | x SwinIR | step peak (MB) | x SwinIR |',
            '| --- | --- | --- | --- | --- | --- | --- |']
    for name, (embed, heads, batch) in NETS.items():
        torch.manual_seed(0)
        base_k, base_m = kernels_and_peak(SwinIR(img_size=96, window_size=8, **net_config(embed, heads)), batch)
        rows.append(f'| {name}, batch {batch} | SwinIR-w8 | - | {base_k} | 1.00x | {base_m:.0f} | 1.00x |')
        net = TaylorSwinIR(window_size=48, **net_config(embed, heads))
        for plan in ('cpu', 'cuda'):
            with blocks.cuda_plan(plan == 'cuda'):
                k, m = kernels_and_peak(net, batch)
            rows.append(f'| {name}, batch {batch} | TaylorSwinIR-w48 | {plan} | {k} | {k / base_k:.2f}x | {m:.0f} | '
                        f'{m / base_m:.2f}x |')
    return rows


def budget_table(budgets):
    rows = ['| attn_block_mb | light: kernels | light: peak (MB) | recipe: kernels | recipe: peak (MB) |',
            '| --- | --- | --- | --- | --- |']
    nets = {name: TaylorSwinIR(window_size=48, **net_config(embed, heads)) for name, (embed, heads, _) in NETS.items()}
    default = blocks.cuda_budget(blocks.NOMINAL_CUDA_BYTES) / MB
    for budget in budgets:
        cells = []
        for name, net in nets.items():
            with blocks.cuda_plan(), blocks.block_budget(budget * MB):
                k, m = kernels_and_peak(net, NETS[name][2])
            cells += [str(k), f'{m:.0f}']
        label = f'{budget:g}' + (' (default, 80 GB)' if abs(budget - default) < 0.5 else '')
        rows.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return rows


def odd_table(repeats=5):
    cases = {'w24, LR 48': (24, 48), 'w23, LR 46': (23, 46)}
    steps, peaks = {}, {}
    for name, (window, lr_size) in cases.items():
        torch.manual_seed(0)
        net = TaylorSwinIR(window_size=window, **net_config(60, 2, depths=(2, )))
        steps[name] = step_fn(net, 4, lr_size)
        steps[name]()
        peaks[name] = cpu_peak_bytes(steps[name]) / MB
    times = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved: one step of each per round
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    rows = ['| window | step peak (MB) | step time (s, median) |', '| --- | --- | --- |']
    for name in cases:
        rows.append(f'| {name} | {peaks[name]:.0f} | {statistics.median(times[name]):.3f} |')
    a, b = list(cases)
    time_ratio = statistics.median(times[b]) / statistics.median(times[a])
    rows.append(f'| ratio | {peaks[b] / peaks[a]:.2f}x | {time_ratio:.2f}x |')
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tables', default='op,nets,budget,odd')
    parser.add_argument('--budgets', default='32,48,64,96,128,149,192,256')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f'{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread; CUDA plan: '
          f'{blocks.cuda_budget(blocks.NOMINAL_CUDA_BYTES) / MB:.0f} MiB blocks (80 GB device)', flush=True)
    tables = {'op': op_table, 'nets': nets_table, 'odd': odd_table,
              'budget': lambda: budget_table([float(b) for b in args.budgets.split(',')])}
    for name in args.tables.split(','):
        print(f'\n{name}\n' + '\n'.join(tables[name]()), flush=True)


if __name__ == '__main__':
    main()
