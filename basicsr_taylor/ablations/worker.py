"""One BasicSR pipeline run (train or test) of the ablation runner, measuring what BasicSR does not report.

    python -m basicsr_taylor.ablations.worker train|test --stats STATS.json -opt OPT.yml [BasicSR flags]

Runs :func:`basicsr_taylor.options.pipeline.run_basicsr_pipeline` unchanged, with the plugin's model classes
subclassed by :class:`Observed` (registered as ``Observed<name>``; the option file, whose hash names the run, is
left as it is):

- ``optimize_parameters`` is timed (one training step: forward, loss, backward, optimizer, EMA; data loading,
  validation and checkpoints excluded; CUDA synchronised before the clock stops);
- ``_log_validation_metric_values`` records the metrics BasicSR computed, per dataset, and, in training, each
  validation as a point of the dataset's curve (iteration, metrics, the process's CPU and wall seconds).

It writes STATS.json (rank > 0: STATS.rank<r>.json), atomically, every SAVE_EVERY steps, after every validation and
on exit: step times, metrics, curves and the peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
process's peak resident set size). A process killed mid-run leaves the stats of its last save.
"""
import json
import os
import resource
import sys
import time

import basicsr_taylor  # noqa: E402,F401  (compat fixes and architecture registration)
from basicsr_taylor.utils.files import write_atomically  # noqa: E402
from basicsr_taylor.options.pipeline import run_basicsr_pipeline  # noqa: E402

RECORD = {}  # this process's stats, with 'save': the function writing them
WARMUP_STEPS = 3  # the first steps of a process (allocations, caches) are not counted in the mean
SAVE_EVERY = 50  # steps between saves of the stats


class Observed:
    """Mixin timing each training step and recording the validation metrics into :data:`RECORD`."""

    def optimize_parameters(self, current_iter):
        import torch
        start = time.perf_counter()
        super().optimize_parameters(current_iter)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        RECORD['step_seconds'].append(time.perf_counter() - start)
        RECORD['last_iter'] = int(current_iter)
        if len(RECORD['step_seconds']) % SAVE_EVERY == 0:
            RECORD['save']()

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger):
        metrics = {name: float(value) for name, value in self.metric_results.items()}
        RECORD['metrics'][dataset_name] = metrics
        if RECORD['kind'] == 'train':
            RECORD['curves'].setdefault(dataset_name, []).append(
                dict(iter=int(current_iter), cpu_seconds=time.process_time(),
                     wall_seconds=time.time() - RECORD['started'], **metrics))
            RECORD['save']()
        return super()._log_validation_metric_values(current_iter, dataset_name, tb_logger)


def observed_models():
    """{BasicSR's and the plugin's model names: the Observed subclass of the plugin's class}, registered once."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from basicsr_taylor.models import TAYLOR_MODELS
    observed = {}
    for name, cls in TAYLOR_MODELS.items():
        subclass_name = f'Observed{cls.__name__}'
        if subclass_name not in MODEL_REGISTRY:
            MODEL_REGISTRY.register()(type(subclass_name, (Observed, cls), {'__module__': __name__}))
        observed[name] = observed[cls.__name__] = MODEL_REGISTRY.get(subclass_name)
    return observed


def peak_memory():
    """(bytes, kind): CUDA peak allocation when CUDA was used, else the peak resident set size."""
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated()), 'cuda_max_allocated'
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, 'cpu_max_rss'


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    kind, stats_path = argv[0], argv[argv.index('--stats') + 1]
    rest = [a for i, a in enumerate(argv[1:], 1) if a != '--stats' and argv[i - 1] != '--stats']
    rank = int(os.environ.get('RANK', '0'))
    path = stats_path if rank == 0 else f'{stats_path[:-5]}.rank{rank}.json'
    RECORD.clear()
    RECORD.update(kind=kind, step_seconds=[], metrics={}, curves={}, last_iter=None, started=time.time())

    def save():
        RECORD['wall_seconds'] = time.time() - RECORD['started']
        RECORD['cpu_seconds'] = time.process_time()  # this process's CPU time, all its threads
        RECORD['peak_memory_bytes'], RECORD['peak_memory_kind'] = peak_memory()
        write_atomically(path, json.dumps({key: value for key, value in RECORD.items() if key != 'save'}))

    RECORD['save'] = save
    try:
        run_basicsr_pipeline(kind, rest, model_types=observed_models())
    finally:
        save()


if __name__ == '__main__':
    main()
