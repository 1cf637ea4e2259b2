"""Utilities shared by the ops, architectures and commands.

Import the modules directly (``from basicsr_taylor.utils.image_io import read_image``); this package imports
nothing itself, so that ``compat`` can run before the first ``import basicsr``.
"""
