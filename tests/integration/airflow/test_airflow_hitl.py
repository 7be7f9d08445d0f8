"""``WorkflowApprovalOperator``: a workflow run's approval point in Airflow's human-in-the-loop.

Under Airflow: the DAG ``it_hitl`` (measure -> approve -> report) runs with
``dag.test(use_executor=True)`` on the session's Airflow (real task processes); the approval
task parks in ``awaiting_input``. An ``airflow api-server --apps all`` over the same database
(Airflow's simple auth manager, user ``admin``) serves Airflow's REST API, and the test answers
the request as a reviewer would from Required Actions: ``PATCH
/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails``. Then the decision is
in the workflow run's ``approval.*`` annotations, and the run completes, or, rejected, fails
with the reason as the run's error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_workflow_engine.kernel.status import Status
from tests.integration.airflow.fixtures import (
    AIRFLOW_MARKS,
    AirflowEnv,
    DagRunResult,
    airflow_env,
)
from tests.integration.airflow.test_airflow_cli import cli, ok, ok_json
from tests.integration.airflow.test_airflow_sensors import (
    PLUGIN_SHIM,
    in_background,
    known_runs,
    newest_run_of,
    plugin_entry_point_registered,
    wait_for,
)
from tests.integration.airflow.test_airflow_ui import PASSWORDS, _start_api_server

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

DAG_ID = "it_hitl"
TASK_ID = "approve"
HITL_DAGS_FILE = "it_hitl_dags.py"
HITL_DAGS = f'''
"""A workflow with its approval point in Airflow's Required Actions."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_workflow_engine.operators import StageOperator, WorkflowApprovalOperator
from tests.integration.airflow import workflows as wf

with DAG({DAG_ID!r}, schedule=None, tags=["workflow-engine"]) as hitl_dag:
    (
        StageOperator(stage=wf.measure)
        >> WorkflowApprovalOperator(task_id={TASK_ID!r})
        >> StageOperator(stage=wf.report)
    )
