"""AI credentials from Airflow connections (``hooks/llm.py``) and ``ctx.ai`` under Airflow.

- connection types: ours (``workflow_engine_llm``), the official OpenAI provider's
  (``openai``), common.ai's ``pydanticai``; clear errors for anything else;
- lookup order and ``[workflow_engine] llm_conn_ids``;
- the kernel built by ``WorkflowEngineHook`` gives stages a ``ctx.ai`` whose keys and base
  URLs come from connections (checked against the fake LLM server: the connection's key, not
  the environment's, reaches it), and whose ledger rows carry the DAG id, task id, workflow
  run id and try number, in process and in real task processes with a retry.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import StageContext, WorkflowBuilder
from airflow_workflow_engine.ai.batch_stage import define_ai_batch_stage
from airflow_workflow_engine.ai.providers.base import BatchRequest
from airflow_workflow_engine.ai.results import BatchItem
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.integration.airflow.fixtures import AIRFLOW_MARKS, AirflowEnv, airflow_env

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

CONN_KEY = "conn-key-4f9a7c"
ENV_KEY = "env-key-should-not-be-used"


def _conn(conn_id: str, conn_type: str, **fields: Any) -> Any:
    from airflow.sdk import Connection

    extra = fields.pop("extra", None)
    return Connection(
        conn_id=conn_id,
        conn_type=conn_type,
        extra=json.dumps(extra) if extra is not None else None,
        **fields,
    )


def _env_conn(conn_type: str, **fields: Any) -> str:
    """An ``AIRFLOW_CONN_*`` value (JSON)."""
    return json.dumps({"conn_type": conn_type, **fields})


# -- one connection -> provider settings ----------------------------------------------------


def test_our_connection_type() -> None:
    from airflow_workflow_engine.hooks.llm_settings import provider_settings_from_connection

    conn = _conn(
        "llm_openai_default",
        "workflow_engine_llm",
        password="sk-1",
        host="http://127.0.0.1:9/v1",
        extra={"timeout": 5, "options": {"organization": "acme"}},
    )
    settings = provider_settings_from_connection(conn, "openai")
    assert settings.kind == "openai"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-1"
    assert settings.base_url == "http://127.0.0.1:9/v1"
    assert settings.options == {"timeout": 5, "organization": "acme"}
    assert "sk-1" not in repr(settings)
    # A gateway speaking the OpenAI API under another name.
    gateway = _conn("llm_router", "workflow_engine_llm", password="k", extra={"kind": "openai"})
    assert provider_settings_from_connection(gateway, "router").kind == "openai"
    # A bare host name (a connection made from a URI) becomes an https URL.
    bare = _conn("x", "workflow_engine_llm", host="llm.internal", port=8443, schema="v1")
    assert provider_settings_from_connection(bare, "openai").base_url == (
        "https://llm.internal:8443/v1"
    )


def test_official_provider_connection_types() -> None:
    from airflow_workflow_engine.hooks.llm_settings import provider_settings_from_connection

    official = _conn(
        "openai_default",
        "openai",
        password="sk-2",
        extra={"openai_client_kwargs": {"timeout": 7, "organization": "o", "max_retries": 9}},
    )
    settings = provider_settings_from_connection(official, "openai")
    assert settings.kind == "openai" and settings.base_url is None
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-2"
    assert settings.options == {"timeout": 7, "organization": "o"}
    common_ai = _conn("gemini", "pydanticai", password="g-key", host="http://127.0.0.1:9")
    google = provider_settings_from_connection(common_ai, "google")
    assert google.kind == "google" and google.base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (("c", "postgres", {}), "does not hold model-provider credentials"),
        (("c", "workflow_engine_llm", {"extra": {"tmeout": 1}}), "unknown extras tmeout"),
        (("c", "workflow_engine_llm", {"extra": {"kind": "anthropic"}}), "'kind' extra"),
        (("c", "workflow_engine_llm", {"extra": {"options": [1]}}), "must be a JSON object"),
    ],
)
def test_bad_connections_say_what_to_fix(
    conn: tuple[str, str, dict[str, Any]], message: str
) -> None:
    from airflow_workflow_engine.hooks.llm_settings import (
        LLMConnectionError,
        provider_settings_from_connection,
    )

    conn_id, conn_type, fields = conn
    with pytest.raises(LLMConnectionError, match=message) as info:
        provider_settings_from_connection(_conn(conn_id, conn_type, **fields), "openai")
    assert "'c'" in str(info.value)


# -- which connections ----------------------------------------------------------------------


def test_lookup_order_and_configured_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_workflow_engine.hooks.llm_settings import (
        LLMConnectionError,
        parse_llm_conn_ids,
        providers_from_airflow,
    )

    conns = {
        "llm_openai_default": _conn("llm_openai_default", "workflow_engine_llm", password="ours"),
        "openai_default": _conn("openai_default", "openai", password="official"),
        "my_gemini": _conn("my_gemini", "workflow_engine_llm", password="gem", extra={}),
    }
    asked: list[str] = []

    def get(conn_id: str) -> Any:
        asked.append(conn_id)
        return conns.get(conn_id)

    providers = providers_from_airflow(get_connection=get)
    assert asked == ["llm_openai_default", "llm_google_default"]  # first existing one wins
    assert providers["openai"].api_key.get_secret_value() == "ours"  # type: ignore[union-attr]
    assert set(providers) == {"mock", "openai"}  # no google connection: the SDK's env applies
    assert str(providers["mock"].options["state_dir"]).endswith("workflow_engine/mock_batches")

    del conns["llm_openai_default"]
    providers = providers_from_airflow(get_connection=get)
    assert providers["openai"].api_key.get_secret_value() == "official"  # type: ignore[union-attr]

    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__LLM_CONN_IDS", "google=my_gemini, x=nope|no2")
    asked.clear()
    providers = providers_from_airflow(get_connection=get)
    assert providers["google"].api_key.get_secret_value() == "gem"  # type: ignore[union-attr]
    assert asked == ["llm_openai_default", "openai_default", "my_gemini", "nope", "no2"]

    assert parse_llm_conn_ids("openai=a|b; google=c") == {"openai": ("a", "b"), "google": ("c",)}
    with pytest.raises(LLMConnectionError, match="is not 'provider=conn_id'"):
        parse_llm_conn_ids("openai")


def test_connections_are_reread_after_a_while_and_clients_kept() -> None:
    from airflow_workflow_engine.ai.ledger import InMemoryLedger
    from airflow_workflow_engine.hooks.llm import AirflowAIFactory

    key = ["first"]
    now = [0.0]
    lookups: list[str] = []

    def get(conn_id: str) -> Any:
        lookups.append(conn_id)
        return _conn(conn_id, "workflow_engine_llm", password=key[0])

    factory = AirflowAIFactory(
        InMemoryLedger(),
        lookup={"openai": ("llm_openai_default",)},
        get_connection=get,
        refresh_seconds=60,
        clock=lambda: now[0],
    )
    registry = factory.registry()
    assert factory.registry() is registry
    assert registry.adapter("mock") is not None and lookups == []  # mock: nothing looked up
    first = registry.adapter("openai")
    assert lookups == ["llm_openai_default"]
    now[0] = 59
    assert registry.adapter("openai") is first and len(lookups) == 1  # cached
    now[0] = 61
    assert registry.adapter("openai") is first and len(lookups) == 2  # re-read, unchanged: kept
    key[0] = "rotated"
    now[0] = 200
    registry.parse("openai:gpt-5-mini")  # a model of the provider triggers the re-read
    rotated = registry.adapter("openai")
    assert rotated is not first and len(lookups) == 3
    assert registry.secrets()[0] == "rotated"


def test_only_the_providers_a_stage_uses_are_looked_up() -> None:
    """A missing connection costs a round trip to Airflow (seconds in the triggerer): a stage
    calling mock models looks up none; the first OpenAI call looks up OpenAI's only."""
    from airflow_workflow_engine.ai.ledger import InMemoryLedger
    from airflow_workflow_engine.hooks.llm import AirflowAIFactory
    from airflow_workflow_engine.hooks.llm_settings import DEFAULT_LLM_CONN_IDS

    lookups: list[str] = []

    def get(conn_id: str) -> Any:
        lookups.append(conn_id)
        return None  # no connection: the SDK's defaults (environment) apply

    registry = AirflowAIFactory(
        InMemoryLedger(), lookup=DEFAULT_LLM_CONN_IDS, get_connection=get
    ).registry()
    registry.adapter("mock")
    registry.parse("mock:summarizer")
    assert lookups == []
    registry.parse("openai:gpt-5-mini")
    assert lookups == list(DEFAULT_LLM_CONN_IDS["openai"])
    registry.parse("openai:gpt-5-mini")
    assert lookups == list(DEFAULT_LLM_CONN_IDS["openai"])  # not again before the refresh


