"""``WorkflowApprovalOperator``: a workflow run's approval point in Airflow's human-in-the-loop.

Under Airflow: the DAG ``it_hitl`` (measure -> approve -> report) runs with
``dag.test(use_executor=True)`` on the session's Airflow (real task processes); the approval
task parks in ``awaiting_input``. An ``airflow api-server --apps all`` over the same database
(Airflow's simple auth manager, user ``admin``, and the provider's plugin) serves Airflow's UI,
its REST API and the engine's pages. A reviewer in a headless Chromium (Debian's
``/usr/bin/chromium``) logs in, opens Airflow's "Required Actions" page, opens the request and
answers it with a comment (the UI sends ``PATCH
/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails``). Then the decision is
in the workflow run's ``approval.*`` annotations, shown on the engine's run page, and the run
completes, or, rejected, fails with the reason as the run's error, shown on the run page.
"""

from __future__ import annotations

import contextlib
import json
import re
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
from tests.integration.airflow.test_airflow_ui import (
    PASSWORDS,
    SHOTS,
    _start_api_server,
    browser,
)

pytestmark = AIRFLOW_MARKS
# the fixtures, imported so pytest finds them in this module
__all__ = ["airflow_env", "browser"]

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

    def hitl_detail(self, run_id: str) -> Any:
        """Airflow's record of the request and its response."""
        code, answer = self.request("GET", f"{self.task_path(run_id)}/-1/hitlDetails")
        assert code == 200, (code, answer)
        return answer


@dataclass
class BrowserReviewer:
    """A reviewer in a headless Chromium, logged in to Airflow's UI as ``admin``."""

    base: str
    page: Any

    def log_in(self) -> None:
        self.page.goto("/")
        self.page.get_by_label("Username").fill("admin")
        self.page.get_by_label("Password").fill(PASSWORDS["admin"])
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(lambda url: "/login" not in url)

    def answer(self, run_id: str, option: str, comment: str, shot: str | None = None) -> None:
        """Opens Required Actions from Airflow's navigation, opens the request of DAG run
        ``run_id``, types the comment and presses ``option``."""
        from playwright.sync_api import expect

        page = self.page
        page.goto("/required_actions")
        row = page.locator("tbody tr", has_text=run_id)
        expect(row).to_contain_text("Approval Required")
        # The subject (cut short in the table) opens the request on its task instance.
        request = row.get_by_role("link", name=re.compile("^Approve the workflow run"))
        if shot:
            _shot(page, shot)
        request.click()
        page.wait_for_url(lambda url: url.endswith("/required_actions") and TASK_ID in url)
        # The form field of the "comment" param (Airflow names its inputs "element_<param>").
        comment_field = page.locator("#element_comment")
        expect(comment_field).to_be_visible()
        comment_field.fill(comment)
        if shot:
            _shot(page, f"{shot}-form")
        page.get_by_role("button", name=option, exact=True).click()
        expect(page.get_by_text(f"{TASK_ID} response successful")).to_be_visible()

    def run_page(self, workflow_run_id: str) -> Any:
        self.page.goto(f"/workflow-engine/runs/{workflow_run_id}")
        return self.page


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let Airflow's UI settle (fonts, transitions)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


@pytest.fixture
def reviewer_page(
    hitl_env: tuple[AirflowEnv, Reviewer], browser: Any, tmp_path: Path
) -> Iterator[BrowserReviewer]:
    context = browser.new_context(
        base_url=hitl_env[1].base, viewport={"width": 1400, "height": 1000}
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        reviewer = BrowserReviewer(hitl_env[1].base, page)
        reviewer.log_in()
        yield reviewer
    except BaseException:
        raise
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'last.png'}")
        context.close()


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
    env: AirflowEnv,
    reviewer: Reviewer,
    in_browser: BrowserReviewer | None,
    option: str,
    comment: str,
    *,
    shot: str | None = None,
) -> tuple[DagRunResult, Any]:
    """Runs ``it_hitl``, waits until its approval task awaits input, answers it in Airflow's
    Required Actions (``in_browser``), else with ``airflow workflow-engine approvals
    approve|reject`` as ``alice``; returns Airflow's view of the DAG run and the workflow
    run."""
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
        if in_browser is not None:
            in_browser.answer(airflow_run_id, option, comment, shot=shot)
        else:
            command = ("approvals", option.lower(), DAG_ID, airflow_run_id, "--by", "alice")
            said = ok(cli(env.env, *command, "--comment", comment))
            verb = {"Approve": "Approved", "Reject": "Rejected"}[option]
            assert f"{verb} the request of task {TASK_ID} in DAG run {DAG_ID}/" in said, said
            # A second answer is refused, naming the first.
            again = cli(env.env, *command)
            assert again.returncode == 1, again
            assert f"is already answered: ['{option}'] by alice" in again.stderr, again.stderr
        result = future.result(timeout=240)
    finally:
        pool.shutdown(wait=False)
    reviewer.answers[option] = reviewer.hitl_detail(airflow_run_id)
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


