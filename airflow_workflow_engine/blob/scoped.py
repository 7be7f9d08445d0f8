"""A view of a blob store under one prefix: what ``ctx.blobs`` is."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.ports import BlobStore

__all__ = ["ScopedBlobStore", "run_prefix", "stage_prefix"]


def run_prefix(workflow_run_id: str) -> str:
    return f"runs/{workflow_run_id}/"


def stage_prefix(workflow_run_id: str, stage_id: str) -> str:
    return f"runs/{workflow_run_id}/stages/{stage_id}/"


class ScopedBlobStore:
    """Keys are relative to ``prefix``; ``list()`` returns relative keys."""

    def __init__(self, store: BlobStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def key(self, name: str) -> str:
        """The full key of ``name`` in the underlying store."""
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"Invalid blob name {name!r}: use a relative path without '..'.")
        return self.prefix + name

    def put(self, name: str, data: bytes, content_type: str | None = None) -> str:
        key = self.key(name)
        self.store.put(key, data, content_type)
        return key

    def put_json(self, name: str, value: Any) -> str:
        return self.put(name, json.dumps(value).encode(), "application/json")

    def get(self, name: str) -> bytes:
        return self.store.get(self.key(name))

    def get_json(self, name: str) -> Any:
        return json.loads(self.get(name))

    def has(self, name: str) -> bool:
        return self.store.has(self.key(name))

    def delete(self, name: str) -> None:
        self.store.delete(self.key(name))

    def list(self, prefix: str = "") -> list[str]:
        return [k[len(self.prefix) :] for k in self.store.list(self.prefix + prefix)]
