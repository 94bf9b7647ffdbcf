"""The packages import one way, and no two modules import each other.

Layers, bottom up: `models` (networks, phantoms, scoring; imports nothing of ours), `node`
(the DICOM node and its CLI; may import `models`), `training` (may import `models` and
`node`). No package imports `tests`. Every import counts for the layers: module level, inside
functions, and under `if TYPE_CHECKING:` (a type is a dependency too).

Cycles are checked on the graph module -> module (our three packages only; `from a.b import
c` points at a.b.c when that is a module, else at a.b). Two graphs:

- module-scope imports (what runs at import time, TYPE_CHECKING blocks excluded): a cycle
  here breaks or half-initialises a module depending on which side is imported first;
- all imports, function-level ones too. We count these as well: a lazy import inside a
  function hides a cycle from the interpreter but not from the reader, and two modules that
  need each other are one concern split in the wrong place (node/cli.py <-> node/models_cli.py
  and the two pipelines were such pairs). Lazy imports stay fine for what they are for:
  keeping torch out of processes that do not need it.

An import of a package's submodule also runs the package's __init__; those implicit edges are
left out (our __init__ files import nothing but their own submodules).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.tools import REPO

PACKAGES = ("models", "node", "training")
# package -> the packages of ours it must not import
FORBIDDEN = {
    "models": {"node", "training", "tests"},
    "node": {"training", "tests"},
    "training": {"tests"},
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module or name, dotted and absolute
    file: Path
    line: int
    module_scope: bool  # runs when the module is imported


def our_modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__) for every .py file of ours."""
    modules = {}
    for package in PACKAGES:
        for file in sorted((REPO / package).rglob("*.py")):
            parts = list(file.relative_to(REPO).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith(
        "TYPE_CHECKING"
    )


def imports_of(name: str, file: Path, is_package: bool, modules: dict) -> list[Import]:
    """Every import statement in `file`, relative ones resolved."""
    package = name if is_package else name.rpartition(".")[0]
    found: list[Import] = []

    def add(target: str, node: ast.stmt, module_scope: bool) -> None:
        found.append(Import(name, target, file, node.lineno, module_scope))

    def visit(node: ast.AST, module_scope: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:  # read by type checkers only, never run
                    visit_one(statement, False)
                for statement in child.orelse:
                    visit_one(statement, module_scope)
            else:
                visit_one(child, module_scope)

    def visit_one(child: ast.AST, module_scope: bool) -> None:
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            module_scope = False  # runs when called, not when the module is imported
        if isinstance(child, ast.Import):
            for alias in child.names:
                add(alias.name, child, module_scope)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (child.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in child.names:
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in modules else base, child, module_scope)
        visit(child, module_scope)

    visit(ast.parse(file.read_text(), filename=str(file)), True)
    return found


def all_imports() -> list[Import]:
    modules = our_modules()
    return [
        found
        for name, (file, is_package) in modules.items()
        for found in imports_of(name, file, is_package, modules)
    ]


def module_of(target: str, modules: dict) -> str | None:
    """The module of ours an import names (its longest dotted prefix that is one)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return components


def cycles(imports: list[Import], module_scope_only: bool) -> list[str]:
    """Each import cycle as the import lines that make it up."""
    modules = our_modules()
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], list[str]] = {}
    for found in imports:
        target = module_of(found.target, modules)
        if target is None or target == found.source:
            continue
        if module_scope_only and not found.module_scope:
            continue
        graph.setdefault(found.source, set()).add(target)
        where = f"{found.file.relative_to(REPO)}:{found.line}"
        lines.setdefault((found.source, target), []).append(where)
    described = []
    for component in strongly_connected(graph):
        members = set(component)
        edges = [
            f"{source} -> {target} ({', '.join(lines[source, target])})"
            for source in component
            for target in sorted(graph[source] & members)
        ]
        described.append("; ".join(edges))
    return described


def test_layers_import_one_way() -> None:
    imports = all_imports()
    assert len(imports) > 500  # the scan did read the packages
    wrong = [
        f"{found.file.relative_to(REPO)}:{found.line}: {found.source} imports {found.target}"
        for found in imports
        if found.target.split(".")[0] in FORBIDDEN[found.source.split(".")[0]]
    ]
    assert not wrong, "imports against the layers (models < node < training):\n" + "\n".join(wrong)


def test_no_import_cycle_at_module_scope() -> None:
    found = cycles(all_imports(), module_scope_only=True)
    assert not found, "import cycles at module scope:\n" + "\n".join(found)


def test_no_import_cycle_through_function_level_imports() -> None:
    found = cycles(all_imports(), module_scope_only=False)
    assert not found, "modules that import each other (lazily):\n" + "\n".join(found)


def test_the_check_sees_imports_in_functions_type_checking_and_relative(tmp_path: Path) -> None:
    """The scanner itself: a relative import inside a function and a TYPE_CHECKING import are
    found, resolved, and marked as not running at import time; a two-module cycle is named."""
    file = tmp_path / "sample.py"
    file.write_text(
        "from typing import TYPE_CHECKING\n"
        "import node.db\n"
        "if TYPE_CHECKING:\n"
        "    from training.calcium import data\n"
        "def f():\n"
        "    from ..results import sr\n"
    )
    modules = our_modules()
    found = imports_of("node.pipelines.sample", file, False, modules)
    assert [(i.target, i.line, i.module_scope) for i in found if i.target != "typing"] == [
        ("node.db", 2, True),
        ("training.calcium.data", 4, False),
        ("node.results.sr", 6, False),
    ]
    assert strongly_connected({"a": {"b"}, "b": {"a", "c"}, "c": set()}) == [["a", "b"]]
    pair = [
        Import("node.db", "node.config", REPO / "node/db.py", 3, True),
        Import("node.config", "node.db.Job", REPO / "node/config.py", 7, False),
    ]
    assert cycles(pair, module_scope_only=True) == []
    assert cycles(pair, module_scope_only=False) == [
        "node.config -> node.db (node/config.py:7); node.db -> node.config (node/db.py:3)"
    ]
