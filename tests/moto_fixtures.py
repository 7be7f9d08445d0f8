"""An S3 to test against: moto's standalone server on 127.0.0.1, reached over real HTTP.

Not an in-process patch of botocore: the stores under test use an ordinary boto3 client, so
signing, retries, paging and error parsing are exercised as they are against AWS or MinIO.
Import the fixtures into a conftest (``from moto_fixtures import moto_server_url, s3_bucket``)
or a test module.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

__all__ = ["MotoBucket", "make_s3_client", "moto_server_url", "s3_bucket", "seed_objects"]

REGION = "us-east-1"


def make_s3_client(endpoint_url: str, **config: Any) -> Any:
    """A real boto3 S3 client for ``endpoint_url`` with moto's dummy credentials.

    ``config`` goes to ``botocore.config.Config`` (say ``connect_timeout``, ``retries``).
    Proxies are off so a proxy in the environment never sees requests meant for 127.0.0.1.
    """
    settings: dict[str, Any] = {
        "proxies": {},
        "s3": {"addressing_style": "path"},
        "retries": {"total_max_attempts": 2, "mode": "standard"},
        **config,
    }
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=REGION,
        config=Config(**settings),
    )


def seed_objects(bucket: str, objects: dict[str, bytes]) -> None:
    """Writes ``objects`` straight into the server's in-process state, skipping HTTP.

    For bulk fixtures only (a thousand keys to page through): over HTTP each put costs ~15 ms
    of moto and botocore time. The server runs in this process, so its state is ours to fill.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key, value in objects.items():
        backend.put_object(bucket, key, value)


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """Starts moto's server once per session on a free port; yields its endpoint URL."""
    # werkzeug logs every request; a failing test's captured log should show the test's own.
    werkzeug_logger = logging.getLogger("werkzeug")
    level = werkzeug_logger.level
    werkzeug_logger.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        werkzeug_logger.setLevel(level)


@dataclass(frozen=True)
class MotoBucket:
    name: str
    client: Any
    endpoint_url: str


@pytest.fixture
def s3_bucket(moto_server_url: str) -> Iterator[MotoBucket]:
    """A fresh, empty bucket for one test; emptied and removed afterwards."""
    client = make_s3_client(moto_server_url)
    name = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    yield MotoBucket(name=name, client=client, endpoint_url=moto_server_url)
    with contextlib.suppress(ClientError):  # the test may have removed the bucket itself
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            objects = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
            if objects:
                client.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
        client.delete_bucket(Bucket=name)
