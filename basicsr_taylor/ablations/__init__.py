"""The library behind ``basicsr-taylor-ablation`` (``basicsr_taylor/ablation.py``).

    grid.py      the grid: experiments x variants x seeds, --jobs at a time, its estimate, the reports
    variants.py  option files of an experiment's variants (templates in options/ablation/)
    inputs.py    training LMDBs and test sets
    runner.py    one variant: train and test in a child process, its record
    worker.py    the child: one BasicSR pipeline run, timing its steps and recording its metrics and memory
    estimate.py  the grid's time before it starts (records' s/iter, else a short probe)
    intervals.py mean ± std, paired differences with 95% t-intervals, the decision rule
    report.py    results.md, results.csv, summary.csv and plots per experiment
    curves.py    the validation curves of records made with --val-freq: curves.csv, a table, curves.png
"""
