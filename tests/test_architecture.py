"""The package's import graph, read from the code (ast), against the map in docs/architecture.md.

Layers, bottom to top; a module imports only from its own component or from the layers
below it, so data flows one way (sources → imaging → model/method → results, cli on
top) and no import cycle can form. Lazy imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support.paths import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"

#: Bottom to top. Each entry is one component (a module or a package prefix).
LAYERS: list[tuple[str, ...]] = [
    ("vhi", "vhi.errors"),
    ("vhi.settings", "vhi.fileio"),
    ("vhi.provenance", "vhi.config"),
    ("vhi.cohort",),  # ids and roles, sheets, the file layout (the plan is higher up)
    ("vhi.imaging", "vhi.model", "vhi.method",
     "vhi.readers.store"),  # the readers database: the sources may record what they collect
    ("vhi.sources",),
    ("vhi.cohort.plan",),
    ("vhi.readers",),  # assignment, progress: from the plan's sessions and their receipts
    ("vhi.results", "vhi.viewer"),
    ("vhi.api",),
    ("vhi.cli",),
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "vhi").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The package modules ``module`` imports anywhere in its body (absolute or relative)."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "vhi" else None
            if target and target != module:
                found.add(target)
    return found


def component(module: str) -> tuple[int, str]:
    """(layer index, component) of a module: the longest matching component prefix."""
    best = None
    for index, layer in enumerate(LAYERS):
        for comp in layer:
            if (module == comp or module.startswith(comp + ".")) and (
                    best is None or len(comp) > len(best[1])):
                best = (index, comp)
    if best is None:
        raise AssertionError(f"{module} is in no layer of the map: add it to LAYERS and "
                             "docs/architecture.md")
    return best


def test_every_module_is_on_the_map():
    for module in MODULES:
        component(module)


def against_the_map(module: str, targets: set[str]) -> list[str]:
    """The imports of ``module`` (among ``targets``) that the layers do not allow."""
    layer, comp = component(module)
    wrong = []
    for target in sorted(targets):
        if module.startswith(target + "."):
            continue  # its own package's __init__
        target_layer, target_comp = component(target)
        if target_comp != comp and target_layer >= layer:
            wrong.append(f"{target} ({target_comp}, layer {target_layer})")
    return wrong


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    wrong = against_the_map(module, imports_of(module))
    assert not wrong, f"{module} ({component(module)}) imports against the map: {wrong}"


def test_no_import_cycle():
    graph = {m: {t for t in imports_of(m) if not m.startswith(t + ".")} for m in MODULES}
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_violation():
    """The rule can fail: imports up the layers or sideways are refused, down are allowed."""
    assert against_the_map("vhi.cohort.layout", {"vhi.results.tables"})
    assert against_the_map("vhi.sources.local", {"vhi.cohort.plan"})
    assert against_the_map("vhi.method.lesions", {"vhi.imaging.nifti"})
    assert not against_the_map("vhi.cohort.plan", {"vhi.sources", "vhi.cohort.ids"})
    assert "vhi.cohort.layout" in imports_of("vhi.results.tables")


def test_the_package_knows_nothing_of_the_repository():
    """No module finds files through the repository layout (parents[N] of a module path)."""
    offenders = [m for m, p in MODULES.items() if ".parents[" in p.read_text()]
    assert not offenders


def test_architecture_doc_lists_every_component():
    doc = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    missing = [comp for layer in LAYERS for comp in layer if comp != "vhi" and f"`{comp}`" not in doc]
    assert not missing, f"docs/architecture.md does not name {missing}"
