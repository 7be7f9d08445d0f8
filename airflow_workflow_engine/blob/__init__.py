"""Blob stores: where large stage outputs and artifacts live (memory, local disk, S3).

Names are imported on first use (PEP 562), so ``import airflow_workflow_engine.blob`` in a DAG
file loads neither boto3 nor the stores it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.blob.errors import BlobStoreError, InvalidBlobKeyError
    from airflow_workflow_engine.blob.local import LocalBlobStore
    from airflow_workflow_engine.blob.memory import InMemoryBlobStore
    from airflow_workflow_engine.blob.s3 import S3BlobStore
    from airflow_workflow_engine.blob.scoped import ScopedBlobStore, run_prefix, stage_prefix

__all__ = [
    "BlobStoreError",
    "InMemoryBlobStore",
    "InvalidBlobKeyError",
    "LocalBlobStore",
    "S3BlobStore",
    "ScopedBlobStore",
    "run_prefix",
    "stage_prefix",
]

_LAZY: dict[str, str] = {
    "BlobStoreError": "airflow_workflow_engine.blob.errors",
    "InvalidBlobKeyError": "airflow_workflow_engine.blob.errors",
    "InMemoryBlobStore": "airflow_workflow_engine.blob.memory",
    "LocalBlobStore": "airflow_workflow_engine.blob.local",
    "S3BlobStore": "airflow_workflow_engine.blob.s3",
    "ScopedBlobStore": "airflow_workflow_engine.blob.scoped",
    "run_prefix": "airflow_workflow_engine.blob.scoped",
    "stage_prefix": "airflow_workflow_engine.blob.scoped",
}

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
