"""BasicSR behaviours the plugin changes (utils/compat.py, utils/registry.py): atomic checkpoints written by
overridden save methods (no stand-in for the torch module), the repeated validation skipped by iteration, and a
registry that never silently replaces another class."""
import importlib.util
import os
import sys

import pytest
import torch

import basicsr_taylor  # noqa: F401
import basicsr.models.base_model
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY
from basicsr_taylor import TaylorSwinIR
from basicsr_taylor.utils import compat


class Stub:
    def __init__(self, tmp_path):
        self.opt = {'path': {'models': str(tmp_path), 'training_states': str(tmp_path)}, 'val': {'val_freq': 4}}
        self.net_g = torch.nn.Linear(2, 2)
        self.optimizers, self.schedulers = [], []

    def get_bare_model(self, net):
        return net


def test_checkpoints_are_written_atomically_by_the_save_methods(tmp_path, monkeypatch):
    compat.install_training_fixes()
    assert basicsr.models.base_model.torch is torch  # no process-wide proxy in BasicSR's module
    model = Stub(tmp_path)
    real_save = torch.save

    def killed_mid_write(obj, path, *args, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'PK\x03\x04 half')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', killed_mid_write)
    monkeypatch.setattr(compat.time, 'sleep', lambda seconds: None)
    BaseModel.save_network(model, model.net_g, 'net_g', -1)
    BaseModel.save_training_state(model, 0, 8)
    assert os.listdir(tmp_path) == []  # nothing bears a final name, no temporary file left
    monkeypatch.setattr(torch, 'save', real_save)
    BaseModel.save_network(model, [model.net_g, model.net_g], 'net_g', 8, ['params', 'params_ema'])
    BaseModel.save_training_state(model, 1, 8)
    saved = torch.load(tmp_path / 'net_g_8.pth', weights_only=True)
    assert set(saved) == {'params', 'params_ema'} and torch.equal(saved['params']['weight'], model.net_g.weight)
    assert torch.load(tmp_path / '8.state', weights_only=True) == {'epoch': 1, 'iter': 8, 'optimizers': [],
                                                                   'schedulers': []}


def test_the_repeated_validation_is_skipped_by_iteration(tmp_path):
    calls = []
    validation = compat._skip_repeated_validation(lambda self, loader, it, tb, save: calls.append(it))
    step = compat._note_iteration(lambda self, it, warmup: None)
    model, loader = Stub(tmp_path), object()
    validation(model, loader, 1, None)  # not training (test pipeline): always validates
    validation(model, loader, 1, None)
    step(model, 4)
    validation(model, loader, 4, None)
    validation(model, loader, 5, None)  # after the last iteration, same weights: skipped
    validation(model, object(), 5, None)  # other data: validated
    with torch.no_grad():
        model.net_g.weight.data.add_(1)  # a write through .data does not bump Parameter._version
    step(model, 5)
    validation(model, loader, 5, None)
    assert calls == [1, 1, 4, 5, 5]


def test_a_finished_run_resumed_is_not_validated_again(tmp_path):
    calls = []
    validation = compat._skip_repeated_validation(lambda self, loader, it, tb, save: calls.append(it))
    resume = compat._resume_with_the_options_schedule(lambda self, state: None)
    model, loader = Stub(tmp_path), object()
    resume(model, {'iter': 8})  # 8 % val_freq 4 == 0: validated before that state was saved
    validation(model, loader, 9, None)
    resume(model, {'iter': 6})
    validation(model, loader, 7, None)
    assert calls == [7]


def write_module(path, body, name=None):
    """Import ``body`` written to ``path`` as module ``name``, as an import statement does."""
    path.write_text(body)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]  # as a failed import statement
        raise
    return module


def test_the_registry_never_replaces_another_class_of_the_same_name(tmp_path):
    other = tmp_path / 'taylor_swinir_arch.py'  # same module name, same class name, another file
    with pytest.raises(ValueError, match=r'already has a TaylorSwinIR from .*archs/taylor_swinir_arch.py .*'
                       r'cannot register another class under that name'):
        write_module(other, 'from basicsr_taylor.utils.registry import register_arch\n\n\n'
                     '@register_arch\nclass TaylorSwinIR:\n    pass\n')
    assert ARCH_REGISTRY.get('TaylorSwinIR') is TaylorSwinIR
    source = tmp_path / 'twice_arch.py'  # the same file executed twice (importlib.reload, two module names)
    first = write_module(source, 'from basicsr_taylor.utils.registry import register_arch\n\n\n'
                         '@register_arch\nclass TwiceArchForTest:\n    pass\n')
    second = write_module(source, source.read_text(), name='other_name.twice_arch')
    assert first.TwiceArchForTest is not second.TwiceArchForTest
    assert ARCH_REGISTRY.get('TwiceArchForTest') is second.TwiceArchForTest
