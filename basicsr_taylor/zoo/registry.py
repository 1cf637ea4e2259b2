"""The bundled models' registry: plain JSON, read without torch or BasicSR (``basicsr-taylor-infer --list-models``).

A zoo folder holds ``models.json`` and the weight files it names::

    {"models": [{"name": "TaylorSwinIR-light-x2", "scale": 2,
                 "network_g": {"type": "TaylorSwinIR", "upscale": 2, "window_size": 8, ...},
                 "file": "TaylorSwinIR-light-x2.pth", "sha256": "<64 hex digits>", "size": 3712345,
                 "set5_psnr": 37.12}]}

``network_g`` is the option file's section that builds the network; ``file`` lies in the same folder and holds
``{'params': EMA weights}``; ``size`` is its length in bytes; ``set5_psnr`` the Y PSNR on Set5 (null until measured).
The package's own folder (``basicsr_taylor/zoo/``) is always searched; the folders named by the environment variable
``BASICSR_TAYLOR_ZOO`` (separated by ``os.pathsep``) are searched first, so their models come before the package's
ones of the same name or scale.
"""
import hashlib
import json
import os
from os import path as osp

PACKAGE_FOLDER = osp.dirname(osp.abspath(__file__))
REGISTRY_FILE = 'models.json'
ZOO_ENV = 'BASICSR_TAYLOR_ZOO'
PREFIX = 'zoo:'  # path:pretrain_network_g: zoo:NAME, --model zoo:NAME
MAX_FILE_BYTES = 5_000_000  # a bundled weight file is at most 5 MB
ENTRY_TYPES = {'name': str, 'scale': int, 'network_g': dict, 'file': str, 'sha256': str, 'size': int,
               'set5_psnr': (int, float, type(None))}


class ZooError(ValueError):
    """A bundled model that is not registered, is missing, or whose file does not match its SHA-256."""


def zoo_folders(folders=None):
    """The folders whose ``models.json`` are read: ``folders`` if given, else those of BASICSR_TAYLOR_ZOO, then the
    package's own."""
    if folders is not None:
        return [str(folder) for folder in folders]
    extra = [folder for folder in os.environ.get(ZOO_ENV, '').split(os.pathsep) if folder]
    return extra + [PACKAGE_FOLDER]


def _check_entry(entry, where):
    if not isinstance(entry, dict):
        raise ZooError(f'{where}: expected a mapping, got {entry!r}')
    for key, kind in ENTRY_TYPES.items():
        if key not in entry:
            raise ZooError(f'{where}: {key} is missing')
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            raise ZooError(f'{where}: {key} has the wrong type: {entry[key]!r}')
    if entry['file'] != osp.basename(entry['file']) or not entry['file']:
        raise ZooError(f'{where}: file must be a file name in the same folder, got {entry["file"]!r}')
    if 'type' not in entry['network_g']:
        raise ZooError(f'{where}: network_g has no type')
    if len(entry['sha256']) != 64:
        raise ZooError(f'{where}: sha256 must be 64 hex digits, got {entry["sha256"]!r}')


def read_registry(folder):
    """The entries of ``folder``/models.json, each with ``path`` (its weight file) and ``registry`` added."""
    registry = osp.join(folder, REGISTRY_FILE)
    if not osp.isfile(registry):
        source = f' (named by {ZOO_ENV})' if osp.abspath(folder) != PACKAGE_FOLDER else ''
        raise ZooError(f'no {REGISTRY_FILE} in the zoo folder {folder}{source}')
    try:
        with open(registry, encoding='utf-8') as f:
            content = json.load(f)
    except (OSError, ValueError) as error:
        raise ZooError(f'{registry}: cannot be read: {error}') from None
    models = content.get('models') if isinstance(content, dict) else None
    if not isinstance(models, list):
        raise ZooError(f'{registry}: expected {{"models": [...]}}')
    entries, names = [], set()
    for index, entry in enumerate(models):
        _check_entry(entry, f'{registry}: models[{index}]')
        if entry['name'] in names:
            raise ZooError(f'{registry}: {entry["name"]} is registered twice')
        names.add(entry['name'])
        entries.append(dict(entry, path=osp.join(folder, entry['file']), registry=registry))
    return entries


def entries(folders=None):
    """Every registered model, in search order (:func:`zoo_folders`); a name found twice keeps its first entry."""
    found, names = [], set()
    for folder in zoo_folders(folders):
        for entry in read_registry(folder):
            if entry['name'] not in names:
                names.add(entry['name'])
                found.append(entry)
    return found


def find(name, folders=None):
    """The entry of the model called ``name``; :class:`ZooError` listing the registered names if there is none."""
    known = entries(folders)
    for entry in known:
        if entry['name'] == name:
            return entry
    have = ', '.join(entry['name'] for entry in known) or 'none yet'
    raise ZooError(f'no bundled model named {name!r} (bundled: {have}; basicsr-taylor-infer --list-models)')


def for_scale(scale, folders=None):
    """The first registered model of ``scale``, or None."""
    return next((entry for entry in entries(folders) if entry['scale'] == scale), None)


def lookup(value, folders=None, bare_names=True):
    """The entry a model argument names: ``zoo:NAME`` (which must be registered), or with ``bare_names`` a registered
    NAME that is not also a file; None for anything else (a checkpoint path)."""
    value = str(value)
    if value.startswith(PREFIX):
        return find(value[len(PREFIX):], folders)
    if bare_names and not osp.exists(value):
        return next((entry for entry in entries(folders) if entry['name'] == value), None)
    return None


def sha256_of(path):
    """The SHA-256 of a file, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def verify(entry):
    """The weight file of ``entry``, after checking that its SHA-256 is the registered one."""
    path = entry['path']
    if not osp.isfile(path):
        raise ZooError(f'bundled model {entry["name"]}: its file {path} is missing (reinstall basicsr-taylor)')
    actual = sha256_of(path)
    if actual != entry['sha256']:
        raise ZooError(f'{path}: SHA-256 {actual} does not match {entry["sha256"]}, registered for {entry["name"]} '
                       f'in {entry["registry"]}: the file is damaged or was replaced (reinstall basicsr-taylor)')
    return path


def resolve(value, folders=None, bare_names=True):
    """A checkpoint path for a model argument: the verified weight file of the bundled model it names
    (:func:`lookup`), else ``value`` unchanged."""
    entry = lookup(value, folders, bare_names)
    return value if entry is None else verify(entry)


def describe(entry):
    """'x2, Set5 37.12 dB' for messages."""
    psnr = 'Set5 not measured' if entry['set5_psnr'] is None else f'Set5 {entry["set5_psnr"]:.2f} dB'
    return f'x{entry["scale"]}, {psnr}'


def format_size(size):
    """Bytes as '3.7 MB' (or '42 kB' below 0.1 MB)."""
    return f'{size / 1e6:.1f} MB' if size >= 100_000 else f'{size / 1e3:.0f} kB'


def format_table(models):
    """The --list-models table: name, scale, Set5 PSNR (Y) and file size of each model."""
    if not models:
        return 'no bundled models yet: pass --model CHECKPOINT (a BasicSR checkpoint)'
    rows = [('name', 'scale', 'Set5 PSNR (Y)', 'size')]
    for entry in models:
        psnr = 'not measured' if entry['set5_psnr'] is None else f'{entry["set5_psnr"]:.2f} dB'
        rows.append((entry['name'], f'x{entry["scale"]}', psnr, format_size(entry['size'])))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
