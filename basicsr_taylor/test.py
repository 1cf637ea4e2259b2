"""Test (PSNR/SSIM, saved images) with BasicSR's own pipeline and flags, with TaylorSwinIR registered.

    python basicsr_taylor/test.py -opt options/test_x2.yml
    python -m basicsr_taylor.test -opt ...           basicsr-taylor-test -opt ...

results/ is created under the current directory. ``path: pretrain_network_g: zoo:NAME`` tests a bundled model
(``basicsr-taylor-infer --list-models``).
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: put the repository root, not basicsr_taylor/, on sys.path
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
    sys.path.insert(0, os.path.dirname(_here))

from basicsr_taylor.utils.cli import answer_help_early, pipeline_parser  # noqa: E402

answer_help_early('test', lambda: pipeline_parser('test').parse_args())  # without torch or BasicSR

import basicsr_taylor  # noqa: E402,F401  (the import-order fix; registers the archs and models)
from basicsr_taylor.options.pipeline import run_basicsr_pipeline  # noqa: E402


def main(argv=None):
    """``basicsr.test.test_pipeline`` with root_path = the current directory. ``argv`` defaults to sys.argv[1:]."""
    run_basicsr_pipeline('test', argv)


if __name__ == '__main__':
    main()