# -- under Airflow: a reviewer answers in Airflow's Required Actions -------------------------


# A DAG run, the api-server's start (first test) and four CLI processes, on a busy machine.
@pytest.mark.timeout(600)
def test_approval_in_required_actions_completes_the_run(
    hitl_env: tuple[AirflowEnv, Reviewer], reviewer_page: BrowserReviewer
) -> None:
    env, reviewer = hitl_env
    started = time.time()
    result, run = _decide(
        env, reviewer, reviewer_page, "Approve", "measurements look right", shot="required-actions"
    )
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
    assert answer["response_received"] is True
    # The engine's run page shows the decision in the run's provenance.
    from playwright.sync_api import expect

    page = reviewer_page.run_page(run.id)
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    notes = page.locator("#annotations")
    for key, value in (
        ("approval.status", '"approved"'),
        ("approval.approver", '"admin"'),
        ("approval.comment", '"measurements look right"'),
    ):
        decided = notes.locator("tbody tr", has_text=key).filter(has_text="user:admin")
        expect(decided).to_contain_text(value)


# A DAG run, the api-server's start (first test) and four CLI processes, on a busy machine.
@pytest.mark.timeout(600)
def test_rejection_in_required_actions_fails_with_the_reason_as_the_runs_error(
    hitl_env: tuple[AirflowEnv, Reviewer], reviewer_page: BrowserReviewer
) -> None:
    env, reviewer = hitl_env
    result, run = _decide(env, reviewer, reviewer_page, "Reject", "numbers are off")
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
    answer = reviewer.answers["Reject"]
    assert answer["chosen_options"] == ["Reject"]
    assert answer["params_input"] == {"comment": "numbers are off"}
    # The engine's run page shows the rejection as the run's error, and the decision.
    from playwright.sync_api import expect

    page = reviewer_page.run_page(run.id)
    expect(page.locator("#run-status")).to_have_text("CANCELLED")
    expect(page.locator("#run-error")).to_have_text(run.error_message)
    expect(page.locator("#run-error")).to_contain_text("rejected by admin")
    expect(page.locator("#run-error")).to_contain_text("'numbers are off'")
    rejected = page.locator("#annotations tbody tr", has_text="approval.status")
    expect(rejected.filter(has_text="user:admin")).to_contain_text('"rejected"')
    expect(page.locator("#annotations tbody tr", has_text="approval.comment")).to_contain_text(
        '"numbers are off"'
    )


# A DAG run, the api-server's start (first test) and six CLI processes, on a busy machine.
@pytest.mark.timeout(600)
def test_approvals_approve_answers_the_request_from_the_cli(
    hitl_env: tuple[AirflowEnv, Reviewer],
) -> None:
    env, reviewer = hitl_env
    result, run = _decide(env, reviewer, None, "Approve", "checked by hand")
    assert result.state == "success", result.log[-4000:]
    assert run.status == Status.COMPLETED
    notes, actors = _approval_notes(env, run.id)
    assert notes == {
        "approval.status": "approved",
        "approval.approver": "alice",
        "approval.comment": "checked by hand",
    }
    assert actors == {("user", "alice")}
    # Airflow's record: answered, by alice, so Required Actions shows it reviewed.
    answer = reviewer.answers["Approve"]
    assert answer["response_received"] is True
    assert answer["chosen_options"] == ["Approve"]
    assert answer["params_input"] == {"comment": "checked by hand"}
    assert answer["responded_by_user"] == {"id": "alice", "name": "alice"}
    code, pending = reviewer.request(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/~/hitlDetails?response_received=false"
    )
    assert code == 200, pending
    dag_run = result.run_id
    assert dag_run not in {d["task_instance"]["dag_run_id"] for d in pending["hitl_details"]}
    # Nothing to answer any more, and a DAG run without a request says so.
    missing = cli(env.env, "approvals", "reject", DAG_ID, "manual__nope", "--by", "alice")
    assert missing.returncode == 1
    assert f"No human-in-the-loop request in DAG run {DAG_ID}/manual__nope" in missing.stderr
