"""Add a trained model to a zoo folder: its weights as ``<NAME>.pth`` and its entry in ``models.json``.

    python -m basicsr_taylor.zoo.bundle CHECKPOINT --name TaylorSwinIR-light-x2 [--opt OPTION_FILE]
                                        [--set5-psnr 37.12] [--folder basicsr_taylor/zoo]

The checkpoint's ``params_ema`` (else ``params``) must load strictly into the ``network_g`` of its option file
(found beside the checkpoint as for basicsr-taylor-infer, or --opt). The weights are written as ``{'params': ...}``,
which BasicSR's loader reads with ``param_key_g`` ``params`` or ``params_ema``; a file over 5 MB is refused.
An entry of the same name is replaced in its place (the order of ``--list-models`` stays); a new one is appended.
"""
import argparse
import json
import sys
from os import path as osp

from basicsr_taylor.utils.cli import answer_help_early


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m basicsr_taylor.zoo.bundle',
                                     description='Add a trained checkpoint to a zoo folder (weights + models.json).')
    parser.add_argument('checkpoint', help='BasicSR checkpoint (.pth); params_ema is used if present')
    parser.add_argument('--name', required=True, help='model name, e.g. TaylorSwinIR-light-x2')
    parser.add_argument('--opt', default=None, help='option file with network_g (default: the experiment\'s)')
    parser.add_argument('--set5-psnr', type=float, default=None, help='Y PSNR on Set5, as measured')
    parser.add_argument('--folder', default=None, help='zoo folder (default: the package\'s, basicsr_taylor/zoo)')
    return parser.parse_args(argv)


answer_help_early('zoo.bundle', parse_args)

from basicsr_taylor.utils.files import atomic_path, write_atomically  # noqa: E402
from basicsr_taylor.zoo.registry import (  # noqa: E402
    MAX_FILE_BYTES, PACKAGE_FOLDER, REGISTRY_FILE, ZooError, format_size, sha256_of)


def bundle(checkpoint, name, folder=PACKAGE_FOLDER, opt_path=None, set5_psnr=None):
    """Write the weights of ``checkpoint`` to ``folder``/NAME.pth and register them in ``folder``/models.json
    (created if missing); returns the entry."""
    import torch

    from basicsr_taylor.models.checkpoint import load_network, load_state_dict, network_scale
    if not name or osp.basename(name) != name or name.startswith('.'):
        raise ZooError(f'--name {name!r}: must be a plain file name')
    network, network_opt, _ = load_network(checkpoint, opt_path)  # strict: the weights fit network_g
    state_dict = {key: value.detach().clone().contiguous() for key, value in load_state_dict(checkpoint)[0].items()}
    target = osp.join(folder, f'{name}.pth')
    with atomic_path(target) as temp_path:
        torch.save({'params': state_dict}, temp_path)
        size = osp.getsize(temp_path)
        if size > MAX_FILE_BYTES:
            raise ZooError(f'{name}: the weights take {format_size(size)}, more than the '
                           f'{format_size(MAX_FILE_BYTES)} a bundled model may have')
        digest = sha256_of(temp_path)
    entry = {'name': name, 'scale': network_scale(network, network_opt), 'network_g': dict(network_opt),
             'file': osp.basename(target), 'sha256': digest, 'size': size,
             'set5_psnr': None if set5_psnr is None else round(float(set5_psnr), 2)}
    registry = osp.join(folder, REGISTRY_FILE)
    models = []
    if osp.isfile(registry):
        with open(registry, encoding='utf-8') as f:
            models = json.load(f)['models']
    names = [model['name'] for model in models]
    if name in names:  # replaced where it stands, so the listing keeps its order
        models[names.index(name)] = entry
    else:
        models.append(entry)
    write_atomically(registry, json.dumps({'models': models}, indent=2) + '\n')
    return entry


def main(argv=None):
    args = parse_args(argv)
    import basicsr_taylor  # noqa: F401  (compat fixes before basicsr; registers TaylorSwinIR)
    from basicsr_taylor.models.checkpoint import CheckpointError
    try:
        entry = bundle(args.checkpoint, args.name, args.folder or PACKAGE_FOLDER, args.opt, args.set5_psnr)
    except (CheckpointError, ZooError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f'{entry["name"]}: x{entry["scale"]}, {format_size(entry["size"])}, sha256 {entry["sha256"]} -> '
          f'{osp.join(args.folder or PACKAGE_FOLDER, entry["file"])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
