"""The option keys BasicSR's own models and datasets read, as basicsr_keys.json for the key check.

basicsr_taylor/options/keys.py reads the table for BasicSR's classes instead of their source; this script
writes it from the installed BasicSR's source (the same scan that the check uses for the classes not in it). Run it
from the repository root in its venv after a BasicSR upgrade and commit the file:

    python scripts/option_key_table.py            # write basicsr_taylor/options/basicsr_keys.json
    python scripts/option_key_table.py --check    # exit 1 where the checked-in file differs
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import basicsr_taylor  # noqa: E402,F401  (before basicsr: the import-order fix)
from basicsr_taylor.utils.files import write_atomically  # noqa: E402
from basicsr_taylor.options.keys import TABLE, build_key_table, dump_key_table  # noqa: E402


def differences(old, new):
    """One line: what differs between two tables (class entries added, removed, changed; the version)."""
    parts = []
    if old.get('basicsr_version') != new.get('basicsr_version'):
        parts.append(f"basicsr_version {old.get('basicsr_version')} -> {new.get('basicsr_version')}")
    for kind in ('models', 'datasets'):
        before, after = old.get(kind, {}), new.get(kind, {})
        for label, names in (('added', sorted(set(after) - set(before))),
                             ('removed', sorted(set(before) - set(after))),
                             ('changed', sorted(n for n in set(before) & set(after) if before[n] != after[n]))):
            if names:
                parts.append(f'{kind} {label}: {", ".join(names)}')
    return '; '.join(parts) or 'formatting only'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true', help='compare with the checked-in file, write nothing')
    args = parser.parse_args(argv)
    table = build_key_table()
    text = dump_key_table(table)
    if args.check:
        try:
            with open(TABLE, encoding='utf-8') as f:
                current = f.read()
        except OSError:
            current = ''
        if current == text:
            print(f'{TABLE}: up to date')
            return 0
        try:
            old = json.loads(current)
        except ValueError:
            old = {}
        print(f'{TABLE} differs from the installed BasicSR: {differences(old, table)} '
              f'(run scripts/option_key_table.py)')
        return 1
    write_atomically(TABLE, text)
    print(f'{TABLE}: {len(table["models"])} model classes, {len(table["datasets"])} dataset classes')
    return 0


if __name__ == '__main__':
    sys.exit(main())
