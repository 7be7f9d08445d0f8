"""One contract for every BlobStore (memory, local disk, S3 over moto's server), then extras.

The contract is what the engine relies on; the per-store tests cover what only that store can
get wrong (paths escaping the root, atomic writes, S3 errors and paging, import cost).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from airflow_workflow_engine.blob.errors import BlobStoreError, InvalidBlobKeyError
from airflow_workflow_engine.blob.local import LocalBlobStore
from airflow_workflow_engine.blob.memory import InMemoryBlobStore
from airflow_workflow_engine.blob.s3 import S3BlobStore
from airflow_workflow_engine.blob.scoped import ScopedBlobStore, stage_prefix
from airflow_workflow_engine.errors import BlobNotFoundError, WorkflowEngineError
from airflow_workflow_engine.kernel.ports import BlobStore

if TYPE_CHECKING:
    from tests.moto_fixtures import MotoBucket


def seed_objects(bucket: str, objects: dict[str, bytes]) -> None:
    from tests.moto_fixtures import seed_objects as seed  # imported once the plugin is loaded

    seed(bucket, objects)


# Registered as a plugin (not imported names) so a conftest that provides the same fixtures
# takes precedence and the moto server still starts once per session.
pytest_plugins = ["tests.moto_fixtures"]

STORE_KINDS = ["memory", "local", "s3"]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return InMemoryBlobStore()
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    bucket: MotoBucket = request.getfixturevalue("s3_bucket")
    return S3BlobStore(bucket.name, prefix="engine", client=bucket.client)


def put_many(store: BlobStore, keys: list[str], data: Callable[[str], bytes]) -> None:
    """Writes ``keys`` from a few threads: quicker against S3, and concurrent writers."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: store.put(k, data(k)), keys))


# -- the contract ------------------------------------------------------------------------------


def test_implements_the_port(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)


def test_put_get_has_delete(store: BlobStore) -> None:
    key = "runs/r1/stages/s1/output.json"
    assert not store.has(key)
    store.put(key, b'{"a": 1}', "application/json")
    assert store.has(key)
    assert store.get(key) == b'{"a": 1}'
    store.delete(key)
    assert not store.has(key)
    assert store.list() == []


def test_put_overwrites(store: BlobStore) -> None:
    store.put("k/v", b"first, and longer")
    store.put("k/v", b"second")
    assert store.get("k/v") == b"second"
    assert store.list() == ["k/v"]


@pytest.mark.parametrize("data", [bytes(range(256)) * 4, b"", b"\x00\r\n\xff"])
def test_binary_data_round_trips(store: BlobStore, data: bytes) -> None:
    store.put("bin/data.bin", data, "application/octet-stream")
    assert store.get("bin/data.bin") == data


def test_missing_key_raises_blob_not_found(store: BlobStore) -> None:
    store.put("runs/r1/present", b"x")
    with pytest.raises(BlobNotFoundError) as info:
        store.get("runs/r1/absent")
    assert info.value.key == "runs/r1/absent"
    assert "'runs/r1/absent'" in str(info.value)
    assert not info.value.retryable
    with pytest.raises(BlobNotFoundError):
        store.get("runs")  # a "directory" of other keys is not a blob


def test_delete_missing_is_a_no_op(store: BlobStore) -> None:
    store.delete("never/written")
    store.put("a/b", b"x")
    store.delete("a")  # a prefix of a key, not a key
    assert store.get("a/b") == b"x"


KEYS = [
    "runs/r1/stages/b/out.json",
    "runs/r1/stages/a/out.json",
    "runs/r1/stages/a/deep/nested/part-0001",
    "runs/r1/input.json",
    "runs/r10/input.json",
    "runs/r2/input.json",
    "other/thing",
]


def test_list_by_prefix(store: BlobStore) -> None:
    for key in KEYS:
        store.put(key, key.encode())
    assert store.list() == sorted(KEYS)
    assert store.list("runs/r1/") == [
        "runs/r1/input.json",
        "runs/r1/stages/a/deep/nested/part-0001",
        "runs/r1/stages/a/out.json",
        "runs/r1/stages/b/out.json",
    ]
    # Prefixes are plain string prefixes, not path segments.
    assert store.list("runs/r1") == sorted(k for k in KEYS if k.startswith("runs/r1"))
    assert "runs/r10/input.json" in store.list("runs/r1")
    assert store.list("runs/r1/stages/a") == [
        "runs/r1/stages/a/deep/nested/part-0001",
        "runs/r1/stages/a/out.json",
    ]
    assert store.list("runs/r1/inp") == ["runs/r1/input.json"]
    assert store.list("runs/r1/input.json") == ["runs/r1/input.json"]
    assert store.list("runs/r3/") == []
    assert store.list("nope") == []


