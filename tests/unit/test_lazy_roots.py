"""The package roots are lazy: importing a module loads it and its real dependencies only, and
every name a root exports still resolves (issue 10)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "airflow_workflow_engine"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

#: Every package root that exports names; each goes through ``_lazy.lazy_exports``.
LAZY_ROOTS = [
    PACKAGE,
    f"{PACKAGE}.ai",
    f"{PACKAGE}.ai.providers",
    f"{PACKAGE}.blob",
    f"{PACKAGE}.hooks",
    f"{PACKAGE}.kernel",
    f"{PACKAGE}.operators",
    f"{PACKAGE}.persistence.sql",
    f"{PACKAGE}.sensors",
    f"{PACKAGE}.testing",
    f"{PACKAGE}.testing.fake_llm",
    f"{PACKAGE}.triggers",
]

#: Package ``__init__`` files that are no lazy root: registries and plain docstrings.
NOT_ROOTS = {
    f"{PACKAGE}.kernel.handlers",  # the command -> handler table the kernel dispatches on
    f"{PACKAGE}.plugins.ui",  # the ASGI app class itself, building its FastAPI app late
}


def _loaded_after(statement: str) -> list[str]:
    """The package's modules loaded by ``statement`` in a fresh interpreter."""
    code = (
        "import json, sys\n"
        f"before = set(sys.modules)\n{statement}\n"
        f"print(json.dumps(sorted(m for m in set(sys.modules) - before "
        f"if m.split('.')[0] == {PACKAGE!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def test_status_loads_only_itself_and_its_dependencies() -> None:
    assert _loaded_after(f"import {PACKAGE}.kernel.status") == [
        PACKAGE,
        f"{PACKAGE}._lazy",
        f"{PACKAGE}.errors",
        f"{PACKAGE}.kernel",
        f"{PACKAGE}.kernel.status",
    ]


@pytest.mark.parametrize("root", LAZY_ROOTS)
def test_importing_a_root_loads_no_submodule(root: str) -> None:
    parents = {".".join(root.split(".")[:i]) for i in range(1, root.count(".") + 2)}
    assert set(_loaded_after(f"import {root}")) <= parents | {f"{PACKAGE}._lazy"}


@pytest.mark.parametrize("root", LAZY_ROOTS)
def test_every_exported_name_resolves(root: str) -> None:
    module = importlib.import_module(root)
    names = list(module.__all__)
    assert names, f"{root} exports nothing"
    missing = [name for name in names if getattr(module, name, None) is None]
    assert not missing, f"{root}.__all__ names that do not resolve: {missing}"
    assert set(names) <= set(dir(module))


def test_kernel_exports_its_commands_module() -> None:
    from airflow_workflow_engine import kernel
    from airflow_workflow_engine.kernel import commands

    assert kernel.commands is commands
    assert commands.__name__ == f"{PACKAGE}.kernel.commands"


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def test_no_root_imports_eagerly_or_hand_writes_getattr() -> None:
    """Package ``__init__`` files import only ``_lazy`` and typing names at run time, and
    no module of the package writes its own module-level ``__getattr__``."""
    eager: list[str] = []
    hand_written: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        hand_written += [
            name
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
            and node.name in {"__getattr__", "__dir__"}
            and path.name != "_lazy.py"
        ]
        if path.name != "__init__.py" or name in NOT_ROOTS:
            continue
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                if node.module != f"{PACKAGE}._lazy":
                    eager.append(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                eager += [
                    f"{name}: import {a.name}" for a in node.names if a.name.startswith(PACKAGE)
                ]
    assert not eager, f"eager imports in package roots: {eager}"
    assert not hand_written, (
        f"hand-written module __getattr__/__dir__ (use lazy_exports): {hand_written}"
    )
