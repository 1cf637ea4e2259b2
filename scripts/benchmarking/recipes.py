"""The head-dimension speed table and the light recipes against SwinIR-light.

heads  TaylorSwinIR-w48 at head dimension 30, 15 and 10 (equal width) against BasicSR's SwinIR-w8 with 6 heads
       (its recipe's and SwinIR-light's) and with the Taylor net's default heads, at the light width (embed 60,
       depths [2, 2]) and the recipe width (embed 180, depths [6, 6]: two of the recipe's six groups), LR 96 x 1,
       x2: one training step (L1 + Adam) and one inference, time (interleaved: every network once per round, the
       median over rounds), peak memory, kernels per call (CUDA block plan).
light  the light recipes (options/train_light_x{2,3,4}.yml's network_g: embed 60, depths [6, 6, 6, 6], window 48)
       at their heads and at head dimension 30, 15 and 10, against SwinIR-light (BasicSR's SwinIR at the same
       setting: window 8, 6 heads, pixelshuffledirect): parameters and FLOPs for a 1280x720 output at x2, x3, x4
       (torch.utils.flop_counter on fake tensors: matmuls and convolutions, a multiply-add counted as 2 FLOPs;
       SwinIR's papers report multiply-adds = FLOPs / 2), then at x2 time, memory and kernels as in ``heads``.
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from basicsr_taylor import TaylorSwinIR
from basicsr_taylor.ops.taylor_shift import blocks

from .kernels import count_kernels, network_calls
from .measure import peak_bytes
from .suites import padded

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = dict(in_chans=3, img_range=1., mlp_ratio=2, resi_connection='1conv')
OUTPUT_720P = (720, 1280)  # the output size SR papers report FLOPs for


def light_recipe(scale):
    """network_g of options/train_light_x{scale}.yml (without its type)."""
    with open(os.path.join(REPO, 'options', f'train_light_x{scale}.yml'), encoding='utf-8') as f:
        net = yaml.safe_load(f)['network_g']
    return {k: v for k, v in net.items() if k != 'type'}


def swinir(config, window, heads, lr_size):
    from basicsr.archs.swinir_arch import SwinIR
    config = dict(config, num_heads=[heads] * len(config['depths']))
    return SwinIR(**dict(config, img_size=padded(lr_size, window), window_size=window))


def taylor(config, window, heads):
    config = dict(config, num_heads=[heads] * len(config['depths']), window_size=window)
    return TaylorSwinIR(**config)


def count_flops(net, lr_hw):
    """FLOPs of one inference on a 1 x 3 x H x W input, on fake tensors (nothing is computed); the efficient
    form with its CUDA block plan (the same FLOPs as the CPU plan, far fewer Python calls)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode
    net = net.eval()
    with blocks.cuda_plan(), FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(1, 3, *lr_hw)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
    return counter.get_total_flops()


def interleaved(fns, repeats, warmup):
    """name -> median seconds of fn(), the functions timed in turns (one call of each per round)."""
    times = {name: [] for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def training_step(net, lr_size):
    """(forward + L1 + backward + Adam) and the forward + L1 + backward closure kernels are counted on."""
    step, infer = network_calls(net, lr_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.99))

    def train():
        step()
        optimizer.step()
    return train, step, infer


def compare(nets, lr_size, suite, case, args, device, records, notes=None):
    """Time (interleaved), peak memory and kernels of a training step and an inference of every net
    (nets: name -> (net, window, head dim))."""
    calls = {name: training_step(net.to(device).train(), lr_size) for name, (net, _, _) in nets.items()}
    for mode in ('train', 'inference'):
        fns = {name: (c[0] if mode == 'train' else c[2]) for name, c in calls.items()}
        seconds = interleaved(fns, args.repeats, args.warmup)
        for name, fn in fns.items():
            kernel_fn = calls[name][1] if mode == 'train' else calls[name][2]
            net, window, head_dim = nets[name]
            records.append(dict(
                suite=suite, case=case, method=name, mode=mode, lr_size=lr_size, batch=1, window=window,
                head_dim=head_dim, time_s=seconds[name],
                peak_mb=peak_bytes(fn, device, lambda: net.zero_grad(set_to_none=True)) / 2**20,
                kernels=count_kernels(kernel_fn, 'cuda'), status='ok', note=(notes or {}).get(name, '')))


