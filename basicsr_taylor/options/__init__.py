"""Option files: read (``file``), their keys checked (``keys``, ``real_esrgan``), the whole file checked
(``checks``) and BasicSR's train/test pipelines run with them (``pipeline``).

Import the modules directly (``from basicsr_taylor.options.pipeline import run_basicsr_pipeline``); this package
imports nothing itself. Imports run pipeline -> checks -> real_esrgan, file -> keys, never back.
"""
