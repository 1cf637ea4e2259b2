from setuptools import find_packages, setup

with open('README.md', encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='basicsr-taylor',
    version='0.2.0',
    description='TaylorIR for BasicSR: TaylorShift attention and TaylorSwinIR (SwinIR with 48x48 linear-time windows)',
    long_description=long_description,
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['basicsr_taylor', 'basicsr_taylor.*']),
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
