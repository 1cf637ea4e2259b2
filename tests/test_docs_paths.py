"""README.md, docs/ and the committed ablation records hold no absolute path of the machine they were written on:
commands use paths relative to the checkout or a variable the reader sets (``DATA=path/to/datasets``), records
store paths relative to the run's root, system locations are written ``~/...`` or ``$TORCH_HOME``.

README.md and docs/*.md say what to do and what was found, not how or when the work was done: no "session" (but
onnxruntime's), no time of day, no reference to the project's issue numbers (history goes in CHANGELOG.md)."""
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
PENDING = {}  # path -> reason, for an xfail(strict) while a document is being rewritten


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


# --- what the guides and reports do not say ------------------------------------------------------------------------

FENCE = re.compile(r'^```.*?^```[ \t]*$', re.M | re.S)
SESSION = re.compile(r'\bsessions?\b', re.I)
ONNXRUNTIME = re.compile(r'onnxruntime|InferenceSession|\bort\.', re.I)
# a time of day: hours 0-23, minutes (and seconds) 00-59, not part of a longer token (host:port, a[10:20], 1:1, 3:2,
# 1:2000, v1.2:30); or a date followed by a time (2026-12-02T03:58, 2026-12-02 03:58)
CLOCK = re.compile(r'(?<![\w:.\[/])(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?![\w:.\]/])'
                   r'|\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}')
# "issue 27", "issues 9 and 11", "issue #3", "issue-9", "PR 12", "pull request #4", and a bare "#12" (not a
# Markdown anchor "](#1-data)", an HTML entity "&#123;" or part of a word or path)
ISSUE = re.compile(r'\b(?:issues?|PRs?|pull requests?)[\s-]*#?\s*\d+|(?<![\w&/#])(?<!\]\()#\d+\b', re.I)


def guide_files():
    return ['README.md'] + sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'docs', '*.md')))


def sessions(text):
    """"session(s)" outside onnxruntime's: a code block or a line that names onnxruntime may speak of its sessions."""
    text = FENCE.sub(lambda m: '' if ONNXRUNTIME.search(m.group(0)) else m.group(0), text)
    return [m.group(0) for line in text.splitlines() if not ONNXRUNTIME.search(line)
            for m in SESSION.finditer(line)]


def clock_times(text):
    return CLOCK.findall(URL.sub(' ', text))


def issue_numbers(text):
    """References to the project's issues; URLs (another project's tracker, linked) are not counted."""
    return ISSUE.findall(URL.sub(' ', text))


def test_the_guides_are_checked():
    names = guide_files()
    assert {'README.md', 'docs/training.md', 'docs/inference.md', 'docs/realworld.md', 'docs/ablation.md',
            'docs/benchmarks.md', 'docs/install.md'} <= set(names)


@pytest.mark.parametrize('path', guide_files())
def test_no_history_in_the_guides(path):
    text = open(osp.join(REPO, path), encoding='utf-8').read()
    found = {'"session"': sessions(text), 'clock times': clock_times(text), 'issue numbers': issue_numbers(text)}
    assert not any(found.values()), f'{path}: ' + '; '.join(f'{k}: {v[:5]}' for k, v in found.items() if v)


@pytest.mark.parametrize('text, found', [
    ('runs resume across sessions', ['sessions']),
    ('the third Session had switched', ['Session']),
    ('## Session log', ['Session']),
    ('```bash\n# one session per run\nbasicsr-taylor-train -opt x.yml\n```', ['session']),
    ('```python\nimport onnxruntime as ort\nsession = ort.InferenceSession("m.onnx")\nsr = session.run(None, {})\n```',
     []),
    ('an onnxruntime session checks the export', []),
    ('`ort.InferenceSession` runs it', []),
    ('sessionless, obsession, session_id', []),
])
def test_what_counts_as_a_session(text, found):
    assert sessions(text) == found


@pytest.mark.parametrize('text, found', [
    ('ran 03:41-04:50 UTC', ['03:41', '04:50']),
    ('from 00:48 UTC, re-planned at 01:48', ['00:48', '01:48']),
    ('10:10:34 to 11:21:50 UTC', ['10:10:34', '11:21:50']),
    ('at 9:05 am', ['9:05']),
    ('(23:59)', ['23:59']),
    ('finished 2026-12-02 03:58:39', ['2026-12-02 03:58']),
    ('2026-12-02T03:58', ['2026-12-02T03:58']),
    ('a 1:1 mix, aspect 4:3, 1:2000, x[10:20], y[:, 1:], node0:29500, localhost:4321, 24:00, 12:60', []),
    ('key: 12, --force_yml train:total_iter=1000, sm_90, v1.2:30, https://example.com:8080/a, 2026-12-02', []),
])
def test_what_counts_as_a_clock_time(text, found):
    assert clock_times(text) == found


@pytest.mark.parametrize('text, found', [
    ('the protocol of issue 17', ['issue 17']),
    ('(Issue #3)', ['Issue #3']),
    ('issues 9 and 11', ['issues 9']),
    ('before the port onto the issue-9 layout', ['issue-9']),
    ('fixed in #12, see PR 40 and pull request #4', ['#12', 'PR 40', 'pull request #4']),
    ('[Data](#1-data-hr-images-only), &#123;, C#12, a/#3', []),
    ("[BasicSR's issue tracker](https://github.com/XPixelGroup/BasicSR/issues/533)", []),
    ('the issue of memory, 3 issues, # 1 heading', []),
])
def test_what_counts_as_an_issue_number(text, found):
    assert issue_numbers(text) == found
