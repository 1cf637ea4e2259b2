"""The library behind ``basicsr-taylor-ablation`` (``basicsr_taylor/ablation.py``).

    variants.py  option files of an experiment's variants (templates in options/ablation/)
    inputs.py    training LMDBs and test sets
    runner.py    one variant: train and test in a child process, its record
    worker.py    the child: one BasicSR pipeline run, timing its steps and recording its metrics and memory
    report.py    results.md, results.csv and plots per experiment
"""
