"""The suites: the attention op, whole networks, and scaling with window and image size."""
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from basicsr_taylor import TaylorSwinIR, taylor_shift_attention
from basicsr_taylor.archs.shifted_windows import shifted_window_regions
from basicsr_taylor.ops.taylor_shift.interface import auto_form

from .measure import is_oom, measure


def relative_position_index(window):
    """SwinIR's index into the (2w-1)² bias table for every pair of tokens of a w×w window: (N, N)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1  # row offset, shifted to start at 0
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def softmax_explicit(q, k, v, bias_table, index, mask=None):
    """SwinIR's window attention core: softmax(q kᵀ/√d + B (+ mask)) v with B gathered from the bias table."""
    n, heads = index.shape[0], q.shape[1]
    attn = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    bias = bias_table[index.reshape(-1)].view(n, n, heads).permute(2, 0, 1)  # B_ij per head
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        attn = attn + mask  # SwinIR's shifted-window mask: -100 between regions
    return attn.softmax(dim=-1) @ v


def relative_bias_score_mod(bias_table, window):
    """FlexAttention score_mod adding SwinIR's relative position bias B[(Δy + w - 1)(2w - 1) + Δx + w - 1, h],
    computed from the token indices (no N×N tensor), as ESC (arXiv 2503.06671) runs large softmax windows."""
    def score_mod(score, b, h, q_index, kv_index):
        dy = q_index // window - kv_index // window + window - 1
        dx = q_index % window - kv_index % window + window - 1
        return score + bias_table[dy * (2 * window - 1) + dx, h]  # x_ij + B_ij
    return score_mod


def window_region_ids(side, windows, device):
    """Region ids (windows, side²) of the windows of a map rolled by side/2 (SwinIR's shifted windows): a
    g x g grid of windows when windows = g², else one row of windows."""
    from basicsr_taylor.archs.shifted_windows import shifted_window_regions
    rows = int(round(windows**0.5))
    rows = rows if rows * rows == windows else 1
    return shifted_window_regions(rows * side, windows // rows * side, side, side // 2, device)


def flex_available(device):
    from basicsr_taylor.ops.taylor_shift import flex
    return device.type == 'cuda' and flex.available()


def op_methods(device):
    """name -> fn(q, k, v, extra). extra: bias_table, index, temperature, window, and for the shifted-window
    configurations regions (B, 1, N) ids, mask (B, 1, N, N) SwinIR's additive -100 mask, block_mask (flex)."""
    methods = {
        'softmax_explicit': lambda q, k, v, x: softmax_explicit(q, k, v, x['bias_table'], x['index'], x['mask']),
        'sdpa': lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v, attn_mask=x['mask']),
        'taylor_direct': lambda q, k, v, x: taylor_shift_attention(q, k, v, x['temperature'], x['regions'],
                                                                   form='direct'),
        'taylor_efficient': lambda q, k, v, x: taylor_shift_attention(q, k, v, x['temperature'], x['regions'],
                                                                      form='efficient'),
    }
    if device.type == 'cuda':
        methods['taylor_triton'] = lambda q, k, v, x: taylor_shift_attention(q, k, v, x['temperature'], x['regions'],
                                                                             form='triton')
    if flex_available(device):  # CPU: flex_attention has no backward and runs unfused (N×N scores) in eager
        from basicsr_taylor.ops.taylor_shift.flex import run_flex_attention
        methods['flex_bias'] = lambda q, k, v, x: run_flex_attention(
            q, k, v, score_mod=relative_bias_score_mod(x['bias_table'], x['window']), block_mask=x['block_mask'])
        methods['taylor_flex'] = lambda q, k, v, x: taylor_shift_attention(q, k, v, x['temperature'], x['regions'],
                                                                           form='flex')
    return methods


