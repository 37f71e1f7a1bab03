"""auth's pure rules: names, passwords, tokens, pools, processor keys, settings."""

from __future__ import annotations

import time

import jwt
import pytest
from argon2 import PasswordHasher

from services.auth import core
from services.auth.config import Settings
from services.common.settings import DEV_SECRETS, ConfigError

SECRET = "unit-test-secret-0123456789abcdef0123"
FAST = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


# --- user names and passwords ----------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "a.b-c_d", "A" * 64, "user_01", "..."])
def test_valid_user_names(name: str) -> None:
    assert core.check_user_name(name) == name


@pytest.mark.parametrize("name", ["ab", "A" * 65, "has space", "é-accent", "a/b", "abc\n", "", None, 123,
                                  ["abc"], "semi;colon"])
def test_invalid_user_names(name: object) -> None:
    with pytest.raises(core.Invalid):
        core.check_user_name(name)


def test_password_bounds() -> None:
    assert core.check_password("x" * 8) == "x" * 8
    assert core.check_password("x" * core.MAX_PASSWORD)
    for bad in ("x" * 7, "x" * (core.MAX_PASSWORD + 1), None, 12345678, b"bytes-password"):
        with pytest.raises(core.Invalid):
            core.check_password(bad)


def test_pool_roles() -> None:
    assert core.check_pool_role("contributor") == "contributor"
    assert core.check_pool_role("listener") == "listener"
    for bad in ("admin", "", None, "Contributor"):
        with pytest.raises(core.Invalid):
            core.check_pool_role(bad)


def test_passwords_are_argon2id_and_verify() -> None:
    passwords = core.Passwords(FAST, slots=2)
    stored = passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse")
    assert not passwords.verify(stored, "wrong horse")
    assert not passwords.verify(None, "correct horse")  # unknown user: dummy verify, always False
    assert not passwords.verify("not-a-hash", "correct horse")


def test_default_hasher_is_argon2id_and_weaker_hash_needs_rehash() -> None:
    strong = core.Passwords()
    assert strong.hash("password-1").startswith("$argon2id$")
    assert strong.needs_rehash(FAST.hash("password-1"))


# --- tokens ----------------------------------------------------------------------


def test_token_roundtrip() -> None:
    issued = core.encode_token(SECRET, user_id="u1", user_name="alice", role="user", ttl_seconds=600)
    claims = core.decode_token(SECRET, issued.token)
    assert (claims.user_id, claims.user_name, claims.role, claims.jti) == ("u1", "alice", "user", issued.jti)
    assert claims.exp - claims.iat == 600
    assert claims.exp == issued.exp
    raw = jwt.decode(issued.token, SECRET, algorithms=["HS256"])
    assert set(raw) == {"sub", "name", "role", "jti", "iat", "iat_ms", "exp"}  # no "sid": no login given


def test_token_ids_are_unique() -> None:
    ids = {core.encode_token(SECRET, user_id="u", user_name="n", role="user").jti for _ in range(50)}
    assert len(ids) == 50


def test_expired_token_refused() -> None:
    issued = core.encode_token(SECRET, user_id="u1", user_name="a", role="user", ttl_seconds=60,
                               now=time.time() - 120)
    with pytest.raises(core.TokenInvalid, match="expired"):
        core.decode_token(SECRET, issued.token)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 forgery below
def test_forged_tokens_refused() -> None:
    good = core.encode_token(SECRET, user_id="u1", user_name="a", role="user").token
    claims = jwt.decode(good, SECRET, algorithms=["HS256"])
    forgeries = [
        core.encode_token("another-secret-0123456789abcdef0123", user_id="u1", user_name="a",
                          role="admin").token,
        jwt.encode({**claims, "role": "admin"}, "x" * 40, algorithm="HS256"),
        jwt.encode(claims, SECRET, algorithm="HS512"),  # right key, algorithm not allowed
        jwt.encode(claims, None, algorithm="none"),
        good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),  # tampered signature
        ".".join([good.split(".")[0], jwt.encode({**claims, "sub": "u2"}, SECRET).split(".")[1],
                  good.split(".")[2]]),  # swapped payload
        "not.a.token",
        "",
        "x" * (core.MAX_TOKEN_LENGTH + 1),
    ]
    for token in forgeries:
        with pytest.raises(core.TokenInvalid):
            core.decode_token(SECRET, token)


@pytest.mark.parametrize("drop", ["sub", "jti", "exp", "iat"])
def test_token_missing_claims_refused(drop: str) -> None:
    now = int(time.time())
    claims = {"sub": "u1", "name": "a", "role": "user", "jti": "j", "iat": now, "exp": now + 60}
    del claims[drop]
    with pytest.raises(core.TokenInvalid):
        core.decode_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))


def test_token_with_non_string_subject_refused() -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "", "jti": "j", "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
    with pytest.raises(core.TokenInvalid):
        core.decode_token(SECRET, token)


# --- pools -----------------------------------------------------------------------


def test_pool_defaults() -> None:
    spec = core.parse_pool({"name": "  sensors ", "window_seconds": 60})
    assert spec == core.PoolSpec(name="sensors", window_seconds=60, close_grace_seconds=0,
                                 min_contributors=None, processing_timeout_seconds=300, processor_url=None)


