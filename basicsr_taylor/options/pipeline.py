"""BasicSR's own train and test pipelines run with the plugin's parse_options: the option file read with a safe
loader and checked whole before anything happens, and BasicSR's model classes replaced by the plugin's.

``model_type: SRModel`` (or SwinIRModel, SRGANModel, ESRGANModel, RealESRNetModel, RealESRGANModel) builds the
plugin's subclass (``TaylorSRModel``, ...: basicsr_taylor/models/), with a one-line notice; the option file itself
is left as it is (the ablation runner's run names hash it).
"""
import functools
import importlib
import os
import os.path as osp
import random
import sys

from ..utils import compat, pretrained
from ..utils.cli import accept_dashed_local_rank, pipeline_parser
from .checks import _exists_from_option_file, check_options
from .file import apply_force_yml, read_option_file
from .keys import OptionError

__all__ = ['OptionError', 'parse_options', 'run_basicsr_pipeline', 'taylor_model_type']


def taylor_model_type(opt, model_types=None):
    """Replace a BasicSR ``model_type`` by the plugin's class's registered name (``model_types``: BasicSR's name ->
    class, default models.TAYLOR_MODELS); returns the one-line notice, or None when nothing was replaced."""
    if model_types is None:
        from ..models import TAYLOR_MODELS as model_types
    name = opt.get('model_type')
    basicsr_name = name[:-len('_basicsr')] if isinstance(name, str) and name.endswith('_basicsr') else name
    if basicsr_name not in model_types:
        return None
    opt['model_type'] = model_types[basicsr_name].__name__
    return (f'model_type: {name} runs as {opt["model_type"]}, its subclass with mixed precision, atomic '
            'checkpoints and the schedule on resume (docs/training.md)')


def resolve_bundled_model(opt):
    """``path:pretrain_network_g: zoo:NAME`` -> the weight file of that bundled model, its SHA-256 checked
    (basicsr_taylor/zoo)."""
    from ..zoo import ZooError, resolve
    path = opt.get('path') or {}
    if isinstance(path.get('pretrain_network_g'), str):
        try:
            path['pretrain_network_g'] = resolve(path['pretrain_network_g'], bare_names=False)
        except ZooError as err:
            raise OptionError(f'path:pretrain_network_g: {err}') from None


def parse_options(root_path, is_train=True, model_types=None):
    """basicsr.utils.options.parse_options, with the option file read safely and checked before anything else
    happens (distributed start, seeding, printing): --force_yml values are parsed as YAML (BasicSR built them into
    an ``exec`` and ``eval``-ed lists) and applied before the seed is set; BasicSR's model class replaced by the
    plugin's (:func:`taylor_model_type`)."""
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info
    args = pipeline_parser('train' if is_train else 'test').parse_args(
        accept_dashed_local_rank(sys.argv[1:]))
    opt = read_option_file(args.opt)
    try:
        forced = apply_force_yml(opt, args.force_yml)
        opt['auto_resume'], opt['is_train'] = args.auto_resume, is_train
        try:
            resolve_bundled_model(opt)
            check_options(opt)
        except OptionError as err:
            err = _exists_from_option_file(err, args.opt)
            if getattr(err, 'key', None) in forced:
                raise OptionError(f'--force_yml {forced[err.key]}: {err}') from None
            raise err
    except OptionError as err:
        raise OptionError(f'{args.opt}: {err}') from None
    perceptual = (opt.get('train') or {}).get('perceptual_opt') if is_train else None
    if perceptual:  # download the VGG weights (or fail in one line) before BasicSR creates the experiment
        pretrained.ensure_vgg_weights(perceptual.get('vgg_type', 'vgg19'))
    # from here on as BasicSR's parse_options
    if args.launcher == 'none':
        opt['dist'] = False
        print('Disable distributed.', flush=True)
    else:
        opt['dist'] = True
        if args.launcher == 'slurm' and 'dist_params' in opt:
            compat.init_dist(args.launcher, **opt['dist_params'])
        else:
            compat.init_dist(args.launcher)
    opt['rank'], opt['world_size'] = get_dist_info()
    notice = taylor_model_type(opt, model_types)
    if notice and opt['rank'] == 0:
        print(notice, flush=True)
    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(1, 10000)
    set_random_seed(opt['manual_seed'] + opt['rank'])
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    if opt['num_gpu'] == 'auto':
        import torch
        opt['num_gpu'] = torch.cuda.device_count()
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = osp.expanduser(dataset[key])
    for key, value in opt['path'].items():
        if value is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(value)
    if is_train:
        root = osp.join(root_path, 'experiments', opt['name'])
        opt['path'].update(experiments_root=root, models=osp.join(root, 'models'), log=root,
                           training_states=osp.join(root, 'training_states'),
                           visualization=osp.join(root, 'visualization'))
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        root = osp.join(root_path, 'results', opt['name'])
        opt['path'].update(results_root=root, log=root, visualization=osp.join(root, 'visualization'))
    return opt, args


def run_basicsr_pipeline(kind, argv=None, model_types=None):
    """``basicsr.<kind>.<kind>_pipeline`` with root_path = the current directory, so experiments/, tb_logger/ and
    results/ go where the command runs (and where --auto_resume looks). ``argv`` defaults to sys.argv[1:];
    ``model_types``: see :func:`taylor_model_type`."""
    argv = accept_dashed_local_rank(sys.argv[1:] if argv is None else list(argv))
    pipeline_parser(kind).parse_args(argv)  # --help, and usage errors before anything runs
    compat.install_training_fixes(functools.partial(parse_options, model_types=model_types))
    module = importlib.import_module(f'basicsr.{kind}')
    sys.argv = [sys.argv[0]] + argv
    try:
        getattr(module, f'{kind}_pipeline')(os.getcwd())
    except (OptionError, pretrained.MissingWeightsError) as err:
        raise SystemExit(f'basicsr-taylor-{kind}: error: {err}') from None
