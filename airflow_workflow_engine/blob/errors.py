"""Errors of the blob-store adapters (a missing key is :class:`~..errors.BlobNotFoundError`).

They live here rather than in :mod:`airflow_workflow_engine.errors` because only the adapters
raise them; both derive from :class:`~airflow_workflow_engine.errors.WorkflowEngineError`.
"""

from __future__ import annotations

import re

from airflow_workflow_engine.errors import WorkflowEngineError

__all__ = ["BlobStoreError", "InvalidBlobKeyError", "redact_url_credentials"]

_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact_url_credentials(text: str) -> str:
    """Hides ``user:password@`` in URLs so an endpoint in a cause never leaks a secret."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


class BlobStoreError(WorkflowEngineError):
    """The store could not be reached or refused the operation (not a missing key).

    The message names the store (bucket or directory), the key and the cause, and never the
    credentials. ``retryable`` is false when retrying cannot help (no such bucket, access
    denied, bad credentials) and true for transient causes (endpoint unreachable, throttling).
    """

    def __init__(
        self,
        *,
        store: str,
        operation: str,
        key: str | None,
        cause: str,
        hint: str = "",
        retryable: bool = True,
        bucket: str | None = None,
    ) -> None:
        self.store = store
        self.operation = operation
        self.key = key
        self.cause = redact_url_credentials(cause)
        self.bucket = bucket
        self.retryable = retryable
        target = f" '{key}'" if key is not None else ""
        tail = f" {hint}" if hint else ""
        cause_text = self.cause.rstrip(". ")
        super().__init__(f"Blob store {store} could not {operation}{target}: {cause_text}.{tail}")


class InvalidBlobKeyError(WorkflowEngineError, ValueError):
    """A key that would escape the store's root or not round-trip through ``list()``."""

    retryable = False

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(
            f"Invalid blob key {key!r}: {reason}. Use a relative path of '/'-separated names "
            "without '.', '..' or empty segments."
        )
