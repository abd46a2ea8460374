"""The package's shape (docs/layout.md): imports run one way (no circle, counting the imports inside functions, which
run too), every module outside ``models/`` stays under 450 lines, and every error type the package defines is one the
commands report as one line."""
import ast
import importlib
import inspect
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'logoformer_timm'
MAX_LINES = 450


def _modules() -> Dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__.py``)."""
    out = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        out['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return out


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The package's modules that ``name`` imports anywhere in its file (module level or inside a function)."""
    package = name.split('.') if path.name == '__init__.py' else name.split('.')[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            # `from .x import y` imports the module x.y when there is one, else the names of x
            found.update(f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base for a in node.names)
    return {m for m in found if m in modules and m != name}


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle of ``graph`` as a path that ends where it starts, or [] when there is none."""
    state: Dict[str, int] = {}  # 1 on the current path, 2 done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) == []


def test_the_import_graph_sees_relative_and_function_level_imports():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert 'logoformer_timm.device' in graph['logoformer_timm.weights.loading']  # from ..device import ...
    assert 'logoformer_timm.bench.gpu.plan' in graph['logoformer_timm.bench.gpu']  # from .plan import ... (package)
    assert 'logoformer_timm.models.mae_dfer' in graph['logoformer_timm.models']


def test_no_import_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycle(graph) == []


@pytest.mark.parametrize('name', sorted(n for n in _modules() if '.models.' not in n and not n.endswith('.models')))
def test_modules_outside_models_stay_short(name):
    lines = _modules()[name].read_text().count('\n')
    assert lines <= MAX_LINES, f'{name}: {lines} lines; split it by job (docs/layout.md)'


def test_every_error_type_of_the_package_is_a_user_error():
    from logoformer_timm.cli import user_errors
    defined = []
    for name in _modules():
        if name.endswith('__main__'):
            continue
        module = importlib.import_module(name)
        defined += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                    if issubclass(obj, Exception) and obj.__module__ == name]
    assert len(defined) >= 10
    assert [e.__qualname__ for e in defined if not issubclass(e, user_errors())] == []
