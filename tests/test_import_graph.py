"""The package's shape, read from its source (AST): imports run one way, modules stay small and say what they are.

- no import cycle between the package's modules (function-level imports count too: an import placed inside a
  function to dodge a cycle is still a cycle);
- no module imports the package's own modules inside a function;
- no module imports a private name (`_name`) from another module of the package;
- every module starts (first line) with a docstring and stays under `MAX_LINES` lines.
"""

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "hf_distill"
PACKAGE = PACKAGE_DIR.name
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imports(module: str) -> list[tuple[ast.stmt, str, list[str], bool]]:
    """`(node, target module, imported names, inside a function)` for each import of a module of the package."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    inside_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside_function.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in ast.walk(tree):
        nested = id(node) in inside_function
        if isinstance(node, ast.ImportFrom):
            base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            for name in names:
                # `from . import x` may import a submodule `x` rather than a name of the package.
                submodule = f"{target}.{name}"
                if submodule in MODULES:
                    found.append((node, submodule, [], nested))
                elif target in MODULES:
                    found.append((node, target, [name], nested))
        elif isinstance(node, ast.Import):
            found.extend((node, alias.name, [], nested) for alias in node.names if alias.name in MODULES)
    return found


def _graph() -> dict[str, set[str]]:
    # The top-level `__init__` only re-exports the public API: edges into it say nothing about the design.
    return {
        module: {target for _, target, _, _ in _imports(module) if target not in (module, PACKAGE)}
        for module in MODULES
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_is_read():
    graph = _graph()
    assert {"hf_distill.trainer", "hf_distill.constants", "hf_distill.methods.base"} <= set(graph)
    assert "hf_distill.constants" in graph["hf_distill.trainer"]


def test_cycle_detection_finds_a_ring():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("module", ["hf_distill.constants", "hf_distill.hub_utils", "hf_distill.registry"])
def test_leaf_modules_import_nothing_of_the_package(module):
    assert _graph()[module] == set()


def test_no_package_import_inside_a_function():
    nested = [
        f"{module}:{node.lineno} imports {target}"
        for module in MODULES
        for node, target, _, inside in _imports(module)
        if inside
    ]
    assert nested == []


def test_no_private_name_imported_from_another_module():
    private = [
        f"{module}:{node.lineno} imports {name} from {target}"
        for module in MODULES
        for node, target, names, _ in _imports(module)
        for name in names
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert private == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small_and_says_what_it_is_for(module):
    path = MODULES[module]
    source = path.read_text()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines (at most {MAX_LINES}): split it by job."
    if path.name == "__init__.py" and not source.strip():
        return
    docstring = ast.get_docstring(ast.parse(source))
    # The first line is the docstring (no licence header or other preamble: the licence is the package's).
    assert source.startswith('"""') and docstring and docstring.strip(), (
        f"{module} does not start with a docstring saying what it is for."
    )
