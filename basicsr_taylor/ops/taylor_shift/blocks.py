"""The block plan of the efficient form: how many chunk rows it computes at once (their temporaries fit a budget of
bytes), and which device's choices the CPU takes.

- CUDA: the budget is a share of the device's memory, bounded (``cuda_budget``: 1/512 of it, 32 MiB to 256 MiB:
  149 MiB on an 80 GB card, 32 MiB on a 12 GB one). Larger blocks launch fewer kernels (what costs time on a GPU)
  but hold larger transients; docs/benchmarks.md has the trade-off measured on both nets.
- CPU: a cache-sized budget (4 MiB, ``BASICSR_TAYLOR_CPU_BLOCK_MB``): an op costs microseconds to start there but
  memory traffic costs time.
- A network overrides both with its ``attn_block_mb`` option (:func:`block_budget`), e.g. to trade memory for
  launches on a small card.
- ``BASICSR_TAYLOR_PLAN=cuda`` (or :func:`cuda_plan`) makes the CPU take every choice CUDA takes: the block budget
  of a nominal 80 GB device and ``auto``'s thresholds. It serves measurement: kernel counts and allocation peaks of
  the CUDA plan, counted on the CPU.
"""
import contextlib
import contextvars
import os

NOMINAL_CUDA_BYTES = 80 * 10**9  # the device the CUDA plan assumes on the CPU (an 80 GB H100)
CUDA_SHARE, CUDA_MIN_BYTES, CUDA_MAX_BYTES = 1 / 512, 32 * 2**20, 256 * 2**20
# fixed budgets per plan (None: relative to the device's memory); BASICSR_TAYLOR_CPU_BLOCK_MB sets the CPU's
BLOCK_BYTES = {'cpu': int(float(os.environ.get('BASICSR_TAYLOR_CPU_BLOCK_MB') or 4) * 2**20), 'cuda': None}
_PLAN = contextvars.ContextVar('taylor_shift_plan', default=os.environ.get('BASICSR_TAYLOR_PLAN', '').lower() or None)
_OVERRIDE = contextvars.ContextVar('taylor_shift_block_bytes', default=None)
_DEVICE_BYTES = {}


def plan_of(device_type):
    """The device whose choices an op on ``device_type`` takes: 'cuda' for the CPU under the CUDA plan."""
    return 'cuda' if device_type == 'cpu' and _PLAN.get() == 'cuda' else device_type


@contextlib.contextmanager
def cuda_plan(enabled=True):
    """Within the block, the CPU takes CUDA's choices (as ``BASICSR_TAYLOR_PLAN=cuda``)."""
    token = _PLAN.set('cuda' if enabled else None)
    try:
        yield
    finally:
        _PLAN.reset(token)


@contextlib.contextmanager
def block_budget(num_bytes):
    """Within the block, every efficient-form call on any device takes ``num_bytes`` as its budget (None: the
    plan's own); a network's ``attn_block_mb``."""
    token = _OVERRIDE.set(None if num_bytes is None else int(num_bytes))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


def cuda_budget(total_bytes):
    """The CUDA plan's budget for a device of ``total_bytes``: a share of it, bounded."""
    return int(min(max(total_bytes * CUDA_SHARE, CUDA_MIN_BYTES), CUDA_MAX_BYTES))


def _device_bytes(device):
    if device not in _DEVICE_BYTES:
        import torch
        _DEVICE_BYTES[device] = torch.cuda.get_device_properties(device).total_memory
    return _DEVICE_BYTES[device]


def block_bytes(device):
    """The budget of temporary bytes per block for an op on ``device`` (a torch.device)."""
    override = _OVERRIDE.get()
    if override is not None:
        return override
    plan = plan_of(device.type)
    fixed = BLOCK_BYTES.get(plan)
    if fixed is not None:
        return fixed
    return cuda_budget(_device_bytes(device) if device.type == 'cuda' else NOMINAL_CUDA_BYTES)


def temporaries_per_token(head_dim, value_dim, backward):
    """Elements alive at once per token and head: the outer product x̃⊗x̃ ((d + 1)²; in the backward pass, in
    turn, the (d + 1)² grid G), the augmented and unit vectors, v', y' (or dy') and the gradients."""
    side, ext = head_dim + 1, value_dim + 1
    forward = side * side + 2 * side + head_dim + 2 * ext
    return forward + side + 3 * head_dim + 2 * ext if backward else forward


def rows_per_block(rows, tokens_per_row, head_dim, value_dim, itemsize, limit, backward):
    """Chunk rows per block so that a block's temporaries stay within ``limit`` bytes (at least one;
    ``tokens_per_row`` counts the tokens of one chunk row)."""
    per_row = max(1, tokens_per_row * temporaries_per_token(head_dim, value_dim, backward) * itemsize)
    return max(1, min(rows, limit // per_row))


def row_blocks(rows, per_block):
    """[slice] covering 0..rows in the fewest blocks of at most ``per_block`` rows, of equal size (± 1 row)."""
    count = -(-rows // per_block)
    bounds = [rows * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
