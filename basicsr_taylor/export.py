"""Export a trained network to ONNX with dynamic batch, height and width, checked with onnxruntime.

    basicsr-taylor-export --model net_g_latest.pth [--opt options/train_x2.yml] --onnx out.onnx
    basicsr-taylor-export --model zoo:TaylorSwinIR-light-x2 --onnx out.onnx      a bundled model

Uses torch.onnx.export's torch.export-based path (``dynamo=True``); the legacy TorchScript tracer would freeze
the padding and window counts of the example size. TaylorShift attention is exported in its plain tensor-op
forms (``ops/taylor_shift/naive.py``, chosen by the op's ``exportable`` switch): the same function, without
data-dependent shapes. The graph takes ``lr`` (B, C, H, W) float32 in [0, 1] and returns ``sr``
(B, C, H·scale, W·scale); any B, H, W >= 1. After writing, the model is run with onnxruntime on two sizes with
different numbers of windows and compared with PyTorch (needs the ``export`` extra).
"""
import argparse
import logging
import sys

from basicsr_taylor.utils.cli import answer_help_early

MIN_OPSET = 18  # torch.onnx's dynamo exporter writes opset 18 or later; its down-conversion fails on this model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='basicsr-taylor-export',
                                     description='Export a BasicSR/TaylorSwinIR checkpoint to ONNX (dynamic H, W).')
    parser.add_argument('--model', required=True,
                        help='checkpoint (.pth; params_ema is used if present), or a bundled model: zoo:NAME or NAME')
    parser.add_argument('--opt', default=None,
                        help='option file with network_g (default: the .yml of the experiment the checkpoint is in)')
    parser.add_argument('--onnx', required=True, help='output .onnx file')
    parser.add_argument('--opset', type=int, default=None,
                        help=f'ONNX opset, {MIN_OPSET} or later (default: the exporter\'s)')
    parser.add_argument('--atol', type=float, default=1e-3,
                        help='largest |onnxruntime - PyTorch| accepted by the check (default 1e-3)')
    parser.add_argument('--no-check', action='store_true', help='skip the onnxruntime comparison')
    return parser.parse_args(argv)


answer_help_early('export', parse_args)  # --help without torch or BasicSR; the heavy imports follow

import torch  # noqa: E402

import basicsr_taylor  # noqa: E402,F401  (compat fixes before basicsr; registers TaylorSwinIR)
from basicsr_taylor import zoo  # noqa: E402
from basicsr_taylor.ops.taylor_shift import exportable  # noqa: E402
from basicsr_taylor.models.checkpoint import (  # noqa: E402
    CheckpointError, network_in_channels, network_scale, network_window_size)
from basicsr_taylor.utils.files import atomic_path  # noqa: E402

logger = logging.getLogger('basicsr_taylor.export')


def check_opset(opset):
    """--opset below what the exporter writes printed onnx's conversion traceback, then wrote opset 18 anyway."""
    if opset is not None and opset < MIN_OPSET:
        raise ValueError(f'--opset {opset}: the exporter (torch.onnx, dynamo) writes opset {MIN_OPSET} or later; '
                         'leave --opset out or give a value >= 18')


def written_opset(program):
    """The default-domain opset of an exported ONNXProgram (None if it cannot be read)."""
    try:
        return int(program.model.opset_imports[''])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def check_sizes(window_size):
    """Two (H, W) that differ in the number of windows and in padding: 1×2 and 3×3 windows, odd sizes."""
    window_size = max(window_size, 8)
    return [(window_size - 3, 2 * window_size - 1), (2 * window_size + 5, 3 * window_size - 7)]


def export_onnx(network, onnx_path, in_channels, window_size, opset=None):
    """Write ``network`` as ONNX with dynamic batch/height/width (atomically: temp file, then rename)."""
    network = network.eval().cpu()
    example = torch.rand(2, in_channels, 2 * window_size + 3, 2 * window_size + 5)  # not 0/1: no specialisation
    dims = {2: torch.export.Dim('height', min=1, max=65536), 3: torch.export.Dim('width', min=1, max=65536),
            0: torch.export.Dim('batch', min=1, max=1024)}
    with exportable(), torch.no_grad():
        program = torch.onnx.export(network, (example, ), dynamo=True, dynamic_shapes=(dims, ),
                                    input_names=['lr'], output_names=['sr'], opset_version=opset, verbose=False)
    if opset is not None and written_opset(program) not in (None, opset):
        raise ValueError(f'--opset {opset}: the exporter wrote opset {written_opset(program)}; nothing written')
    with atomic_path(onnx_path) as temp_path:
        program.save(temp_path, external_data=False)  # weights inside the file (models < 2 GB)
    return onnx_path


def check_onnx(network, onnx_path, in_channels, sizes, seed=0):
    """Max |onnxruntime - PyTorch| of the output on random inputs of the given (H, W) sizes."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(seed)
    differences = []
    for height, width in sizes:
        x = torch.rand(1, in_channels, height, width, generator=generator)
        with torch.no_grad():
            expected = network(x).numpy()
        (actual, ) = session.run(['sr'], {'lr': x.numpy()})
        if actual.shape != expected.shape:
            raise AssertionError(f'ONNX output shape {actual.shape} != PyTorch {expected.shape} at {height}x{width}')
        differences.append(float(np.abs(actual - expected).max()))
    return differences


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s: %(message)s')
    logger.setLevel(logging.INFO)
    try:
        check_opset(args.opset)
        network, network_opt, opt_path, _ = zoo.load_network(args.model, args.opt)
    except (CheckpointError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    in_channels = network_in_channels(network, network_opt)
    window_size = network_window_size(network, network_opt)
    scale = network_scale(network, network_opt)
    logger.info('exporting network_g of %s (x%d, window %d) to %s', opt_path, scale, window_size, args.onnx)
    try:
        export_onnx(network, args.onnx, in_channels, window_size, args.opset)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if args.no_check:
        return 0
    sizes = check_sizes(window_size)
    differences = check_onnx(network, args.onnx, in_channels, sizes)
    for (height, width), difference in zip(sizes, differences):
        print(f'onnxruntime vs PyTorch at {height}x{width}: max abs diff {difference:.2e}')
    if max(differences) > args.atol:
        print(f'error: ONNX output differs from PyTorch by more than --atol {args.atol}', file=sys.stderr)
        return 1
    print(f'wrote {args.onnx}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
