"""The layering DESIGN.md promises, checked on the source: no import loops, no private names
taken from another module, and `toolkit.runtime` at the bottom.

Every module of `toolkit` is parsed with `ast`; imports at module level and inside
functions both count (a function-local import still ties the two modules together).
Each test lists every offence it finds, not only the first.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"

# What toolkit.runtime may import: the layers below it.
RUNTIME_MAY_IMPORT = ("toolkit.common", "toolkit.errors", "toolkit.safety", "toolkit.artifacts")

# Third-party internals taken on purpose, each with the reason there is no public way.
PRIVATE_ON_PURPOSE = {
    ("toolkit.sources.loaders", "torch.export.pt2_archive._package"):
        "its `pickle` is swapped while a .pt2 loads, so a crafted archive cannot unpickle code; "
        "torch offers no public hook for that",
}


@dataclass(frozen=True)
class Import:
    importer: str  # the module holding the import statement
    target: str  # the module imported (a submodule when `from pkg import submodule`)
    name: str | None  # the name taken with `from ... import name`, else None
    line: int

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def toolkit_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules else base
                found.append(Import(module, target, alias.name, node.lineno))
    return found


def import_graph() -> tuple[dict[str, Path], list[Import]]:
    modules = toolkit_modules()
    edges = [edge for module, path in modules.items() for edge in imports_of(module, path, modules)]
    return modules, edges


def cycles(nodes, edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    modules, imports = import_graph()
    edges: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], list[int]] = {}
    for edge in imports:
        if edge.target in modules and edge.target != edge.importer:
            edges.setdefault(edge.importer, set()).add(edge.target)
            lines.setdefault((edge.importer, edge.target), []).append(edge.line)
    offences = []
    for component in cycles(modules, edges):
        members = set(component)
        links = [f"{a} -> {b} (line {lines[a, b][0]})"
                 for a in component for b in sorted(edges.get(a, ())) if b in members]
        offences.append(f"import loop among {', '.join(component)}:\n    " + "\n    ".join(links))
    assert not offences, f"{len(offences)} import loop(s):\n" + "\n".join(offences)


def test_no_private_names_from_other_modules():
    """`from toolkit.x import _y` couples a module to another's internals; so does a third-party
    package's private module or name (`torch._export`, `onnx.external_data_helper._get_all_tensors`)."""
    _, imports = import_graph()
    offences = []
    for edge in imports:
        path = edge.target.split(".")
        if edge.target.startswith("toolkit"):
            if edge.name and is_private(edge.name) and edge.target != edge.importer:
                offences.append(f"{edge.where()}: from {edge.target} import {edge.name}")
            elif any(is_private(part) for part in path):
                offences.append(f"{edge.where()}: imports the private module {edge.target}")
        elif (edge.importer, edge.target) in PRIVATE_ON_PURPOSE:
            continue
        elif any(is_private(part) for part in path) or (edge.name and is_private(edge.name)):
            shown = f"from {edge.target} import {edge.name}" if edge.name else f"import {edge.target}"
            offences.append(f"{edge.where()}: {shown} (a third-party private name)")
    assert not offences, f"{len(offences)} private import(s):\n" + "\n".join(offences)


def test_runtime_is_the_lowest_layer():
    """toolkit.runtime runs models for every stage: it may use only the layers below it."""
    _, imports = import_graph()
    offences = dict.fromkeys(
        f"{edge.where()}: imports {edge.target}"
        for edge in imports
        if edge.importer.startswith("toolkit.runtime")
        and edge.target.startswith("toolkit")
        and not edge.target.startswith("toolkit.runtime")
        and not any(edge.target == allowed or edge.target.startswith(allowed + ".") for allowed in RUNTIME_MAY_IMPORT)
    )
    assert not offences, f"toolkit.runtime imports {len(offences)} module(s) above it:\n" + "\n".join(offences)


@pytest.mark.parametrize("source, expected", [
    ("from toolkit.validate import metrics", "toolkit.validate.metrics"),
    ("from toolkit.validate import validate", "toolkit.validate"),
    ("from . import metrics", "toolkit.validate.metrics"),
    ("from .metrics import top1_accuracy", "toolkit.validate.metrics"),
    ("def f():\n    import toolkit.runtime", "toolkit.runtime"),
])
def test_imports_are_read_as_module_edges(tmp_path, source, expected):
    """The checker's own reading: submodules, relative imports (here from a package's
    __init__.py) and function-local imports."""
    fake = tmp_path / "validate" / "__init__.py"
    fake.parent.mkdir()
    fake.write_text(source)
    edges = imports_of("toolkit.validate", fake, toolkit_modules())
    assert [edge.target for edge in edges] == [expected]


def test_a_loop_is_found():
    assert cycles(["a", "b", "c"], {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles(["a", "b"], {"a": {"b"}}) == []
