"""Run one of BasicSR's own pipelines (train or test) with this plugin's fixes and option checks."""
import importlib
import os
import sys

from . import compat, option_checks


def run_basicsr_pipeline(kind, argv=None):
    """``basicsr.<kind>.<kind>_pipeline`` with root_path = the current directory, so experiments/, tb_logger/ and
    results/ go where the command runs (and where --auto_resume looks). ``argv`` defaults to sys.argv[1:]."""
    compat.install_training_fixes()
    module = importlib.import_module(f'basicsr.{kind}')
    if not hasattr(module.parse_options, '__wrapped__'):  # check the option file before BasicSR uses it
        module.parse_options = option_checks.checked(module.parse_options)
    sys.argv = [sys.argv[0]] + compat.accept_dashed_local_rank(sys.argv[1:] if argv is None else list(argv))
    try:
        getattr(module, f'{kind}_pipeline')(os.getcwd())
    except option_checks.OptionError as err:
        raise SystemExit(f'basicsr-taylor-{kind}: error: {err}') from None
