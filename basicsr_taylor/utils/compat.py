"""The fixes to BasicSR 1.4.2 that cannot be a model class, in one place; none imports torch at import time.

What the plugin adds to training is in its model classes (basicsr_taylor/models/, methods of subclasses). What is
left here answers defects of BasicSR 1.4.2 on today's torch/torchvision/Python, or without CUDA; each is a no-op
where BasicSR already works.

Import-order fixes, :func:`install` (``import basicsr_taylor`` runs it; it imports neither torch nor BasicSR):
  - ``torchvision.transforms.functional_tensor`` supplied (basicsr_taylor_hook.py; tests/test_import_order.py);
  - distutils on Python >= 3.12 (setuptools' bundled copy).
Used by the plugin's own parse_options (options/pipeline.py), no assignment: :class:`SafeOrderedLoader`,
:func:`init_dist`.

Assignments to attributes of BasicSR (7, each counted; none to torch). :func:`install_training_fixes` makes 1-4, for
the train and test commands only; the others are made where they are needed:
  1. ``basicsr.train.parse_options`` -> the plugin's: the option file read safely and checked first;
  2. ``basicsr.test.parse_options`` -> the same for the test pipeline;
  3. ``basicsr.train.load_resume_state`` -> :func:`load_resume_state`;
  4. ``basicsr.train.create_train_val_dataloader`` -> :func:`epochs_from_loader` around BasicSR's;
  5. ``ARCH_REGISTRY._obj_map[name]`` (an item of BasicSR's private dict): :func:`replace_registered_arch`, when a
     file registering an architecture is executed again (utils/registry.py);
  6, 7. ``basicsr.utils.lmdb_util.tqdm``, set and restored by :func:`lmdb_writer_bars` while the data commands
     write an LMDB (data/lmdb_files.py).
"""
import contextlib
import importlib.util
import logging
import math
import os
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import yaml


def install():
    """Apply the import-order fixes (before the first ``import basicsr``). Idempotent; imports nothing heavy."""
    # basicsr 1.4.2: degradations.py imports torchvision's functional_tensor, gone in 0.17 (test_import_order.py)
    import basicsr_taylor_hook
    basicsr_taylor_hook.install()
    # basicsr 1.4.2: arch_util.py imports distutils, gone in Python 3.12 (test_import_order.py imports basicsr)
    if sys.version_info >= (3, 12) and importlib.util.find_spec('distutils') is None:
        import setuptools  # noqa: F401  (side effect: registers setuptools' distutils)


# basicsr 1.4.2: option files read by PyYAML's full loader run !!python tags (test_train.py::test_unreadable_...)
class SafeOrderedLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """PyYAML's safe loader building OrderedDicts, as BasicSR's loader does; Python tags (``!!python/object/apply:
    os.system [...]`` in a downloaded recipe ran a command) are refused, YAML's standard ones (``!!float 2e-4``)
    kept."""


SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                  lambda loader, node: OrderedDict(loader.construct_pairs(node)))


# basicsr 1.4.2: init_dist hard-codes NCCL and a CUDA device (test_train.py::test_torchrun_two_processes_gloo)
def init_dist(launcher, backend='nccl', **kwargs):
    """basicsr.utils.dist_util.init_dist with CUDA; the gloo backend and no ``cuda.set_device`` without it."""
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from basicsr.utils import dist_util
    if torch.cuda.is_available():
        return dist_util.init_dist(launcher, backend, **kwargs)  # BasicSR's own (NCCL, one GPU per rank)
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    if launcher == 'slurm':  # the environment BasicSR's _init_dist_slurm sets, without the GPU index
        port = kwargs.pop('port', None)
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f"scontrol show hostname {os.environ['SLURM_NODELIST']} | head -n1")
        os.environ['MASTER_PORT'] = str(port or os.environ.get('MASTER_PORT', '29500'))
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    elif launcher != 'pytorch':
        raise ValueError(f'Invalid launcher type: {launcher}')
    return dist.init_process_group(backend='gloo', **kwargs)


