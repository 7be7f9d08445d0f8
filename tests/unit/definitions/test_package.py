"""The package root: lazy public names and DAG-parse hygiene (no heavy imports)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import airflow_workflow_engine as pkg

ROOT = Path(__file__).resolve().parents[3]

#: Modules a DAG file must not pay for when it imports the provider.
HEAVY = ("openai", "google.genai", "boto3", "botocore", "sqlalchemy", "airflow")


@pytest.mark.parametrize("name", pkg.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(pkg, name)
    assert value is not None


def test_public_names_come_from_their_modules() -> None:
    for name, module in pkg._EXPORTS.items():
        source = importlib.import_module(f"airflow_workflow_engine.{module}")
        assert getattr(pkg, name) is getattr(source, name), name


def test_all_lists_the_exports_and_the_version() -> None:
    assert sorted(pkg.__all__) == pkg.__all__
    assert set(pkg.__all__) == {*pkg._EXPORTS, "__version__"}
    assert dir(pkg) == pkg.__all__
    assert isinstance(pkg.__version__, str)


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'define_dag'"):
        _ = pkg.define_dag  # type: ignore[attr-defined]


def _loaded_heavy_modules(code: str) -> list[str]:
    """Runs ``code`` in a fresh interpreter; returns the heavy modules it left imported."""
    report = (
        "import json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + "\n" + report],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_package_imports_no_heavy_dependency() -> None:
    assert _loaded_heavy_modules("import airflow_workflow_engine") == []


def test_resolving_every_public_name_imports_no_heavy_dependency() -> None:
    code = (
        "import airflow_workflow_engine as p; "
        "[getattr(p, n) for n in p.__all__]; "
        "import airflow_workflow_engine.conventions"
    )
    assert _loaded_heavy_modules(code) == []


def test_airflow_free_layers_never_import_airflow() -> None:
    """Every module of definitions, kernel, persistence, blob and ai imports without Airflow."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil
        for layer in ("definitions", "kernel", "persistence", "blob", "ai"):
            package = importlib.import_module("airflow_workflow_engine." + layer)
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if ".migrations" not in info.name:
                    importlib.import_module(info.name)
        """
    )
    loaded = _loaded_heavy_modules(code)
    assert [m for m in loaded if m == "airflow" or m.startswith("airflow.")] == []
