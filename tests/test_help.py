"""Every command's --help answers without importing torch or BasicSR (issue 19, item 11): as a console script,
with python -m and (where it can run as a file) as python basicsr_taylor/<module>.py. What is imported is read
from python -X importtime, not from how long it takes."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
COMMANDS = {'train': 'train', 'test': 'test', 'infer': 'infer', 'export': 'export', 'quickstart': 'quickstart',
            'prepare': 'prepare_data', 'ablation': 'ablation'}
HEAVY = re.compile(r'^(torch|basicsr|torchvision|cv2)(\.|$)')
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])),
           OMP_NUM_THREADS='1')


def imported(stderr):
    """Module names from python -X importtime's report."""
    return [line.rsplit('|', 1)[1].strip() for line in stderr.splitlines() if line.startswith('import time:')][1:]


def forms(command, module):
    script = f"import sys; sys.argv = ['basicsr-taylor-{command}', '--help']; " \
             f"from basicsr_taylor.{module} import main; main()"  # what the console script does
    yield 'console script', ['-c', script]
    yield 'python -m', ['-m', f'basicsr_taylor.{module}', '--help']
    if module in ('train', 'test', 'prepare_data', 'ablation'):
        yield 'file', [osp.join(REPO, 'basicsr_taylor', f'{module}.py'), '--help']


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_help_imports_neither_torch_nor_basicsr(command, tmp_path):
    for form, args in forms(command, COMMANDS[command]):
        done = subprocess.run([sys.executable, '-X', 'importtime', *args], cwd=tmp_path, env=ENV, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (form, done.stderr[-2000:])
        assert done.stdout.startswith(f'usage: basicsr-taylor-{command} '), (form, done.stdout[:200])
        modules = imported(done.stderr)
        assert 'argparse' in modules and not [m for m in modules if HEAVY.match(m)], (form, sorted(
            {m.split('.')[0] for m in modules if HEAVY.match(m)}))


def test_the_test_command_lists_only_its_own_flags():
    done = subprocess.run([sys.executable, '-m', 'basicsr_taylor.test', '--help'], env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert '--force_yml' in done.stdout and '--auto_resume' not in done.stdout and '--debug' not in done.stdout


def test_the_package_still_registers_on_import():
    code = ('import basicsr_taylor, sys; from basicsr.utils.registry import ARCH_REGISTRY; '
            'assert "TaylorSwinIR" in ARCH_REGISTRY and "torch" in sys.modules; print(basicsr_taylor.TaylorSwinIR)')
    done = subprocess.run([sys.executable, '-c', code, '--help'], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and 'TaylorSwinIR' in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize('argv', [[], ['--help'], ['-h', '--list-models']])
def test_importing_the_package_imports_neither_torch_nor_basicsr_whatever_argv(argv):
    """The package root is the same module whatever sys.argv says: its names load on first use (PEP 562), the
    registration waits for basicsr's import."""
    code = ('import sys; import basicsr_taylor as b; heavy = [m for m in ("torch", "basicsr") if m in sys.modules]; '
            'assert not heavy, heavy; assert "TaylorSwinIR" in dir(b); print(b.TaylorSwinIR.__name__)')
    done = subprocess.run([sys.executable, '-c', code, *argv], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == 'TaylorSwinIR', done.stderr[-2000:]
