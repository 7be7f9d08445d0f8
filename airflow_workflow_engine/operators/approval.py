"""``WorkflowApprovalOperator``: a workflow run's approval point in Airflow's human-in-the-loop.

Built on the standard provider's ``ApprovalOperator``: the task asks in Airflow's "Required
Actions" page (and its REST API, ``PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails``)
for "Approve" or "Reject", with an optional comment. While it waits, the task is in
Airflow's ``awaiting_input`` state and holds no worker slot. When it resumes, the decision is
written to the workflow run as an ``Approval`` annotation (``approval.status``,
``approval.approver``, ``approval.comment``, ``approval.stage_id``), through the kernel, the
same way :func:`~airflow_workflow_engine.kernel.approvals.record_approval` writes every other
decision, so provenance, reruns and ``ApprovalSensor`` read it like any other:

- approved: the task succeeds and returns the decision to XCom;
- rejected: the task fails without retries, naming who rejected it and why; the DAG run's own
  workflow run is cancelled first with the rejection as its error (as ``ApprovalSensor`` does);
- a decision that already stands on the run (not voided by a later rerun, see
  :mod:`airflow_workflow_engine.kernel.approvals`) is used without asking again, so clearing
  only downstream tasks does not ask the reviewer twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException

from airflow_workflow_engine.conventions import Actor
from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
from airflow_workflow_engine.hooks.errors import engine_errors
from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.runs import run_key
from airflow_workflow_engine.kernel.approvals import (
    PENDING,
    approval_state,
    cancel_rejected_run,
    record_approval,
    rejected_message,
    rejection_reason,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_workflow_engine.kernel.approvals import ApprovalDecision
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.records import RunRecord

__all__ = ["COMMENT_PARAM", "WorkflowApprovalOperator"]

#: The form field of the reviewer's comment.
COMMENT_PARAM = "comment"
_DEFAULT_SUBJECT = "Approve the workflow run of {{ dag.dag_id }} / {{ run_id }}"


def _blank(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


class WorkflowApprovalOperator(ApprovalOperator):
    """Asks a reviewer in Airflow's Required Actions to approve or reject the workflow run.

    :param workflow_run_id: the kernel's workflow run id (templated); default: the workflow run
        of this DAG run (its idempotency key ``"<dag_id>/<run_id>"``).
    :param workflow_group: the ``WorkflowTaskGroup`` whose workflow run it is (templated);
        default: the ``WorkflowTaskGroup`` the task is in, if any.
    :param key_prefix: the approval keys' prefix (templated); default ``"approval."``.
    :param stage_id: the decision is for this stage (templated): it is recorded as
        ``approval.stage_id`` and only a rerun of that stage voids it.
    :param subject: the headline in Required Actions (templated); default names the DAG run.
    :param body: markdown shown with it (templated); default names the workflow run.
    :param conn_id: the ``workflow_engine`` connection (see ``WorkflowEngineHook``).
    :param kwargs: ``ApprovalOperator`` arguments: ``assigned_users``, ``response_timeout``,
        ``notifiers``... (``fail_on_reject`` is always on: a rejection fails the task).
    """

    template_fields: Sequence[str] = (
        *ApprovalOperator.template_fields,
        "workflow_run_id",
        "workflow_group",
        "key_prefix",
        "stage_id",
    )
    ui_color = "#fbe7c6"

    def __init__(
        self,
        *,
        workflow_run_id: str | None = None,
        workflow_group: str | None = None,
        key_prefix: str = "approval.",
        stage_id: str | None = None,
        subject: str = _DEFAULT_SUBJECT,
        conn_id: str | None = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        if workflow_run_id and workflow_group:
            raise ValueError(
                f"WorkflowApprovalOperator '{kwargs.get('task_id')}': name the workflow run "
                "either by workflow_run_id or by workflow_group, not both."
            )
        if not key_prefix:
            raise ValueError("key_prefix must not be empty (the convention is 'approval.').")
        # Params may come as the DAG's ParamsDict: copy the Param objects, never their values
        # (a DAG param without a default has none yet).
        given = kwargs.pop("params", None) or {}
        params = (
            ParamsDict({k: given.get_param(k) for k in given})
            if isinstance(given, ParamsDict)
            else ParamsDict(dict(given))
        )
        if COMMENT_PARAM not in params:
            params[COMMENT_PARAM] = Param(
                None,
                type=["null", "string"],
                title="Comment",
                description="Why you approve or reject (kept with the run's provenance).",
            )
        kwargs.pop("fail_on_reject", None)
        super().__init__(subject=subject, params=params, fail_on_reject=True, **kwargs)
        self.workflow_run_id = workflow_run_id
        self.workflow_group = workflow_group
        self.key_prefix = key_prefix
        self.stage_id = stage_id
        self.conn_id = conn_id

    @cached_property
    def hook(self) -> WorkflowEngineHook:
        return WorkflowEngineHook(conn_id=self.conn_id)

    # -- the run --------------------------------------------------------------------------
    def own_run_key(self, context: Context) -> str:
        """The idempotency key of this DAG run's workflow run (``run.create`` by the stage
        tasks): ``"<dag_id>/<run_id>"`` or ``"<dag_id>/<run_id>/<group_id>"``."""
        from airflow_workflow_engine.operators.stage import StageOperator

        # Inside a WorkflowTaskGroup, that group's run, as for its stage tasks.
        group = _blank(self.workflow_group) or StageOperator.workflow_group.fget(self)  # type: ignore[attr-defined]
        return run_key(self.dag_id, str(context["dag_run"].run_id), group or None)

    def find_run(self, kernel: Kernel, context: Context) -> RunRecord:
        run_id = _blank(self.workflow_run_id)
        with engine_errors(f"Task '{self.task_id}' cannot read the workflow run"):
            if run_id is not None:
                run = kernel.persistence.get_run(run_id)
                what = f"workflow run {run_id}"
            else:
                key = self.own_run_key(context)
                run = kernel.persistence.get_run_by_idempotency_key(key)
                what = f"workflow run for DAG run {key} yet (place the approval after a stage task)"
        if run is None:
            raise AirflowFailException(f"Task '{self.task_id}': there is no {what}.")
        return run

    def standing_decision(self, kernel: Kernel, run: RunRecord) -> ApprovalDecision | None:
        notes = kernel.persistence.list_annotations(run.id)
        state = approval_state(notes, self.key_prefix, _blank(self.stage_id))
        if state.decision is None:
            self.log.info("Workflow run %s %s", run.id, state.waiting_message())
        return state.decision

    # -- running --------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        with engine_errors("The workflow engine is not usable"):
            kernel = self.hook.get_kernel()
        run = self.find_run(kernel, context)
        decision = self.standing_decision(kernel, run)
        if decision is not None:
            self.log.info("Already decided, not asking again: %s", decision.describe())
            return self.resolve(kernel, run, decision, context)
        self.record_request(kernel, run, context)
        if not self.body:
            self.body = (
                f"Workflow run `{run.id}` of workflow `{run.workflow_id}` waits for your "
                f"decision. Open it on the [workflow run page](/workflow-engine/runs/{run.id})."
            )
        return super().execute(context)

    def record_request(self, kernel: Kernel, run: RunRecord, context: Context) -> None:
        """Writes ``approval.status`` = ``pending`` (no decision; readers such as ``runs
        list`` show since when the run waits) with the task that asks."""
        ti = context["task_instance"]
        with engine_errors(f"Cannot record the approval request on workflow run {run.id}"):
            kernel.annotations.attach(
                run.id,
                actor=Actor(kind="system", id=f"airflow:{self.dag_id}/{self.task_id}"),
                attributes={
                    f"{self.key_prefix}status": PENDING,
                    f"{self.key_prefix}task": f"{self.dag_id}/{ti.run_id}/{self.task_id}",
                },
                idempotency_key=f"hitl-ask:{ti.id}",
            )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resumes with the reviewer's response: records it on the run, then decides."""
        # HITLOperator's own checks (options, params, a timeout without defaults); not
        # ApprovalOperator's, which would skip downstream tasks on "Reject".
        response = HITLOperator.execute_complete(self, context=context, event=event)
        approved = response["chosen_options"][0] == self.APPROVE
        user = response.get("responded_by_user") or None
        approver = str(user.get("name") or user.get("id")) if user else "airflow"
        comment = _blank((response.get("params_input") or {}).get(COMMENT_PARAM))
        responded_at: datetime = response["responded_at"]
        with engine_errors("The workflow engine is not usable"):
            kernel = self.hook.get_kernel()
        run = self.find_run(kernel, context)

        ti = context["task_instance"]
        with engine_errors(f"Cannot record the decision on workflow run {run.id}"):
            record_approval(
                kernel,
                run.id,
                approved=approved,
                approver=approver,
                comment=comment,
                stage_id=_blank(self.stage_id),
                key_prefix=self.key_prefix,
                actor_kind="user" if user else "system",
                # A resumed task that runs again writes the same decision once.
                idempotency_key=f"hitl:{ti.id}:{responded_at.isoformat()}",
            )
        decision = self.standing_decision(kernel, run)
        if decision is None:  # cannot be: it was just written
            raise AirflowFailException(f"Task '{self.task_id}': the decision was not recorded.")
        return self.resolve(kernel, run, decision, context)

    def resolve(
        self, kernel: Kernel, run: RunRecord, decision: ApprovalDecision, context: Context
    ) -> dict[str, Any]:
        """Approved: the decision, for XCom. Rejected: cancels the DAG run's own workflow
        run with the rejection as its error, then fails the task without retries."""
        details = decision.details()
        if decision.approved:
            message = f"workflow run {run.id} was {decision.describe()}"
            self.log.info("Done: %s", message)
            return {
                "status": "success",
                "kind": "approval",
                "workflow_run_id": run.id,
                "stage_id": decision.stage_id,
                "observed": decision.status,
                "message": message,
                "details": details,
            }
        try:
            cancel_rejected_run(
                kernel,
                run.id,
                self.own_run_key(context),
                rejection_reason(details, self.task_id, self.dag_id),
            )
        except Exception:  # the rejection still fails the task; the listener cancels the run
            self.log.warning("Could not record the rejection on the workflow run", exc_info=True)
        raise AirflowFailException(rejected_message(run.id, details, self.task_id))
