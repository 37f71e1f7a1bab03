"""Per-pool storage and retention over the running fleet (SPEC "Storage backends", "Retention").

Three pools, one per backend (GridFS, a filesystem root, a bucket of moto's S3 server): contributors
upload, the processor posts results; each pool's bytes are in its own store and nowhere else, Range
downloads work from each, and a pool switched from GridFS to S3 still serves its old files. The S3
secret appears in no log line, no answer, no bus message and no database row (auth's PostgreSQL holds
it encrypted only). Retention of 0 days removes files from every backend on the next pass, audited.
"""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import requests

from services.common import mongo
from services.common.messaging import Consumer
from services.common.secretbox import SecretBox

from .helpers import bearer, signup
from .pools import Admin, Processor

pytestmark = pytest.mark.e2e

WAIT = 90  # seconds any one step may take on a loaded 2-core machine


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout}s: {what}")


class Stores:
    """Every place bytes can be: the GridFS default bucket, the filesystem roots, the S3 buckets."""

    def __init__(self, running, s3_endpoint: str, roots: list[Path], buckets: list[str]) -> None:
        self.db = mongo.connect(running.env["MONGODB_URI"], running.env["MONGODB_DB"])
        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                               aws_access_key_id="reader", aws_secret_access_key="reader")
        self.roots, self.buckets = roots, buckets

    def gridfs(self) -> set[str]:
        return {str(d["_id"]) for d in self.db["fs.files"].find({}, {"_id": 1})
                if not str(d["_id"]).startswith(".probe-")}

    def files_in(self, root: Path) -> set[str]:
        return {f.name for f in root.rglob("*") if f.is_file() and not f.name.startswith(".")}

    def objects_in(self, bucket: str) -> set[str]:
        return {o["Key"].rsplit("/", 1)[-1] for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
                if "/.probe-" not in o["Key"] and not o["Key"].startswith(".probe-")}

    def where(self, file_id: str) -> list[str]:
        places = ["gridfs"] if file_id in self.gridfs() else []
        places += [f"fs:{r.name}" for r in self.roots if file_id in self.files_in(r)]
        places += [f"s3:{b}" for b in self.buckets if file_id in self.objects_in(b)]
        return places


class Contributor:
    def __init__(self, running, user: dict) -> None:
        self.uploader = running.urls["file_uploader"]
        self.fsm = running.urls["file_service_manager"]
        self.user = user
        self.headers = bearer(user["access_token"])
        self.answers: list[str] = []

    def upload(self, data: bytes, name: str, pool_id: str | None) -> str:
        form = {"pool_id": pool_id} if pool_id else {}
        r = requests.post(f"{self.uploader}/file/upload", headers=self.headers, data=form,
                          files={"file": (name, data, "application/octet-stream")}, timeout=60)
        assert r.status_code == 201, r.text
        self.answers.append(r.text)
        return r.json()["file_id"]

    def status(self, file_id: str) -> str | None:
        r = requests.get(f"{self.fsm}/client/history/{self.user['user_id']}", headers=self.headers,
                         params={"limit": 100}, timeout=30)
        assert r.status_code == 200, r.text
        self.answers.append(r.text)
        return next((f["status"] for f in r.json()["files"] if f["file_id"] == file_id), None)

    def stored(self, file_id: str) -> None:
        wait_for(lambda: self.status(file_id) == "uploaded_successfully", f"{file_id} stored")

    def get(self, file_id: str, **headers: str) -> requests.Response:
        r = requests.get(f"{self.fsm}/file/{file_id}", headers={**self.headers, **headers}, timeout=60)
        self.answers.append(r.headers.get("Content-Disposition", "") + str(r.status_code))
        return r


class BusTap:
    """Every message on the fleet's exchange, kept as text (a private queue bound to '#')."""

    def __init__(self, amqp_url: str) -> None:
        self.messages: queue.Queue[str] = queue.Queue()  # bounded by the test's own traffic
        self.consumer = Consumer(amqp_url, None, lambda m: self.messages.put(repr(m)), bindings=("#",),
                                 name="e2e-bus-tap")
        self.consumer.start()
        wait_for(lambda: self.consumer.connected, "bus tap connected", timeout=20)
        time.sleep(0.3)  # connected is set just before basic_consume takes effect

    def text(self) -> str:
        return "\n".join(list(self.messages.queue))

    def stop(self) -> None:
        self.consumer.stop()


def auth_rows(database_url: str) -> str:
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            dump = []
            for (table,) in cur.fetchall():
                cur.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from pg_tables
                dump.extend(json.dumps(row, default=str) for row in cur.fetchall())
            return "\n".join(dump)
    finally:
        conn.close()


