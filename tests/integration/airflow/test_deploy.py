"""The deployment guide's files, exercised (docs/deploy.md).

- ``deploy/Dockerfile``: its base image is the Airflow release the package is developed
  against, and its ``RUN pip install`` command, with the build arguments' defaults, installs
  the freshly built wheel with every extra into a clean virtual environment under a
  constraints file. Airflow's published constraints file cannot be downloaded here, so the
  test uses one generated from the pinned development environment (``uv pip freeze``), and
  runs the command's arguments through uv's pip interface (the same requirements and
  constraints; pip would take minutes). No Docker daemon is needed.
- ``deploy/values.yaml``: Helm is not installable from the registries this project uses, so
  instead of ``helm lint`` the values are parsed and the keys the official chart reads
  (image, ``secret`` env from secret keys, ``config``, the migration job) are checked; then the
  environment they give every container is applied to this process and the engine's own
  settings code resolves the database, blob store, extra-link base URL and model
  connections from it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, REPO

pytestmark = AIRFLOW_MARKS

DOCKERFILE = REPO / "deploy" / "Dockerfile"
VALUES = REPO / "deploy" / "values.yaml"
UV = Path(sys.executable).parent / "uv"


def _dockerfile() -> tuple[dict[str, str], str, str]:
    """The ARG defaults, the FROM image and the RUN command (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    image = run = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("ARG ") and "=" in line:
            name, _, default = line[4:].partition("=")
            args[name.strip()] = _expand(default.strip(), args)
        elif line.startswith("FROM "):
            image = _expand(line[5:].strip(), args)
        elif line.startswith("RUN pip install"):
            run = line[4:]
    return args, image, run


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)