def test_run_budget_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_workflow_engine.hooks.llm_settings import (
        LLMConnectionError,
        configured_run_max_cost,
    )

    monkeypatch.delenv("AIRFLOW__WORKFLOW_ENGINE__AI_RUN_MAX_COST", raising=False)
    assert configured_run_max_cost() is None
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__AI_RUN_MAX_COST", "2.5")
    assert configured_run_max_cost() == 2.5
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__AI_RUN_MAX_COST", "five")
    with pytest.raises(LLMConnectionError, match="ai_run_max_cost must be a number"):
        configured_run_max_cost()


def test_hook_test_connection_sends_nothing(
    fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_workflow_engine.hooks.llm import WorkflowEngineLLMHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_LLM_GOOGLE_DEFAULT",
        _env_conn("workflow_engine_llm", password=CONN_KEY, host=fake_llm.gemini_base_url),
    )
    hook = WorkflowEngineLLMHook("llm_google_default")
    assert hook.provider == "google"
    ok, message = hook.test_connection()
    assert ok, message
    assert "google" in message and "no request was sent" in message
    assert fake_llm.requests == []
    assert WorkflowEngineLLMHook("nope").test_connection()[0] is False


# -- ctx.ai in the kernel the hook builds ---------------------------------------------------


class Question(BaseModel):
    question: str