def test_delete_prefix_counts_and_spares_other_prefixes(store: BlobStore) -> None:
    for key in KEYS:
        store.put(key, b"x")
    assert store.delete_prefix("runs/r1/") == 4
    assert store.list() == ["other/thing", "runs/r10/input.json", "runs/r2/input.json"]
    assert store.delete_prefix("runs/r1/") == 0
    assert store.delete_prefix("runs/") == 2
    assert store.list() == ["other/thing"]
    assert store.get("other/thing") == b"x"


def test_delete_prefix_pages_past_1000_keys(store: BlobStore) -> None:
    keys = [f"big/{i % 7}/item-{i:04d}" for i in range(1003)]
    if isinstance(store, S3BlobStore):  # seeded server-side: 1003 puts over HTTP take ~15 s
        seed_objects(store.bucket, {store.prefix + k: k.encode() for k in keys})
    else:
        put_many(store, keys, lambda k: k.encode())
    store.put("bigger/than/big", b"keep")
    listed = store.list("big/")
    assert len(listed) == 1003
    assert listed == sorted(keys)
    assert store.get("big/6/item-1000") == b"big/6/item-1000"
    assert store.delete_prefix("big/") == 1003
    assert store.list() == ["bigger/than/big"]


def test_scoped_store_uses_relative_keys(store: BlobStore) -> None:
    scoped = ScopedBlobStore(store, stage_prefix("r1", "extract"))
    sibling = ScopedBlobStore(store, stage_prefix("r1", "extract-2"))
    full = scoped.put("pages/1.txt", b"one", "text/plain")
    assert full == "runs/r1/stages/extract/pages/1.txt"
    scoped.put_json("result.json", {"pages": 1})
    sibling.put("pages/1.txt", b"not mine")
    assert scoped.get("pages/1.txt") == b"one"
    assert scoped.get_json("result.json") == {"pages": 1}
    assert scoped.has("result.json")
    assert store.get(full) == b"one"
    assert scoped.list() == ["pages/1.txt", "result.json"]
    assert scoped.list("pages/") == ["pages/1.txt"]
    scoped.delete("pages/1.txt")
    assert scoped.list() == ["result.json"]
    assert sibling.list() == ["pages/1.txt"]
    with pytest.raises(BlobNotFoundError):
        scoped.get("pages/1.txt")


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/absolute", "", "a/.."])
def test_scoped_store_rejects_escaping_names(store: BlobStore, name: str) -> None:
    scoped = ScopedBlobStore(store, "runs/r1/stages/s1")
    with pytest.raises(ValueError, match="relative path"):
        scoped.put(name, b"x")
    assert store.list() == []


# -- LocalBlobStore ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside", "'..'"),
        ("a/../../outside", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("", "empty"),
        ("a/.~blobtmp-123", "reserved"),
        ("nul\0byte", "character"),
    ],
)
def test_local_rejects_keys_that_escape_or_do_not_round_trip(
    tmp_path: Path, key: str, reason: str
) -> None:
    store = LocalBlobStore(tmp_path / "root")
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.has(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidBlobKeyError, match=reason) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, WorkflowEngineError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert list((tmp_path / "root").iterdir()) == []


