"""``ctx.ai.batch(model)``: provider batch jobs (half the price, hours of latency).

``submit`` is idempotent per ``idempotency_key``: when a live or finished batch was already
submitted under the key (a worker died after submitting, Airflow retried the task), it is
re-attached instead of paying for a second one. ``results`` writes one ledger row per request
(``call_type="batch"``, linked by batch id and request id, priced at batch rates); the rows'
ids derive from the batch and request ids, so reading the results twice records them once.
Submitting, polling, finding and cancelling are not billed and leave no rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_workflow_engine.ai.models import ModelKey
from airflow_workflow_engine.ai.providers.base import (
    BatchHandle,
    BatchItemResult,
    BatchRequest,
    BatchState,
    BatchStatus,
    ProviderAdapter,
    check_batch_requests,
)
from airflow_workflow_engine.ai.recorder import CallRecorder, Usage
from airflow_workflow_engine.ai.results import BatchItem

__all__ = ["AIBatch", "batch_fingerprint"]

_DEAD = {BatchState.FAILED, BatchState.CANCELLED, BatchState.EXPIRED}

HandleLike = BatchHandle | Mapping[str, Any]
RequestLike = BatchRequest | Mapping[str, Any]


def batch_fingerprint(model: str, requests: Sequence[BatchRequest], *parts: str) -> str:
    """A stable hash of a batch's model, requests and any extra ``parts`` (e.g. run and stage
    ids): the same inputs give the same idempotency key in any process, on any attempt."""
    payload = json.dumps(
        [list(parts), model, [r.model_dump(mode="json") for r in requests]],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


class AIBatch:
    """The batch API of one model, bound to a helper's ledger identity and budget."""

    def __init__(self, recorder: CallRecorder, key: ModelKey, adapter: ProviderAdapter) -> None:
        self._recorder = recorder
        self._key = key
        self._adapter = adapter

    @property
    def model(self) -> str:
        return str(self._key)

    def __repr__(self) -> str:
        return f"AIBatch({self.model!r})"

    def submit(
        self, requests: Sequence[RequestLike], *, idempotency_key: str | None = None
    ) -> BatchHandle:
        """Submits the requests (or re-attaches to the batch already submitted under the key;
        by default the key is a hash of the helper's topic, the model and the requests).
        Store the handle with ``handle.model_dump(mode="json")``."""
        batch_requests = [
            r if isinstance(r, BatchRequest) else BatchRequest.model_validate(r) for r in requests
        ]
        ids = check_batch_requests(batch_requests)
        key = idempotency_key or batch_fingerprint(
            self.model, batch_requests, self._recorder.identity.topic
        )
        existing = self.find(key)
        if existing is not None and self.status(existing).state not in _DEAD:
            return existing.model_copy(update={"request_ids": ids, "model_id": self._key.model_id})
        self._recorder.check_budget(self._key)
        model_id = self._key.model_id
        return self._recorder.control(
            lambda: self._adapter.batch_submit(model_id, batch_requests, idempotency_key=key)
        )

    def find(self, idempotency_key: str) -> BatchHandle | None:
        """The batch submitted under ``idempotency_key``, in any state, if any."""
        return self._recorder.control(lambda: self._adapter.batch_find(idempotency_key))

    def status(self, handle: HandleLike) -> BatchStatus:
        checked = self._handle(handle)
        return self._recorder.control(lambda: self._adapter.batch_status(checked))

    def cancel(self, handle: HandleLike) -> BatchStatus:
        checked = self._handle(handle)
        return self._recorder.control(lambda: self._adapter.batch_cancel(checked))

    def results(self, handle: HandleLike) -> list[BatchItem]:
        """One item per request (in submission order), each recorded in the ledger once."""
        checked = self._handle(handle)
        raw = self._recorder.control(lambda: self._adapter.batch_results(checked))
        return [self._record(checked, item) for item in raw]

    def _record(self, handle: BatchHandle, item: BatchItemResult) -> BatchItem:
        usage = Usage(
            model_id=handle.model_id or self._key.model_id,
            input_tokens=item.input_tokens,
            output_tokens=item.output_tokens,
            cached_tokens=item.cached_tokens,
            response=item.text,
        )
        row_id = hashlib.sha256(
            f"batch\x00{handle.provider}\x00{handle.batch_id}\x00{item.id}".encode()
        ).hexdigest()[:32]
        entry = self._recorder.record_usage(
            "batch",
            self._key,
            self._adapter.name,
            usage,
            latency_s=None,
            prompt=None,
            error=None if item.ok else (item.error or "failed"),
            batch=True,
            batch_id=handle.batch_id,
            request_id=item.id,
            entry_id=row_id,
        )
        return BatchItem(
            id=item.id,
            ok=item.ok,
            text=item.text,
            parsed=item.parsed,
            error=item.error,
            input_tokens=item.input_tokens,
            output_tokens=item.output_tokens,
            cached_tokens=item.cached_tokens,
            cost=entry.cost,
            cost_source=entry.cost_source,
        )

    def _handle(self, handle: HandleLike) -> BatchHandle:
        checked = handle if isinstance(handle, BatchHandle) else BatchHandle.model_validate(handle)
        if checked.provider != self._adapter.name:
            raise ValueError(
                f"batch {checked.batch_id} belongs to provider {checked.provider!r}, not to "
                f"{self.model!r}: use ctx.ai.batch('{checked.provider}:{checked.model_id}')"
            )
        return checked
