"""The keys an option file may hold: what BasicSR 1.4.2 and the plugin read, section by section.

Every key of the whole file is checked (one-line :class:`OptionError` with a did-you-mean), and the keys the run
cannot do without must be there; BasicSR itself ignores a misspelled key and raises a KeyError for a missing one,
often after it has created experiments/<name>. Where the code tells, the keys come from it:

- ``network_g`` / ``network_d``, losses (``train:*_opt``), ``train:optim_*``, ``train:scheduler`` and
  ``val:metrics:*``: the constructor's or function's signature (``inspect``); parameters without a default are
  required;
- the model type (top level, ``train``, ``val``, ``path``) and the dataset type (``datasets:*``): the keys their
  source reads (``opt['key']``, ``opt.get('key')``, ``'key' in opt``, also through their base classes); a key only
  ever read as ``opt['key']`` is required (for a dataset: in ``__init__`` for every phase, anywhere for train);
- the pipeline's own keys (basicsr/train.py, test.py, utils/options.py, utils/logger.py, data/__init__.py): the
  tables below.

What BasicSR's own model and dataset classes read comes from ``basicsr_keys.json`` beside this module (written by
scripts/option_key_table.py from the installed BasicSR, checked against it by tests/test_option_keys.py); their
source is read only for the classes not in it (the plugin's, a user's) or under another BasicSR version.

To accept more keys (a new plugin option), add them to a table here or call :func:`accept`.
"""
import difflib
import functools
import inspect
import json
import re
from os import path as osp


class OptionError(ValueError):
    """An option file that cannot work; the message names the key (``datasets:train:dataroot_gt``)."""


# Read by BasicSR's pipeline whatever the model type; set by its parse_options (dist, rank, ...) are accepted too.
KNOWN = {
    '': {'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'path', 'train', 'val',
         'logger', 'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank', 'world_size', 'auto_resume',
         'root_path'},
    'train': {'total_iter', 'warmup_iter', 'optim_g', 'scheduler',
              'precision'},  # plugin: bf16 | fp16 | fp32 (models/precision.py)
    'val': {'val_freq', 'save_img', 'metrics', 'suffix', 'pbar',
            'precision'},  # plugin: bf16 | fp16 | fp32 (models/precision.py)
    'path': {'pretrain_network_g', 'param_key_g', 'strict_load_g', 'resume_state', 'experiments_root', 'models',
             'training_states', 'log', 'visualization', 'results_root'},
    'logger': {'print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'},
    'logger:wandb': {'project', 'resume_id'},
    'dist_params': {'backend', 'port'},
    'datasets:*': {'name', 'type', 'phase', 'scale', 'batch_size_per_gpu', 'num_worker_per_gpu',
                   'dataset_enlarge_ratio', 'use_shuffle', 'pin_memory', 'persistent_workers', 'prefetch_mode',
                   'num_prefetch_queue', 'io_backend'},
    'datasets:*:io_backend': {'type', 'db_paths', 'client_keys'},
    # Real-ESRGAN's degradation block is top-level; RealESRNetModel / RealESRGANModel read it (found by the scan)
    'degradation': {'high_order_degradation', 'gt_usm', 'l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm', 'queue_size',
                    'resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range', 'poisson_scale_range',
                    'gray_noise_prob', 'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2',
                    'gaussian_noise_prob2', 'noise_range2', 'poisson_scale_range2', 'gray_noise_prob2',
                    'jpeg_range2', 'gt_size'},
}
# Keys a model type or dataset type reads that the source scan cannot see: {type name: {section: keys}}.
EXTRA = {'RealESRGANDataset': {'datasets:*': {'gt_size'}}}  # in BasicSR's Real-ESRGAN recipes; the model crops
SCHEDULERS = {'MultiStepLR': 'MultiStepRestartLR'}  # BasicSR's setup_schedulers: option name -> class
SET_BY_BASICSR = {'phase', 'scale', 'is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path'}


def accept(section, keys, type_name=None):
    """Accept ``keys`` in ``section`` ('' = top level, 'train', 'datasets:*', ...), for one model or dataset type
    only when ``type_name`` is given."""
    table = KNOWN if type_name is None else EXTRA.setdefault(type_name, {})
    table.setdefault(section, set()).update(keys)


