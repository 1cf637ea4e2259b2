"""Operators, one folder each: ``taylor_shift/`` (TaylorShift attention and its forms)."""