def make_bucket(s3_endpoint: str, key_id: str, secret: str) -> str:
    bucket = f"e2e-pool-{os.urandom(5).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                 aws_secret_access_key=secret).create_bucket(Bucket=bucket)
    return bucket


def s3_storage(s3_endpoint: str, bucket: str, key_id: str, secret: str) -> dict[str, str]:
    return {"backend": "s3", "endpoint_url": s3_endpoint, "bucket": bucket, "prefix": "pool/",
            "region": "us-east-1", "access_key_id": key_id, "secret_access_key": secret}


def result_of(running, pool_id: str, data: bytes) -> str:
    admin = Admin(running)
    processor = Processor(running, pool_id, admin.processor_key(pool_id))
    group = processor.wait_ready(timeout=WAIT)
    assert processor.files(group["group_id"]).status_code == 200
    r = processor.post_result(group["group_id"], data, name=f"result-{pool_id}.bin")
    assert r.status_code == 201, r.text
    return r.json()["result_id"]


@pytest.mark.slow
def test_three_pools_three_backends_and_no_secret_anywhere(make_fleet, s3_endpoint, tmp_path) -> None:
    secret = f"e2e-pool-secret-{os.urandom(10).hex()}"
    key_id = f"E2EPOOL{os.urandom(4).hex().upper()}"
    root = tmp_path / "pool-root"
    root.mkdir()
    bucket, later_bucket = make_bucket(s3_endpoint, key_id, secret), make_bucket(s3_endpoint, key_id, secret)
    running = make_fleet(STORAGE_SECRETS_KEY=SecretBox.generate_key(), POOL_STORAGE_CACHE_SECONDS="1")
    tap = BusTap(running.env["AMQP_URL"])
    try:
        admin = Admin(running)
        answers: list[str] = []
        pools = {
            "gridfs": admin.create_pool("in gridfs", 2),
            "filesystem": admin.create_pool("on disk", 2, storage={"backend": "filesystem", "root": str(root)}),
            "s3": admin.create_pool("in s3", 2, storage=s3_storage(s3_endpoint, bucket, key_id, secret)),
        }
        answers += [json.dumps(p) for p in pools.values()]
        assert pools["s3"]["storage"]["secret_access_key"] == "***"
        stores = Stores(running, s3_endpoint, [root], [bucket, later_bucket])
        user = signup(running.urls["auth"])
        for pool in pools.values():
            admin.add_member(pool["pool_id"], user["user_name"])
        alice = Contributor(running, user)
        data = {kind: os.urandom(300_000 + i) for i, kind in enumerate(pools)}
        uploads = {kind: alice.upload(data[kind], f"{kind}.bin", pool["pool_id"]) for kind, pool in pools.items()}
        for file_id in uploads.values():
            alice.stored(file_id)
        results = {kind: result_of(running, pool["pool_id"], data[kind][::-1]) for kind, pool in pools.items()}

        # Each pool's bytes are in its own store, and nowhere else.
        expected = {"gridfs": ["gridfs"], "filesystem": [f"fs:{root.name}"], "s3": [f"s3:{bucket}"]}
        for kind in pools:
            assert stores.where(uploads[kind]) == expected[kind], kind
            assert stores.where(results[kind]) == expected[kind], kind
            r = alice.get(uploads[kind], Range="bytes=1000-1999")
            assert r.status_code == 206 and r.content == data[kind][1000:2000], kind
            r = alice.get(results[kind], Range="bytes=-100")
            assert r.status_code == 206 and r.content == data[kind][::-1][-100:], kind

        # The GridFS pool moves to S3: new files go there; its old files are still served from GridFS.
        r = requests.patch(f"{running.urls['auth']}/auth/pools/{pools['gridfs']['pool_id']}",
                           headers=bearer(admin.token), timeout=60,
                           json={"storage": s3_storage(s3_endpoint, later_bucket, key_id, secret)})
        assert r.status_code == 200, r.text
        answers.append(r.text)
        time.sleep(1.5)  # POOL_STORAGE_CACHE_SECONDS: file_service_manager asks auth again
        newer = os.urandom(200_000)
        moved = alice.upload(newer, "after-move.bin", pools["gridfs"]["pool_id"])
        alice.stored(moved)
        assert stores.where(moved) == [f"s3:{later_bucket}"]
        assert stores.where(uploads["gridfs"]) == ["gridfs"]
        r = alice.get(uploads["gridfs"], Range="bytes=0-99")
        assert r.status_code == 206 and r.content == data["gridfs"][:100]
        assert alice.get(moved).content == newer

        # A storage that fails its probe is refused with the reason, and nothing changes.
        r = requests.patch(f"{running.urls['auth']}/auth/pools/{pools['filesystem']['pool_id']}",
                           headers=bearer(admin.token), timeout=60,
                           json={"storage": s3_storage(s3_endpoint, "no-such-bucket-e2e", key_id, secret)})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_storage", r.text
        answers.append(r.text)
        for path in ("/auth/pools", f"/auth/pools/{pools['s3']['pool_id']}"):
            answers.append(requests.get(f"{running.urls['auth']}{path}", headers=bearer(admin.token),
                                        timeout=30).text)
        for name in ("file_service_manager", "auth"):
            answers.append(requests.get(f"{running.urls[name]}/metrics", timeout=30).text)
            answers.append(requests.get(f"{running.urls[name]}/ready", timeout=30).text)
    finally:
        tap.stop()

    # The secret: in no log line, no answer, no bus message, no row of auth's database, no MongoDB document.
    logs = "".join(p.read_text(errors="replace") for p in running.fleet.log_dir.glob("*.log"))
    bus = tap.text()
    assert "pool_changed" in bus and "FileStored" in bus, "the bus tap saw the run"
    assert "pool changed" in logs, "auth's log lines are in the scan"
    rows = auth_rows(running.env["DATABASE_URL"])
    assert "fernet:" in rows, "auth's pools table is in the scan"
    for text, where in ((logs, "logs"), ("\n".join(answers + alice.answers), "answers"), (bus, "bus"),
                        (rows, "auth database")):
        assert secret not in text, f"the secret is in the {where}"
    for name in stores.db.list_collection_names():
        assert not any(secret in json.dumps(d, default=str) for d in stores.db[name].find({})), name


