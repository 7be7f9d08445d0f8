"""A retry after a lost attempt (its worker killed after the provider answered) reuses the
answers that attempt recorded instead of paying for them again; a failed attempt's retry asks
again; without the response in the ledger (prompt policy ``hash``) there is nothing to reuse."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
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
from tests.backends import BACKENDS, backend_params
from tests.fake_llm_fixtures import fake_llm

__all__ = ["fake_llm"]

MODEL = "openai:gpt-test"
CHAT = "chat/completions"


class Verdict(BaseModel):
    label: str


@pytest.fixture(params=backend_params())
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    if request.param == "memory":
        yield InMemoryLedger()
        return
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    with BACKENDS[request.param](request) as store:
        yield SqlLedger(store.engine)


def attempt_helper(
    fake: FakeLLMServer, ledger: Ledger, attempt: int, policy: PromptPolicy = "store"
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
