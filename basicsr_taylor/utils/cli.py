"""What the commands need before their heavy imports: which command this process runs, its --help answered
without importing torch or BasicSR, and the train/test commands' flags (BasicSR's parse_options)."""
import argparse
import os.path as osp
import sys

# console script basicsr-taylor-<name> -> module basicsr_taylor.<module>
COMMANDS = {'train': 'train', 'test': 'test', 'infer': 'infer', 'export': 'export', 'quickstart': 'quickstart',
            'prepare': 'prepare_data', 'ablation': 'ablation'}
PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


def running_command():
    """The module name ('infer', 'prepare_data', ...) of the basicsr-taylor command this process runs, or None:
    from the console script's name, ``python -m basicsr_taylor.<module>`` or ``python basicsr_taylor/<module>.py``."""
    argv0 = sys.argv[0] if sys.argv else ''
    name = osp.basename(argv0)
    if name.startswith('basicsr-taylor-'):
        return COMMANDS.get(name[len('basicsr-taylor-'):].split('.')[0])
    if argv0 == '-m' or (name.endswith('.py') and osp.dirname(osp.abspath(argv0)) == PACKAGE_DIR):
        if argv0 != '-m':
            return name[:-3]
        orig = getattr(sys, 'orig_argv', [])  # python >= 3.10; the package is imported while argv[0] is '-m'
        module = next((orig[i + 1] for i, arg in enumerate(orig[:-1]) if arg == '-m'), '')
        return module.split('.', 1)[1] if module.startswith('basicsr_taylor.') else None
    return None


EARLY_FLAGS = {'infer': ('--list-models', )}  # flags besides --help that a command answers before importing torch


def asks_for_help(command=None):
    args = sys.argv[1:]
    args = args[:args.index('--')] if '--' in args else args
    return any(arg in ('-h', '--help') + EARLY_FLAGS.get(command, ()) for arg in args)


def answering_help(module=None):
    """True when this process is a basicsr-taylor command (``module``, or any) asked for --help (or another of its
    EARLY_FLAGS)."""
    command = running_command()
    return asks_for_help(command) and command is not None and (module is None or command == module)


def answer_help_early(module, parse_args):
    """At the top of a command module, before its heavy imports: when this process is that command's --help,
    ``parse_args()`` prints it and exits, so --help imports neither torch nor BasicSR."""
    if answering_help(module):
        parse_args()


def accept_dashed_local_rank(argv):
    """``python -m torch.distributed.launch`` passes ``--local-rank=N`` (torch >= 2.0); BasicSR's parser only
    knows ``--local_rank``. Return argv with the dashed spelling rewritten (the value is unused either way:
    the launcher also sets the LOCAL_RANK environment variable)."""
    return [('--local_rank' + a[len('--local-rank'):]) if a.startswith('--local-rank') else a for a in argv]


def pipeline_parser(kind):
    """BasicSR's command-line flags (basicsr.utils.options.parse_options), described for --help. The test command
    accepts the training flags as BasicSR does, without listing them."""
    verb = {'train': 'Train', 'test': 'Test (PSNR/SSIM, saved images)'}[kind]
    where = {'train': 'experiments/<name>/ and tb_logger/<name>/', 'test': 'results/<name>/'}[kind]
    training = kind == 'train'
    parser = argparse.ArgumentParser(
        prog=f'basicsr-taylor-{kind}',
        description=f'{verb} with BasicSR\'s own pipeline, TaylorSwinIR registered. Writes {where} under the '
        'current directory. The whole option file is checked (keys, data, sizes, network) before anything is '
        'written.')
    parser.add_argument('-opt', required=True, metavar='FILE', help=f'BasicSR option file, e.g. options/{kind}_x2.yml')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='none: one process (default); pytorch: started by torchrun; slurm: started by srun')
    parser.add_argument('--auto_resume', action='store_true',
                        help='continue from the newest state in experiments/<name>/training_states' if training
                        else argparse.SUPPRESS)
    parser.add_argument('--debug', action='store_true',
                        help='BasicSR debug mode: name prefixed with debug_, validation every 8 iterations, '
                        'logs every iteration, no tensorboard' if training else argparse.SUPPRESS)
    parser.add_argument('--local_rank', type=int, default=0, help='set by torch.distributed.launch (unused)')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override options, e.g. ' + ('train:total_iter=1000 datasets:train:batch_size_per_gpu=2'
                                                          if training else 'val:save_img=false') +
                        ' (values are YAML; an unknown key is an error)')
    return parser
