import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64: no PEP 660 editable wheels
    editable_wheel = None

# basicsr_taylor_hook.pth goes to the top of site-packages, as setuptools' own distutils-precedence.pth: Python runs
# its line at start-up, so that `import basicsr` works before `import basicsr_taylor` (basicsr_taylor_hook.py).
HOOK_PTH = 'basicsr_taylor_hook.pth'


class build_py_with_pth(build_py):
    """Wheels: the .pth file beside the modules in build_lib, hence in site-packages."""

    def run(self):
        super().run()
        self.copy_file(HOOK_PTH, os.path.join(self.build_lib, HOOK_PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK_PTH)]


class _WithHookPth:
    """An editable-install strategy that also writes the .pth file into the editable wheel."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        if HOOK_PTH not in wheel.namelist():
            with open(HOOK_PTH, encoding='utf-8') as f:
                wheel.writestr(HOOK_PTH, f.read())

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.strategy.__exit__(*exc_info)


CMDCLASS = {'build_py': build_py_with_pth}
if editable_wheel is not None:

    class editable_wheel_with_pth(editable_wheel):
        """`pip install -e .` (PEP 660): setuptools' editable wheel holds only its own .pth and finder."""

        def _select_strategy(self, *args, **kwargs):
            return _WithHookPth(super()._select_strategy(*args, **kwargs))

    CMDCLASS['editable_wheel'] = editable_wheel_with_pth


with open('README.md', encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='basicsr-taylor',
    version='0.3.0',
    description='TaylorIR for BasicSR: TaylorShift attention and TaylorSwinIR (SwinIR with 48x48 linear-time windows)',
    long_description=long_description,
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['basicsr_taylor', 'basicsr_taylor.*']),
    package_data={
        'basicsr_taylor.zoo': ['*.pth', '*.json'],  # the bundled models: weights and models.json
        'basicsr_taylor.options': ['basicsr_keys.json'],  # the option keys BasicSR's classes read (options/keys.py)
    },
    py_modules=['basicsr_taylor_hook'],  # the import hook basicsr_taylor_hook.pth installs (no torch import)
    cmdclass=CMDCLASS,
    python_requires='>=3.9',
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.1',
        'torchvision',
        'lmdb',
        'opencv-python',
        'tensorboard',
        'einops',
        'numpy',
        'pyyaml',
        'tqdm',
        'scikit-image',  # sample photos for the quickstart
        'Pillow',  # EXIF orientation of input images (basicsr-taylor-infer)
        'setuptools; python_version >= "3.12"',  # provides the distutils that basicsr 1.4.2 imports
    ],
    extras_require={
        'test': ['pytest', 'pytest-timeout'],
        'bench': ['matplotlib'],
        'export': ['onnx', 'onnxruntime', 'onnxscript'],
    },
    entry_points={
        'console_scripts': [
            'basicsr-taylor-train=basicsr_taylor.train:main',
            'basicsr-taylor-test=basicsr_taylor.test:main',
            'basicsr-taylor-infer=basicsr_taylor.infer:main',
            'basicsr-taylor-export=basicsr_taylor.export:main',
            'basicsr-taylor-quickstart=basicsr_taylor.quickstart:main',
            'basicsr-taylor-prepare=basicsr_taylor.prepare_data:main',
            'basicsr-taylor-ablation=basicsr_taylor.ablation:main',
        ],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
