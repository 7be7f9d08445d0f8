"""AI calls reach Airflow's metrics (a real UDP StatsD listener) and OpenTelemetry spans (an
in-memory exporter), with no prompt or response text, and only after the ledger row."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from airflow_workflow_engine.ai.helper import AIHelper
from airflow_workflow_engine.ai.ledger import InMemoryLedger, LedgerEntry
from airflow_workflow_engine.ai.providers import OpenAIAdapter
from airflow_workflow_engine.ai.telemetry import add_call_observer, remove_call_observer
from airflow_workflow_engine.hooks.telemetry import AirflowCallTelemetry, install_call_telemetry
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.fake_llm_fixtures import fake_llm
from tests.integration.airflow.fixtures import AirflowEnv, airflow_env

__all__ = ["airflow_env", "fake_llm"]

PROMPT = "the secret launch codes are 0000"


class StatsdListener:
    """A StatsD server: collects the UDP packets sent to 127.0.0.1:<port>."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except OSError:
                continue
            self.lines.extend(data.decode().splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if line.startswith(prefix)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} in {self.lines}")

    def counter(self, name: str) -> int:
        """The sum of a counter's increments (``name:3|c``)."""
        total = 0
        for line in self.lines:
            stat, _, rest = line.partition(":")
            if stat == name and rest.endswith("|c"):
                total += int(rest.split("|")[0])
        return total


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdListener]:
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk.observability import stats

    listener = StatsdListener()
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    # This process has not set Stats up (no task runner here): the observer does it from
    # [metrics], as it would in `dag.test()` or the CLI.
    stats.initialize(factory=None, export_legacy_names=False)  # type: ignore[arg-type]
    try:
        yield listener
    finally:
        stats.initialize(factory=NoStatsLogger, export_legacy_names=False)
        listener.close()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def observer() -> AirflowCallTelemetry:
    # Process-wide and installed once, as under Airflow (other tests may have installed it
    # already by building an AirflowAIFactory).
    telemetry = install_call_telemetry()
    assert telemetry is not None
    return telemetry


def _helper(fake_llm: FakeLLMServer, ledger: InMemoryLedger, **identity: str | int) -> AIHelper:
    adapter = OpenAIAdapter(api_key="test-key", base_url=fake_llm.openai_base_url)
    return AIHelper(
        topic="telemetry",
        ledger=ledger,
        providers={"openai": adapter},
        prompt_policy="store",
        **identity,  # type: ignore[arg-type]
    )


def _ours(exporter: InMemorySpanExporter, ledger_ids: set[str]) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("workflow_engine.ledger_id") in ledger_ids
    ]


def test_a_call_is_counted_in_statsd_and_traced_with_genai_attributes(
    fake_llm: FakeLLMServer,
    statsd: StatsdListener,
    spans: InMemorySpanExporter,
    observer: AirflowCallTelemetry,
) -> None:
    ledger = InMemoryLedger()
    helper = _helper(
        fake_llm,
        ledger,
        dag_id="tel_dag",
        task_id="grp.ask",
        dag_run_id="manual__1",
        attempt=2,
        workflow_run_id="run-1",
        stage_id="ask",
    )
    helper.generate_text("openai:gpt-4o-mini", PROMPT, max_tokens=8)
    [row] = ledger.entries("run-1")

    statsd.wait_for("airflow.workflow_engine.ai.latency", count=2)
    assert statsd.counter("airflow.workflow_engine.ai.calls") == 1
    assert statsd.counter("airflow.workflow_engine.ai.input_tokens") == row.input_tokens > 0
    assert statsd.counter("airflow.workflow_engine.ai.output_tokens") == row.output_tokens > 0
    assert row.cost is not None
    assert statsd.counter("airflow.workflow_engine.ai.cost_microusd") == round(row.cost * 1_000_000)
    assert statsd.counter("airflow.workflow_engine.ai.errors") == 0
    # Plain StatsD has no tags: the dimensions are also in the name (dots in ids -> "__").
    dims = "tel_dag.grp__ask.openai.openai_gpt-4o-mini"
    assert statsd.counter(f"airflow.workflow_engine.ai.calls.{dims}") == 1
    latency = f"airflow.workflow_engine.ai.latency.{dims}:"
    assert any(line.startswith(latency) for line in statsd.lines)

    [span] = _ours(spans, {row.id})
    attrs = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == trace.SpanKind.CLIENT
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == row.input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == row.output_tokens
    assert attrs["workflow_engine.cost_usd"] == str(row.cost)
    assert (
        attrs["airflow.dag_id"],
        attrs["airflow.dag_run_id"],
        attrs["airflow.task_id"],
        attrs["airflow.try_number"],
    ) == ("tel_dag", "manual__1", "grp.ask", 2)
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time == (row.latency_ms or 0) * 1_000_000
    # The prompt policy stores the prompt in the ledger, yet metrics and spans carry no text.
    assert row.prompt is not None and "launch codes" in row.prompt
    assert not any("launch" in line for line in statsd.lines)
    assert not any("launch" in str(v) for v in attrs.values())


