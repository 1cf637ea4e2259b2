"""BasicSR behaviours the plugin changes: atomic checkpoints written by the model classes' save methods, the
repeated validation skipped by iteration (models/taylor_mixin.py); nothing assigned to torch and the assignments to
BasicSR counted (utils/compat.py); a registry that never silently replaces another class (utils/registry.py)."""
import ast
import importlib.util
import os
import sys

import pytest
import torch

import basicsr_taylor
from basicsr.utils.registry import ARCH_REGISTRY
from basicsr_taylor import TaylorSwinIR
from basicsr_taylor.models import TaylorMixin, taylor_mixin
from basicsr_taylor.utils import compat

PACKAGE = os.path.dirname(os.path.abspath(basicsr_taylor.__file__))


class Stub(TaylorMixin):
    """TaylorMixin's methods over a stand-in for BasicSR's model: no network built, BaseModel's own methods recorded."""

    def __init__(self, tmp_path):
        self.opt = {'path': {'models': str(tmp_path), 'training_states': str(tmp_path)}, 'val': {'val_freq': 4}}
        self.net_g = torch.nn.Linear(2, 2)
        self.optimizers, self.schedulers, self.grad_scaler, self.calls = [], [], None, []

    def get_bare_model(self, net):
        return net


class Base:
    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        self.calls.append(current_iter)

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        pass

    def resume_training(self, resume_state):
        pass


class Model(Stub, Base):
    pass


def test_checkpoints_are_written_atomically_by_the_save_methods(tmp_path, monkeypatch):
    model = Model(tmp_path)
    real_save = torch.save

    def killed_mid_write(obj, path, *args, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'PK\x03\x04 half')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', killed_mid_write)
    monkeypatch.setattr(taylor_mixin.time, 'sleep', lambda seconds: None)
    model.save_network(model.net_g, 'net_g', -1)
    model.save_training_state(0, 8)
    assert os.listdir(tmp_path) == []  # nothing bears a final name, no temporary file left
    monkeypatch.setattr(torch, 'save', real_save)
    model.save_network([model.net_g, model.net_g], 'net_g', 8, ['params', 'params_ema'])
    model.save_training_state(1, 8)
    saved = torch.load(tmp_path / 'net_g_8.pth', weights_only=True)
    assert set(saved) == {'params', 'params_ema'} and torch.equal(saved['params']['weight'], model.net_g.weight)
    assert torch.load(tmp_path / '8.state', weights_only=True) == {'epoch': 1, 'iter': 8, 'optimizers': [],
                                                                   'schedulers': []}


def test_the_repeated_validation_is_skipped_by_iteration(tmp_path):
    model, loader = Model(tmp_path), object()
    model.validation(loader, 1, None)  # not training (test pipeline): always validates
    model.validation(loader, 1, None)
    model.update_learning_rate(4)
    model.validation(loader, 4, None)
    model.validation(loader, 5, None)  # after the last iteration, same weights: skipped
    model.validation(object(), 5, None)  # other data: validated
    with torch.no_grad():
        model.net_g.weight.data.add_(1)  # a write through .data does not bump Parameter._version
    model.update_learning_rate(5)
    model.validation(loader, 5, None)
    assert model.calls == [1, 1, 4, 5, 5]


def test_a_finished_run_resumed_is_not_validated_again(tmp_path):
    model, loader = Model(tmp_path), object()
    model.resume_training({'iter': 8})  # 8 % val_freq 4 == 0: validated before that state was saved
    model.validation(loader, 9, None)
    model.resume_training({'iter': 6})
    model.validation(loader, 7, None)
    assert model.calls == [7]


def assignments_to_modules(path, modules=('torch', 'basicsr')):
    """The targets (source text) of every assignment in ``path`` to an attribute, or an item of an attribute, of
    something imported from ``modules`` (``torch.Tensor.backward = ...``, ``BaseModel.save = ...``,
    ``ARCH_REGISTRY._obj_map[name] = ...``), also through setattr()."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.asname or alias.name.split('.')[0] for alias in node.names
                         if alias.name.split('.')[0] in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in modules:
            imported |= {alias.asname or alias.name for alias in node.names}
    found = []
    for node in ast.walk(tree):
        targets = list(getattr(node, 'targets', None) or [getattr(node, 'target', None)])
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setattr':
            targets = [node.args[0]]
        elif not isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            continue
        for target in targets:
            if isinstance(target, (ast.Tuple, ast.List)):
                targets.extend(target.elts)
                continue
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if root is not target and getattr(root, 'id', None) in imported:
                found.append(ast.unparse(target))
    return found


def test_assignments_to_torch_and_basicsr_are_found(tmp_path):
    source = ('import torch\nimport basicsr.train as bt\nfrom basicsr.models.base_model import BaseModel\n'
              'torch.Tensor.backward = None\nbt.load = None\nBaseModel.save = None\nsetattr(torch.nn, "x", 1)\n'
              'a, torch.y = 1, 2\n'
              'def f(registry):\n    from basicsr.utils.registry import ARCH_REGISTRY\n'
              '    ARCH_REGISTRY._obj_map["a"] = 1\n    model = object()\n    model.x = 1\n')
    (tmp_path / 'probe.py').write_text(source)
    assert sorted(assignments_to_modules(tmp_path / 'probe.py')) == sorted([
        'torch.Tensor.backward', 'bt.load', 'BaseModel.save', 'torch.nn', 'torch.y', "ARCH_REGISTRY._obj_map['a']"])


def test_nothing_is_assigned_to_torch_and_the_assignments_to_basicsr_are_compats_few():
    """None to an attribute of torch anywhere in the package; those to BasicSR's are the compat module's (at most
    10), each named in its docstring."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                for target in assignments_to_modules(path):
                    found.setdefault(os.path.relpath(path, PACKAGE), []).append(target)
    assert not [target for targets in found.values() for target in targets if target.startswith('torch')], found
    assert list(found) == [os.path.join('utils', 'compat.py')], found
    assigned = found[os.path.join('utils', 'compat.py')]
    assert len(assigned) == 7 <= 10, assigned
    for target in assigned:
        assert target.split('[')[0].split('.', 1)[-1] in compat.__doc__, target


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
