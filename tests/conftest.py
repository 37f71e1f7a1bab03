"""Fixtures shared by every suite: real servers, isolated per test.

Integration tests each get a database, vhost, key prefix or MongoDB database
of their own, so they can run in any order against the machine's servers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import infra


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MONGODB_URI when given, else a secantusdb started for this test session."""
    given = os.environ.get("MONGODB_URI")
    if given:
        yield given
        return
    port = infra.free_port()
    storage = tmp_path_factory.mktemp("secantus")
    proc = infra.start_secantus(port, storage / "data", storage / "secantus.log")
    try:
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        infra.stop_process(proc)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """S3_TEST_ENDPOINT when given, else moto's S3 server started for this test session."""
    given = os.environ.get("S3_TEST_ENDPOINT")
    if given:
        yield given
        return
    port = infra.free_port()
    proc = infra.start_s3(port, tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        infra.stop_process(proc)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> dict[str, str]:
    """A fresh bucket of this test's own, as a SPEC s3 storage spec (test credentials)."""
    import boto3

    spec = {"backend": "s3", "endpoint_url": s3_endpoint, "bucket": f"test-{uuid.uuid4().hex[:12]}",
            "region": "us-east-1", "access_key_id": "testing-key-id", "secret_access_key": "testing-secret"}
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing-key-id",
                 aws_secret_access_key="testing-secret").create_bucket(Bucket=spec["bucket"])
    return spec


@pytest.fixture
def mongo_db(mongo_uri: str):
    """A MongoDB database of this test's own (dropped afterwards)."""
    from services.common import mongo

    db = mongo.connect(mongo_uri, f"test_{uuid.uuid4().hex[:12]}")
    yield db
    db.client.drop_database(db.name)
    db.client.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    infra.ensure_postgres()
    url = infra.create_postgres_db()
    yield url
    infra.drop_postgres_db(url)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    infra.ensure_rabbitmq()
    url = infra.create_vhost()
    yield url
    infra.delete_vhost(url)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    infra.ensure_redis()
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def redis_url() -> str:
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def base_env(tmp_path: Path, mongo_uri: str) -> dict[str, str]:
    """The environment a service reads, development defaults, for tests to extend."""
    return {
        "DROPBOX_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "LOG_LEVEL": "WARNING",
    }
