"""README.md, docs/ and the committed ablation records hold no absolute path of the machine they were written on:
commands use paths relative to the checkout or a variable the reader sets (``DATA=path/to/datasets``), records
store paths relative to the run's root, system locations are written ``~/...`` or ``$TORCH_HOME``."""
import glob
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
URL = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*://\S*')
# /a/b at the start of a line or after a space, quote, backtick, bracket, '=', ',', ':' or ';' (not s/iter, x/y/z)
POSIX = re.compile(r'''(?:^|(?<=[\s"'`(\[=,:;]))(/[\w.@+-]+(?:/[\w.@+-]*)+)''', re.M)
WINDOWS = re.compile(r'(?<![\w])[A-Za-z]:\\\\?[\w.-]')
# the same on every machine: system folders and the usual placeholder
ALLOWED = ('/usr/', '/etc/', '/bin/', '/dev/', '/proc/', '/sys/', '/path/to/')
PENDING = {'docs/realworld.md': 'docs rewrite pending'}  # a /root/.cache path and a /tmp run folder


def machine_paths(text):
    """The absolute filesystem paths in ``text`` that are not on the allow-list (URLs are not paths)."""
    text = URL.sub(' ', text)
    return [p for p in POSIX.findall(text) if not (p + '/').startswith(ALLOWED)] + WINDOWS.findall(text)


def text_files():
    paths = ['README.md'] + sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'docs', '**', '*'),
                                                                          recursive=True))
    for path in paths:
        if osp.isfile(osp.join(REPO, path)):
            try:
                open(osp.join(REPO, path), encoding='utf-8').read()
            except UnicodeDecodeError:  # images
                continue
            yield path


FILES = [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=PENDING[p])) if p in PENDING else p
         for p in text_files()]


def test_the_docs_and_the_records_are_checked():
    names = [p if isinstance(p, str) else p.values[0] for p in FILES]
    assert 'README.md' in names and 'docs/ablation.md' in names and 'docs/training.md' in names
    assert len([p for p in names if re.fullmatch(r'docs/ablation/.+/records/.+\.json', p)]) >= 40


@pytest.mark.parametrize('path', FILES)
def test_no_absolute_machine_path(path):
    found = machine_paths(open(osp.join(REPO, path), encoding='utf-8').read())
    assert not found, f'{path}: absolute paths of a machine: {sorted(set(found))[:5]}'


@pytest.mark.parametrize('text, found', [
    ('D=/work/shared/datasets', ['/work/shared/datasets']),
    ('--root /home/me/runs and `/mnt/data/DIV2K`', ['/home/me/runs', '/mnt/data/DIV2K']),
    ('"options": "/work/abl-runs/ablation/options/abl_x.yml"', ['/work/abl-runs/ablation/options/abl_x.yml']),
    ('put it at /root/.cache/torch/hub/checkpoints/vgg19.pth', ['/root/.cache/torch/hub/checkpoints/vgg19.pth']),
    (r'--root C:\Users\me\runs', ['C:\\U']),
    ('"options": "ablation/options/abl_x.yml", DATA=path/to/datasets', []),
    ('~/.cache/torch/hub, $TORCH_HOME/hub, /usr/bin/python3, /path/to/run, s/iter, 1/2, N/A, a / b', []),
    ('https://download.pytorch.org/whl/cpu and file:///x/y', []),
])
def test_what_counts_as_a_machine_path(text, found):
    assert machine_paths(text) == found