def test_pool_all_fields() -> None:
    spec = core.parse_pool({"name": "p", "window_seconds": 30 * 24 * 3600, "close_grace_seconds": 5,
                            "min_contributors": 3, "processing_timeout_seconds": 1,
                            "processor_url": "https://proc.example:8443/hook?x=1"})
    assert spec.min_contributors == 3 and spec.processor_url == "https://proc.example:8443/hook?x=1"
    no_minimum = core.parse_pool({"name": "p", "window_seconds": 1, "min_contributors": None})
    assert no_minimum.min_contributors is None


@pytest.mark.parametrize("body", [
    {"window_seconds": 60},
    {"name": "", "window_seconds": 60},
    {"name": "   ", "window_seconds": 60},
    {"name": 5, "window_seconds": 60},
    {"name": "x" * 129, "window_seconds": 60},
    {"name": "bad\x00name", "window_seconds": 60},
    {"name": "p"},
    {"name": "p", "window_seconds": None},
    {"name": "p", "window_seconds": 0},
    {"name": "p", "window_seconds": 30 * 24 * 3600 + 1},
    {"name": "p", "window_seconds": 60.0},
    {"name": "p", "window_seconds": "60"},
    {"name": "p", "window_seconds": True},
    {"name": "p", "window_seconds": 60, "close_grace_seconds": -1},
    {"name": "p", "window_seconds": 60, "min_contributors": 0},
    {"name": "p", "window_seconds": 60, "min_contributors": False},
    {"name": "p", "window_seconds": 60, "processing_timeout_seconds": 0},
    {"name": "p", "window_seconds": 60, "processor_url": "ftp://x.example/"},
    {"name": "p", "window_seconds": 60, "processor_url": "javascript:alert(1)"},
    {"name": "p", "window_seconds": 60, "processor_url": "http:///nohost"},
    {"name": "p", "window_seconds": 60, "processor_url": "http://a b.example/"},
    {"name": "p", "window_seconds": 60, "processor_url": "http://x.example:99999/"},
    {"name": "p", "window_seconds": 60, "processor_url": 42},
    {"name": "p", "window_seconds": 60, "processor_url": "https://x.example/" + "a" * 3000},
])
def test_pool_invalid(body: dict) -> None:
    with pytest.raises(core.Invalid):
        core.parse_pool(body)


def test_pool_ids() -> None:
    ids = {core.new_pool_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("p_") and len(i) == 18 for i in ids)


# --- processor keys ------------------------------------------------------------------


def test_api_keys() -> None:
    key = core.new_api_key()
    assert key.api_key.startswith(f"pk_{key.key_id}_")
    assert core.api_key_id(key.api_key) == key.key_id
    assert core.api_key_matches(key.api_key, key.key_hash)
    assert key.api_key not in key.key_hash
    other = core.new_api_key()
    assert not core.api_key_matches(other.api_key, key.key_hash)
    forged = f"pk_{key.key_id}_{'0' * 64}"
    assert core.api_key_id(forged) == key.key_id and not core.api_key_matches(forged, key.key_hash)
    for bad in (None, 5, "", "pk_x_y", key.api_key + "\n", key.api_key.upper(), "xx" + key.api_key[2:]):
        assert core.api_key_id(bad) is None


# --- settings ----------------------------------------------------------------------------


def test_settings_development_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.admin_user == "admin" and settings.admin_password == "admin-password"
    assert settings.jwt_secret == DEV_SECRETS["JWT_SECRET"]
    assert settings.port == 5001 and settings.token_ttl_seconds == 900 and settings.refresh_ttl_seconds == 30 * 86400
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/dropbox"
    custom = Settings.from_env({"AUTH_PORT": "6001", "ACCESS_TOKEN_TTL_SECONDS": "120", "ADMIN_USER": "root_1"})
    assert (custom.port, custom.token_ttl_seconds, custom.admin_user) == (6001, 120, "root_1")


def _prod(**overrides: str) -> dict[str, str]:
    env = {"DROPBOX_ENV": "production", "JWT_SECRET": "j" * 40, "INTERNAL_API_KEY": "internal-key-prod",
           "ADMIN_PASSWORD": "a-real-admin-password"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v != ""}


def test_production_refuses_default_secrets() -> None:
    assert Settings.from_env(_prod()).jwt_secret == "j" * 40
    for name in ("JWT_SECRET", "INTERNAL_API_KEY", "ADMIN_PASSWORD"):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(_prod(**{name: DEV_SECRETS[name]}))
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(_prod(**{name: ""}))
    with pytest.raises(ConfigError):
        Settings.from_env(_prod(JWT_SECRET="short"))


def test_settings_refuse_bad_admin() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"ADMIN_USER": "no spaces allowed"})
    with pytest.raises(ConfigError):
        Settings.from_env({"ADMIN_PASSWORD": "short"})
    with pytest.raises(ConfigError):
        Settings.from_env({"ACCESS_TOKEN_TTL_SECONDS": "4"})
