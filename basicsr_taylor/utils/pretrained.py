"""Pretrained weights that BasicSR's losses download: there before a run starts, or a one-line error that says
which file to put where (BasicSR's own download error is a long traceback from inside the model's constructor)."""
import os
import os.path as osp

import torch


class MissingWeightsError(RuntimeError):
    """Pretrained weights a loss needs are neither on disk nor downloadable; the message says what to put where."""


def vgg_weights_url(vgg_type):
    """torchvision's ImageNet weights of ``vgg_type`` ('vgg19', 'vgg16_bn', ...): what BasicSR's pretrained=True
    downloads."""
    from torchvision.models import get_model_weights
    return get_model_weights(vgg_type).IMAGENET1K_V1.url


def ensure_vgg_weights(vgg_type='vgg19'):
    """Make sure BasicSR's VGGFeatureExtractor finds its weights: BasicSR's own file
    (``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` under the current folder, vgg19 only) or torch hub's
    cache, downloaded there now if missing. Without a network: :class:`MissingWeightsError`, one line."""
    from basicsr.archs import vgg_arch
    if vgg_type == 'vgg19' and osp.isfile(vgg_arch.VGG_PRETRAIN_PATH):
        return osp.abspath(vgg_arch.VGG_PRETRAIN_PATH)
    url = vgg_weights_url(vgg_type)
    cached = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(url))
    if osp.isfile(cached):
        return cached
    try:
        os.makedirs(osp.dirname(cached), exist_ok=True)
        torch.hub.download_url_to_file(url, cached, hash_prefix=osp.basename(url).split('-')[-1].split('.')[0])
    except (OSError, RuntimeError) as err:  # URLError, timeouts, refused connections; a hash mismatch
        where = osp.abspath(vgg_arch.VGG_PRETRAIN_PATH) + ' or ' if vgg_type == 'vgg19' else ''
        raise MissingWeightsError(
            f'the perceptual loss needs {vgg_type} ImageNet weights and downloading {url} failed '
            f'({" ".join(str(err).split())}): put that file at {where}{cached}') from None
    return cached
