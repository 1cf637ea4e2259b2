"""Reading an option file: YAML with the safe loader, and the ``--force_yml KEY:SUBKEY=VALUE`` overrides.

Errors are one line (:class:`OptionError`) naming the file and the YAML line. Read by ``pipeline`` (BasicSR's
pipelines) and ``models.checkpoint`` (a network from the option file of an experiment).
"""
import re

import yaml

from ..utils.compat import SafeOrderedLoader
from .keys import OptionError

__all__ = ['apply_force_yml', 'read_option_file']


def _yaml_error(err):
    mark = getattr(err, 'problem_mark', None)
    where = f'line {mark.line + 1}: ' if mark is not None else ''
    problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
    if 'python/' in problem:
        problem += ' (option files are read with a safe YAML loader: tags that build Python objects are refused)'
    return where + problem


def read_option_file(path):
    """The option file as an OrderedDict, parsed with the safe loader; :class:`OptionError` naming the file (and
    the YAML line) if it cannot be read or parsed."""
    try:
        with open(path) as f:
            opt = yaml.load(f, Loader=SafeOrderedLoader)
    except OSError as err:
        raise OptionError(f'{path}: cannot read the option file: {err.strerror or err}') from None
    except yaml.YAMLError as err:
        raise OptionError(f'{path}: {_yaml_error(err)}') from None
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: not a YAML mapping of options')
    return opt


def _force_yml_value(text):
    """A --force_yml value as YAML (safe loader: no Python objects); 'none' means None and 1e-4 is a number, as
    in BasicSR's _postprocess_yml_value, which eval()-ed values starting with '['."""
    if text.lower() == 'none':
        return None
    value = yaml.load(text, Loader=SafeOrderedLoader)
    if isinstance(value, str) and re.fullmatch(r'[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+', value):
        return float(value)
    return value


def apply_force_yml(opt, entries):
    """Set each ``KEY:SUBKEY=VALUE`` of --force_yml in ``opt``; return {'key:path': entry}. The sections on the
    way must exist; whether the last key is known is checked with the rest of the file (check_options)."""
    forced = {}
    for entry in entries or ():
        keys, sep, text = entry.partition('=')
        path = [key.strip() for key in keys.split(':')]
        if not sep or not all(path):
            raise OptionError(f'--force_yml {entry}: expected KEY:SUBKEY=VALUE, e.g. train:total_iter=1000')
        try:
            value = _force_yml_value(text.strip())
        except yaml.YAMLError as err:
            raise OptionError(f'--force_yml {entry}: {_yaml_error(err)}') from None
        node = opt
        for depth, key in enumerate(path[:-1]):
            if not isinstance(node.get(key), dict):
                raise OptionError(f'--force_yml {entry}: {":".join(path[:depth + 1])} is not a section of the option '
                                  'file')
            node = node[key]
        node[path[-1]] = value
        forced[':'.join(path)] = entry
    return forced