_READ = re.compile(r"""(?<![\w.])(?:self\.)?opt(?:\[['"](\w+)['"]\]|\.get\(['"](\w+)['"])"""
                   r"""|['"](\w+)['"] in (?:self\.)?opt\b""")
_SECTION = re.compile(r"""(?:(?<![\w.])(?:self\.)?opt\[['"](\w+)['"]\]|\b(train|val|path|logger)_opt)"""
                      r"""(?:\[['"](\w+)['"]\]|\.get\(['"](\w+)['"])""")


TABLE = osp.join(osp.dirname(osp.abspath(__file__)), 'basicsr_keys.json')


def _bases(cls):
    """``cls`` and its bases whose source may read options (up to torch's and Python's own classes)."""
    for klass in inspect.getmro(cls):
        if klass.__module__.split('.')[0] in ('torch', 'builtins'):
            break
        yield klass


def _own_source(klass, method=None):
    """The source of ``klass``, or of ``method`` where ``klass`` itself defines it; '' where there is none."""
    try:
        if method is None:
            return inspect.getsource(klass)
        return inspect.getsource(getattr(klass, method)) if method in vars(klass) else ''
    except (OSError, TypeError, AttributeError):
        return ''


def _note(table, key, optional):
    table[key] = 'optional' if optional or table.get(key) == 'optional' else 'subscript'


def _scan(source):
    """({key: 'subscript' | 'optional'}, {section: {key: ...}}) of what ``source`` reads of its opt."""
    top, sections = {}, {}
    for sub, get, contains in _READ.findall(source):
        _note(top, sub or get or contains, not sub)
    for section, prefixed, sub, get in _SECTION.findall(source):
        _note(sections.setdefault(section or prefixed, {}), sub or get, not sub)
    return top, sections


def class_record(klass):
    """What ``klass`` itself reads (its bases not included), from its source: one entry of the key table."""
    reads, sections = _scan(_own_source(klass))
    init_reads, _ = _scan(_own_source(klass, '__init__'))
    optimizers = set(re.findall(r"optim_type == '(\w+)'", _own_source(klass, 'get_optimizer')))
    schedulers = set(re.findall(r"'(\w+)'", _own_source(klass, 'setup_schedulers'))) - {'scheduler', 'type'}
    record = dict(reads=reads, sections=sections, init_reads=init_reads, optimizers=sorted(optimizers),
                  schedulers=sorted(schedulers))
    return {name: value for name, value in record.items() if value}


def _qualified(klass):
    return f'{klass.__module__}.{klass.__qualname__}'


def build_key_table():
    """The key table of the installed BasicSR: every class of its MODEL_REGISTRY and DATASET_REGISTRY (and their
    bases) whose module is BasicSR's, read from the source (scripts/option_key_table.py writes it)."""
    import basicsr
    import basicsr.data  # noqa: F401  (registers the datasets)
    import basicsr.models  # noqa: F401  (registers the models)
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY
    table = {'basicsr_version': basicsr.__version__}
    for kind, registry in (('models', MODEL_REGISTRY), ('datasets', DATASET_REGISTRY)):
        table[kind] = {_qualified(klass): class_record(klass)
                       for _, cls in sorted(iter(registry)) if cls.__module__.startswith('basicsr.')
                       for klass in _bases(cls) if klass.__module__.startswith('basicsr.')}
    return table


def dump_key_table(table):
    """The table as the checked-in file holds it (sorted keys, stable)."""
    return json.dumps(table, indent=1, sort_keys=True) + '\n'


@functools.lru_cache(maxsize=None)
def key_table(path=TABLE):
    """{qualified class name: entry} of the checked-in table; empty where it is missing or made for another
    BasicSR version than the installed one (the classes' source is read then)."""
    import basicsr
    try:
        with open(path, encoding='utf-8') as f:
            table = json.load(f)
    except (OSError, ValueError):
        return {}
    if table.get('basicsr_version') != basicsr.__version__:
        return {}
    return {**table.get('models', {}), **table.get('datasets', {})}


def _records(cls):
    """The table's entries of ``cls`` and its bases; a class not in it (the plugin's, a user's) from its source."""
    table = key_table()
    for klass in _bases(cls):
        record = table.get(_qualified(klass)) if klass.__module__.startswith('basicsr.') else None
        yield class_record(klass) if record is None else record


