"""Prices: genai-prices, register_model overrides, reported costs, unknown prices."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest

from airflow_workflow_engine.ai.models import ModelKey, UnknownModelError
from airflow_workflow_engine.ai.prices import (
    UnknownPriceWarning,
    cost_of_call,
    register_model,
    registered_price,
    unregister_model,
)


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    yield
    for key in ("openai:acme-private", "openai:gpt-5-mini", "mock:priced", "google:unknown-x"):
        unregister_model(key)


def test_registered_price_exact_with_cached_input_and_batch_discount() -> None:
    register_model(
        "openai:acme-private",
        input_per_mtok=2.5,
        output_per_mtok="10",
        cached_input_per_mtok=Decimal("1.25"),
        batch_discount=0.5,
    )
    # 1000 input of which 400 cached, 200 output:
    # 600 * 2.5 + 400 * 1.25 + 200 * 10 = 1500 + 500 + 2000 = 4000 per million = $0.004
    cost = cost_of_call(
        "openai:acme-private", input_tokens=1000, output_tokens=200, cached_tokens=400
    )
    assert (cost.amount, cost.source) == (Decimal("0.004"), "estimated")
    batch = cost_of_call(
        "openai:acme-private", input_tokens=1000, output_tokens=200, cached_tokens=400, batch=True
    )
    assert batch.amount == Decimal("0.002")


def test_registered_price_without_cached_or_batch_price_uses_standard_rates() -> None:
    register_model("openai:acme-private", input_per_mtok=1, output_per_mtok=3)
    standard = cost_of_call(
        "openai:acme-private", input_tokens=1_000_000, output_tokens=0, cached_tokens=500_000
    )
    assert standard.amount == Decimal(1)
    batch = cost_of_call("openai:acme-private", output_tokens=1_000_000, batch=True)
    assert batch.amount == Decimal(3)


def test_register_model_overrides_the_catalog() -> None:
    catalog = cost_of_call("openai:gpt-5-mini", input_tokens=1_000_000)
    register_model("openai:gpt-5-mini", input_per_mtok=7, output_per_mtok=7)
    assert cost_of_call("openai:gpt-5-mini", input_tokens=1_000_000).amount == Decimal(7)
    unregister_model("openai:gpt-5-mini")
    assert cost_of_call("openai:gpt-5-mini", input_tokens=1_000_000) == catalog


def test_catalog_prices_come_from_genai_prices() -> None:
    import genai_prices

    usage = genai_prices.Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400)
    expected = genai_prices.calc_price(usage, "gpt-5-mini", provider_id="openai").total_price
    cost = cost_of_call(
        "openai:gpt-5-mini", input_tokens=1000, output_tokens=200, cached_tokens=400
    )
    assert cost.amount == expected
    assert cost.source == "estimated"
    # Cached input is cheaper than fresh input.
    fresh = cost_of_call("openai:gpt-5-mini", input_tokens=1000, output_tokens=200)
    assert fresh.amount is not None and cost.amount is not None and cost.amount < fresh.amount


@pytest.mark.parametrize("key", ["openai:gpt-5-mini", "google:gemini-2.5-flash"])
def test_catalog_batch_prices_are_half_the_standard_ones(key: str) -> None:
    standard = cost_of_call(key, input_tokens=10_000, output_tokens=1000)
    batch = cost_of_call(key, input_tokens=10_000, output_tokens=1000, batch=True)
    assert standard.amount is not None and standard.amount > 0
    assert batch.amount == standard.amount / 2


def test_dated_model_id_from_the_response_is_priced() -> None:
    # The key's model id is unknown to the catalog; the id the provider answered with is not.
    cost = cost_of_call("openai:my-alias", model_id="gpt-5-mini-2025-08-07", input_tokens=1_000_000)
    assert cost.amount == cost_of_call("openai:gpt-5-mini", input_tokens=1_000_000).amount


def test_reported_cost_wins_and_is_marked() -> None:
    register_model("openai:acme-private", input_per_mtok=1, output_per_mtok=1)
    cost = cost_of_call("openai:acme-private", input_tokens=10, reported_cost=0.0123)
    assert (cost.amount, cost.source) == (Decimal("0.0123"), "reported")


def test_mock_models_are_free_unless_registered() -> None:
    assert cost_of_call("mock:echo", input_tokens=10**6, output_tokens=10**6).amount == 0
    register_model("mock:priced", input_per_mtok=1, output_per_mtok=2)
    assert cost_of_call("mock:priced", input_tokens=10**6, output_tokens=10**6).amount == 3


def test_unknown_price_is_none_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.warns(UnknownPriceWarning, match="register"):
        cost = cost_of_call("google:unknown-x", input_tokens=100, output_tokens=5)
        again = cost_of_call("google:unknown-x", input_tokens=100, output_tokens=5)
    assert (cost.amount, cost.source) == (None, None)
    assert again.amount is None
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "google:unknown-x" in caplog.records[0].message


def test_unknown_provider_in_the_catalog_is_an_unknown_price() -> None:
    with pytest.warns(UnknownPriceWarning):
        assert cost_of_call("acme:thing", input_tokens=1).amount is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_per_mtok": -1, "output_per_mtok": 1}, "input_per_mtok"),
        ({"input_per_mtok": 1, "output_per_mtok": "abc"}, "output_per_mtok"),
        ({"input_per_mtok": 1, "output_per_mtok": 1, "batch_discount": 1}, "fraction"),
    ],
)
def test_register_model_validates(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        register_model("openai:acme-private", **kwargs)  # type: ignore[arg-type]
    assert registered_price("openai:acme-private") is None


def test_model_keys_need_a_provider_prefix() -> None:
    with pytest.raises(UnknownModelError, match="'<provider>:<model>'"):
        register_model("gpt-5-mini", input_per_mtok=1, output_per_mtok=1)
    assert ModelKey.parse("openai:ft:gpt-4o-mini:acme::x1") == ModelKey(
        "openai", "ft:gpt-4o-mini:acme::x1"
    )
    with pytest.raises(UnknownModelError, match="known providers: google, mock, openai"):
        ModelKey.parse("anthropic:claude", ["openai", "google", "mock"])
