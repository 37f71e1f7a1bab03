"""Staging's pure rules: targets checked, path templates that cannot escape, signing, the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest

from services.common import poolstorage
from services.file_service_manager import staging_rules as rules

VALUES = {"pool_id": "p1", "group_id": "g-1", "window_start": "2026-01-01T00:00:00Z", "seq": 7,
          "file_name": "mean.f64", "result_id": "r1", "sha256": "a" * 64, "download_url": "http://f/file/r1"}


def test_a_template_renders_each_placeholder_and_adds_the_file_name() -> None:
    path = rules.file_path("/stage/{pool_id}/{window_start}", VALUES)
    assert path == "/stage/p1/2026-01-01T00:00:00Z/mean.f64"
    assert rules.file_path("/stage/{group_id}-{seq}-{file_name}", VALUES) == "/stage/g-1-7-mean.f64"
    assert rules.file_path("/stage/fixed", VALUES) == "/stage/fixed/mean.f64"


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", ".", "a/../../b", "/abs/path", "x\x00y", "..\\..\\win",
                                  "\n\r\t", "", ".hidden", "a" * 400, "../" * 50 + "x"])
def test_a_hostile_file_name_stays_one_component_inside_the_target_directory(name: str) -> None:
    for template in ("/stage/{pool_id}", "/stage/{pool_id}/{file_name}", "/stage/{file_name}/{seq}"):
        path = rules.file_path(template, {**VALUES, "file_name": name})
        assert rules.is_under(path, "/stage"), (template, name, path)
        assert os.path.normpath(path) == path and "\x00" not in path
        assert all(part not in (".", "..") and not part.startswith(".") for part in path.split("/")[1:]), path
        assert all(len(part.encode()) <= rules.MAX_COMPONENT_BYTES for part in path.split("/"))


def test_hostile_values_in_every_placeholder_stay_inside() -> None:
    hostile = {k: "../../x/.." for k in rules.PLACEHOLDERS}
    path = rules.file_path("/stage/{pool_id}/{group_id}/{window_start}/{seq}/{file_name}", hostile)
    assert rules.is_under(path, "/stage") and path.count("/") == 6


@pytest.mark.parametrize("template", ["relative/{pool_id}", "/stage/../etc/{pool_id}", "/{pool_id}", "/stage/{nope}",
                                      "/stage/{pool_id", "/stage/}{seq}"])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(rules.BadTarget):
        rules.parse_target({"kind": "filesystem", "path": template})


def test_targets_are_checked_and_keep_secrets_out_of_reprs_and_errors() -> None:
    s3 = rules.parse_target({"kind": "s3", "endpoint_url": "http://127.0.0.1:9000", "bucket": "b",
                             "prefix": "{pool_id}/", "access_key_id": "AKIDSECRET", "secret_access_key": "TOPSECRET"})
    hook = rules.parse_target({"kind": "webhook", "url": "https://h.example/x?token=q", "secret": "TOPSECRET"})
    fs = rules.parse_target({"kind": "filesystem", "path": "/stage/{pool_id}", "link": True})
    assert (s3.kind, hook.kind, fs.kind, fs.link) == ("s3", "webhook", "filesystem", True)
    assert "TOPSECRET" not in repr(s3) + repr(hook) and "AKIDSECRET" not in repr(s3)
    for raw in ({"kind": "webhook", "url": "ftp://x", "secret": "TOPSECRET"}, {"kind": "webhook", "url": "http://h"},
                {"kind": "s3", "endpoint_url": "http://h", "bucket": "b", "secret_access_key": "TOPSECRET"},
                {"kind": "nope"}, "not an object", {"kind": "filesystem", "path": "/s", "link": "yes"},
                {"kind": "webhook", "url": "http://h", "secret": "x" * 5000}):
        with pytest.raises(rules.BadTarget) as caught:
            rules.parse_target(raw)
        assert "TOPSECRET" not in str(caught.value)
    assert rules.kind_of({"kind": "s3"}) == "s3" and rules.kind_of({"kind": "x"}) == "unknown"


def test_s3_keys_render_the_prefix_and_make_names_safe() -> None:
    assert rules.s3_key("{pool_id}/{seq}/", VALUES) == "p1/7/mean.f64"
    assert rules.s3_key("", {**VALUES, "file_name": "../a/b"}) == "_._a_b"
    assert rules.s3_key("out/{file_name}", VALUES) == "out/mean.f64"


def test_the_webhook_body_is_spec_payload_and_the_signature_is_hmac_sha256_of_it() -> None:
    body = rules.webhook_body(VALUES)
    assert json.loads(body) == {k: VALUES[k] for k in ("pool_id", "group_id", "result_id", "seq", "sha256",
                                                        "download_url")}
    signature = rules.sign("s3cret", body)
    assert signature == hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert rules.sign("other", body) != signature and rules.sign("s3cret", body + b" ") != signature


def test_retries_wait_growing_delays_up_to_the_cap_and_stop_at_max_attempts() -> None:
    assert [rules.retry_delay(n, 30, 2, 3600) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert rules.retry_delay(9, 30, 2, 3600) == 3600
    with pytest.raises(ValueError):
        rules.retry_delay(0, 30, 2, 3600)
    assert [rules.next_step(a, 5) for a in range(1, 6)] == ["retry"] * 4 + ["failed"]
    assert rules.next_step(1, 1) == "failed"


def test_public_urls_drop_user_info_and_queries() -> None:
    assert rules.public_url("https://user:pw@h.example:8443/hook?token=abc#f") == "https://h.example:8443/hook"


def test_doubled_braces_are_literal_as_auth_allows() -> None:
    assert rules.file_path("/stage/{{raw}}/{seq}", VALUES) == "/stage/{raw}/7/mean.f64"
    assert rules.base_dir("/stage/{{raw}}/{seq}") == "/stage/{raw}"


@pytest.mark.parametrize("template", [
    "/{pool_id}/x", "/{seq}", "relative/{seq}", "/srv/../etc/{seq}", "/srv/{user_id}", "/srv/{seq", "/srv/{seq:>3}",
    "/srv/{{literal}}/{pool_id}", "/srv/out/{pool_id}/{window_start}", "/srv/x{pool_id}", "/srv",
])
def test_auth_and_file_service_manager_agree_on_every_staging_path(template: str) -> None:
    def auth_accepts() -> bool:
        try:
            poolstorage.check_staging([{"kind": "filesystem", "path": template}])
        except poolstorage.StorageInvalid:
            return False
        return True

    def fsm_accepts() -> bool:
        try:
            rules.parse_target({"kind": "filesystem", "path": template})
        except rules.BadTarget:
            return False
        return True

    assert auth_accepts() == fsm_accepts()


def test_the_target_count_limit_is_the_same_for_both() -> None:
    assert rules.MAX_TARGETS == poolstorage.MAX_STAGING_TARGETS
    poolstorage.check_staging([{"kind": "filesystem", "path": f"/srv/{i}"} for i in range(rules.MAX_TARGETS)])
    with pytest.raises(poolstorage.StorageInvalid):
        poolstorage.check_staging([{"kind": "filesystem", "path": f"/srv/{i}"} for i in range(rules.MAX_TARGETS + 1)])
