"""The package's imports run one way, and the op package exports a small public surface.

The import graph is read from the source (``ast``), every ``import`` statement counted, those inside functions
included (a lazy import still makes two modules depend on each other): no module of basicsr_taylor may import a
module that imports it back, directly or through others.
"""
import ast
import os

import pytest

import basicsr_taylor

PACKAGE = 'basicsr_taylor'
ROOT = os.path.dirname(os.path.abspath(basicsr_taylor.__file__))
OP_PUBLIC = ['DEFAULT_ORDER', 'FORMS', 'ORDERS', 'RegionChunks', 'exportable', 'taylor_shift_attention']


def _modules():
    """{dotted name: (path, is package)} of every module of the package."""
    modules = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(('.', '__')))
        parts = [PACKAGE] + os.path.relpath(folder, ROOT).split(os.sep)
        parts = [part for part in parts if part != '.']
        for name in files:
            if name.endswith('.py'):
                is_package = name == '__init__.py'
                dotted = '.'.join(parts if is_package else parts + [name[:-3]])
                modules[dotted] = (os.path.join(folder, name), is_package)
    return modules


def _imports(name, path, is_package, modules):
    """The modules of the package that module ``name`` imports (explicitly, anywhere in its source)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    package = name if is_package else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - (node.level - 1)]
                source = '.'.join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ''
            # ``from package import module`` depends on that module (the package is its parent, imported first
            # whatever the statement); ``from module import name`` on the module
            names = [alias.name for alias in node.names]
            submodules = [f'{source}.{name}' for name in names if f'{source}.{name}' in modules]
            targets = submodules + ([source] if len(submodules) < len(names) else [])
        else:
            continue
        for target in targets:
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph():
    modules = _modules()
    return {name: _imports(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def find_cycle(graph):
    """One import cycle of ``graph`` as a list [a, b, ..., a], or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_graph_is_read():
    graph = import_graph()
    assert 'basicsr_taylor.models.checkpoint' in graph
    assert 'basicsr_taylor.ops.taylor_shift.interface' in graph['basicsr_taylor.ops.taylor_shift']
    assert 'basicsr_taylor.models' in graph['basicsr_taylor']  # a lazy import inside a function counts


def test_find_cycle_sees_a_lazy_back_import():
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert find_cycle(graph) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_op_package_exports_what_a_user_calls():
    import basicsr_taylor.ops.taylor_shift as op
    assert sorted(op.__all__) == OP_PUBLIC
    namespace = {}
    exec('from basicsr_taylor.ops.taylor_shift import *', namespace)
    assert sorted(name for name in namespace if not name.startswith('__')) == OP_PUBLIC


@pytest.mark.parametrize('name', ['taylor_shift_attention', 'TaylorShiftAttention', 'TaylorSwinIR'])
def test_package_root_names(name):
    assert callable(getattr(basicsr_taylor, name))


def _lines(path):
    with open(path, encoding='utf-8') as f:
        return sum(1 for _ in f)


def test_modules_are_small_and_utils_is_not_the_largest_room():
    sizes = {name: _lines(path) for name, (path, _) in _modules().items()}
    assert max(sizes.values()) <= 350, sorted(sizes.items(), key=lambda item: -item[1])[:3]
    utils = sum(size for name, size in sizes.items() if name.startswith(f'{PACKAGE}.utils'))
    assert utils <= 1000, utils
