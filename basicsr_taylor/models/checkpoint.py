"""Build a trained network from a BasicSR checkpoint, safely: weights-only loading and a clear mismatch error.

BasicSR saves ``experiments/<name>/models/net_g_<iter>.pth`` as ``{'params': state_dict}`` and, with EMA,
``{'params': ..., 'params_ema': ...}``; it copies the training option file to ``experiments/<name>/``.
The network configuration is its ``network_g`` section.
"""
import copy
import glob
import math
import re
from os import path as osp

import torch

from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from ..options.file import read_option_file
from ..options.keys import OptionError, check_typed

PARAM_KEYS = ('params_ema', 'params')  # preferred first: the EMA weights are the ones BasicSR evaluates
OPTION_SUFFIXES = ('.yml', '.yaml')


class CheckpointError(ValueError):
    """A checkpoint or option file that cannot give a working network."""


class NetworkOptionError(CheckpointError):
    """A network_g section with an unknown or missing key (TaylorSwinIR only warns about unknown arguments)."""


def load_state_dict(model_path):
    """The state dict of a checkpoint: ``params_ema`` if present, else ``params``, else a bare state dict.

    Loaded with ``torch.load(weights_only=True)``: a file that would need to run code to unpickle is refused.
    Returns (state_dict, key) where key names the entry used (None for a bare state dict).
    """
    if not osp.isfile(model_path):
        raise CheckpointError(f'checkpoint not found: {model_path}')
    with open(model_path, 'rb') as f:
        head = f.read(2)
    if head != b'PK' and head[:1] != b'\x80':  # torch.save writes a zip archive (before torch 1.6: a pickle)
        raise CheckpointError(f'{model_path} is not a PyTorch checkpoint (' + (
            'empty file)' if not head else 'neither the zip archive nor the pickle that torch.save writes)'))
    try:
        checkpoint = torch.load(model_path, map_location='cpu', weights_only=True)
    except Exception as error:  # UnpicklingError for code-carrying pickles, RuntimeError for corrupt zips
        raise CheckpointError(f'cannot load {model_path} as a weights-only checkpoint (refusing to unpickle '
                              f'anything but tensors and plain containers): {type(error).__name__}: {error}'
                              ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{model_path} holds a {type(checkpoint).__name__}, not a state dict')
    for key in PARAM_KEYS:
        if key in checkpoint:
            state_dict, used_key = checkpoint[key], key
            break
    else:
        state_dict, used_key = checkpoint, None
    if not isinstance(state_dict, dict) or not state_dict or \
            not all(torch.is_tensor(value) for value in state_dict.values()):
        raise CheckpointError(f'{model_path} has neither {" nor ".join(PARAM_KEYS)} nor a bare state dict; '
                              f'its top-level keys are {sorted(map(str, checkpoint))[:10]}')
    prefix = 'module.'  # DataParallel / DDP wrappers
    state_dict = {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state_dict.items()}
    return state_dict, used_key


def read_network_options(opt_path):
    """The ``network_g`` section of a BasicSR option file (a copy: the caller may pop from it), read with the
    train/test commands' safe loader."""
    if not osp.isfile(opt_path):
        raise CheckpointError(f'option file not found: {opt_path}')
    try:
        opt = read_option_file(opt_path)
    except OptionError as error:
        raise CheckpointError(f'option file {error}') from None
    if not isinstance(opt.get('network_g'), dict) or 'type' not in opt['network_g']:
        raise CheckpointError(f'option file {opt_path} has no network_g section with a type')
    try:
        check_typed('network_g:', opt['network_g'], ARCH_REGISTRY)
    except OptionError as error:
        raise NetworkOptionError(f'option file {opt_path}: {error}') from None
    return copy.deepcopy(dict(opt['network_g']))


def find_option_file(model_path):
    """The option file of the experiment a checkpoint belongs to.

    Looks next to the checkpoint and one folder up (``experiments/<name>/models/net_g_*.pth`` ->
    ``experiments/<name>/*.yml``, where BasicSR copies the option file). Files without ``network_g`` are
    ignored; several files with different ``network_g`` are an error asking for --opt.
    """
    folder = osp.dirname(osp.abspath(model_path))
    candidates = []
    for search in (folder, osp.dirname(folder)):
        for suffix in OPTION_SUFFIXES:
            candidates += sorted(glob.glob(osp.join(glob.escape(search), f'*{suffix}')))
    found = {}
    for candidate in candidates:
        try:
            found[candidate] = read_network_options(candidate)
        except NetworkOptionError:
            raise
        except CheckpointError:
            continue
    if not found:
        raise CheckpointError(f'no option file with network_g next to {model_path} or in its experiment folder '
                              f'{osp.dirname(folder)}; pass the training option file with --opt')
    first = next(iter(found.values()))
    if any(network != first for network in found.values()):
        raise CheckpointError(f'option files with different network_g found for {model_path}: '
                              f'{", ".join(found)}; choose one with --opt')
    return next(iter(found))


def describe_weights(state_dict):
    """Hyper-parameters readable from a SwinIR-family state dict: scale, width, depths, heads, channels.

    Entries that the weights do not determine are left out (e.g. the scale of a one-step 'nearest+conv').
    """
    info = {}
    first = state_dict.get('conv_first.weight')
    if first is not None and first.dim() == 4:
        info['width (embed_dim)'] = first.shape[0]
        info['input channels (in_chans)'] = first.shape[1]
    blocks, heads = {}, {}
    for key, value in state_dict.items():
        match = re.match(r'layers\.(\d+)\.(?:residual_group\.)?blocks\.(\d+)\.', key)
        if match:
            layer, block = int(match[1]), int(match[2])
            blocks.setdefault(layer, set()).add(block)
            if key.endswith('attn.temperature'):  # (heads, 1, 1)
                heads.setdefault(layer, value.shape[0])
    if blocks:
        info['depth (depths)'] = [len(blocks[layer]) for layer in sorted(blocks)]
    if heads and len(heads) == len(blocks):
        info['heads (num_heads)'] = [heads[layer] for layer in sorted(heads)]
    scale = _scale_from_weights(state_dict, info.get('input channels (in_chans)'))
    if scale is not None:
        info['scale (upscale)'] = scale
    return info


def _scale_from_weights(state_dict, in_chans):
    convs = sorted((int(m[1]), value) for key, value in state_dict.items()
                   if (m := re.fullmatch(r'upsample\.(\d+)\.weight', key)))
    if 'conv_before_upsample.0.weight' in state_dict and convs:  # pixelshuffle: conv to f²·C, shuffle by f
        scale = 1
        for _, weight in convs:
            scale *= round(math.sqrt(weight.shape[0] / weight.shape[1]))
        return scale
    if convs and in_chans:  # pixelshuffledirect: one conv to s²·in_chans
        return round(math.sqrt(convs[0][1].shape[0] / in_chans))
    nearest = {key for key in state_dict if re.fullmatch(r'upsample\.convs\.\d+\.weight', key)}
    if len(nearest) > 1:  # nearest+conv: one ×2 step per conv (a single conv is ×2 or ×3)
        return 2**len(nearest)
    if 'conv_last.weight' in state_dict and 'conv_before_upsample.0.weight' not in state_dict and not nearest:
        return 1  # restoration without resizing
    return None


def check_fits(network, state_dict, model_path, network_source):
    """Raise CheckpointError naming what differs (scale, width, depth, heads, channels) if the weights do not fit."""
    expected = network.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [key for key in expected if key in state_dict and expected[key].shape != state_dict[key].shape]
    if not (missing or unexpected or wrong_shape):
        return
    have, want = describe_weights(state_dict), describe_weights(expected)
    differences = [f'{name}: checkpoint {have[name]}, network {want[name]}'
                   for name in want if name in have and have[name] != want[name]]
    if not differences:  # nothing named differs: show the first keys that do
        differences = [f'missing keys {missing[:5]}'] * bool(missing) + \
            [f'unexpected keys {unexpected[:5]}'] * bool(unexpected) + \
            [f'{key}: checkpoint {tuple(state_dict[key].shape)}, network {tuple(expected[key].shape)}'
             for key in wrong_shape[:5]]
    raise CheckpointError(f'checkpoint {model_path} does not fit the network of {network_source}: '
                          + '; '.join(differences) + '. Use the option file the checkpoint was trained with.')


def load_network(model_path, opt_path=None):
    """Build ``network_g`` from the option file (given, or found beside the checkpoint) and load the weights.

    Returns (network in eval mode on the CPU, network options dict, option file path).
    """
    state_dict, _ = load_state_dict(model_path)
    opt_path = opt_path or find_option_file(model_path)
    network_opt = read_network_options(opt_path)
    try:
        network = build_network(copy.deepcopy(network_opt))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f'network_g of {opt_path} does not build: {error}') from error
    check_fits(network, state_dict, model_path, opt_path)
    network.load_state_dict(state_dict, strict=True)
    return network.eval(), network_opt, opt_path


def network_scale(network, network_opt):
    """The upscaling factor of a built network (``upscale`` in SwinIR-family options, else 1)."""
    return int(getattr(network, 'upscale', network_opt.get('upscale', network_opt.get('scale', 1))))


def network_in_channels(network, network_opt):
    first = getattr(network, 'conv_first', None)
    if isinstance(first, torch.nn.Conv2d):
        return first.in_channels
    return int(network_opt.get('in_chans', network_opt.get('num_in_ch', 3)))


def network_window_size(network, network_opt):
    """The input-pixel grid the network pads to: window_size, times patch_size for TaylorSwinIR with p > 1."""
    if hasattr(network, 'pad_multiple'):
        return int(network.pad_multiple)
    for module in network.modules():  # BasicSR's SwinIR keeps it in its blocks (an int, or a tuple in attention)
        if hasattr(module, 'window_size'):
            size = module.window_size
            return int(size[0] if isinstance(size, (tuple, list)) else size)
    return int(network_opt.get('window_size', 1))


__all__ = ['CheckpointError', 'load_state_dict', 'read_network_options', 'find_option_file', 'describe_weights',
           'check_fits', 'load_network', 'network_scale', 'network_in_channels', 'network_window_size']