def test_local_list_never_leaves_the_root(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside the root")
    store = LocalBlobStore(tmp_path / "root")
    store.put("inside", b"x")
    assert store.list("../") == []
    assert store.list("/") == []
    assert store.list("../secret") == []
    assert store.delete_prefix("../") == 0
    assert (tmp_path / "secret.txt").exists()


def test_local_maps_keys_to_files_and_creates_the_root(tmp_path: Path) -> None:
    root = tmp_path / "does" / "not" / "exist"
    store = LocalBlobStore(str(root))
    store.put("runs/r1/out.json", b"{}")
    assert (root / "runs" / "r1" / "out.json").read_bytes() == b"{}"
    assert repr(store) == f"LocalBlobStore(root={str(root.resolve())!r})"


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    for i in range(5):
        store.put("a/b", f"version {i}".encode())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    # A write that crashed before its rename leaves a temporary file: it is not a key.
    (tmp_path / "a" / ".~blobtmp-deadbeef").write_bytes(b"half")
    assert store.list() == ["a/b"]
    assert store.delete_prefix("a/") == 1


def test_local_write_failure_keeps_the_old_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    store.put("a/b", b"old")

    def fail_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(BlobStoreError, match="No space left on device") as info:
        store.put("a/b", b"new")
    assert info.value.key == "a/b"
    assert str(tmp_path) in str(info.value)
    monkeypatch.undo()
    assert store.get("a/b") == b"old"
    assert store.list() == ["a/b"]


def test_local_delete_prunes_empty_directories_but_not_the_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    store.put("runs/r1/stages/s1/a", b"x")
    store.put("runs/r1/stages/s2/b", b"x")
    store.put("runs/r2/c", b"x")
    store.delete("runs/r2/c")
    assert not (tmp_path / "root" / "runs" / "r2").exists()
    assert store.delete_prefix("runs/r1/") == 2
    assert not (tmp_path / "root" / "runs").exists()
    assert (tmp_path / "root").is_dir()
    store.put("x", b"x")
    assert store.delete_prefix("") == 1
    assert (tmp_path / "root").is_dir()
    assert list((tmp_path / "root").iterdir()) == []


def test_local_key_cannot_be_both_blob_and_prefix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put("a", b"x")
    with pytest.raises(BlobStoreError, match="both a blob and a prefix") as info:
        store.put("a/b", b"y")
    assert not info.value.retryable
    store.put("c/d", b"x")
    with pytest.raises(BlobStoreError, match="both a blob and a prefix"):
        store.put("c", b"y")
    assert store.list() == ["a", "c/d"]


def test_local_puts_survive_a_concurrent_delete_prefix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweep() -> None:
        while not stop.is_set():
            try:
                store.delete_prefix("tmp/")
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        for i in range(200):
            try:
                store.put(f"tmp/a/b/c/{i}", b"x")
                store.put(f"keep/{i % 5}/{i}", b"x")
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)
    finally:
        stop.set()
        sweeper.join()
    assert errors == []
    assert len(store.list("keep/")) == 200


_WRITER = """
import sys
from airflow_workflow_engine.blob.local import LocalBlobStore

store, worker = LocalBlobStore(sys.argv[1]), sys.argv[2]
for i in range(50):
    store.put(f"w{worker}/item-{i}", f"{worker}-{i}".encode())
    store.put("shared/last", f"{worker}-{i}".encode() * 100)
"""


def test_local_concurrent_processes(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(w)]) for w in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    store = LocalBlobStore(tmp_path)
    assert len(store.list()) == 4 * 50 + 1
    assert store.get("w3/item-49") == b"3-49"
    last = store.get("shared/last")  # whole, from one writer: never a mix of two
    unit = last[: len(last) // 100]
    assert re.fullmatch(rb"[0-3]-\d+", unit)
    assert last == unit * 100


# -- S3BlobStore -------------------------------------------------------------------------------


def test_s3_keys_live_under_the_prefix(s3_bucket: MotoBucket) -> None:
    store = S3BlobStore(s3_bucket.name, prefix="/engine/", client=s3_bucket.client)
    assert store.prefix == "engine/"
    store.put("runs/r1/out.json", b"{}", "application/json")
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="engine/runs/r1/out.json")
    assert head["ContentType"] == "application/json"
    assert store.list() == ["runs/r1/out.json"]


def test_s3_prefixes_do_not_see_each_other(s3_bucket: MotoBucket) -> None:
    a = S3BlobStore(s3_bucket.name, prefix="tenant-a", client=s3_bucket.client)
    a2 = S3BlobStore(s3_bucket.name, prefix="tenant-a2", client=s3_bucket.client)
    whole = S3BlobStore(s3_bucket.name, client=s3_bucket.client)
    a.put("k", b"a")
    a2.put("k", b"a2")
    assert a.list() == ["k"]
    assert a.get("k") == b"a"
    assert whole.list() == ["tenant-a/k", "tenant-a2/k"]
    assert a.delete_prefix("") == 1
    assert whole.list() == ["tenant-a2/k"]


def test_s3_builds_its_own_client(s3_bucket: MotoBucket) -> None:
    store = S3BlobStore(
        s3_bucket.name,
        endpoint_url=s3_bucket.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(proxies={}, s3={"addressing_style": "path"}),
    )
    store.put("a", b"x")
    assert store.get("a") == b"x"
    assert "testing" not in repr(store)
    assert not any("testing" in str(v) for v in vars(store).values() if isinstance(v, str))


