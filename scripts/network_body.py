"""A checkpoint's weights without the upsampler: the start of the same network at another scale.

    python scripts/network_body.py experiments/NAME/models/net_g_8000.pth experiments/pretrained_models/body.pth

Writes ``{'params': ...}`` from the checkpoint's ``params_ema`` (else ``params``, else a bare state dict) less every
entry under ``upsample.`` (SwinIR's and TaylorSwinIR's only weights whose shapes depend on the scale; x4's first
stage has x2's shape, so it is dropped by name, not by shape). An option file at the new scale loads it with
``strict_load_g: false``: BasicSR then starts the upsampler new and logs its missing keys. The EMA network reads
``params`` too (BasicSR falls back to it when ``params_ema`` is absent). The output is written atomically.
"""
import argparse
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

UPSAMPLER = 'upsample.'  # the pixelshuffle upsampler's scale-dependent convolutions


def body(state_dict, drop=UPSAMPLER):
    """``state_dict`` without the entries whose names start with ``drop``."""
    return {key: value for key, value in state_dict.items() if not key.startswith(drop)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='BasicSR checkpoint (.pth) of the network at its first scale')
    parser.add_argument('output', help='where to write the weights without the upsampler (.pth)')
    args = parser.parse_args(argv)

    import torch

    from basicsr_taylor.models.checkpoint import CheckpointError, load_state_dict
    from basicsr_taylor.utils.files import atomic_path
    try:
        weights, key = load_state_dict(args.checkpoint)  # params_ema, else params; weights only, no code
    except CheckpointError as error:
        sys.exit(str(error))
    kept = body(weights)
    if len(kept) == len(weights):
        sys.exit(f'{args.checkpoint}: no {UPSAMPLER}* weights: not a pixelshuffle SwinIR/TaylorSwinIR checkpoint')
    with atomic_path(args.output) as temp_path:
        torch.save({'params': kept}, temp_path)
    print(f'{args.output}: {len(kept)} of {len(weights)} tensors of {key or "the state dict"} '
          f'({len(weights) - len(kept)} {UPSAMPLER}* left out)')


if __name__ == '__main__':
    main()
