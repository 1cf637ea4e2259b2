"""Measuring: time (median after warm-up) and peak memory of one call, the environment of the run."""
import os
import platform
import statistics
import time

import torch

# kineto logs profiler_start/stop for every profile() and, without CUDA, "gpuGetDeviceCount failed with code 35"
os.environ.setdefault('KINETO_LOG_LEVEL', '6')

FIELDS = ['suite', 'case', 'method', 'mode', 'tokens', 'head_dim', 'batch', 'lr_size', 'window', 'time_s', 'peak_mb',
          'kernels', 'params', 'gflops', 'status', 'note']



def is_oom(error):
    text = str(error).lower()
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or 'out of memory' in text or \
        "can't allocate memory" in text or 'not enough memory' in text


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def cpu_peak_bytes(fn):
    """Peak increase of allocated CPU tensor memory during fn(): running sum of profiler memory events."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def peak_bytes(fn, device, reset=None):
    if reset is not None:
        reset()
    if device.type == 'cuda':
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    return cpu_peak_bytes(fn)


def measure(fn, device, repeats, warmup, memory_as_warmup=False, reset=None):
    """(median seconds, peak MB, status). With memory_as_warmup the profiled run is the (only) warm-up.

    ``reset`` runs before every call, outside the timing and the memory measurement (it frees the previous
    call's gradients, so that each call's peak counts the memory it allocates itself).
    """
    reset = reset or (lambda: None)
    try:
        peak = None
        if memory_as_warmup:
            peak = peak_bytes(fn, device, reset)
        for _ in range(0 if memory_as_warmup else warmup):
            reset()
            fn()
        times = []
        for _ in range(repeats):
            reset()
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        if peak is None:
            peak = peak_bytes(fn, device, reset)
        return statistics.median(times), peak / 2**20, 'ok'
    except (RuntimeError, MemoryError) as error:
        release_memory(device)
        if not is_oom(error):
            return None, None, f'error: {type(error).__name__}: {str(error)[:80]}'
        return None, None, 'OOM'


def release_memory(device):
    """After a failed (OOM) run: give freed memory back, so that later configurations are not refused for
    what the failed one left in the allocator's heap (RLIMIT_DATA counts it)."""
    import gc
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        return
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def environment(device, threads):
    info = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'platform': platform.platform(),
        'cpu': _cpu_name(),
        'cpu_cores': os.cpu_count(),
        'torch_threads': threads,
        'load_average_at_start': ' '.join(f'{x:.2f}' for x in os.getloadavg()),
        'date_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime()),
    }
    try:
        import triton
        info['triton'] = triton.__version__
    except ImportError:
        info['triton'] = 'not installed'
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info['gpu'] = f'{props.name}, {props.total_memory / 2**30:.0f} GiB'
        info['cuda'] = torch.version.cuda
        try:
            import subprocess
            info['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info['driver'] = 'unknown'
    return info


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'