def keys_read(cls, method=None):
    """({key: 'subscript' | 'optional'}, {(section, key): ...}) of what ``cls`` (and its bases) read of its opt;
    ``method`` '__init__': what their ``__init__`` reads (top level only)."""
    assert method in (None, '__init__'), method
    top, sections = {}, {}
    for record in _records(cls):
        for key, how in record.get('reads' if method is None else 'init_reads', {}).items():
            _note(top, key, how == 'optional')
        for section, keys in (record.get('sections', {}) if method is None else {}).items():
            for key, how in keys.items():
                _note(sections, (section, key), how == 'optional')
    return top, sections


def signature_keys(func, skip=()):
    """(accepted names, required names, takes anything) of a constructor or function's keyword parameters."""
    params = [p for name, p in inspect.signature(func).parameters.items() if name not in skip]
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    anything = not named and any(p.kind == p.VAR_KEYWORD for p in params)
    return {p.name for p in named}, {p.name for p in named if p.default is p.empty}, anything


def unknown_key(where, key, known):
    """The one-line error for ``key`` at ``where`` (a key path prefix), with the closest known key."""
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    hint = f'did you mean {close[0]!r}?' if close else \
        (f'known: {", ".join(sorted(known))}' if len(known) <= 40 else 'no similar key')
    err = OptionError(f'{where}{key}: unknown key; {hint}')
    err.key = f'{where}{key}'
    return err


def check_mapping(where, value, known, required=(), anything=False):
    """``value`` is a mapping whose keys are all in ``known`` and which has every ``required`` key."""
    if not isinstance(value, dict):
        raise OptionError(f'{where.rstrip(":")}: expected a mapping of options, got {value!r}')
    if not anything:
        for key in value:
            if key not in known:
                raise unknown_key(where, key, known)
    for key in sorted(required):
        if key not in value:
            raise OptionError(f'{where}{key} is missing')


def _registered(registry, name, key):
    """The object registered as ``name`` (or ``name``_basicsr, as BasicSR's Registry.get falls back to)."""
    if name is None:
        raise OptionError(f'{key} is missing')
    objects = registry if isinstance(registry, dict) else dict(iter(registry))
    found = objects.get(name, objects.get(f'{name}_basicsr'))
    if found is None or not isinstance(name, str):
        raise OptionError(f'{key}: unknown type {name!r}; registered: {", ".join(sorted(objects))}')
    return found


def check_typed(where, value, registry, skip=(), extra=()):
    """A ``{type: Name, ...}`` block whose other keys are the registered object's parameters."""
    if not isinstance(value, dict):
        raise OptionError(f'{where.rstrip(":")}: expected a mapping of options, got {value!r}')
    obj = _registered(registry, value.get('type'), f'{where}type')
    accepted, required, anything = signature_keys(obj, skip)
    check_mapping(where, value, accepted | {'type'} | set(extra), required - set(skip), anything)
    return obj


def _section_tables(kind_name, top, sections):
    known = {}
    for (section, key), _ in sections.items():
        known.setdefault(section, set()).add(key)
    known.setdefault('', set()).update(top)
    for section, keys in EXTRA.get(kind_name, {}).items():
        known.setdefault(section, set()).update(keys)
    return known


class _Lookup(dict):
    """A name -> class table with the ``in`` / ``get`` / ``keys`` of BasicSR's Registry."""


def _optimizers(model_cls):
    """The optimizer types the model's get_optimizer accepts (BasicSR 1.4.2: Adam only), as classes."""
    import torch
    names = {name for record in _records(model_cls) for name in record.get('optimizers', ())}
    names = names or {n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)}
    return _Lookup({n: getattr(torch.optim, n) for n in names if hasattr(torch.optim, n)})


def _schedulers(model_cls):
    """The scheduler types the model's setup_schedulers accepts, as classes of basicsr.models.lr_scheduler."""
    from basicsr.models import lr_scheduler
    names = {name for record in _records(model_cls) for name in record.get('schedulers', ())}
    return _Lookup({n: getattr(lr_scheduler, SCHEDULERS.get(n, n)) for n in names
                    if hasattr(lr_scheduler, SCHEDULERS.get(n, n))})


def _required(reads, exclude=()):
    return {key for key, how in reads.items() if how == 'subscript'} - SET_BY_BASICSR - set(exclude)


