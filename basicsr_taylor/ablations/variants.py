"""The variants of an experiment as BasicSR option files: templates filled in, equal pixels per step, names that
hash everything that defines the training (identical variants are trained once)."""
import copy
import hashlib
import json
import os
import os.path as osp
import sys

import yaml

from ..utils.files import write_atomically

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TEMPLATES = osp.join(REPO, 'options', 'ablation')
ARCHS = {'SwinIR': 'SwinIRModel', 'TaylorSwinIR': 'SRModel'}
# TaylorSwinIR options at their defaults are left out of the option file, so that a run's name (a hash of its
# options) does not change when an option is added: list every new TaylorSwinIR option here with its default.
TAYLOR_DEFAULTS = {'taylor_order': 2, 'temperature_init': 1.0, 'patch_size': 1, 'temperature_param': 'linear',
                   'attn_block_mb': None}


class AblationError(ValueError):
    """A wrong experiment, variant or data argument."""


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def fill(template, values):
    """Replace every string '<key>' in a nested dict/list by values[key]."""
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    if isinstance(template, str) and template.startswith('<') and template.endswith('>'):
        return values[template[1:-1]]
    return template


def ema_decay(iters):
    return round(min(0.999, 1 - 10 / max(iters, 20)), 6)


def variant_options(base, variant, args, dataroots, seed):
    """The BasicSR training option dict of one variant trained with ``seed`` (BasicSR's manual_seed), without
    its name."""
    variant = dict(variant)
    arch = variant.pop('arch')
    if arch not in ARCHS:
        raise AblationError(f'unknown arch {arch!r}; one of {sorted(ARCHS)}')
    lr_patch = variant.pop('lr_patch', args.lr_patch)
    num_heads = list(args.heads)
    if 'head_dim' in variant:  # heads of every group = embed_dim / head_dim (equal width)
        head_dim = variant.pop('head_dim')
        if not isinstance(head_dim, int) or head_dim <= 0 or args.embed_dim % head_dim:
            raise AblationError(f'head_dim {head_dim!r} does not divide --embed-dim {args.embed_dim}')
        num_heads = [args.embed_dim // head_dim] * len(args.depths)
    pixels = args.batch * args.lr_patch**2
    if pixels % lr_patch**2:
        raise AblationError(f'LR patch {lr_patch} cannot keep {args.batch} x {args.lr_patch}^2 pixels per step: '
                            'choose --batch so that the batch stays an integer')
    batch = pixels // lr_patch**2
    gt_size = lr_patch * args.scale
    if gt_size > args.sub_image:
        raise AblationError(f'GT patch {gt_size} exceeds the training sub-images ({args.sub_image}); raise --sub-image')
    values = dict(scale=args.scale, seed=seed, train_name='ablation_train', train_gt=dataroots['gt'],
                  train_lq=dataroots['lq'], gt_size=gt_size, workers=args.workers, batch=batch, iters=args.iters,
                  ema_decay=ema_decay(args.iters), print_freq=max(1, min(100, args.iters // 10)),
                  checkpoint_freq=max(1, min(args.checkpoint_freq, args.iters)))
    opt = fill(copy.deepcopy(base), values)
    if getattr(args, 'lr_schedule', 'cosine') == 'constant':  # the learning rate of optim_g throughout
        opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [args.iters + 1], 'gamma': 1.0}
    opt['model_type'] = ARCHS[arch]
    network = dict(opt['network_g'])
    network.update(type=arch, upscale=args.scale, img_size=lr_patch, embed_dim=args.embed_dim,
                   depths=list(args.depths), num_heads=num_heads)
    if arch == 'TaylorSwinIR':
        variant = {k: v for k, v in variant.items() if not (k in TAYLOR_DEFAULTS and v == TAYLOR_DEFAULTS[k])}
    network.update(variant)
    if arch == 'SwinIR' and lr_patch <= network.get('window_size', 7):  # BasicSR's SwinIR: img_size <= window
        print(f'warning: BasicSR\'s SwinIR turns its shifted windows off when img_size ({lr_patch}) <= window_size '
              f'({network.get("window_size", 7)}): no communication between windows', file=sys.stderr)
    opt['network_g'] = network
    test_sets = list(args.test.items())
    opt['datasets']['val'] = _paired_disk(*test_sets[0])  # validation (once, at the end) on the first test set
    val_freq = getattr(args, 'val_freq', None)
    if val_freq:  # validation curves: every val_freq iterations on every test set (val_2, ...: not in the name)
        opt['val']['val_freq'] = val_freq
        for i, test_set in enumerate(test_sets[1:], 2):
            opt['datasets'][f'val_{i}'] = _paired_disk(*test_set)
    return opt


def _paired_disk(name, roots):
    return dict(name=name, type='PairedImageDataset', dataroot_gt=roots[0], dataroot_lq=roots[1],
                filename_tmpl='{}', io_backend=dict(type='disk'))


def run_name(opt, variant_name, data=None):
    """BasicSR experiment name: the variant's name, its seed unless 0, and a hash of everything that defines its
    training (the seed included: seed 0 keeps the name and hash it had before the runner had seeds). With ``data``
    (:func:`data_names`) the data folders enter the hash by name, not by where they lie, so that records copied to
    another root or machine are found; without it, by absolute path (the names of runs made by 0.3.0 and before)."""
    options = {k: v for k, v in opt.items() if k not in ('name', 'logger', 'val')}
    # the validation sets after the first (val_2, ...) only observe the training: they do not enter the name
    datasets = {phase: dataset for phase, dataset in opt['datasets'].items() if phase in ('train', 'val')}
    options['datasets'] = datasets
    if data:
        options['datasets'] = {phase: {k: data(v) if k.startswith('dataroot_') else v for k, v in dataset.items()}
                               for phase, dataset in datasets.items()}
    key = json.dumps(options, sort_keys=True)
    seed = f'_s{opt["manual_seed"]}' if opt['manual_seed'] else ''
    return f'abl_{variant_name}{seed}_{hashlib.sha1(key.encode()).hexdigest()[:8]}'


def folder_name(path):
    """The name of a folder given on the command line (a trailing slash ignored): how --train-hr folders are named."""
    return osp.basename(osp.normpath(path))


def data_names(root, train_hr=None):
    """path -> the name it is hashed by: under ``root`` (the prepared training data, held-out and bicubic test
    sets) relative to it, prefixed by the --train-hr folder names the data was made from; elsewhere its folder name
    (the dataset's name, e.g. Set5, is hashed beside it): the same data under another root or mount point hashes
    the same."""
    root = osp.abspath(root)
    sources = '+'.join(folder_name(f) for f in train_hr or [])

    def name(path):
        path = osp.abspath(path)
        if path.startswith(root + os.sep):
            return f'{sources}:{osp.relpath(path, root)}'
        return osp.basename(path)
    return name


def test_options(train_opt, name, model_path, test_sets):
    metrics = train_opt['val']['metrics']
    opt = {'name': name, 'model_type': train_opt['model_type'], 'scale': train_opt['scale'], 'num_gpu': 'auto',
           'manual_seed': train_opt['manual_seed'],
           'datasets': {f'test_{i + 1}': dict(_paired_disk(n, roots), phase='test')
                        for i, (n, roots) in enumerate(test_sets.items())},
           'network_g': train_opt['network_g'],
           'path': dict(pretrain_network_g=model_path, strict_load_g=True,
                        param_key_g='params_ema' if train_opt['train'].get('ema_decay', 0) > 0 else 'params'),
           'val': dict(save_img=False, suffix=None, metrics=metrics)}
    return opt


def write_yaml(opt, path):
    return write_atomically(path, yaml.safe_dump(opt, sort_keys=False))


def count_parameters(network_opt):
    import torch
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net = build_network(copy.deepcopy(network_opt))
    return sum(p.numel() for p in net.parameters())