def test_s3_rejects_a_client_together_with_settings() -> None:
    with pytest.raises(ValueError, match="either a ready S3 client"):
        S3BlobStore("bucket", client=object(), region_name="eu-west-1")
    with pytest.raises(ValueError, match="bucket"):
        S3BlobStore("", client=object())


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.put("runs/r1/out", b"x"),
        lambda s: s.get("runs/r1/out"),
        lambda s: s.has("runs/r1/out"),
        lambda s: s.delete("runs/r1/out"),
        lambda s: s.list("runs/"),
        lambda s: s.delete_prefix("runs/"),
    ],
    ids=["put", "get", "has", "delete", "list", "delete_prefix"],
)
def test_s3_missing_bucket_is_a_store_error(
    s3_bucket: MotoBucket, call: Callable[[S3BlobStore], object]
) -> None:
    store = S3BlobStore("no-such-bucket-here", prefix="p", client=s3_bucket.client)
    with pytest.raises(BlobStoreError) as info:
        call(store)
    message = str(info.value)
    assert "'no-such-bucket-here'" in message
    assert "NoSuchBucket" in message
    assert "p/runs/" in message
    assert "Create the bucket" in message
    assert info.value.bucket == "no-such-bucket-here"
    assert not info.value.retryable
    assert not isinstance(info.value, BlobNotFoundError)


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_s3_unreachable_endpoint_fails_fast_without_leaking_credentials() -> None:
    store = S3BlobStore(
        "some-bucket",
        endpoint_url=f"http://127.0.0.1:{_unused_port()}",
        region_name="us-east-1",
        aws_access_key_id="AKIDNOTLEAKED",
        aws_secret_access_key="secret-not-leaked",
        config=Config(
            proxies={},
            connect_timeout=0.5,
            read_timeout=0.5,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ),
    )
    started = time.monotonic()
    with pytest.raises(BlobStoreError) as info:
        store.get("runs/r1/out")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "'some-bucket'" in message
    assert "'runs/r1/out'" in message
    assert "EndpointConnectionError" in message
    assert "Check the endpoint URL" in message
    assert info.value.retryable
    assert "AKIDNOTLEAKED" not in message
    assert "secret-not-leaked" not in message


class _FailingClient:
    """A stand-in client whose every call raises ``error`` (for causes moto cannot produce)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return call


def test_s3_access_denied_is_permanent_with_a_hint() -> None:
    response: Any = {
        "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    error = ClientError(response, "GetObject")
    store = S3BlobStore("locked", client=_FailingClient(error))
    with pytest.raises(BlobStoreError) as info:
        store.get("k")
    assert str(info.value) == (
        "Blob store S3 bucket 'locked' could not get 'k': AccessDenied (Access Denied), "
        "HTTP 403. Grant s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the "
        "bucket (without s3:ListBucket S3 answers 403 for missing keys)."
    )
    assert not info.value.retryable
    assert info.value.__cause__ is error


def test_s3_error_causes_hide_credentials_in_urls() -> None:
    error = EndpointConnectionError(endpoint_url="https://user:hunter2@minio.internal/b/k")
    store = S3BlobStore("b", client=_FailingClient(error))
    with pytest.raises(BlobStoreError) as info:
        store.put("k", b"x")
    assert "hunter2" not in str(info.value)
    assert "https://***@minio.internal/b/k" in str(info.value)


def test_s3_other_errors_pass_through() -> None:
    store = S3BlobStore("b", client=_FailingClient(RuntimeError("a bug, not S3")))
    with pytest.raises(RuntimeError, match="a bug"):
        store.list()


def test_s3_reports_failed_batch_deletions() -> None:
    class PartlyFailingClient:
        def get_paginator(self, name: str) -> Any:
            class Paginator:
                def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
                    return [{"Contents": [{"Key": "a"}, {"Key": "b"}]}]

            return Paginator()

        def delete_objects(self, **kwargs: Any) -> dict[str, Any]:
            return {"Errors": [{"Key": "b", "Code": "AccessDenied", "Message": "Access Denied"}]}

    store = S3BlobStore("b", client=PartlyFailingClient())
    with pytest.raises(BlobStoreError, match="1 of 2 deletions failed, the first for 'b'"):
        store.delete_prefix("")


# -- import cost -------------------------------------------------------------------------------


def test_importing_the_blob_package_loads_neither_boto3_nor_the_stores() -> None:
    code = """
import sys
import airflow_workflow_engine.blob as blob
import airflow_workflow_engine.blob.s3
assert "boto3" not in sys.modules and "botocore" not in sys.modules, "boto3 was imported"
assert "airflow_workflow_engine.blob.local" not in sys.modules
from airflow_workflow_engine.blob import S3BlobStore, LocalBlobStore, InMemoryBlobStore
from airflow_workflow_engine.blob import ScopedBlobStore, BlobStoreError
assert "boto3" not in sys.modules and "botocore" not in sys.modules, "boto3 was imported"
assert S3BlobStore.__module__ == "airflow_workflow_engine.blob.s3"
assert "LocalBlobStore" in dir(blob)
try:
    blob.NoSuchThing
except AttributeError as exc:
    assert "NoSuchThing" in str(exc)
else:
    raise AssertionError("expected AttributeError")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