class Answers(BaseModel):
    openai: str
    google: str


def ask_both(ctx: StageContext[Question, Any]) -> Answers:
    q = ctx.input.question
    return Answers(
        openai=ctx.ai.generate_text("openai:gpt-4o-mini", q, max_tokens=8).text,
        google=ctx.ai.generate_text("google:gemini-2.5-flash", q, max_tokens=8).text,
    )


class Questions(BaseModel):
    questions: list[str]


class BatchAnswers(BaseModel):
    answers: list[str]


def _batch_requests(ctx: StageContext[Questions, Any]) -> list[BatchRequest]:
    return [
        BatchRequest(id=f"q{i}", prompt=q, max_tokens=8) for i, q in enumerate(ctx.input.questions)
    ]


def _collect_answers(items: list[BatchItem], ctx: StageContext[Questions, Any]) -> BatchAnswers:
    return BatchAnswers(answers=[i.text or "" for i in items])


#: Polled from the triggerer, which imports it from this module (the repository is on the
#: PYTHONPATH of the test Airflow's processes).
answer_batch = define_ai_batch_stage(
    id="answer_batch",
    input=Questions,
    output=BatchAnswers,
    build_requests=_batch_requests,
    collect=_collect_answers,
    model="openai:gpt-4o-mini",
    poll_interval=1,
    max_wait=300,
)
llm_batch_workflow = (
    WorkflowBuilder("it-llm-batch", "LLM batch", "", input=Questions, output=BatchAnswers)
    .pipe(answer_batch)
    .build()
)


@pytest.fixture
def engine_db(tmp_path: Path) -> Iterator[str]:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache
    from airflow_workflow_engine.persistence.sql import migrate

    url = f"sqlite:///{tmp_path}/engine.db"
    migrate(url)
    yield url
    reset_kernel_cache()