def heads_configs(quick):
    """case -> (config, SwinIR heads, TaylorSwinIR heads, windows (SwinIR, Taylor), LR side)."""
    if quick:
        return {'tiny (12, [2])': (dict(BASE, embed_dim=12, depths=[2], upscale=2, upsampler='pixelshuffle'),
                                   [2], [2, 4], (4, 8), 16)}
    return {'light (60, [2, 2])': (dict(BASE, embed_dim=60, depths=[2, 2], upscale=2, upsampler='pixelshuffle'),
                                   [6, 2], [2, 4, 6], (8, 48), 96),
            'recipe width (180, [6, 6])': (dict(BASE, embed_dim=180, depths=[6, 6], upscale=2,
                                                upsampler='pixelshuffle'), [6], [6, 12, 18], (8, 48), 96)}


def run_heads_suite(args, device, records):
    for case, (config, swin_heads, taylor_heads, (small, large), lr_size) in tqdm(
            heads_configs(args.quick).items(), desc='heads', file=sys.stdout):
        dim = config['embed_dim']
        nets = {f'SwinIR-w{small} {h} heads (d {dim // h})': (swinir(config, small, h, lr_size), small, dim // h)
                for h in swin_heads}
        nets.update({f'TaylorSwinIR-w{large} {h} heads (d {dim // h})': (taylor(config, large, h), large, dim // h)
                     for h in taylor_heads})
        compare(nets, lr_size, 'heads', case, args, device, records)


def run_light_suite(args, device, records):
    scales = [2] if args.quick else [2, 3, 4]
    for scale in tqdm(scales, desc='light', file=sys.stdout):
        recipe = light_recipe(scale)
        window = recipe.pop('window_size')
        if args.quick:
            recipe.update(embed_dim=12, depths=[2], num_heads=[2])
            window, small, lr_hw, lr_size = 8, 4, (24, 40), 16
        else:
            small, lr_size = 8, 96
            lr_hw = tuple(-(-side // scale) for side in OUTPUT_720P)
        dim, recipe_heads = recipe['embed_dim'], recipe.pop('num_heads')[0]
        swin_heads = 6 if not args.quick else 2
        nets = {f'SwinIR-light (w{small}, {swin_heads} heads, d {dim // swin_heads})':
                (swinir(recipe, small, swin_heads, lr_size), small, dim // swin_heads)}
        notes = {}
        for h in ([recipe_heads] + [h for h in (2, 4, 6) if h != recipe_heads] if not args.quick else [2]):
            name = f'TaylorSwinIR-light (w{window}, {h} heads, d {dim // h})'
            nets[name] = (taylor(recipe, window, h), window, dim // h)
            notes[name] = 'the recipe' if h == recipe_heads else 'heads varied'
        for name, (net, net_window, head_dim) in nets.items():
            padded_hw = tuple(padded(side, net_window) for side in lr_hw)  # both networks pad to the window
            records.append(dict(suite='light', case=f'x{scale} FLOPs, 1280x720 output', method=name,
                                mode='inference', lr_size=f'{lr_hw[0]}x{lr_hw[1]}', window=net_window,
                                head_dim=head_dim, params=sum(p.numel() for p in net.parameters()),
                                gflops=count_flops(net, lr_hw if 'Taylor' in name else padded_hw) / 1e9, status='ok',
                                note='; '.join(filter(None, [notes.get(name), f'computed on {padded_hw[0]}x'
                                                             f'{padded_hw[1]} (padded to the window)']))))
        if scale == 2:
            compare(nets, lr_size, 'light', f'x{scale} LR {lr_size}', args, device, records, notes)
