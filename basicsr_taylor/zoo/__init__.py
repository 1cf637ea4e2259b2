"""Ready-to-use TaylorSwinIR models shipped with the package: weights, network options and SHA-256 in this folder.

    basicsr-taylor-infer -i photo.png -o out/ [--scale 2|3|4]      the bundled model of that scale
    basicsr-taylor-infer --list-models                                name, scale, Set5 PSNR, size
    --model NAME, --model zoo:NAME                                   infer and export
    path: pretrain_network_g: zoo:NAME                               option files of basicsr-taylor-test (and train)

The registry (``models.json``, read by :mod:`.registry` without torch) gives each model's name, scale, the
``network_g`` options that build it, its weight file, SHA-256, size and Set5 PSNR. A weight file is checked against
its SHA-256 before it is loaded (``torch.load(weights_only=True)``, ``strict=True``).

Adding a trained model: ``python -m basicsr_taylor.zoo.bundle experiments/<name>/models/net_g_latest.pth --name
TaylorSwinIR-light-x2 [--opt OPTION_FILE] [--set5-psnr 37.12]`` writes its EMA weights to
``basicsr_taylor/zoo/<NAME>.pth`` and its entry to ``models.json`` (at most 5 MB a file); commit both.
"""
from .registry import (MAX_FILE_BYTES, PACKAGE_FOLDER, PREFIX, ZOO_ENV, ZooError, describe, entries, find, for_scale,
                       format_size, format_table, lookup, resolve, sha256_of, verify)

__all__ = ['MAX_FILE_BYTES', 'PACKAGE_FOLDER', 'PREFIX', 'ZOO_ENV', 'ZooError', 'describe', 'entries', 'find',
           'for_scale', 'format_size', 'format_table', 'load_bundled', 'load_network', 'lookup', 'resolve',
           'sha256_of', 'verify']


def load_bundled(entry):
    """Build the network of a registry entry and load its verified weights strictly.

    Returns (network in eval mode on the CPU, network options dict, 'bundled model NAME').
    """
    import copy

    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY

    from ..models.checkpoint import CheckpointError, check_fits, load_state_dict
    from ..options.keys import OptionError, check_typed
    path = verify(entry)
    state_dict, _ = load_state_dict(path)  # torch.load(weights_only=True)
    source = f'bundled model {entry["name"]}'
    network_opt = copy.deepcopy(entry['network_g'])
    try:
        check_typed('network_g:', network_opt, ARCH_REGISTRY)
        network = build_network(copy.deepcopy(network_opt))
    except (OptionError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f'{entry["registry"]}: network_g of {entry["name"]} does not build: {error}') from None
    check_fits(network, state_dict, path, source)
    network.load_state_dict(state_dict, strict=True)
    return network.eval(), network_opt, source


def load_network(model, opt_path=None, folders=None):
    """The network of a --model argument: a bundled model (``zoo:NAME``, or a registered NAME that is not a file),
    else a checkpoint with its option file (:func:`basicsr_taylor.models.checkpoint.load_network`).

    Returns (network, network options, where it came from, registry entry or None for a checkpoint).
    """
    entry = lookup(model, folders)
    if entry is None:
        from ..models.checkpoint import load_network as load_checkpoint
        return (*load_checkpoint(model, opt_path), None)
    if opt_path:
        raise ZooError(f'--opt {opt_path}: the bundled model {entry["name"]} has its own network options; '
                       'leave --opt out')
    return (*load_bundled(entry), entry)
