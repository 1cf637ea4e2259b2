"""TaylorSRModel and TaylorSwinIRModel: BasicSR's SRModel and SwinIRModel with :class:`TaylorMixin`."""
from collections import OrderedDict

import torch
from basicsr.losses.loss_util import get_refined_artifact_map
from basicsr.models.sr_model import SRModel
from basicsr.models.swinir_model import SwinIRModel
from basicsr.utils.registry import MODEL_REGISTRY

from .taylor_mixin import TaylorMixin


def generator_losses(model, pixel_gt, percep_gt, prefix='l_', ldl=False):
    """(total, OrderedDict of the terms) of SRModel's pixel and perceptual losses of ``model.output``, named
    ``{prefix}pix``, ...; with ``ldl`` also Real-ESRGAN's LDL loss, in BasicSR's order."""
    terms = OrderedDict()
    if model.cri_pix:
        terms[f'{prefix}pix'] = model.cri_pix(model.output, pixel_gt)
    if ldl and model.cri_ldl:
        weight = get_refined_artifact_map(model.gt, model.output, model.output_ema, 7)
        terms[f'{prefix}ldl'] = model.cri_ldl(torch.mul(weight, model.output), torch.mul(weight, model.gt))
    if model.cri_perceptual:
        percep, style = model.cri_perceptual(model.output, percep_gt)
        terms.update({f'{prefix}{name}': value for name, value in (('percep', percep), ('style', style))
                      if value is not None})
    total = 0
    for value in terms.values():
        total += value
    return total, terms


class MixedSR:
    """SRModel.optimize_parameters (BasicSR 1.4.2) as :class:`TaylorMixin`'s ``optimize_mixed``."""

    def optimize_mixed(self, current_iter):
        self.optimizer_g.zero_grad()
        with self.autocast():
            self.output = self.net_g(self.lq)
            l_total, loss_dict = generator_losses(self, self.gt, self.gt)
        self.backward(l_total)
        self.step(self.optimizer_g)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


@MODEL_REGISTRY.register()
class TaylorSRModel(TaylorMixin, MixedSR, SRModel):
    """BasicSR's SRModel with mixed precision, atomic checkpoints and the option file's schedule on resume."""


@MODEL_REGISTRY.register()
class TaylorSwinIRModel(TaylorMixin, MixedSR, SwinIRModel):
    """BasicSR's SwinIRModel (test images padded to the window) with :class:`TaylorMixin`."""