'''


@dataclass
class Reviewer:
    """Airflow's REST API as a reviewer logged in as ``admin`` uses it."""

    base: str
    token: str = ""
    answers: dict[str, Any] = field(default_factory=dict)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def log_in(self) -> None:
        body = {"username": "admin", "password": PASSWORDS["admin"]}
        code, answer = self.request("POST", "/auth/token", body)
        assert code in (200, 201), (code, answer)
        self.token = str(answer["access_token"])

    def task_path(self, run_id: str) -> str:
        return (
            f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            f"/taskInstances/{TASK_ID}"
        )

    def awaiting_input(self, run_id: str) -> bool:
        code, ti = self.request("GET", self.task_path(run_id))
        return code == 200 and ti["state"] == "awaiting_input"

    def answer(self, run_id: str, option: str, comment: str) -> Any:
        body = {"chosen_options": [option], "params_input": {"comment": comment}}
        code, answer = self.request("PATCH", f"{self.task_path(run_id)}/-1/hitlDetails", body)
        assert code == 200, (code, answer)
        return answer


@pytest.fixture(scope="module")
def hitl_env(
    airflow_env: AirflowEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AirflowEnv, Reviewer]]:
    """The session's Airflow with this module's DAG folder and the plugin, and an api-server
    with Airflow's REST API over the same database."""
    root = tmp_path_factory.mktemp("wfe-hitl")
    (root / "dags").mkdir()
    (root / "dags" / HITL_DAGS_FILE).write_text(HITL_DAGS)
    (root / "task-plugins").mkdir()
    if not plugin_entry_point_registered():
        (root / "task-plugins" / "workflow_engine_plugin.py").write_text(PLUGIN_SHIM)
    env = AirflowEnv(
        home=airflow_env.home,
        env={
            **airflow_env.env,
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "task-plugins"),
        },
        api_port=airflow_env.api_port,
    )
    (root / "api").mkdir()
    server = _start_api_server(env, root / "api")
    try:
        server._wait_for_api(timeout=150)
        reviewer = Reviewer(f"http://127.0.0.1:{server.api_port}")
        reviewer.log_in()
        yield env, reviewer
    finally:
        server.stop()


def _decide(
    env: AirflowEnv, reviewer: Reviewer, option: str, comment: str
) -> tuple[DagRunResult, Any]:
    """Runs ``it_hitl``, waits until its approval task awaits input, answers it through the
    REST API; returns Airflow's view of the DAG run and the workflow run."""
    before = known_runs(env, DAG_ID)
    dag_file = str(Path(env.env["AIRFLOW__CORE__DAGS_FOLDER"]) / HITL_DAGS_FILE)
    pool, future = in_background(lambda: env.run_dag(dag_file, DAG_ID, {"text": "hello"}))
    try:
        run = wait_for("the workflow run", lambda: newest_run_of(env, DAG_ID, before))
        airflow_run_id = run.idempotency_key.split("/", 1)[1]
        wait_for(
            "the approval task to await input",
            lambda: reviewer.awaiting_input(airflow_run_id),
            timeout=180,
        )
        with env.store() as store:
            assert store.get_run(run.id).status == Status.RUNNING
            stages = {s.stage_id: s.status for s in store.list_stages(run.id)}
        assert stages["measure"] == Status.COMPLETED and stages["report"] == Status.PENDING
        # `runs list` says since when the run waits for a reviewer.
        waiting = _listed(env, run.id)
        assert waiting["status"] == "RUNNING" and waiting["awaiting_approval_since"], waiting
        # The rich table wraps long cells at Airflow's 200-column pipe width; `-o plain` is the
        # listing made for pipes and keeps one run per line.
        table = ok(cli(env.env, "runs", "list", "--dag-id", DAG_ID, "-o", "plain"))
        line = next(row for row in table.splitlines() if row.startswith(run.id))
        assert f"RUNNING (awaiting approval since {waiting['awaiting_approval_since']})" in line
        pending = ok_json(cli(env.env, "approvals", "list", "--dag-id", DAG_ID, "-o", "json"))
        assert {
            "workflow_run_id": run.id,
            "workflow_id": DAG_ID,
            "dag_id": DAG_ID,
            "dag_run_id": airflow_run_id,
            "task_id": TASK_ID,
            "since": waiting["awaiting_approval_since"],
        } in pending
        reviewer.answers[option] = reviewer.answer(airflow_run_id, option, comment)
        result = future.result(timeout=240)
    finally:
        pool.shutdown(wait=False)
    assert _listed(env, run.id)["awaiting_approval_since"] is None
    pending = ok_json(cli(env.env, "approvals", "list", "--dag-id", DAG_ID, "-o", "json"))
    assert run.id not in {p["workflow_run_id"] for p in pending}
    with env.store() as store:
        return result, store.get_run(run.id)


def _listed(env: AirflowEnv, run_id: str) -> dict[str, Any]:
    rows = ok_json(cli(env.env, "runs", "list", "--dag-id", DAG_ID, "-o", "json"))
    return next(r for r in rows if r["workflow_run_id"] == run_id)


def _approval_notes(env: AirflowEnv, run_id: str) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """The decision's annotations (the request, ``pending``, is checked apart)."""
    with env.store() as store:
        notes = store.list_annotations(run_id, key_prefix="approval.")
    asked = [n for n in notes if n.actor.kind == "system"]
    assert {(n.key, n.value) for n in asked} == {
        ("approval.status", "pending"),
        ("approval.task", f"{DAG_ID}/{_dag_run_of(env, run_id)}/{TASK_ID}"),
    }
    assert {(n.actor.kind, n.actor.id) for n in asked} == {
        ("system", f"airflow:{DAG_ID}/{TASK_ID}")
    }
    decided = [n for n in notes if n.actor.kind != "system"]
    return {n.key: n.value for n in decided}, {(n.actor.kind, n.actor.id) for n in decided}


def _dag_run_of(env: AirflowEnv, run_id: str) -> str:
    with env.store() as store:
        return str(store.get_run(run_id).idempotency_key.split("/", 1)[1])


# -- in process: the approval point in built DAGs ------------------------------------------


def test_build_dag_puts_an_approval_before_the_named_stages_group() -> None:
    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.operators import WorkflowApprovalOperator
    from tests.integration.airflow import workflows as wf

    dag = build_dag(wf.fanout, "it_fanout_approved", approval_before=["upper"])
    gate = dag.task_dict["approve_upper"]
    assert isinstance(gate, WorkflowApprovalOperator)
    # The reviewer's form has the comment field only, not the DAG's input params.
    assert list(gate.params) == ["comment"] and list(dag.params) == ["text"]
    assert gate.upstream_task_ids == {"split"}
    # The whole group waits for it: upper and its sibling count.
    assert gate.downstream_task_ids == {"upper", "count"}
    assert dag.task_dict["upper"].upstream_task_ids == {"approve_upper"}
    assert dag.task_dict["join"].upstream_task_ids == {"upper", "count"}
    # to_dag takes it too; without it, no approval task.
    assert "approve_join" in wf.fanout.to_dag("it_fanout_join", approval_before=["join"]).task_dict
    assert not any(
        isinstance(t, WorkflowApprovalOperator) for t in build_dag(wf.fanout, "it_plain").tasks
    )


def test_workflow_task_group_approval_waits_on_the_groups_run() -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.task_group import WorkflowTaskGroup
    from tests.integration.airflow import workflows as wf

    with DAG("it_group_approved", schedule=None) as dag:
        WorkflowTaskGroup(workflow=wf.linear, group_id="greeting", approval_before=["shout"])
    gate = dag.task_dict["greeting.approve_shout"]
    assert gate.upstream_task_ids == {"greeting.greet"}
    assert gate.downstream_task_ids == {"greeting.shout"}

    class Run:
        run_id = "manual__1"

    # The group's workflow run (key "<dag_id>/<run_id>/<group_id>"), as for its stage tasks.
    assert gate.own_run_key({"dag_run": Run()}) == "it_group_approved/manual__1/greeting"


@pytest.mark.parametrize(
    ("approval_before", "message"),
    [
        (["nope"], "approval_before names unknown stage(s) nope of workflow 'it-fanout'"),
        (["split"], "approval_before cannot name split of the first group"),
        ("upper", "approval_before must be a list of stage ids, got the string 'upper'"),
    ],
)
def test_build_dag_refuses_approvals_that_cannot_work(approval_before: Any, message: str) -> None:
    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.errors import WorkflowDefinitionError
    from tests.integration.airflow import workflows as wf

    with pytest.raises(WorkflowDefinitionError) as err:
        build_dag(wf.fanout, "it_bad_approval", approval_before=approval_before)
    assert message in str(err.value)


# -- under Airflow: a reviewer answers through Airflow's REST API ---------------------------


# A DAG run, the api-server's start (first test) and four CLI processes, on a busy machine.
@pytest.mark.timeout(600)
def test_approval_in_required_actions_completes_the_run(
    hitl_env: tuple[AirflowEnv, Reviewer],
) -> None:
    env, reviewer = hitl_env
    started = time.time()
    result, run = _decide(env, reviewer, "Approve", "measurements look right")
    assert result.state == "success", result.log[-4000:]
    assert result.ti_state(TASK_ID) == "success" and result.try_number(TASK_ID) == 1
    assert run.status == Status.COMPLETED
    assert run.output == {"report": "'hello' has 5 characters"}
    notes, actors = _approval_notes(env, run.id)
    assert notes == {
        "approval.status": "approved",
        "approval.approver": "admin",
        "approval.comment": "measurements look right",
    }
    assert actors == {("user", "admin")}
    event = result.xcom[TASK_ID]
    assert event["status"] == "success" and event["observed"] == "approved"
    assert event["workflow_run_id"] == run.id
    assert event["details"]["approver"] == "admin"
    assert event["details"]["comment"] == "measurements look right"
    assert event["details"]["at"] >= time.strftime("%Y-%m-%d", time.gmtime(started))
    # Airflow's own record of the response is the same decision.
    answer = reviewer.answers["Approve"]
    assert answer["chosen_options"] == ["Approve"]
    assert answer["params_input"] == {"comment": "measurements look right"}


# A DAG run, the api-server's start (first test) and four CLI processes, on a busy machine.
@pytest.mark.timeout(600)
def test_rejection_in_required_actions_fails_with_the_reason_as_the_runs_error(
    hitl_env: tuple[AirflowEnv, Reviewer],
) -> None:
    env, reviewer = hitl_env
    result, run = _decide(env, reviewer, "Reject", "numbers are off")
    assert result.state == "failed"
    assert result.ti_state(TASK_ID) == "failed" and result.try_number(TASK_ID) == 1
    assert result.ti_state("report") == "upstream_failed"
    log = env.task_log(result, TASK_ID)
    assert f"Workflow run {run.id} was rejected by admin: 'numbers are off'" in log, log[-3000:]
    notes, actors = _approval_notes(env, run.id)
    assert notes == {
        "approval.status": "rejected",
        "approval.approver": "admin",
        "approval.comment": "numbers are off",
    }
    assert actors == {("user", "admin")}
    # The rejection is the run's error (who, when, why), as with ApprovalSensor; the DAG
    # run's failure, mirrored by the listener after it, left it in place.
    assert run.status == Status.CANCELLED
    assert run.error_message.startswith("cancelled: rejected by admin at "), run.error_message
    assert run.error_message.endswith(f": 'numbers are off' (task '{TASK_ID}' of DAG '{DAG_ID}')")
    with env.store() as store:
        stages = {s.stage_id: s.status for s in store.list_stages(run.id)}
    assert stages["measure"] == Status.COMPLETED and stages["report"] == Status.CANCELLED
