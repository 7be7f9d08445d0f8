"""A blob store in an S3 bucket (AWS S3, MinIO, Ceph, moto) through boto3.

boto3 is imported only when the store builds its own client, so importing this module (say,
while Airflow parses a DAG file) costs nothing. Errors come back as the engine's own:
a missing key is :class:`~airflow_workflow_engine.errors.BlobNotFoundError`, anything else
botocore raises is a :class:`~airflow_workflow_engine.blob.errors.BlobStoreError` naming the
bucket, the key and the cause.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from airflow_workflow_engine.blob.errors import BlobStoreError
from airflow_workflow_engine.errors import BlobNotFoundError

__all__ = ["S3BlobStore"]

#: ``DeleteObjects`` takes at most this many keys per request.
_DELETE_BATCH = 1000
#: Codes S3 answers a missing object with (``HeadObject`` has no body, so only the status).
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_BUCKET_MISSING_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
_CREDENTIALS_HINT = (
    "Check the credentials the store uses (the Airflow connection, environment, profile or "
    "instance role)."
)
#: Causes retrying cannot fix, with what to do instead.
_PERMANENT_CAUSES: dict[str, str] = {
    "NoSuchBucket": "Create the bucket or fix the bucket name.",
    "InvalidBucketName": "Fix the bucket name.",
    "AccessDenied": (
        "Grant s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket "
        "(without s3:ListBucket S3 answers 403 for missing keys)."
    ),
    "403": (
        "Grant s3:GetObject and s3:ListBucket on the bucket (without s3:ListBucket S3 answers "
        "403 for missing keys)."
    ),
    "AllAccessDisabled": "Access to the bucket is disabled; use another bucket.",
    "InvalidAccessKeyId": _CREDENTIALS_HINT,
    "SignatureDoesNotMatch": _CREDENTIALS_HINT,
    "ExpiredToken": _CREDENTIALS_HINT,
    "KeyTooLongError": "Use a key of at most 1024 bytes (including the store's prefix).",
}


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (duck-typed: no botocore import)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    return str(error.get("Code")) if isinstance(error, dict) and "Code" in error else None


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class S3BlobStore:
    """Keys are object keys under ``prefix`` in ``bucket``; ``content_type`` is stored.

    Pass a ready ``client`` (boto3's ``s3`` client, say from Airflow's ``S3Hook.get_conn()``),
    or the connection settings to build one; ``config`` is a ``botocore.config.Config``
    (timeouts, retries, addressing style). Credentials are handed to boto3 and not kept.
    boto3 clients are thread-safe, so one store may serve many threads.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        config: Any = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3BlobStore needs a bucket name.")
        settings = (
            region_name,
            endpoint_url,
            aws_access_key_id,
            aws_secret_access_key,
            aws_session_token,
            config,
        )
        if client is not None and any(s is not None for s in settings):
            raise ValueError(
                "Pass either a ready S3 client or the settings to build one "
                "(region_name, endpoint_url, credentials, config), not both."
            )
        self.bucket = bucket
        #: Joined to every key; normalized to end in '/' so stores do not see each other's keys.
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if client is None:
            import boto3  # here, not at module level: importing this module stays cheap

            session = boto3.session.Session(
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                region_name=region_name,
            )
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.client: Any = client
        self._bucket_seen = False

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- the BlobStore port --------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        full_key = self.prefix + key
        extra = {"ContentType": content_type} if content_type else {}
        with self._errors("put", full_key):
            self.client.put_object(Bucket=self.bucket, Key=full_key, Body=data, **extra)

    def get(self, key: str) -> bytes:
        full_key = self.prefix + key
        with self._errors("get", full_key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=full_key)
            except Exception as exc:
                if _error_code(exc) in _NOT_FOUND_CODES:
                    raise BlobNotFoundError(key) from None
                raise
            body: bytes = response["Body"].read()
            return body

    def has(self, key: str) -> bool:
        full_key = self.prefix + key
        with self._errors("check", full_key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=full_key)
            except Exception as exc:
                if _error_code(exc) not in _NOT_FOUND_CODES:
                    raise
                # HeadObject answers a bare 404 for a missing bucket too: tell the two apart
                # (once) rather than report a missing bucket as a missing key.
                self._check_bucket(full_key)
                return False
            return True

    def delete(self, key: str) -> None:
        full_key = self.prefix + key
        with self._errors("delete", full_key):
            self.client.delete_object(Bucket=self.bucket, Key=full_key)

    def list(self, prefix: str = "") -> list[str]:
        full_prefix = self.prefix + prefix
        start = len(self.prefix)
        keys: list[str] = []
        with self._errors("list keys under", full_prefix):
            for page in self._pages(full_prefix):
                keys.extend(obj["Key"][start:] for obj in page.get("Contents", ()))
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        full_prefix = self.prefix + prefix
        deleted = 0
        with self._errors("delete keys under", full_prefix):
            # S3's continuation token marks the last key listed, so deleting page by page is
            # safe and keeps memory flat however many keys there are.
            for page in self._pages(full_prefix):
                keys = [obj["Key"] for obj in page.get("Contents", ())]
                for chunk in _chunks(keys, _DELETE_BATCH):
                    deleted += self._delete_batch(full_prefix, chunk)
        return deleted

    # -- helpers -------------------------------------------------------------------------------

    def _pages(self, full_prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        yield from paginator.paginate(Bucket=self.bucket, Prefix=full_prefix)

    def _delete_batch(self, full_prefix: str, keys: Sequence[str]) -> int:
        response = self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
        )
        errors: list[dict[str, Any]] = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise BlobStoreError(
                store=f"S3 bucket '{self.bucket}'",
                bucket=self.bucket,
                operation="delete keys under",
                key=full_prefix,
                cause=(
                    f"{len(errors)} of {len(keys)} deletions failed, the first for "
                    f"'{first.get('Key')}': {first.get('Code')} ({first.get('Message')})"
                ),
                hint=_PERMANENT_CAUSES.get(str(first.get("Code")), ""),
            )
        return len(keys)

    def _check_bucket(self, full_key: str) -> None:
        """Raises :class:`BlobStoreError` if the bucket is missing; remembers a bucket seen."""
        if self._bucket_seen:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _error_code(exc) in _BUCKET_MISSING_CODES:
                raise self._bucket_missing("check", full_key) from exc
            raise
        self._bucket_seen = True

    @contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        """Turns botocore's errors into :class:`BlobStoreError`; lets the engine's own pass."""
        try:
            yield
        except Exception as exc:
            error = self._store_error(operation, key, exc)
            if error is None:
                raise
            raise error from exc

    def _bucket_missing(self, operation: str, key: str) -> BlobStoreError:
        return BlobStoreError(
            store=f"S3 bucket '{self.bucket}'",
            bucket=self.bucket,
            operation=operation,
            key=key,
            cause="NoSuchBucket (the bucket does not exist)",
            hint=_PERMANENT_CAUSES["NoSuchBucket"],
            retryable=False,
        )

    def _store_error(self, operation: str, key: str, exc: Exception) -> BlobStoreError | None:
        """The :class:`BlobStoreError` for a botocore error; ``None`` for any other error."""
        store = f"S3 bucket '{self.bucket}'"
        code = _error_code(exc)
        if code is not None:  # the service answered with an error
            response: dict[str, Any] = getattr(exc, "response", {})
            message = str(response.get("Error", {}).get("Message") or "")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            cause = code + (f" ({message})" if message and message != code else "")
            cause += f", HTTP {status}" if status else ""
            permanent = code in _PERMANENT_CAUSES
            return BlobStoreError(
                store=store,
                bucket=self.bucket,
                operation=operation,
                key=key,
                cause=cause,
                hint=_PERMANENT_CAUSES.get(code, ""),
                retryable=not permanent and (status is None or status >= 500 or status == 429),
            )
        try:
            from botocore import exceptions as boto_errors
        except ImportError:  # a client that is not botocore's: its errors are its own
            return None
        if not isinstance(exc, boto_errors.BotoCoreError):
            return None
        credentials = isinstance(
            exc, (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError)
        )
        network = isinstance(
            exc,
            (
                boto_errors.EndpointConnectionError,
                boto_errors.ConnectTimeoutError,
                boto_errors.ReadTimeoutError,
                boto_errors.ConnectionClosedError,
            ),
        )
        if credentials:
            hint = _CREDENTIALS_HINT
        elif network:
            hint = "Check the endpoint URL, the region and that the network reaches S3."
        else:
            hint = ""
        return BlobStoreError(
            store=store,
            bucket=self.bucket,
            operation=operation,
            key=key,
            cause=f"{type(exc).__name__}: {exc}",
            hint=hint,
            retryable=network,
        )
