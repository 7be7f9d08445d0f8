"""The package's import graph: no cycles, only the allowed layer edges, no Airflow in the core.

The graph is built with ``ast`` from every module of ``airflow_workflow_engine``: module-level
and function-level imports alike (an import inside a function is a dependency too, only a
later one). Imports under ``if TYPE_CHECKING:`` are left out: they never run. ``from pkg
import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg`` (its
``__init__``, which is what runs). Importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``; those implicit parent edges are not counted (the package roots are lazy).

The layers (docs/architecture.md draws the same graph)::

    core (definitions, kernel, persistence, blob, ai, errors, conventions, _lazy, testing)
      <- host <- hooks <- {operators, sensors, triggers, plugins, cli}

operators, sensors, triggers, plugins and cli never import each other, except the one
Airflow pattern a deferrable task needs: operators and sensors construct their trigger
(``self.defer(trigger=...)``). Entry modules on top assemble the adapters.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "airflow_workflow_engine"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

CORE = frozenset(
    {"definitions", "kernel", "persistence", "blob", "ai", "errors", "conventions", "_lazy"}
    | {"testing"}
)
ADAPTERS = frozenset({"operators", "sensors", "triggers", "plugins", "cli"})

#: Which layer may import which (a layer may always import itself and anything in ``core``).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "host": frozenset({"core", "host"}),
    "hooks": frozenset({"core", "host", "hooks"}),
    **{a: frozenset({"core", "host", "hooks", a}) for a in ADAPTERS},
}

#: Adapter edges Airflow's own pattern needs: a deferrable task builds its trigger
#: (``self.defer(trigger=...)``). Such an import may name trigger classes only.
DEFER_EDGES = frozenset({("operators", "triggers"), ("sensors", "triggers")})

#: Entry and assembly modules: they sit on top and import the adapters they assemble.
ENTRY_MODULES = frozenset(
    {
        PACKAGE,  # the public API (lazy exports)
        f"{PACKAGE}.get_provider_info",
        f"{PACKAGE}.dag",  # build_dag: the stage operators of a workflow
        f"{PACKAGE}.task_group",  # WorkflowTaskGroup: the same, inside a task group
        f"{PACKAGE}.plugins.plugin",  # registers the listeners and the UI app with Airflow
        f"{PACKAGE}.demo",
        f"{PACKAGE}.demo_airflow",
    }
)
#: Packages whose modules are all entry modules (example workflows).
ENTRY_PACKAGES = frozenset({"examples"})

#: Calls from a lower layer up into an entry module, bound late by name
#: (``importlib.import_module``), so that no import edge exists. Each is listed here.
LATE_BOUND = frozenset({(f"{PACKAGE}.definitions.workflow", f"{PACKAGE}.dag")})


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The package module an imported name loads (its longest module prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, path: Path) -> Iterator[tuple[str, ast.AST]]:
    """``(imported name, node)`` of every import that runs (module or function level)."""
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (pair for stmt in child.orelse for pair in visit_one(stmt))
                continue
            yield from visit_one(child)

    def visit_one(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                yield (full if full in MODULES else source), node
        else:
            yield from visit(node)

    yield from visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(edges between package modules, external top-level packages each module imports)``."""
    edges: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name, _ in _imports(module, path):
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _target(name)
                if target is not None and target != module:
                    edges[module].add(target)
            else:
                external[module].add(name.partition(".")[0])
    return edges, external


EDGES, EXTERNAL = _graph()


def layer_of(module: str) -> str:
    if module in ENTRY_MODULES:
        return "entry"
    top = module.split(".")[1] if "." in module else ""
    if top in ENTRY_PACKAGES:
        return "entry"
    if top in CORE:
        return "core"
    if top in ("host", "hooks") or top in ADAPTERS:
        return top
    raise AssertionError(f"{module}: no layer; add its package to test_import_graph.py")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = iter(range(1_000_000))

    def connect(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(MODULES):
        if v not in index:
            connect(v)
    return found


def test_the_graph_sees_function_level_imports() -> None:
    # hooks/engine.py imports the SQL persistence inside a function only.
    assert f"{PACKAGE}.persistence.sql" in EDGES[f"{PACKAGE}.hooks.engine"]
    assert all(layer_of(m) for m in MODULES)


def test_no_import_cycle() -> None:
    cycles = _cycles(EDGES)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle() -> None:
    a, b = f"{PACKAGE}.kernel.kernel", f"{PACKAGE}.kernel.status"
    edges = {source: set(targets) for source, targets in EDGES.items()}
    edges.setdefault(b, set()).add(a)  # status -> kernel closes kernel -> ... -> status
    assert any(a in c and b in c for c in _cycles(edges))


def _names_imported(source: str, target: str) -> set[str]:
    """What ``source`` imports from ``target`` (``"*"``: the module itself)."""
    names: set[str] = set()
    for name, node in _imports(source, MODULES[source]):
        if _target(name) != target:
            continue
        if isinstance(node, ast.ImportFrom) and name == target and node.module:
            names.update(alias.name for alias in node.names)
        else:
            names.add("*")
    return names


def test_only_allowed_layer_edges() -> None:
    wrong = []
    for source, targets in sorted(EDGES.items()):
        src = layer_of(source)
        if src == "entry":
            continue  # entry modules sit on top
        for target in sorted(targets):
            dst = layer_of(target)
            if dst in ALLOWED[src]:
                continue
            if (src, dst) in DEFER_EDGES:
                names = _names_imported(source, target)
                if names and all(n.endswith("Trigger") for n in names):
                    continue
            wrong.append(f"{source} ({src}) -> {target} ({dst})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_adapters_meet_only_through_host_and_hooks() -> None:
    """Between operators, sensors, triggers, plugins and cli the only edges are a deferrable
    task building its trigger; everything else they share is in host/ (or hooks/)."""
    sideways = sorted(
        (source, target)
        for source, targets in EDGES.items()
        for target in targets
        if layer_of(source) in ADAPTERS
        and layer_of(target) in ADAPTERS
        and layer_of(source) != layer_of(target)
    )
    assert sideways == [
        (f"{PACKAGE}.operators.batch", f"{PACKAGE}.triggers.suspended"),
        (f"{PACKAGE}.sensors.stage", f"{PACKAGE}.triggers.kernel_state"),
    ]
    for source, target in sideways:
        assert _names_imported(source, target) <= {"SuspendedStageTrigger", "KernelStateTrigger"}


def test_core_and_host_never_import_airflow() -> None:
    wrong = sorted(
        f"{module} imports airflow"
        for module, names in EXTERNAL.items()
        if layer_of(module) in ("core", "host") and "airflow" in names
    )
    assert not wrong, "\n".join(wrong)


def _late_bound() -> set[tuple[str, str]]:
    calls = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith(PACKAGE)
            ):
                calls.add((module, str(node.args[0].value)))
    return calls


def test_late_bound_calls_are_the_listed_ones() -> None:
    assert _late_bound() == set(LATE_BOUND)


@pytest.mark.parametrize("module", sorted(ENTRY_MODULES | {m for m, _ in LATE_BOUND}))
def test_listed_modules_exist(module: str) -> None:
    assert module in MODULES
