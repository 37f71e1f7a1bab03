"""Pool storage, staging and retention on real PostgreSQL: secrets encrypted at rest (no plaintext in any
table), "***" in every answer, in clear on the internal route; a deleted pool's retention rule is kept."""

from __future__ import annotations

import json

import psycopg2

from .conftest import bearer

INTERNAL = {"X-Internal-Key": "integration-internal-key"}
SECRET = "integration-s3-secret-0f9e8d7c6b5a"
HOOK = "integration-webhook-secret-1a2b3c4d"
S3 = {"backend": "s3", "endpoint_url": "http://127.0.0.1:9", "bucket": "b1", "access_key_id": "AKIAINT",
      "secret_access_key": SECRET}
STAGING = [{"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": HOOK},
           {"kind": "s3", "endpoint_url": "http://127.0.0.1:9", "bucket": "copies", "prefix": "{pool_id}/",
            "access_key_id": "AKIAINT", "secret_access_key": SECRET}]


def every_row(pg_url: str) -> str:
    """Every row of every table of auth's database, as text."""
    conn = psycopg2.connect(pg_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [r[0] for r in cur.fetchall()]
            dump = []
            for table in tables:
                cur.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from pg_tables
                dump.extend(json.dumps(row, default=str) for row in cur.fetchall())
            return "\n".join(dump)
    finally:
        conn.close()


def test_secrets_never_stored_or_shown_in_plaintext(auth_env, pg_url) -> None:
    c = auth_env.client
    admin = bearer(auth_env.admin_token())
    made = c.post("/auth/pools", headers=admin, json={"name": "s3 pool", "window_seconds": 60, "storage": S3,
                                                      "staging": STAGING, "retention_days": 30})
    assert made.status_code == 201, made.get_json()
    pid = made.get_json()["pool_id"]
    answers = [made, c.get(f"/auth/pools/{pid}", headers=admin), c.get("/auth/pools", headers=admin),
               c.patch(f"/auth/pools/{pid}", headers=admin, json={"name": "renamed",
                                                                    "storage": made.get_json()["storage"]})]
    for answer in answers:
        assert answer.status_code in (200, 201), answer.get_json()
        text = answer.get_data(as_text=True)
        assert SECRET not in text and HOOK not in text and "fernet:" not in text and '"***"' in text
    dump = every_row(pg_url)
    assert SECRET not in dump and HOOK not in dump and "fernet:" in dump
    internal = c.get(f"/auth/internal/pools/{pid}", headers=INTERNAL).get_json()
    assert internal["storage"]["secret_access_key"] == SECRET  # the "***" PATCH kept it
    assert [t.get("secret") or t.get("secret_access_key") for t in internal["staging"]] == [HOOK, SECRET]
    assert auth_env.probe.probed == [S3, S3]


def test_bad_storage_and_retention_rules(auth_env) -> None:
    c = auth_env.client
    admin = bearer(auth_env.admin_token())
    auth_env.probe.reason = "filesystem root '/nowhere' is not a directory"
    bad = c.post("/auth/pools", headers=admin, json={"name": "x", "window_seconds": 60,
                                                     "storage": {"backend": "filesystem", "root": "/nowhere"}})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_storage"
    assert "not a directory" in bad.get_json()["error"]["message"]
    auth_env.probe.reason = None
    keep = c.post("/auth/pools", headers=admin, json={"name": "k", "window_seconds": 60, "retention_days": 9})
    drop = c.post("/auth/pools", headers=admin, json={"name": "d", "window_seconds": 60, "retention_days": 0})
    kid, did = keep.get_json()["pool_id"], drop.get_json()["pool_id"]
    assert c.delete(f"/auth/pools/{did}", headers=admin).status_code == 200
    assert c.get("/auth/internal/retention").status_code == 401
    rules = c.get("/auth/internal/retention", headers=INTERNAL).get_json()
    assert rules == {"pools": [{"pool_id": kid, "retention_days": 9, "deleted": False},
                               {"pool_id": did, "retention_days": 0, "deleted": True}], "truncated": False}


def test_key_rotation_on_postgresql(auth_env, pg_url) -> None:
    from services.auth import rotate_storage_key
    from services.common.secretbox import SecretBox

    from .conftest import STORAGE_KEY

    c = auth_env.client
    admin = bearer(auth_env.admin_token())
    made = c.post("/auth/pools", headers=admin, json={"name": "r", "window_seconds": 60, "storage": S3,
                                                      "staging": STAGING})
    pid = made.get_json()["pool_id"]
    new_key = SecretBox.generate_key()
    before = every_row(pg_url)
    outcome = rotate_storage_key.rotate(auth_env.store, SecretBox([new_key, STORAGE_KEY]))
    assert outcome["rotated"] == [pid] and outcome["unreadable"] == []
    after = every_row(pg_url)
    assert after != before and SECRET not in after and HOOK not in after
    [pool] = [p for p in auth_env.store.pool_secrets_page(None, 10) if p["pool_id"] == pid]
    assert SecretBox([new_key]).decrypt(pool["storage"]["secret_access_key"]) == SECRET
    # Compare-and-swap: a pool changed meanwhile is not overwritten with the stale rotation.
    assert not auth_env.store.replace_pool_secrets(pid, {"storage": S3, "staging": []}, pool)
