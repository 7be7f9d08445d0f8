"""The AI side: ``ctx.ai`` (the AI helper), prices, the cost ledger, budgets, batch stages.

Names load lazily (PEP 562): importing this package imports neither ``openai``,
``google.genai``, ``genai_prices`` nor SQLAlchemy; each is imported when first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.batch import AIBatch
    from airflow_workflow_engine.ai.batch_stage import define_ai_batch_stage
    from airflow_workflow_engine.ai.budget import AIBudgetExceededError, Budget
    from airflow_workflow_engine.ai.context import (
        WorkflowAIPolicy,
        make_ai_factory,
        stage_topic,
    )
    from airflow_workflow_engine.ai.helper import AIHelper, create_ai_helper
    from airflow_workflow_engine.ai.ledger import (
        InMemoryLedger,
        Ledger,
        LedgerEntry,
        RollupRow,
    )
    from airflow_workflow_engine.ai.models import ModelKey, UnknownModelError
    from airflow_workflow_engine.ai.prices import (
        ModelPrice,
        UnknownPriceWarning,
        cost_of_call,
        register_model,
        unregister_model,
    )
    from airflow_workflow_engine.ai.prompts import PromptPolicy
    from airflow_workflow_engine.ai.providers.base import BatchHandle, BatchRequest
    from airflow_workflow_engine.ai.recorder import RetryPolicy
    from airflow_workflow_engine.ai.report import cost_table
    from airflow_workflow_engine.ai.results import (
        BatchItem,
        EmbedResult,
        ObjectResult,
        TextResult,
    )
    from airflow_workflow_engine.ai.settings import ProviderRegistry, ProviderSettings
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.ai.streaming import TextStream

_EXPORTS: dict[str, str] = {
    "AIBatch": "batch",
    "define_ai_batch_stage": "batch_stage",
    "AIBudgetExceededError": "budget",
    "Budget": "budget",
    "WorkflowAIPolicy": "context",
    "make_ai_factory": "context",
    "stage_topic": "context",
    "AIHelper": "helper",
    "create_ai_helper": "helper",
    "InMemoryLedger": "ledger",
    "Ledger": "ledger",
    "LedgerEntry": "ledger",
    "RollupRow": "ledger",
    "ModelKey": "models",
    "UnknownModelError": "models",
    "ModelPrice": "prices",
    "UnknownPriceWarning": "prices",
    "cost_of_call": "prices",
    "register_model": "prices",
    "unregister_model": "prices",
    "PromptPolicy": "prompts",
    "BatchHandle": "providers.base",
    "BatchRequest": "providers.base",
    "RetryPolicy": "recorder",
    "cost_table": "report",
    "BatchItem": "results",
    "EmbedResult": "results",
    "ObjectResult": "results",
    "TextResult": "results",
    "ProviderRegistry": "settings",
    "ProviderSettings": "settings",
    "SqlLedger": "sql_ledger",
    "TextStream": "streaming",
}

__all__ = [
    "AIBatch",
    "AIBudgetExceededError",
    "AIHelper",
    "BatchHandle",
    "BatchItem",
    "BatchRequest",
    "Budget",
    "EmbedResult",
    "InMemoryLedger",
    "Ledger",
    "LedgerEntry",
    "ModelKey",
    "ModelPrice",
    "ObjectResult",
    "PromptPolicy",
    "ProviderRegistry",
    "ProviderSettings",
    "RetryPolicy",
    "RollupRow",
    "SqlLedger",
    "TextResult",
    "TextStream",
    "UnknownModelError",
    "UnknownPriceWarning",
    "WorkflowAIPolicy",
    "cost_of_call",
    "cost_table",
    "create_ai_helper",
    "define_ai_batch_stage",
    "make_ai_factory",
    "register_model",
    "stage_topic",
    "unregister_model",
]

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, relative=True, public=__all__)