def test_kernel_from_the_hook_gives_stages_ai_from_connections(
    engine_db: str,
    tmp_path: Path,
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_workflow_engine import define_stage
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.hooks.engine import EngineSettings, kernel_for
    from airflow_workflow_engine.kernel.commands import (
        JobExecute,
        RunClaimPending,
        RunCreate,
        RunTransition,
    )

    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.openai_base_url)
    monkeypatch.setenv("GEMINI_API_KEY", ENV_KEY)
    monkeypatch.setenv("GEMINI_BASE_URL", fake_llm.gemini_base_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_LLM_OPENAI_DEFAULT",
        _env_conn("workflow_engine_llm", password=CONN_KEY, host=fake_llm.openai_base_url),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_LLM_GOOGLE_DEFAULT",
        _env_conn("workflow_engine_llm", password=CONN_KEY, host=fake_llm.gemini_base_url),
    )
    stage = define_stage(id="ask_both", input=Question, output=Answers, execute=ask_both)
    workflow = (
        WorkflowBuilder("it-llm-inproc", "LLM", "", input=Question, output=Answers)
        .pipe(stage)
        .build()
    )
    settings = EngineSettings(sql_url=engine_db, blob_store=str(tmp_path / "blobs"))
    kernel = kernel_for(settings, workflow)
    created = kernel.dispatch(
        RunCreate(
            workflow_id=workflow.id,
            input={"question": "what is a DAG?"},
            idempotency_key="some_dag/manual__1",
        )
    )
    run_id = created.workflow_run_id
    kernel.dispatch(RunClaimPending(workflow_run_id=run_id, worker_id="t"))
    result = kernel.dispatch(
        JobExecute(
            workflow_run_id=run_id, stage_id="ask_both", attempt=1, max_attempts=1, worker_id="t"
        )
    )
    assert result.outcome == "completed", result.error
    kernel.dispatch(RunTransition(workflow_run_id=run_id))
    # The connections' key reached both APIs, the environment's did not.
    chat = fake_llm.requests_to("chat/completions")
    gemini = fake_llm.requests_to("generateContent")
    assert len(chat) == 1 and chat[0].headers["authorization"] == f"Bearer {CONN_KEY}"
    assert len(gemini) == 1 and gemini[0].headers["x-goog-api-key"] == CONN_KEY
    ledger = SqlLedger(engine_db)
    rows = ledger.entries(run_id)
    ledger.close()
    # Outside a task, the DAG (run) id comes from the run's idempotency key "<dag_id>/<run_id>".
    assert sorted((r.provider, r.dag_id, r.dag_run_id, r.task_id, r.attempt) for r in rows) == [
        ("google", "some_dag", "manual__1", "ask_both", 1),
        ("openai", "some_dag", "manual__1", "ask_both", 1),
    ]
    run = kernel.persistence.get_run(run_id)
    assert run is not None and run.total_tokens == sum(r.total_tokens for r in rows) > 0


_DAG_FILE = """
from datetime import timedelta

from airflow.sdk import DAG
from pydantic import BaseModel

from airflow_workflow_engine import define_stage
from airflow_workflow_engine.operators import StageOperator


class Question(BaseModel):
    question: str


class Answer(BaseModel):
    text: str


def _ask(ctx):
    answer = ctx.ai.generate_text("openai:gpt-4o-mini", ctx.input.question, max_tokens=8)
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails after its model call (which was paid)")
    return Answer(text=answer.text)


ask = define_stage(id="ask", input=Question, output=Answer, execute=_ask)

with DAG("it_llm", schedule=None, tags=["workflow-engine"]) as dag:
    StageOperator(stage=ask, retries=1, retry_delay=timedelta(seconds=0))
"""