def check_dataset_keys(phase, dataset, is_train):
    from basicsr.utils.registry import DATASET_REGISTRY
    where = f'datasets:{phase}:'
    if not isinstance(dataset, dict):
        raise OptionError(f'datasets:{phase}: expected a mapping of options, got {dataset!r}')
    cls = _registered(DATASET_REGISTRY, dataset.get('type'), f'{where}type')
    reads, _ = keys_read(cls)
    known = KNOWN['datasets:*'] | set(reads) | EXTRA.get(dataset['type'], {}).get('datasets:*', set())
    if phase == 'train':
        required = _required(reads) | {'batch_size_per_gpu', 'num_worker_per_gpu'}
    else:
        required = _required(keys_read(cls, '__init__')[0])
    check_mapping(where, dataset, known, required | {'name'})
    if 'io_backend' in dataset:
        check_mapping(f'{where}io_backend:', dataset['io_backend'], KNOWN['datasets:*:io_backend'], {'type'})


def check_keys(opt):
    """Raise :class:`OptionError` for the first unknown or missing key of the whole option dict."""
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
    is_train = opt.get('is_train', True)
    model_cls = _registered(MODEL_REGISTRY, opt.get('model_type'), 'model_type')
    top, sections = keys_read(model_cls)
    known = _section_tables(opt['model_type'], top, sections)
    top_known = KNOWN[''] | known['']
    if top_known & KNOWN['degradation']:  # a model that reads Real-ESRGAN's degradation keys
        top_known |= KNOWN['degradation']
    required = {'name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path'}
    required |= {'train', 'logger'} | _required(top, exclude=('val', )) if is_train else {'val'}
    check_mapping('', opt, top_known, required)

    check_typed('network_g:', opt['network_g'], ARCH_REGISTRY)
    if opt.get('network_d') is not None:
        check_typed('network_d:', opt['network_d'], ARCH_REGISTRY)
    path_known = KNOWN['path'] | known.get('path', set())
    if isinstance(opt['path'], dict):
        path_known |= {k for k in opt['path'] if re.fullmatch(r'(pretrain_network|param_key|strict_load)_\w+', k)}
    check_mapping('path:', opt['path'], path_known)

    if not isinstance(opt['datasets'], dict) or not opt['datasets']:
        raise OptionError('datasets: expected a mapping of phase names (train, val, test_1, ...) to datasets')
    for phase, dataset in opt['datasets'].items():
        if is_train and phase != 'train' and phase.split('_')[0] != 'val':
            raise OptionError(f'datasets:{phase}: a training run takes the phases train and val, val_1, ... '
                              f'(BasicSR raises "Dataset phase {phase} is not recognized")')
        check_dataset_keys(phase, dataset, is_train)

    if opt.get('train') is not None:
        train = opt['train']
        check_mapping('train:', train, KNOWN['train'] | known.get('train', set()),
                      ({'total_iter'} | _required({k: v for (s, k), v in sections.items() if s == 'train'}))
                      if is_train else ())
        for key, value in train.items():
            if key.startswith('optim_'):
                check_typed(f'train:{key}:', value, _optimizers(model_cls), skip=('params', ))
            elif key == 'scheduler':
                check_typed('train:scheduler:', value, _schedulers(model_cls), skip=('optimizer', ))
            elif key.endswith('_opt') and value is not None:
                check_typed(f'train:{key}:', value, LOSS_REGISTRY)
    if opt.get('val') is not None:
        val = opt['val']
        val_required = {'save_img'} | ({'val_freq'} if is_train else set())
        check_mapping('val:', val, KNOWN['val'] | known.get('val', set()), val_required)
        for name, metric in (val.get('metrics') or {}).items():
            check_typed(f'val:metrics:{name}:', metric, METRIC_REGISTRY, skip=('img', 'img2'), extra=('better', ))
    if opt.get('logger') is not None:
        check_mapping('logger:', opt['logger'], KNOWN['logger'],
                      ('print_freq', 'save_checkpoint_freq', 'use_tb_logger') if is_train else ())
        if opt['logger'].get('wandb') is not None:
            check_mapping('logger:wandb:', opt['logger']['wandb'], KNOWN['logger:wandb'])
    if opt.get('dist_params') is not None:
        check_mapping('dist_params:', opt['dist_params'], KNOWN['dist_params'])
