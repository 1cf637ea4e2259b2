"""TaylorRealESRNetModel and TaylorRealESRGANModel: BasicSR's Real-ESRNet/GAN models with :class:`TaylorMixin`,
their degradations on the model's device (BasicSR 1.4.2 puts DiffJPEG, USMSharp and the training-pair queue on
``.cuda()``) and DiffJPEG's output contiguous for BasicSR's filter2D."""
import torch
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D
from basicsr.utils.registry import MODEL_REGISTRY

from .sr_model import MixedSR, generator_losses
from .srgan_model import MixedGAN
from .taylor_mixin import TaylorMixin


class ContiguousDiffJPEG(DiffJPEG):
    """DiffJPEG with a contiguous output: BasicSR 1.4.2's is channels-last on today's torch, and the second
    degradation's blur (filter2D's ``.view``) failed on it ('view size is not compatible')."""

    def forward(self, x, quality):
        return super().forward(x, quality).contiguous()


def shared_blur(img, kernel):
    """filter2D(img, kernel) for a (1, k, k) kernel shared by the batch. On the CPU a depthwise conv: same sums, 8x
    faster than BasicSR's one-channel conv over b·c images (2x3x400x400, 1 thread); GPUs keep BasicSR's."""
    k = kernel.size(-1)
    if img.device.type != 'cpu' or kernel.size(0) != 1 or k % 2 == 0:
        return filter2D(img, kernel)
    b, c, h, w = img.shape
    padded = torch.nn.functional.pad(img.contiguous(), (k // 2, ) * 4, mode='reflect')
    out = torch.nn.functional.conv2d(padded.view(1, b * c, h + k - 1, w + k - 1),
                                     kernel.view(1, 1, k, k).expand(b * c, 1, k, k), groups=b * c)
    return out.view(b, c, h, w)


class DepthwiseUSMSharp(USMSharp):
    """USMSharp (BasicSR 1.4.2's forward: sharp = I + w·(I - B), blended by a blurred threshold mask) with
    :func:`shared_blur` for its 51x51 Gaussian."""

    def forward(self, img, weight=0.5, threshold=10):
        residual = img - shared_blur(img, self.kernel)
        soft_mask = shared_blur((torch.abs(residual) * 255 > threshold).float(), self.kernel)
        sharp = torch.clip(img + weight * residual, 0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img


class DegradationsOnDevice:
    """Real-ESRNet/GAN's ``__init__`` and training-pair queue on the model's device, not ``.cuda()``."""

    def __init__(self, opt):
        basicsr_class = next(c for c in type(self).__mro__ if c in (RealESRNetModel, RealESRGANModel))
        super(basicsr_class, self).__init__(opt)  # SRModel / SRGANModel: networks, losses, optimizers on self.device
        self.jpeger = ContiguousDiffJPEG(differentiable=False).to(self.device)
        self.usm_sharpener = DepthwiseUSMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    @torch.no_grad()
    def _dequeue_and_enqueue(self):
        if not hasattr(self, 'queue_lr'):  # made where the batch is, then BasicSR's own
            batch = self.lq.size(0)
            if self.queue_size % batch:
                raise ValueError(f'queue_size {self.queue_size} is not a multiple of the batch size {batch}')
            self.queue_lr = self.lq.new_zeros((self.queue_size, *self.lq.shape[1:]))
            self.queue_gt = self.gt.new_zeros((self.queue_size, *self.gt.shape[1:]))
            self.queue_ptr = 0
        return super()._dequeue_and_enqueue()


@MODEL_REGISTRY.register()
class TaylorRealESRNetModel(TaylorMixin, DegradationsOnDevice, MixedSR, RealESRNetModel):
    """BasicSR's RealESRNetModel (Real-ESRGAN's first stage) with :class:`TaylorMixin`."""


class MixedRealESRGAN(MixedGAN):
    """RealESRGANModel.optimize_parameters (BasicSR 1.4.2) under autocast: SRGAN's steps with the USM-sharpened
    targets that ``l1_gt_usm``, ``percep_gt_usm`` and ``gan_gt_usm`` choose, and the LDL loss."""

    def generator_targets(self):
        return tuple(self.gt if self.opt[key] is False else self.gt_usm
                     for key in ('l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm'))

    def generator_forward(self):
        self.output = self.net_g(self.lq)
        if self.cri_ldl:
            self.output_ema = self.net_g_ema(self.lq)

    def generator_losses(self, pixel_gt, percep_gt):
        return generator_losses(self, pixel_gt, percep_gt, 'l_g_', ldl=True)


@MODEL_REGISTRY.register()
class TaylorRealESRGANModel(TaylorMixin, DegradationsOnDevice, MixedRealESRGAN, RealESRGANModel):
    """BasicSR's RealESRGANModel (Real-ESRGAN's second stage) with :class:`TaylorMixin`."""
