"""How many chunk rows the efficient form computes at once: as many as fit an absolute budget of temporary bytes.

On CUDA the budget (1 GiB) holds every window of a training batch, so one attention call is a fixed handful of
batched kernels whatever the number of windows and tokens (the launch count is what costs time there); blocks
start only where memory requires them. On the CPU, where an op costs microseconds to start but memory traffic
costs time, the budget (4 MiB) keeps a block's features in the cache: 3-4x faster than one block of every window
(docs/benchmarks.md). ``BASICSR_TAYLOR_CPU_BLOCK_MB`` sets the CPU budget (e.g. 1024 runs the CUDA plan on the CPU).
"""
import contextlib
import os

from .features import taylor_feature_dim

# bytes of temporaries per block (ψ(q), ψ(k), their gradients, the d×d feature-gradient grid, ...)
BLOCK_BYTES = {'cpu': int(float(os.environ.get('BASICSR_TAYLOR_CPU_BLOCK_MB', 4)) * 2**20), 'cuda': 1024 * 2**20}


@contextlib.contextmanager
def budget(device_type, num_bytes):
    """Within the block, the efficient form's block budget on ``device_type`` is ``num_bytes``."""
    previous = BLOCK_BYTES.get(device_type)
    BLOCK_BYTES[device_type] = num_bytes
    try:
        yield
    finally:
        BLOCK_BYTES[device_type] = previous


def temporaries_per_token(head_dim, value_dim, backward):
    """Elements alive at once per token and head: forward ψ(q), ψ(k), [1, v], y'; backward also dψ(q), dψ(k) and
    the d×d grid of one feature-map gradient."""
    features = taylor_feature_dim(head_dim)
    forward = 2 * features + 2 * (value_dim + 1) + 4 * head_dim
    return forward + 2 * features + 2 * head_dim * head_dim if backward else forward


def rows_per_block(rows, tokens_per_row, head_dim, value_dim, itemsize, device, backward):
    """Chunk rows per block so that a block's temporaries stay within BLOCK_BYTES[device]
    (at least one; ``tokens_per_row`` counts every head of a window)."""
    limit = BLOCK_BYTES.get(device.type, BLOCK_BYTES["cuda"])
    per_row = max(1, tokens_per_row * temporaries_per_token(head_dim, value_dim, backward) * itemsize)
    return max(1, min(rows, limit // per_row))


def row_blocks(rows, per_block):
    """[slice] of ``per_block`` rows covering 0..rows."""
    return [slice(r0, min(r0 + per_block, rows)) for r0 in range(0, rows, per_block)]
