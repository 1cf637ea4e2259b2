"""How many rows (windows) the efficient form computes at once: all of them, unless their temporaries exceed an
absolute memory budget. The op count of one attention call is constant until then and grows by one set of batched
ops per block after; the budget bounds the extra memory whatever the input size.
"""
from .features import taylor_feature_dim

# bytes of temporaries per block (ψ(q), ψ(k), their gradients, the d×d feature-gradient grid, ...)
BLOCK_BYTES = {'cpu': 512 * 2**20, 'cuda': 1024 * 2**20}


def temporaries_per_token(head_dim, value_dim, backward):
    """Elements alive at once per token and head: forward ψ(q), ψ(k), [1, v], y'; backward also dψ(q), dψ(k) and
    the d×d grid of one feature-map gradient."""
    features = taylor_feature_dim(head_dim)
    forward = 2 * features + 2 * (value_dim + 1) + 4 * head_dim
    return forward + 2 * features + 2 * head_dim * head_dim if backward else forward


def rows_per_block(rows, tokens_per_row, head_dim, value_dim, itemsize, device, backward):
    """Leading-dim entries (windows) per block so that a block's temporaries stay within BLOCK_BYTES[device]
    (at least one; ``tokens_per_row`` counts every head of a window)."""
    budget = BLOCK_BYTES.get(device.type, BLOCK_BYTES['cuda'])
    per_row = max(1, tokens_per_row * temporaries_per_token(head_dim, value_dim, backward) * itemsize)
    return max(1, min(rows, budget // per_row))


def row_blocks(rows, per_block):
    """[slice] of ``per_block`` rows covering 0..rows."""
    return [slice(r0, min(r0 + per_block, rows)) for r0 in range(0, rows, per_block)]