def audit_of(running, token: str, file_id: str) -> list[dict]:
    r = requests.get(f"{running.urls['file_service_manager']}/audit", headers=bearer(token),
                     params={"file_id": file_id}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["events"]


@pytest.mark.slow
def test_retention_of_zero_days_empties_every_backend_with_audit_records(make_fleet, s3_endpoint,
                                                                         tmp_path) -> None:
    secret, key_id = f"e2e-ret-{os.urandom(8).hex()}", "E2ERETENTION"
    root = tmp_path / "ret-root"
    root.mkdir()
    bucket = make_bucket(s3_endpoint, key_id, secret)
    running = make_fleet(STORAGE_SECRETS_KEY=SecretBox.generate_key(), RETENTION_INTERVAL_SECONDS="2",
                         RETENTION_DAYS="0")
    admin = Admin(running)
    pools = [admin.create_pool("g", 60),
             admin.create_pool("f", 60, storage={"backend": "filesystem", "root": str(root)}),
             admin.create_pool("s", 60, storage=s3_storage(s3_endpoint, bucket, key_id, secret))]
    user = signup(running.urls["auth"])
    for pool in pools:
        admin.add_member(pool["pool_id"], user["user_name"])
    alice = Contributor(running, user)
    stores = Stores(running, s3_endpoint, [root], [bucket])
    ids = [alice.upload(os.urandom(100_000), f"keep-{i}.bin", pool["pool_id"]) for i, pool in enumerate(pools)]
    for file_id in ids:
        alice.stored(file_id)
    # Kept forever (no rule): a few passes later, every file is still where it was stored.
    time.sleep(5)
    assert [stores.where(f) for f in ids] == [["gridfs"], [f"fs:{root.name}"], [f"s3:{bucket}"]]

    # retention_days 0 on every pool (one of them then deleted: its files follow its rule), and
    # RETENTION_DAYS=0 for a private file: the next pass removes them all, from every backend.
    for pool in pools:
        r = requests.patch(f"{running.urls['auth']}/auth/pools/{pool['pool_id']}", headers=bearer(admin.token),
                           json={"retention_days": 0}, timeout=30)
        assert r.status_code == 200, r.text
    r = requests.delete(f"{running.urls['auth']}/auth/pools/{pools[2]['pool_id']}", headers=bearer(admin.token),
                        timeout=30)
    assert r.status_code == 200, r.text
    private = alice.upload(os.urandom(50_000), "private.bin", None)
    for file_id in [*ids, private]:
        wait_for(lambda f=file_id: alice.status(f) == "deleted", f"{file_id} deleted by retention")
        assert stores.where(file_id) == []
        assert alice.get(file_id).status_code == 404
        # The record leaves file_service_manager's audit buffer within ~50 ms, then its consumer appends it.
        wait_for(lambda f=file_id: any(e.get("action") == "deleted" for e in audit_of(running, admin.token, f)),
                 f"{file_id}'s deletion in the audit trail")
        deleted = [e for e in audit_of(running, admin.token, file_id) if e.get("action") == "deleted"]
        assert len(deleted) == 1 and deleted[0]["detail"].get("reason") == "retention", deleted
