"""Refresh tokens against PostgreSQL: rotation, reuse, logout, concurrent use, hashed storage."""

from __future__ import annotations

import threading

import psycopg2

from .conftest import AuthEnv, bearer


def refresh(auth_env: AuthEnv, token: str):  # type: ignore[no-untyped-def]
    return auth_env.client.post("/auth/refresh", json={"refresh_token": token})


def test_refresh_rotates_and_reuse_revokes_the_login(auth_env: AuthEnv, pg_url: str) -> None:
    login = auth_env.signup("rita")
    assert set(login) >= {"access_token", "refresh_token", "expires_in"} and login["expires_in"] == 900
    renewed = refresh(auth_env, login["refresh_token"])
    assert renewed.status_code == 200, renewed.get_json()
    body = renewed.get_json()
    assert set(body) >= {"access_token", "refresh_token", "expires_in"}
    c = auth_env.client
    assert c.get("/auth/validate", headers=bearer(body["access_token"])).status_code == 200

    reused = refresh(auth_env, login["refresh_token"])
    assert reused.status_code == 401 and reused.get_json()["error"]["code"] == "unauthorized"
    for token in (login["access_token"], body["access_token"]):
        assert c.get("/auth/validate", headers=bearer(token)).status_code == 401
    assert refresh(auth_env, body["refresh_token"]).status_code == 401

    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT token_hash FROM refresh_tokens")
        stored = [row[0] for row in cur.fetchall()]
    conn.close()
    assert len(stored) == 2 and login["refresh_token"] not in stored and body["refresh_token"] not in stored


def test_logout_ends_the_login_and_other_logins_live_on(auth_env: AuthEnv) -> None:
    first = auth_env.signup("sam")
    second = auth_env.login("sam", "password-123")
    c = auth_env.client
    assert c.put("/auth/logout/sam", headers=bearer(first["access_token"])).status_code == 200
    assert refresh(auth_env, first["refresh_token"]).status_code == 401
    assert refresh(auth_env, second["refresh_token"]).status_code == 200


def test_concurrent_uses_of_one_refresh_token_rotate_once(auth_env: AuthEnv) -> None:
    login = auth_env.signup("tess")
    codes: list[int] = []
    barrier = threading.Barrier(4)

    def use() -> None:
        barrier.wait()
        codes.append(auth_env.app.test_client().post(  # type: ignore[attr-defined]
            "/auth/refresh", json={"refresh_token": login["refresh_token"]}).status_code)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 401, 401, 401]


def test_refresh_bad_bodies(auth_env: AuthEnv) -> None:
    c = auth_env.client
    assert c.post("/auth/refresh", json={}).status_code == 400
    assert c.post("/auth/refresh", data=b"not json", content_type="application/json").status_code == 400
    assert refresh(auth_env, "rt_not-a-token").status_code == 401
