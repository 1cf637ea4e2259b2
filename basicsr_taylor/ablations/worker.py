"""One BasicSR pipeline run (train or test) of the ablation runner, measuring what BasicSR does not report.

    python -m basicsr_taylor.ablations.worker train|test --stats STATS.json -opt OPT.yml [BasicSR flags]

Runs :func:`basicsr_taylor.utils.options.run_basicsr_pipeline` unchanged, with two observers on BasicSR's model:

- ``SRModel.optimize_parameters`` is timed (one training step: forward, loss, backward, optimizer, EMA; data
  loading, validation and checkpoints excluded; CUDA synchronised before the clock stops);
- ``SRModel._log_validation_metric_values`` records the metrics BasicSR computed, per dataset, and, in training,
  each validation as a point of the dataset's curve (iteration, metrics, the process's CPU and wall seconds).

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
from basicsr_taylor.utils.options import run_basicsr_pipeline  # noqa: E402

WARMUP_STEPS = 3  # the first steps of a process (allocations, caches) are not counted in the mean
SAVE_EVERY = 50  # steps between saves of the stats


def _observe(record, save):
    import torch
    from basicsr.models.sr_model import SRModel

    step, log_metrics = SRModel.optimize_parameters, SRModel._log_validation_metric_values

    def timed_step(self, current_iter):
        start = time.perf_counter()
        step(self, current_iter)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        record['step_seconds'].append(time.perf_counter() - start)
        record['last_iter'] = int(current_iter)
        if len(record['step_seconds']) % SAVE_EVERY == 0:
            save()

    def logged_metrics(self, current_iter, dataset_name, tb_logger):
        metrics = {name: float(value) for name, value in self.metric_results.items()}
        record['metrics'][dataset_name] = metrics
        if record['kind'] == 'train':
            record['curves'].setdefault(dataset_name, []).append(
                dict(iter=int(current_iter), cpu_seconds=time.process_time(),
                     wall_seconds=time.time() - record['started'], **metrics))
            save()
        return log_metrics(self, current_iter, dataset_name, tb_logger)

    SRModel.optimize_parameters = timed_step
    SRModel._log_validation_metric_values = logged_metrics


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
    record = {'kind': kind, 'step_seconds': [], 'metrics': {}, 'curves': {}, 'last_iter': None,
              'started': time.time()}

    def save():
        record['wall_seconds'] = time.time() - record['started']
        record['cpu_seconds'] = time.process_time()  # this process's CPU time, all its threads
        record['peak_memory_bytes'], record['peak_memory_kind'] = peak_memory()
        write_atomically(path, json.dumps(record))

    _observe(record, save)
    try:
        run_basicsr_pipeline(kind, rest)
    finally:
        save()


if __name__ == '__main__':
    main()
