"""Kernels launched per training step and per inference, counted on the CPU: the leaf ``aten::`` ops of one call
that launch a kernel, which are the kernels the same torch code launches on CUDA.

Left out (no kernel: views, allocations, metadata): the ops in NO_KERNEL. A training step is forward + L1 +
backward (the optimizer is left out: its count depends on foreach, not on the network).

TaylorShift's efficient form sizes its blocks per device (``ops/taylor_shift/blocks.py``): a share of the GPU's
memory on CUDA, cache-sized blocks on the CPU. ``plan='cuda'`` counts with CUDA's choices for a nominal 80 GB
device (``blocks.cuda_plan``: the kernels a GPU launches), ``plan='cpu'`` with the CPU's (what the CPU runs).
"""
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from basicsr_taylor.ops.taylor_shift import blocks

NO_KERNEL = {f'aten::{n}' for n in (
    'as_strided view _unsafe_view reshape _reshape_alias expand expand_as permute transpose t unsqueeze squeeze '
    'select slice alias detach empty empty_like empty_strided new_empty new_empty_strided resize_ lift_fresh split '
    'split_with_sizes unbind chunk narrow unflatten flatten view_as diagonal movedim set_ is_same_size result_type '
    '_has_compatible_shallow_copy_type contiguous broadcast_to unfold _local_scalar_dense item is_nonzero'.split())}


def leaf_ops(fn):
    """The names of the kernel-launching leaf aten ops of one call of fn (after one warm-up call)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith('aten::')]
    parents = {e.id for e in events for c in e.cpu_children if c.name.startswith('aten::')}
    return [e.name for e in events if e.id not in parents and e.name not in NO_KERNEL]


def count_kernels(fn, plan='cuda'):
    """Kernels of one call of fn, with the efficient form's block plan of ``plan`` ('cuda' or 'cpu')."""
    with blocks.cuda_plan(plan == 'cuda'):
        return len(leaf_ops(fn))


def network_calls(net, lr_size, scale=2, batch=1):
    """(training step, inference) closures of ``net`` on a random LR batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, lr_size, lr_size, generator=gen)
    y = torch.rand(batch, 3, scale * lr_size, scale * lr_size, generator=gen)

    def step():
        net.zero_grad(set_to_none=True)
        F.l1_loss(net(x), y).backward()

    def infer():
        with torch.no_grad():
            net(x)
    return step, infer


def ops_configs(quick):
    """name -> (SwinIR/TaylorSwinIR arguments, LR side): the light net (embed 60, depths [2, 2], heads 2) and the
    recipe width (embed 180, depths [6, 6], heads 6: two of the recipe's six groups), LR 96, x2."""
    base = dict(upscale=2, in_chans=3, img_range=1., mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')
    if quick:
        return {'tiny': (dict(base, embed_dim=12, depths=[2], num_heads=[2]), 16)}
    return {'light': (dict(base, embed_dim=60, depths=[2, 2], num_heads=[2, 2]), 96),
            'recipe': (dict(base, embed_dim=180, depths=[6, 6], num_heads=[6, 6]), 96)}


def run_ops_suite(args, device, records):
    """Kernels per training step and per inference: TaylorSwinIR-w48 (w8 in --quick) against BasicSR's SwinIR-w8
    (w4) at the same width, depth, heads and input; TaylorShift's blocks as on CUDA and as on the CPU."""
    from basicsr.archs.swinir_arch import SwinIR

    from basicsr_taylor import TaylorSwinIR
    small, large = (4, 8) if args.quick else (8, 48)
    for case, (config, lr_size) in ops_configs(args.quick).items():
        nets = {f'SwinIR-w{small}': SwinIR(img_size=lr_size, window_size=small, **config),
                f'TaylorSwinIR-w{large}': TaylorSwinIR(window_size=large, **config)}
        for name, net in nets.items():
            step, infer = network_calls(net, lr_size)
            plans = ('cuda', 'cpu') if name.startswith('Taylor') else ('cuda', )
            for mode, fn in (('train', step), ('inference', infer)):
                for plan in plans:
                    records.append(dict(suite='ops', case=case, method=name, mode=mode, lr_size=lr_size,
                                        window=large if name.startswith('Taylor') else small,
                                        kernels=count_kernels(fn, plan), status='ok',
                                        note=f'{plan} block plan' if name.startswith('Taylor') else ''))