# basicsr 1.4.2: load_resume_state needs CUDA and torch.load's pre-2.6 default (test_train.py::test_resume_skips_...)
def load_resume_state(opt):
    """basicsr.train.load_resume_state on the CPU and today's torch.load (the state holds the scheduler's Counter of
    milestones). With --auto_resume a newest state that cannot be read (a run killed while writing it) is skipped
    for the one before it."""
    import torch
    from basicsr.utils import check_resume, scandir
    if torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731  (BasicSR's choice)
    else:
        map_location = 'cpu'
    if opt['auto_resume']:
        state_dir = osp.join('experiments', opt['name'], 'training_states')
        iters = sorted((int(float(name[:-len('.state')]))
                        for name in (scandir(state_dir, suffix='state') if osp.isdir(state_dir) else [])),
                       reverse=True)
        candidates = [osp.join(state_dir, f'{it}.state') for it in iters]
    else:
        candidates = [opt['path']['resume_state']] if opt['path'].get('resume_state') else []
    for i, path in enumerate(candidates):
        try:
            resume_state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err:  # noqa: BLE001  (any unreadable file: truncated zip, empty file, ...)
            if not opt['auto_resume'] or i + 1 == len(candidates):
                raise RuntimeError(f'cannot read training state {path}: {err}') from err
            # not get_root_logger(): initialising BasicSR's logger before train_pipeline does would leave
            # the run without its log file; this goes to stderr
            logging.getLogger('basicsr').warning(f'Skipping unreadable training state {path}: {err}')
            continue
        opt['path']['resume_state'] = path
        check_resume(opt, resume_state['iter'])
        return resume_state
    return None


# basicsr 1.4.2: epochs counted as if the loader kept its last batch (test_train.py::test_training_runs_total_iter_...)
def epochs_from_loader(original):
    """create_train_val_dataloader with the epochs counted from the train loader's own length: BasicSR counted
    ceil(images / batch) iterations per epoch, its loader drops the last incomplete batch, and a small dataset
    stopped short of total_iter (the quickstart's 1600 iterations at 1553)."""

    def create_train_val_dataloader(opt, logger):
        train_loader, train_sampler, val_loaders, total_epochs, total_iters = original(opt, logger)
        if train_loader is not None and len(train_loader):
            total_epochs = max(total_epochs, math.ceil(total_iters / len(train_loader)))
        return train_loader, train_sampler, val_loaders, total_epochs, total_iters

    create_train_val_dataloader.__wrapped__ = original
    return create_train_val_dataloader


def install_training_fixes(parse_options):
    """Assignments 1-4 of the module docstring, for BasicSR's train and test pipelines. Idempotent."""
    import basicsr.test
    import basicsr.train
    basicsr.train.parse_options = parse_options  # 1
    basicsr.test.parse_options = parse_options  # 2
    basicsr.train.load_resume_state = load_resume_state  # 3
    if not hasattr(basicsr.train.create_train_val_dataloader, '__wrapped__'):
        basicsr.train.create_train_val_dataloader = epochs_from_loader(basicsr.train.create_train_val_dataloader)  # 4


# basicsr 1.4.2: Registry asserts on a second registration, has no replace (test_compat.py::test_the_registry_...)
def replace_registered_arch(name, cls):
    """Assignment 5: ``cls`` replaces the entry ``name`` of BasicSR's ARCH_REGISTRY."""
    from basicsr.utils.registry import ARCH_REGISTRY
    ARCH_REGISTRY._obj_map[name] = cls  # noqa: SLF001  # 5


# basicsr 1.4.2: make_lmdb_from_imgs renames its bar for every image (test_train.py::test_progress_bars_only_...)
@contextlib.contextmanager
def lmdb_writer_bars(bar):
    """Assignments 6 and 7: ``basicsr.utils.lmdb_util.tqdm`` is ``bar`` inside the block."""
    from basicsr.utils import lmdb_util
    original = lmdb_util.tqdm
    lmdb_util.tqdm = bar  # 6
    try:
        yield
    finally:
        lmdb_util.tqdm = original  # 7
