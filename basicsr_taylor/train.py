"""Train with BasicSR's own pipeline and flags, with TaylorSwinIR registered.

    python basicsr_taylor/train.py -opt options/train_x2.yml [--launcher none|pytorch|slurm] [--auto_resume]
    python -m basicsr_taylor.train -opt ...          basicsr-taylor-train -opt ...
    torchrun --nproc_per_node=8 basicsr_taylor/train.py -opt options/train_x2.yml --launcher pytorch

experiments/ and tb_logger/ are created under the current directory (where --auto_resume looks for them).
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
    """Run basicsr.train.train_pipeline with root_path = the current directory. ``argv`` defaults to sys.argv[1:]."""
    compat.install_training_fixes()
    import basicsr.train
    if not hasattr(basicsr.train.parse_options, '__wrapped__'):  # check the option file before BasicSR uses it
        basicsr.train.parse_options = option_checks.checked(basicsr.train.parse_options)
    sys.argv = [sys.argv[0]] + compat.accept_dashed_local_rank(sys.argv[1:] if argv is None else list(argv))
    try:
        basicsr.train.train_pipeline(os.getcwd())
    except option_checks.OptionError as err:
        raise SystemExit(f'basicsr-taylor-train: error: {err}') from None


if __name__ == '__main__':
    main()
