"""Test (PSNR/SSIM, saved images) with BasicSR's own pipeline and flags, with TaylorSwinIR registered.

    python basicsr_taylor/test.py -opt options/test_x2.yml
    python -m basicsr_taylor.test -opt ...           basicsr-taylor-test -opt ...

results/ is created under the current directory.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: put the repository root, not basicsr_taylor/, on sys.path
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
    sys.path.insert(0, os.path.dirname(_here))

import basicsr_taylor  # noqa: E402,F401  (compat.install() and architecture registration)
from basicsr_taylor import compat, option_checks  # noqa: E402


def main(argv=None):
    """Run basicsr.test.test_pipeline with root_path = the current directory. ``argv`` defaults to sys.argv[1:]."""
    compat.install_training_fixes()
    import basicsr.test
    if not hasattr(basicsr.test.parse_options, '__wrapped__'):  # check the option file before BasicSR uses it
        basicsr.test.parse_options = option_checks.checked(basicsr.test.parse_options)
    sys.argv = [sys.argv[0]] + compat.accept_dashed_local_rank(sys.argv[1:] if argv is None else list(argv))
    try:
        basicsr.test.test_pipeline(os.getcwd())
    except option_checks.OptionError as err:
        raise SystemExit(f'basicsr-taylor-test: error: {err}') from None


if __name__ == '__main__':
    main()
