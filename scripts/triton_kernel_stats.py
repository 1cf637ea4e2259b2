"""Registers, spills and shared memory of every Triton-form kernel, compiled ahead of time (no GPU needed).

Compiles each kernel variant the form launches (triton_aot.variants: each MODE, region layout, with and without
the temperature) for sm_90 in float32 / float16 / bfloat16 and for sm_80 in float32, at head dim = value dim = 30
(TaylorSwinIR's 180 dims / 6 heads), and writes a markdown table (registers per thread from ``ptxas -v`` on the
kernel's PTX, spill stores + loads in bytes, shared memory in bytes from Triton's metadata). The table replaces
what stands between the markers ``<!-- triton-kernel-stats -->`` and ``<!-- /triton-kernel-stats -->`` in
``--out`` (docs/benchmarks.md), or is the whole of a new file.

    python scripts/triton_kernel_stats.py [--out docs/benchmarks.md] [--head-dim 30]
"""
import argparse
import datetime
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import triton  # noqa: E402

from basicsr_taylor.ops.taylor_shift import triton_aot  # noqa: E402
from basicsr_taylor.utils.files import write_atomically  # noqa: E402

TARGETS = [(90, 'float32'), (90, 'float16'), (90, 'bfloat16'), (80, 'float32')]
BEGIN, END = '<!-- triton-kernel-stats -->', '<!-- /triton-kernel-stats -->'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=os.path.join(ROOT, 'docs', 'benchmarks.md'))
    parser.add_argument('--head-dim', type=int, default=30)
    parser.add_argument('--value-dim', type=int, default=None, help='default: the head dim')
    return parser.parse_args(argv)


def cell(usage):
    spills = usage['spill_stores'] + usage['spill_loads']
    return f"{usage['registers']} / {spills} / {usage['shared']}"


def main(argv=None):
    args = parse_args(argv)
    value_dim = args.value_dim or args.head_dim
    rows = {}
    for capability, dtype in TARGETS:
        for variant in triton_aot.variants((dtype, )):
            compiled = triton_aot.compile_variant(variant, capability, args.head_dim, value_dim)
            key = variant._replace(dtype='')
            rows.setdefault(key, {})[capability, dtype] = triton_aot.resource_usage(compiled)
            print(f'sm_{capability} {variant.name}: {cell(rows[key][capability, dtype])}', flush=True)
    header = ['kernel (layout, tau)'] + [f'sm_{c} {d}' for c, d in TARGETS]
    lines = [f'Registers per thread / spill bytes (stores + loads) / shared memory bytes, d = {args.head_dim}, '
             f'dv = {value_dim}, 4 warps; Triton {triton.__version__} ptxas, compiled ahead of time by '
             f'`scripts/triton_kernel_stats.py` on {datetime.date.today().isoformat()} (no GPU).', '',
             '| ' + ' | '.join(header) + ' |', '| ' + ' | '.join(['---'] * len(header)) + ' |']
    for key, usage in rows.items():
        lines.append('| ' + ' | '.join([key.name] + [cell(usage[target]) for target in TARGETS]) + ' |')
    write_section(args.out, '\n'.join(lines) + '\n')
    print(f'wrote {args.out}')


def write_section(path, table):
    """Put ``table`` between the markers of the file at ``path`` (atomically); a new file holds the table alone."""
    if not os.path.exists(path):
        return write_atomically(path, table)
    text = open(path, encoding='utf-8').read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f'{path} has no {BEGIN} ... {END} markers: add them where the table goes, or pass a new '
                         'file to --out')
    head, rest = text.split(BEGIN, 1)
    return write_atomically(path, head + BEGIN + '\n' + table + END + rest.split(END, 1)[1])


if __name__ == '__main__':
    main()