def test_a_provider_error_is_an_error_metric_and_an_error_span(
    fake_llm: FakeLLMServer,
    statsd: StatsdListener,
    spans: InMemorySpanExporter,
    observer: AirflowCallTelemetry,
) -> None:
    from airflow_workflow_engine.ai.errors import ProviderError

    fake_llm.fail_next(400)
    ledger = InMemoryLedger()
    helper = _helper(fake_llm, ledger, workflow_run_id="run-err", dag_id="d", task_id="t")
    with pytest.raises(ProviderError):
        helper.generate_text("openai:gpt-4o-mini", "hi", max_tokens=8)
    [row] = ledger.entries("run-err")
    assert row.status == "error"
    statsd.wait_for("airflow.workflow_engine.ai.errors")
    assert statsd.counter("airflow.workflow_engine.ai.errors") == 1
    [span] = _ours(spans, {row.id})
    assert span.status.status_code == trace.StatusCode.ERROR
    assert "error.type" in (span.attributes or {})


def test_a_failing_observer_costs_no_ledger_row(fake_llm: FakeLLMServer) -> None:
    class Broken:
        def call_recorded(self, entry: LedgerEntry) -> None:
            raise RuntimeError("metrics backend down")

    broken = Broken()
    add_call_observer(broken)
    try:
        ledger = InMemoryLedger()
        helper = _helper(fake_llm, ledger, workflow_run_id="run-b")
        assert helper.generate_text("openai:gpt-4o-mini", "hi", max_tokens=8).text
    finally:
        remove_call_observer(broken)
    assert len(ledger.entries("run-b")) == 1
    assert len(fake_llm.requests_to("chat/completions")) == 1


@pytest.mark.parametrize(("setting", "installed"), [("False", False), ("True", True)])
def test_ai_metrics_setting_turns_reporting_off(setting: str, installed: bool) -> None:
    code = (
        "from airflow_workflow_engine.hooks.telemetry import install_call_telemetry\n"
        "from airflow_workflow_engine.ai.telemetry import call_observers\n"
        "print(install_call_telemetry() is not None, len(call_observers()))\n"
    )
    env = {**os.environ, "AIRFLOW__WORKFLOW_ENGINE__AI_METRICS": setting}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[-2:] == [str(installed), "1" if installed else "0"]


_DAG_FILE = """
from airflow.sdk import DAG
from pydantic import BaseModel

from airflow_workflow_engine import define_stage
from airflow_workflow_engine.operators import StageOperator


class Question(BaseModel):
    question: str


class Answer(BaseModel):
    text: str


def _ask(ctx):
    return Answer(text=ctx.ai.generate_text("openai:gpt-4o-mini", ctx.input.question).text)


ask = define_stage(id="ask", input=Question, output=Answer, execute=_ask)

with DAG("it_ai_metrics", schedule=None) as dag:
    StageOperator(stage=ask)
"""


def test_task_processes_send_ai_metrics_through_airflows_statsd(
    airflow_env: AirflowEnv, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    """The real task runner sets Stats up from [metrics]; our counters go through it."""
    listener = StatsdListener()
    try:
        dags = tmp_path / "dags"
        dags.mkdir()
        (dags / "it_ai_metrics.py").write_text(_DAG_FILE)
        env = dataclasses.replace(
            airflow_env,
            env={
                **airflow_env.env,
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__METRICS__STATSD_ON": "True",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
                "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": fake_llm.openai_base_url,
            },
        )
        result = env.run_dag(str(dags / "it_ai_metrics.py"), "it_ai_metrics", {"question": PROMPT})
        assert result.state == "success", result.log[-4000:]
        dims = "it_ai_metrics.ask.openai.openai_gpt-4o-mini"
        listener.wait_for(f"airflow.workflow_engine.ai.calls.{dims}:")
        assert listener.counter(f"airflow.workflow_engine.ai.calls.{dims}") == 1
        assert listener.counter("airflow.workflow_engine.ai.calls") == 1
        assert listener.counter("airflow.workflow_engine.ai.input_tokens") > 0
        # Airflow's own task metrics arrive on the same listener: it is Airflow's Stats.
        assert any(line.startswith("airflow.ti.") for line in listener.lines), listener.lines[:20]
        assert not any("launch" in line for line in listener.lines)
    finally:
        listener.close()