def test_ctx_ai_in_task_processes_labels_ledger_rows_with_the_task_try(
    airflow_env: AirflowEnv, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.kernel.status import Status

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "it_llm_dag.py").write_text(_DAG_FILE)
    env = dataclasses.replace(
        airflow_env,
        env={
            **airflow_env.env,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW_CONN_LLM_OPENAI_DEFAULT": _env_conn(
                "workflow_engine_llm", password=CONN_KEY, host=fake_llm.openai_base_url
            ),
            "OPENAI_API_KEY": ENV_KEY,
            "OPENAI_BASE_URL": fake_llm.openai_base_url,
        },
    )
    result = env.run_dag(str(dags / "it_llm_dag.py"), "it_llm", {"question": "what is a DAG?"})
    assert result.state == "success", result.log[-4000:]
    assert result.try_number("ask") == 2
    run = env.kernel_run(result, "it_llm")
    assert run is not None and run.status == Status.COMPLETED
    chat = fake_llm.requests_to("chat/completions")
    assert [r.headers["authorization"] for r in chat] == [f"Bearer {CONN_KEY}"] * 2
    ledger = SqlLedger(env.engine_url)
    rows = sorted(ledger.entries(run.id), key=lambda r: r.attempt or 0)
    ledger.close()
    # One row per call: the DAG id, task id and try number of the task that paid for it.
    assert [(r.dag_id, r.task_id, r.stage_id, r.attempt, r.workflow_run_id) for r in rows] == [
        ("it_llm", "ask", "ask", 1, run.id),
        ("it_llm", "ask", "ask", 2, run.id),
    ]
    assert {r.dag_run_id for r in rows} == {result.run_id}
    assert all(r.model_key == "openai:gpt-4o-mini" and r.cost is not None for r in rows)
    stage = env.stages(run.id)["ask"]
    assert stage.metrics["ai_tokens"] == sum(r.total_tokens for r in rows)  # both attempts
    # Airflow masks the connection's password in task logs.
    assert CONN_KEY not in env.task_log(result, "ask")


_BATCH_DAG_FILE = """
from airflow.sdk import DAG

from airflow_workflow_engine.operators import AsyncBatchStageOperator
from tests.integration.airflow.test_airflow_llm_hook import answer_batch, llm_batch_workflow

with DAG("it_llm_batch", schedule=None, tags=["workflow-engine"]) as dag:
    AsyncBatchStageOperator(stage=answer_batch, workflow=llm_batch_workflow)
"""


def test_ctx_ai_in_the_triggerer_uses_connections_too(
    airflow_env: AirflowEnv, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    """A batch is submitted from the task and polled from the triggerer, both with the
    connection's credentials (the triggerer's environment has none); the batch's ledger rows,
    written in the triggerer, carry the DAG id (from the run) and the task id."""
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.kernel.status import Status
    from tests.integration.airflow.fixtures import run_airflow

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "it_llm_batch_dag.py").write_text(_BATCH_DAG_FILE)
    env = dataclasses.replace(
        airflow_env, env={**airflow_env.env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    )
    fake_llm.batch_polls_until_done = 2
    conn = {"conn_type": "workflow_engine_llm", "password": CONN_KEY}
    conn["host"] = fake_llm.openai_base_url
    added = run_airflow(
        ["connections", "add", "llm_openai_default", "--conn-json", json.dumps(conn)], env.env
    )
    assert added.returncode == 0, added.stderr[-2000:]
    try:
        result = env.run_dag(
            str(dags / "it_llm_batch_dag.py"), "it_llm_batch", {"questions": ["a b", "c"]}
        )
    finally:
        run_airflow(["connections", "delete", "llm_openai_default"], env.env)
    assert result.state == "success", result.log[-4000:]
    run = env.kernel_run(result, "it-llm-batch")
    assert run is not None and run.status == Status.COMPLETED
    assert run.output == {"answers": ["echo: a b", "echo: c"]}
    assert fake_llm.batches_created["openai"] == 1
    polls = fake_llm.requests_to("/batches/", method="GET")
    assert polls, "the triggerer never polled the batch"
    assert {r.headers["authorization"] for r in fake_llm.requests} == {f"Bearer {CONN_KEY}"}
    ledger = SqlLedger(env.engine_url)
    rows = ledger.entries(run.id)
    ledger.close()
    assert sorted((r.call_type, r.dag_id, r.task_id, r.attempt) for r in rows) == [
        ("batch", "it_llm_batch", "answer_batch", 1),
        ("batch", "it_llm_batch", "answer_batch", 1),
    ]
