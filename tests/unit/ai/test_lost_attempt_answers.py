"""A retry after a lost attempt (its worker killed after the provider answered) reuses the
answers that attempt recorded instead of paying for them again; a failed attempt's retry asks
again; without the response in the ledger (prompt policy ``hash``) there is nothing to reuse."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine.ai import (
    InMemoryLedger,
    Ledger,
    ProviderSettings,
    RetryPolicy,
    create_ai_helper,
)
from airflow_workflow_engine.ai.helper import AIHelper
from airflow_workflow_engine.ai.prompts import PromptPolicy
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.fake_llm_fixtures import fake_llm
from tests.unit.ai.test_ledger import ledger  # every backend: memory, SQLite, PostgreSQL

__all__ = ["fake_llm", "ledger"]

MODEL = "openai:gpt-test"
CHAT = "chat/completions"


class Verdict(BaseModel):
    label: str


#: When the stage execution's row was created (the kernel passes it in a stage).
EXECUTION_START = datetime(2020, 1, 1, tzinfo=timezone.utc)


def attempt_helper(
    fake: FakeLLMServer,
    ledger: Ledger,
    attempt: int,
    policy: PromptPolicy = "store",
    since: datetime = EXECUTION_START,
) -> AIHelper:
    return create_ai_helper(
        "workflow.run-1.stage.summarize",
        ledger,
        providers={"openai": ProviderSettings(api_key="sk-test", base_url=fake.openai_base_url)},
        prompt_policy=policy,
        run_id="run-1",
        stage_id="summarize",
        attempt=attempt,
        retry=RetryPolicy(sleep=lambda _: None, rng=random.Random(7)),
        reuse_answers_since=since,
    )


def rows(ledger: Ledger) -> list[Any]:
    return ledger.entries("run-1", "summarize")


def test_a_lost_attempt_s_answers_are_reused_by_the_retry_in_order(
    fake_llm: FakeLLMServer, ledger: Ledger
) -> None:
    fake_llm.script("first answer")
    fake_llm.script("second answer")
    fake_llm.script('{"label": "ops"}')
    lost = attempt_helper(fake_llm, ledger, 1)
    assert lost.generate_text(MODEL, "same prompt").text == "first answer"
    assert lost.generate_text(MODEL, "same prompt").text == "second answer"
    assert lost.generate_object(MODEL, "classify", Verdict).object == Verdict(label="ops")
    # The worker dies here: the rows stay, nothing marks them failed.
    paid = len(fake_llm.requests_to(CHAT))
    assert paid == 3 and len(rows(ledger)) == 3

    fake_llm.script("a new answer")
    retry = attempt_helper(fake_llm, ledger, 2)
    first = retry.generate_text(MODEL, "same prompt")
    assert (first.text, first.input_tokens) == ("first answer", rows(ledger)[0].input_tokens)
    assert retry.generate_text(MODEL, "same prompt").text == "second answer"
    assert retry.generate_object(MODEL, "classify", Verdict).object == Verdict(label="ops")
    assert len(fake_llm.requests_to(CHAT)) == paid, "the retry paid for a recorded answer"
    # A third identical call, and another prompt, had no answer: those are asked.
    assert retry.generate_text(MODEL, "same prompt").text == "a new answer"
    fake_llm.script("other")
    assert retry.generate_text(MODEL, "another prompt").text == "other"
    assert len(fake_llm.requests_to(CHAT)) == paid + 2
    assert [r.attempt for r in rows(ledger)] == [1, 1, 1, 2, 2]


def test_a_failed_attempt_s_retry_asks_again(fake_llm: FakeLLMServer, ledger: Ledger) -> None:
    fake_llm.script("a bad answer")
    attempt_helper(fake_llm, ledger, 1).generate_text(MODEL, "prompt")
    mark = ledger.mark_failed  # what the kernel does when an attempt raises
    mark("run-1", "summarize", 1, "stage attempt 1 failed: ValueError: bad answer")
    fake_llm.script("a good answer")
    assert attempt_helper(fake_llm, ledger, 2).generate_text(MODEL, "prompt").text == (
        "a good answer"
    )
    assert len(fake_llm.requests_to(CHAT)) == 2 and len(rows(ledger)) == 2


def test_the_same_attempt_and_other_stages_never_reuse_answers(
    fake_llm: FakeLLMServer,
) -> None:
    ledger = InMemoryLedger()
    fake_llm.script("one")
    fake_llm.script("two")
    helper = attempt_helper(fake_llm, ledger, 2)
    assert helper.generate_text(MODEL, "prompt").text == "one"
    assert helper.generate_text(MODEL, "prompt").text == "two"  # its own answers: asked
    assert len(fake_llm.requests_to(CHAT)) == 2


def test_without_the_response_in_the_ledger_the_retry_pays_again(
    fake_llm: FakeLLMServer,
) -> None:
    ledger = InMemoryLedger()
    fake_llm.script("hashed")
    attempt_helper(fake_llm, ledger, 1, policy="hash").generate_text(MODEL, "prompt")
    fake_llm.script("asked again")
    retry = attempt_helper(fake_llm, ledger, 2, policy="hash")
    assert retry.generate_text(MODEL, "prompt").text == "asked again"
    assert len(fake_llm.requests_to(CHAT)) == 2


def test_a_rerun_of_a_finished_stage_asks_again(fake_llm: FakeLLMServer, ledger: Ledger) -> None:
    fake_llm.script("the first execution's answer")
    attempt_helper(fake_llm, ledger, 1).generate_text(MODEL, "prompt")
    # The stage completed; a rerun is a new execution (a new stage row), started after that.
    rerun_start = datetime.now(timezone.utc) + timedelta(seconds=1)
    fake_llm.script("the rerun's answer")
    rerun = attempt_helper(fake_llm, ledger, 2, since=rerun_start)
    assert rerun.generate_text(MODEL, "prompt").text == "the rerun's answer"
    assert len(fake_llm.requests_to(CHAT)) == 2 and len(rows(ledger)) == 2
