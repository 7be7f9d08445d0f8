"""A workflow defined in its DAG file, with a batch stage: parsing, and how the triggerer finds
it again (the DAG file, from its Airflow DAG bundle), in process.

The bundle is a real ``LocalDagBundle`` configured through
``[dag_processor] dag_bundle_config_list``, loaded by Airflow's ``DagBundlesManager`` like
the task runner and the triggerer do; the DAG file is parsed by Airflow's ``BundleDagBag``.
The same path on the real scheduler and triggerer: ``tests/e2e/test_e2e_dag_files.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, REPO

pytestmark = AIRFLOW_MARKS

INLINE = REPO / "tests" / "e2e" / "dags" / "e2e_inline.py"
BUNDLE = "it-inline-bundle"


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAG bundle folder holding the inline-workflow DAG file."""
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(INLINE, folder / "sub" / "inline_dag.py")
    config = [
        {
            "name": BUNDLE,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder)},
        }
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(config))
    return folder


def _parse(folder: Path, rel: str) -> Any:
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(
        dag_folder=os.fspath(folder / rel),
        safe_mode=False,
        bundle_path=folder,
        bundle_name=BUNDLE,
    )
    return bag


def _bundle() -> Any:
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    found = DagBundlesManager().get_bundle(name=BUNDLE)
    found.initialize()
    return found


def test_inline_workflow_with_batch_stage_parses_and_the_triggerer_loads_its_file(
    bundle: Path,
) -> None:
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.triggers.refs import dag_file_ref, load_workflow_from_dag_file

    bag = _parse(bundle, "sub/inline_dag.py")
    assert bag.import_errors == {}  # main refused it: "the triggerer must import workflow"
    dag = bag.dags["e2e_inline"]
    task = dag.get_task("score")
    assert isinstance(task, AsyncBatchStageOperator) and task.deferrable

    ref = dag_file_ref(dag, "score", "e2e-inline", _bundle())
    assert (ref.path, ref.bundle_name, ref.dag_id) == ("sub/inline_dag.py", BUNDLE, "e2e_inline")
    workflow = load_workflow_from_dag_file(ref)
    assert workflow.id == "e2e-inline"
    assert [[s.id for s in g] for g in workflow.execution_plan()] == [
        ["split"],
        ["shout", "count"],
        ["score"],
    ]
    assert load_workflow_from_dag_file(ref) is workflow  # cached while the file is unchanged

    # An edited file is parsed again (cache per modification time).
    path = bundle / "sub" / "inline_dag.py"
    path.write_text(path.read_text() + "\n# edited\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = load_workflow_from_dag_file(ref)
    assert again is not workflow and again.id == "e2e-inline"

    # The task would hand the triggerer this reference (no import path exists for it).
    assert task.resolve_workflow_ref() is None


def test_a_workflow_of_a_missing_task_is_found_by_its_id(bundle: Path) -> None:
    from airflow_workflow_engine.triggers.refs import DagFileRef, load_workflow_from_dag_file

    ref = DagFileRef("sub/inline_dag.py", "renamed_dag", "gone", "e2e-inline", BUNDLE)
    assert load_workflow_from_dag_file(ref).id == "e2e-inline"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "workflow",
            r"DAG file 'sub/inline_dag.py' of DAG bundle 'it-inline-bundle' has no "
            r"workflow 'no-such-workflow' .*workflows: e2e-inline",
        ),
        (
            "file",
            r"workflow 'e2e-inline'.*DAG file 'sub/missing.py' of DAG bundle "
            r"'it-inline-bundle' cannot be read",
        ),
        (
            "broken",
            r"workflow 'e2e-inline'.*DAG file 'sub/broken.py' of DAG bundle "
            r"'it-inline-bundle' does not load: .*SyntaxError",
        ),
        (
            "bundle",
            r"workflow 'e2e-inline'.*DAG file 'sub/inline_dag.py' of DAG bundle "
            r"'no-such-bundle' is not available",
        ),
    ],
)
def test_errors_name_the_file_and_the_workflow(bundle: Path, change: str, expected: str) -> None:
    from airflow_workflow_engine.errors import WorkflowDefinitionError
    from airflow_workflow_engine.triggers.refs import DagFileRef, load_workflow_from_dag_file

    (bundle / "sub" / "broken.py").write_text("from airflow.sdk import DAG\ndef (:\n")
    fields = {
        "path": "sub/inline_dag.py",
        "dag_id": "e2e_inline",
        "task_id": "score",
        "workflow_id": "e2e-inline",
        "bundle_name": BUNDLE,
    }
    fields.update(
        {
            "workflow": {"workflow_id": "no-such-workflow"},
            "file": {"path": "sub/missing.py"},
            "broken": {"path": "sub/broken.py"},
            "bundle": {"bundle_name": "no-such-bundle"},
        }[change]
    )
    with pytest.raises(WorkflowDefinitionError, match=expected):
        load_workflow_from_dag_file(DagFileRef.from_dict(fields))


def test_trigger_carries_the_dag_file_and_the_kernel_is_built_from_it(
    bundle: Path, tmp_path: Path
) -> None:
    from airflow_workflow_engine.hooks.engine import EngineSettings
    from airflow_workflow_engine.triggers.refs import DagFileRef
    from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger, _kernel_for

    ref = DagFileRef("sub/inline_dag.py", "e2e_inline", "score", "e2e-inline", BUNDLE)
    trigger = SuspendedStageTrigger(
        workflow_run_id="r1", stage_id="score", dag_file=ref.to_dict(), conn_id=None
    )
    _, kwargs = trigger.serialize()
    rebuilt = SuspendedStageTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt.dag_file == ref.to_dict() and rebuilt.workflow_ref is None
    settings = EngineSettings(sql_url=f"sqlite:///{tmp_path}/e.db", blob_store=str(tmp_path))
    kernel = _kernel_for(settings, rebuilt.workflow_ref, rebuilt.dag_file)
    found = kernel.registry.get_workflow("e2e-inline")
    assert found is not None and found.id == "e2e-inline"
    with pytest.raises(ValueError, match="workflow_ref or dag_file"):
        SuspendedStageTrigger(workflow_run_id="r1", stage_id="score")


def test_build_dag_and_to_dag_take_an_explicit_workflow_ref() -> None:
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from tests.e2e.dags import e2e_workflows as wf

    dag = wf.documents.to_dag(dag_id="t_ref", workflow_ref="my.module:documents")
    task = dag.get_task("embed")
    assert isinstance(task, AsyncBatchStageOperator)
    assert task.workflow_ref == "my.module:documents"
    assert task.resolve_workflow_ref() == "my.module:documents"
