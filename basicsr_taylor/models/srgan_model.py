"""TaylorSRGANModel and TaylorESRGANModel: BasicSR's SRGANModel and ESRGANModel with :class:`TaylorMixin`."""
from collections import OrderedDict

import torch
from basicsr.models.esrgan_model import ESRGANModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY

from .sr_model import generator_losses
from .taylor_mixin import TaylorMixin


def train_discriminator(model, flag):
    for p in model.net_d.parameters():
        p.requires_grad = flag


class MixedGAN:
    """SRGANModel.optimize_parameters (BasicSR 1.4.2) as :class:`TaylorMixin`'s ``optimize_mixed``; the GAN terms
    are methods, which ESRGAN's relativistic loss and Real-ESRGAN's targets replace."""

    def generator_targets(self):
        """(pixel, perceptual, discriminator) ground truths."""
        return self.gt, self.gt, self.gt

    def generator_forward(self):
        self.output = self.net_g(self.lq)

    def generator_losses(self, pixel_gt, percep_gt):
        return generator_losses(self, pixel_gt, percep_gt, 'l_g_')

    def generator_gan_loss(self, real):
        return self.cri_gan(self.net_d(self.output), True, is_disc=False)

    def discriminator_step(self, real, loss_dict):
        """The discriminator's losses on real and fake images, each backward, into loss_dict."""
        with self.autocast():
            real_d_pred = self.net_d(real)
            l_d_real = self.cri_gan(real_d_pred, True, is_disc=True)
        loss_dict['l_d_real'] = l_d_real
        loss_dict['out_d_real'] = torch.mean(real_d_pred.detach())
        self.backward(l_d_real)
        with self.autocast():
            fake_d_pred = self.net_d(self.output.detach().clone())  # Real-ESRGAN's clone (pt1.9); same values
            l_d_fake = self.cri_gan(fake_d_pred, False, is_disc=True)
        loss_dict['l_d_fake'] = l_d_fake
        loss_dict['out_d_fake'] = torch.mean(fake_d_pred.detach())
        self.backward(l_d_fake)

    def optimize_mixed(self, current_iter):
        pixel_gt, percep_gt, real = self.generator_targets()
        train_discriminator(self, False)
        self.optimizer_g.zero_grad()
        with self.autocast():
            self.generator_forward()
        loss_dict = OrderedDict()
        if current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters:
            with self.autocast():
                l_g_total, loss_dict = self.generator_losses(pixel_gt, percep_gt)
                loss_dict['l_g_gan'] = self.generator_gan_loss(real)
                l_g_total += loss_dict['l_g_gan']
            self.backward(l_g_total)
            self.step(self.optimizer_g)
        train_discriminator(self, True)
        self.optimizer_d.zero_grad()
        self.discriminator_step(real, loss_dict)
        self.step(self.optimizer_d)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


@MODEL_REGISTRY.register()
class TaylorSRGANModel(TaylorMixin, MixedGAN, SRGANModel):
    """BasicSR's SRGANModel with :class:`TaylorMixin`."""


class MixedESRGAN(MixedGAN):
    """ESRGANModel's relativistic GAN losses (BasicSR 1.4.2) under autocast."""

    def generator_gan_loss(self, real):
        real_d_pred = self.net_d(real).detach()
        fake_g_pred = self.net_d(self.output)
        l_g_real = self.cri_gan(real_d_pred - torch.mean(fake_g_pred), False, is_disc=False)
        l_g_fake = self.cri_gan(fake_g_pred - torch.mean(real_d_pred), True, is_disc=False)
        return (l_g_real + l_g_fake) / 2

    def discriminator_step(self, real, loss_dict):
        with self.autocast():
            fake_d_pred = self.net_d(self.output).detach()
            real_d_pred = self.net_d(real)
            l_d_real = self.cri_gan(real_d_pred - torch.mean(fake_d_pred), True, is_disc=True) * 0.5
        self.backward(l_d_real)
        with self.autocast():
            fake_d_pred = self.net_d(self.output.detach())
            l_d_fake = self.cri_gan(fake_d_pred - torch.mean(real_d_pred.detach()), False, is_disc=True) * 0.5
        self.backward(l_d_fake)
        loss_dict.update(l_d_real=l_d_real, l_d_fake=l_d_fake, out_d_real=torch.mean(real_d_pred.detach()),
                         out_d_fake=torch.mean(fake_d_pred.detach()))


@MODEL_REGISTRY.register()
class TaylorESRGANModel(TaylorMixin, MixedESRGAN, ESRGANModel):
    """BasicSR's ESRGANModel (relativistic GAN) with :class:`TaylorMixin`."""