def test_dockerfile_installs_the_package_with_constraints_in_a_clean_venv(
    tmp_path: Path,
) -> None:
    args, image, run = _dockerfile()
    airflow = version("apache-airflow")
    assert image == f"apache/airflow:{airflow}-python{args['PYTHON_VERSION']}"
    assert args["WFE_VERSION"] == version("airflow-workflow-engine")
    assert set(args["WFE_EXTRAS"].split(",")) == {"postgres", "openai", "google", "s3"}
    assert args["CONSTRAINTS"].endswith(
        f"constraints-{airflow}/constraints-{args['PYTHON_VERSION']}.txt"
    )

    dist = tmp_path / "dist"
    built = subprocess.run(
        [str(UV), "build", "--wheel", "--out-dir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    frozen = subprocess.run(
        [str(UV), "pip", "freeze", "--python", sys.executable, "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "\n".join(line for line in frozen.splitlines() if re.match(r"^[A-Za-z0-9._-]+==", line))
    )

    command = shlex.split(run.partition("&&")[0])
    assert command[:2] == ["pip", "install"], command
    # The image's paths and the download, replaced by this machine's.
    local = {"/tmp/wfe-dist": str(dist), _expand("${CONSTRAINTS}", args): str(constraints)}
    argv = [local.get(_expand(a, args), _expand(a, args)) for a in command[2:]]
    argv = [a for a in argv if a != "--no-cache-dir"]  # uv's cache is what makes this quick
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(UV), "pip", "install", "--python", str(python), *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-4000:]
    check = subprocess.run(
        [str(UV), "pip", "check", "--python", str(python)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # Airflow was not moved, and the engine, its provider entry point and every extra import.
    probe = (
        "import json, importlib.metadata as m\n"
        "import airflow_workflow_engine.hooks.engine, airflow_workflow_engine.persistence.sql\n"
        "import psycopg, openai, google.genai, boto3, genai_prices\n"
        "eps = [e.value for e in m.entry_points(group='apache_airflow_provider')]\n"
        "print(json.dumps([m.version('apache-airflow'), eps]))\n"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    got_airflow, entry_points = yaml.safe_load(out.stdout)
    assert got_airflow == airflow
    assert "airflow_workflow_engine.get_provider_info:get_provider_info" in entry_points


# -- Helm values ------------------------------------------------------------------------------

_LLM = '{{"conn_type": "workflow_engine_llm", "password": "{key}"}}'
#: What the secrets named in values.yaml would hold (docs/deploy.md shows how to make them).
SECRETS = {
    ("workflow-engine-db", "url"): "postgresql://wfe_engine:pw@db.internal:5432/airflow"
    "?options=-csearch_path%3Dwfe",
    (
        "workflow-engine-models",
        "openai",
    ): '{"conn_type": "workflow_engine_llm", "password": "sk-x"}',
    ("workflow-engine-models", "google"): '{"conn_type": "workflow_engine_llm", "password": "g-x"}',
}


def _container_env(values: dict[str, Any]) -> dict[str, str]:
    """The environment the chart gives every Airflow container from ``env``, ``secret`` and
    ``config`` (which it writes to airflow.cfg; the same as AIRFLOW__SECTION__KEY)."""
    env = {item["name"]: str(item["value"]) for item in values.get("env", [])}
    for item in values.get("secret", []):
        assert set(item) == {"envName", "secretName", "secretKey"}, item
        env[item["envName"]] = SECRETS[(item["secretName"], item["secretKey"])]
    for section, options in values.get("config", {}).items():
        for key, value in options.items():
            env[f"AIRFLOW__{section.upper()}__{key.upper()}"] = str(value)
    return env


def test_helm_values_give_every_component_what_the_engine_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_workflow_engine.hooks.engine import (
        CONFIG_SECTION,
        WorkflowEngineHook,
        reset_kernel_cache,
    )
    from airflow_workflow_engine.hooks.llm_settings import DEFAULT_LLM_CONN_IDS
    from airflow_workflow_engine.persistence.sql.engine import normalize_url
    from airflow_workflow_engine.persistence.sql.grants import search_path_schema

    values = yaml.safe_load(VALUES.read_text())
    args, _, _ = _dockerfile()
    # The custom image on every component: the chart's one image setting, no per-component
    # override that would run a component without the package.
    assert values["images"]["airflow"]["repository"] and values["images"]["airflow"]["tag"]
    assert values["airflowVersion"] == version("apache-airflow")
    assert values["images"]["airflow"]["tag"] == args["WFE_VERSION"]
    for component in ("apiServer", "scheduler", "dagProcessor", "triggerer", "workers"):
        assert "image" not in values.get(component, {}), component
    assert values["triggerer"]["enabled"] and values["dagProcessor"]["enabled"]
    # The migration job: `airflow db migrate` as the owner, with the engine's settings.
    job = values["migrateDatabaseJob"]
    assert job["enabled"] and job["applyCustomEnv"] and "args" not in job
    assert values["data"]["metadataSecretName"]

    env = _container_env(values)
    setting = f"AIRFLOW__{CONFIG_SECTION.upper()}__SQL_ALCHEMY_CONN"
    assert setting in env
    for name in list(os.environ):
        if name.startswith(("AIRFLOW__WORKFLOW_ENGINE__", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_kernel_cache()
    settings = WorkflowEngineHook().get_settings()
    url = normalize_url(settings.sql_url)
    assert (url.username, url.host, url.database) == ("wfe_engine", "db.internal", "airflow")
    assert search_path_schema(url) == "wfe"
    assert settings.blob_store == "s3://my-bucket/workflow-engine"

    from airflow.sdk import BaseHook, conf

    assert conf.get("api", "base_url") == "https://airflow.example.com"
    for provider in ("openai", "google"):
        conn_id = DEFAULT_LLM_CONN_IDS[provider][0]
        conn = BaseHook.get_connection(conn_id)
        assert conn.conn_type == "workflow_engine_llm" and conn.password


def test_the_guides_version_map_is_the_db_managers() -> None:
    """docs/deploy.md's table of package version -> migration head is the one `airflow db
    migrate --to-version`-style tools read, and ends at the newest revision."""
    from airflow_workflow_engine.hooks.db_manager import WorkflowEngineDBManager
    from airflow_workflow_engine.persistence.sql.migrate import HEAD_REVISION

    guide = (REPO / "docs" / "deploy.md").read_text()
    table = guide.partition("### The version map")[2]
    rows = re.findall(r"^\| (\d+\.\d+\.\d+) \| (\w+) \|", table, flags=re.MULTILINE)
    assert dict(rows) == WorkflowEngineDBManager.revision_heads_map
    assert rows[-1] == (version("airflow-workflow-engine"), HEAD_REVISION)
