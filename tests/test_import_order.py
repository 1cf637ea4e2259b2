"""`import basicsr` works before (or without) `import basicsr_taylor` once the plugin is installed (issue 19, item
4): basicsr_taylor_hook.pth, run by Python at start-up, appends a finder that imports nothing until
torchvision.transforms.functional_tensor is imported."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CHECK = ('import sys; import basicsr_taylor_hook as h; '
         'assert any(isinstance(f, h.FunctionalTensorFinder) for f in sys.meta_path), "no finder"; '
         'assert not {"torch", "torchvision", "basicsr_taylor"} & set(sys.modules), "imports at start-up"; '
         'import basicsr; from basicsr.data.degradations import rgb_to_grayscale; '
         'assert "basicsr_taylor" not in sys.modules; print("ok")')


def run(code, **env):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1', **env))


def test_a_site_directory_with_the_pth_file_lets_basicsr_import_first(tmp_path):
    """As Python processes site-packages: the .pth line runs, and only the finder is installed."""
    for name in ('basicsr_taylor_hook.pth', 'basicsr_taylor_hook.py'):
        shutil.copy(osp.join(REPO, name), tmp_path / name)
    done = run(f'import site; site.addsitedir({str(tmp_path)!r}); ' + CHECK)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr[-2000:]


def installed_from_this_checkout():
    try:
        url = json.loads(metadata.distribution('basicsr-taylor').read_text('direct_url.json') or '{}').get('url', '')
    except metadata.PackageNotFoundError:
        return False
    return osp.realpath(url.replace('file://', '')) == osp.realpath(REPO)


@pytest.mark.skipif(not installed_from_this_checkout(), reason='basicsr-taylor is not pip-installed from this '
                    'checkout (CI installs it with pip install -e .)')
def test_the_installed_package_puts_the_pth_file_in_site_packages():
    pth = metadata.distribution('basicsr-taylor').locate_file('basicsr_taylor_hook.pth')
    assert osp.isfile(pth), 'pip install did not put basicsr_taylor_hook.pth in site-packages'
    done = run(CHECK, PYTHONPATH='')
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr[-2000:]
