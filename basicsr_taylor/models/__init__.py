"""The plugin's model classes, registered in BasicSR's MODEL_REGISTRY: one per BasicSR model class it supports,
with :class:`~.taylor_mixin.TaylorMixin` mixed in (mixed precision, atomic checkpoints, the option file's schedule
on resume, devices). An option file naming BasicSR's class runs the plugin's (``TAYLOR_MODELS``, applied with a
notice by the train and test commands).

Also here: the network of a trained checkpoint (``checkpoint``) and the precision option keys (``precision``).
"""
from .realesrgan_model import TaylorRealESRGANModel, TaylorRealESRNetModel
from .sr_model import TaylorSRModel, TaylorSwinIRModel
from .srgan_model import TaylorESRGANModel, TaylorSRGANModel
from .taylor_mixin import TaylorMixin

# BasicSR's model_type -> the plugin's class, what the train and test commands build for it
TAYLOR_MODELS = {cls.__name__[len('Taylor'):]: cls for cls in (
    TaylorSRModel, TaylorSwinIRModel, TaylorSRGANModel, TaylorESRGANModel, TaylorRealESRNetModel,
    TaylorRealESRGANModel)}

__all__ = ['TAYLOR_MODELS', 'TaylorMixin', 'TaylorSRModel', 'TaylorSwinIRModel', 'TaylorSRGANModel',
           'TaylorESRGANModel', 'TaylorRealESRNetModel', 'TaylorRealESRGANModel']