def op_configs(quick, device, dtypes=('float32', ), op_sides=None, op_dims=None):
    """(dtype, d, side, shifted, mode, method); shifted windows (masks, regions) at windows 24, 32, 48 (8: --quick)."""
    if quick:
        sides, dims, shifted_sides = [4, 8], [8], [8]
    else:
        sides, dims, shifted_sides = [8, 16, 24, 32, 48, 64], [30, 16, 32], [24, 32, 48]
    sides, dims = op_sides or sides, op_dims or dims
    methods = op_methods(device)
    return [(dtype, d, side, shifted, mode, name) for dtype in dtypes for d in dims for side in sides
            for shifted in ((False, True) if side in shifted_sides else (False, ))
            for mode in ('forward', 'forward+backward') for name in methods]


def run_op_suite(args, device, records):
    heads, tokens_total = (2, 128) if args.quick else (6, 9216)  # a 96² LR image
    methods = op_methods(device)
    configs = op_configs(args.quick, device, args.dtypes, args.op_sides, args.op_dims)
    for dtype_name, d, side, shifted, mode, name in tqdm(configs, desc='op', file=sys.stdout):
        dtype = getattr(torch, dtype_name)
        n = side * side
        batch = max(1, tokens_total // n)  # windows of one 96² image (two 64² windows at N = 4096)
        gen = torch.Generator(device='cpu').manual_seed(0)
        q, k, v = (torch.randn(batch, heads, n, d, generator=gen).to(device, dtype) for _ in range(3))
        bias_table = (torch.randn((2 * side - 1)**2, heads, generator=gen) * 0.02).to(device, dtype)
        temperature = torch.ones(heads, 1, 1, device=device)
        grad = torch.randn(batch, heads, n, d, generator=gen).to(device, dtype)
        backward = mode == 'forward+backward'
        leaves = [q, k, v, bias_table, temperature]
        for t in leaves:
            t.requires_grad_(backward)
        extra = dict(bias_table=bias_table, index=relative_position_index(side).to(device), temperature=temperature,
                     window=side, regions=None, mask=None, block_mask=None)
        if shifted:  # made once per configuration, outside the timed call (SwinIR keeps its mask as a buffer)
            regions = window_region_ids(side, batch, device)  # (B, N)
            extra['regions'] = regions[:, None, :]
            extra['mask'] = ((regions[:, None, :, None] != regions[:, None, None, :]) * -100.0).to(dtype)
            if name == 'flex_bias':
                from basicsr_taylor.ops.taylor_shift.flex import region_block_mask
                extra['block_mask'] = region_block_mask(extra['regions'], (batch, heads), n, device)
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
        method = name + (' +shift' if shifted else '')
        records.append(dict(suite='op', case=f'N={n} d={d}' + (' shifted' if shifted else ''), method=method,
                            mode=mode, tokens=n, head_dim=d, batch=f'{batch}x{heads}', time_s=seconds, peak_mb=peak,
                            status=status, note='' if dtype_name == 'float32' else dtype_name))


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
        sizes = args.model_sizes or sizes
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
            status = 'OOM' if is_oom(error) else f'error: {type(error).__name__}: {str(error)[:80]}'
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
            status = 'OOM' if is_oom(error) else f'error: {type(error).__name__}: {str(error)[:80]}'
        if kind == 'taylor':
            form = auto_form(device.type, config['embed_dim'] // config['num_heads'][0], window * window, False)
            note = '; '.join(filter(None, [f'auto -> {form}', note]))
        records.append(dict(suite=f'scaling-{sweep}', case=f'LR {size}² w{window}', method=name, mode='inference',
                            lr_size=size, window=window, batch=1, time_s=seconds, peak_mb=peak, status=status,
                            note=note))
        step = None


def target_configs(quick):
    base = dict(mlp_ratio=2, upscale=2, upsampler='pixelshuffle', resi_connection='1conv', in_chans=3, img_range=1.)
    if quick:
        small = dict(base, embed_dim=12, depths=[2], num_heads=[2])
        return dict(S=(small, 16, 1, 8), L=(small, 16, 2, 8, 4), R=(small, 16, 1, 8, 16))
    return dict(S=(dict(base, embed_dim=60, depths=[2, 2], num_heads=[2, 2]), 96, 1, 48),
                L=(dict(base, embed_dim=48, depths=[4, 4], num_heads=[3, 3]), 48, 4, 24, 8),
                R=(dict(base, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6), 48, 4, 48, 96))


def run_targets_suite(args, device, records):
    configs = target_configs(args.quick)
    (s_cfg, s_size, s_batch, s_window), (l_cfg, l_size, l_batch, l_window, l_small), \
        (r_cfg, r_size, r_batch, r_window, r_infer) = configs['S'], configs['L'], configs['R']
    small = 4 if args.quick else 8
    jobs = [('S', s_cfg, kind, window, s_size, s_batch, train) for train in (True, False)
            for kind, window in (('swinir', small), ('taylor', s_window))]
    jobs += [('L', l_cfg, kind, window, l_size, l_batch, True)
             for kind, window in (('swinir', small), ('taylor', l_small), ('taylor', l_window))]
    jobs += [('recipe', r_cfg, kind, window, r_size, r_batch, True) for kind, window in (('swinir', small),
                                                                                         ('taylor', r_window))]
    jobs += [('recipe', r_cfg, kind, window, r_infer, 1, False) for kind, window in (('swinir', small),
                                                                                     ('taylor', r_window))]
    for config, cfg, kind, window, size, batch, train in tqdm(jobs, desc='targets', file=sys.stdout):
        name = f'{"SwinIR" if kind == "swinir" else "TaylorSwinIR"}-w{window}'
        try:
            step, reset, note = run_model(kind, window, size, cfg, device, batch, train)
            slow = not args.quick and (config == 'recipe' or train)
            repeats = min(args.repeats, args.slow_repeats) if config == 'recipe' and not args.quick else args.repeats
            seconds, peak, status = measure(step, device, repeats, args.warmup, memory_as_warmup=slow, reset=reset)
        except (RuntimeError, MemoryError) as error:
            seconds, peak, note = None, None, ''
            status = 'OOM' if is_oom(error) else f'error: {type(error).__name__}: {str(error)[:80]}'
        records.append(dict(suite='targets', case=config, method=name, mode='train' if train else 'inference',
                            lr_size=size, window=window, batch=batch, time_s=seconds, peak_mb=peak, status=status,
                            note=note))
        step = reset = None
    heads, n, windows, d = (2, 64, 2, 8) if args.quick else (6, 2304, 4, 30)
    side = int(n**0.5)
    regions = shifted_window_regions(2 * side, 2 * side, side, side // 2, device)[:windows].unsqueeze(1)
    gen = torch.Generator(device='cpu').manual_seed(0)
    q, k, v, grad = (torch.randn(windows, heads, n, d, generator=gen).to(device) for _ in range(4))
    temperature = torch.ones(heads, 1, 1, device=device)
    for mode in ('forward', 'forward+backward'):
        for method in ('sdpa', 'taylor_efficient'):
            backward = mode == 'forward+backward'
            for t in (q, k, v, temperature):
                t.requires_grad_(backward)

            def step():
                with torch.set_grad_enabled(backward):
                    if method == 'sdpa':
                        out = F.scaled_dot_product_attention(q, k, v)
                    else:
                        out = taylor_shift_attention(q, k, v, temperature, regions, form='efficient')
                    if backward:
                        out.backward(grad)

            def reset():
                for t in (q, k, v, temperature):
                    t.grad = None

            seconds, peak, status = measure(step, device, args.repeats, args.warmup, reset=reset)
            records.append(dict(suite='targets', case='op', method=method, mode=mode, tokens=n, head_dim=d,
                                batch=f'{windows}x{heads}', time_s=seconds, peak_mb=peak, status=status,
                                note='shifted-window regions' if method != 'sdpa' else ''))


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------
