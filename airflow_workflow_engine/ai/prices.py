"""What a model call cost: tokens x price, from the maintained ``genai-prices`` package.

* Prices come from ``genai-prices`` (cached-input and batch prices included where it has
  them), imported on the first lookup, never at module import.
* :func:`register_model` overrides or adds a price for a model key: private deployments,
  fine-tunes, models newer than the installed ``genai-prices``, or fixed prices for tests.
* ``mock:*`` models cost nothing unless registered.
* A model with no known price costs ``None`` and logs a warning (once per model key): the
  engine never makes a number up. A missing ``genai-prices`` package is the same case (no
  price known), never an error: the call it would price has been made and paid for.
* A cost the provider reported itself wins over any estimate and is marked ``"reported"``.

Token convention (as in :mod:`~airflow_workflow_engine.ai.providers.base`): ``input_tokens``
includes ``cached_tokens``; ``output_tokens`` includes reasoning tokens.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from airflow_workflow_engine.ai.models import ModelKey

__all__ = [
    "CallCost",
    "CostSource",
    "ModelPrice",
    "UnknownPriceWarning",
    "cost_of_call",
    "register_model",
    "registered_price",
    "unregister_model",
]

logger = logging.getLogger(__name__)

CostSource = Literal["reported", "estimated"]
Number = int | float | str | Decimal

_MTOK = Decimal(1_000_000)
_FREE_PROVIDERS = frozenset({"mock"})


class UnknownPriceWarning(UserWarning):
    """A model call was recorded without a cost because its price is unknown."""


def _decimal(name: str, value: Number) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens. ``batch_discount`` is the fraction batch jobs save (0.5 = half
    price); without one, batch requests cost the standard price."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    batch_discount: Decimal | None = None

    def cost(
        self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, *, batch: bool = False
    ) -> Decimal:
        cached = min(cached_tokens, input_tokens)
        cached_price = (
            self.cached_input_per_mtok
            if self.cached_input_per_mtok is not None
            else self.input_per_mtok
        )
        total = (
            Decimal(input_tokens - cached) * self.input_per_mtok
            + Decimal(cached) * cached_price
            + Decimal(output_tokens) * self.output_per_mtok
        ) / _MTOK
        if batch and self.batch_discount is not None:
            total *= Decimal(1) - self.batch_discount
        return total


@dataclass(frozen=True)
class CallCost:
    """``amount`` is ``None`` when the price is unknown (then ``source`` is ``None`` too)."""

    amount: Decimal | None
    source: CostSource | None


_registry: dict[str, ModelPrice] = {}
_registry_lock = threading.Lock()
_warned: set[str] = set()


def register_model(
    key: str,
    *,
    input_per_mtok: Number,
    output_per_mtok: Number,
    cached_input_per_mtok: Number | None = None,
    batch_discount: Number | None = None,
) -> ModelPrice:
    """Sets the price of ``key`` (``"<provider>:<model id>"``) for this process; it wins over
    ``genai-prices``. Prices are USD per million tokens::

        register_model("openai:ft:gpt-4o-mini:acme::x1", input_per_mtok=0.3, output_per_mtok=1.2)
    """
    parsed = ModelKey.parse(key)
    discount = None if batch_discount is None else _decimal("batch_discount", batch_discount)
    if discount is not None and discount >= 1:
        raise ValueError(f"batch_discount is a fraction below 1 (0.5 = half price), got {discount}")
    price = ModelPrice(
        input_per_mtok=_decimal("input_per_mtok", input_per_mtok),
        output_per_mtok=_decimal("output_per_mtok", output_per_mtok),
        cached_input_per_mtok=None
        if cached_input_per_mtok is None
        else _decimal("cached_input_per_mtok", cached_input_per_mtok),
        batch_discount=discount,
    )
    with _registry_lock:
        _registry[str(parsed)] = price
        _warned.discard(str(parsed))
    return price


def unregister_model(key: str) -> None:
    """Removes a :func:`register_model` price (``genai-prices`` applies again)."""
    with _registry_lock:
        _registry.pop(str(ModelKey.parse(key)), None)


def registered_price(key: str) -> ModelPrice | None:
    with _registry_lock:
        return _registry.get(str(ModelKey.parse(key)))


def cost_of_call(
    model_key: str,
    *,
    provider: str | None = None,
    model_id: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_tokens: int = 0,
    batch: bool = False,
    reported_cost: float | Decimal | None = None,
) -> CallCost:
    """The cost of one call (or one batch request).

    Lookup order: the provider's ``reported_cost``; :func:`register_model`; ``mock`` (free);
    ``genai-prices`` for ``provider`` (default: the key's) and ``model_id`` (the id the
    provider answered with, e.g. a dated snapshot), then the key's own model id.
    """
    if reported_cost is not None:
        return CallCost(_decimal("reported_cost", reported_cost), "reported")
    key = ModelKey.parse(model_key)
    name = str(key)
    with _registry_lock:
        price = _registry.get(name)
    if price is None and key.provider in _FREE_PROVIDERS:
        price = ModelPrice(Decimal(0), Decimal(0))
    if price is not None:
        return CallCost(
            price.cost(input_tokens, output_tokens, cached_tokens, batch=batch), "estimated"
        )
    refs = [r for r in dict.fromkeys((model_id, key.model_id)) if r]
    for ref in refs:
        amount = _catalog_cost(
            provider or key.provider,
            ref,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached=cached_tokens,
            batch=batch,
        )
        if amount is not None:
            return CallCost(amount, "estimated")
    _warn_unknown(name, refs)
    return CallCost(None, None)


def _catalog_cost(
    provider: str,
    model_ref: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cached: int,
    batch: bool,
) -> Decimal | None:
    genai_prices = _catalog()
    if genai_prices is None:
        return None
    usage = genai_prices.Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=min(cached, input_tokens),
    )
    context: dict[str, str] | None = {"processing": "batch"} if batch else None
    try:
        result: Any = genai_prices.calc_price(
            usage, model_ref, provider_id=provider, price_context=context
        )
    except (LookupError, ValueError):
        return None
    total = result.total_price
    return total if isinstance(total, Decimal) else Decimal(str(total))


def _catalog() -> Any:
    """The ``genai_prices`` module, or ``None`` when it is not installed (prices unknown)."""
    try:
        import genai_prices
    except ImportError:
        return None
    return genai_prices


def _warn_unknown(model_key: str, refs: list[str]) -> None:
    with _registry_lock:
        if model_key in _warned:
            return
        _warned.add(model_key)
    where = (
        f"looked up {', '.join(refs)} in genai-prices"
        if _catalog() is not None
        else "the price catalogue genai-prices is not installed: "
        "pip install 'airflow-workflow-engine[prices]'"
    )
    message = (
        f"No price known for model {model_key!r} ({where}): "
        "its calls are recorded with their tokens and cost=None. Set a price with "
        f"airflow_workflow_engine.ai.register_model({model_key!r}, input_per_mtok=..., "
        "output_per_mtok=...)."
    )
    logger.warning(message)
    warnings.warn(message, UnknownPriceWarning, stacklevel=3)
