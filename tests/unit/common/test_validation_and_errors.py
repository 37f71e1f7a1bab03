"""The one error type, its status map and the shared input rules."""

from __future__ import annotations

import pytest

from services.common import errors, validation
from services.common.errors import ApiError


def refused(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    assert info.value.status == 400 and info.value.code == "bad_request"
    return info.value


@pytest.mark.parametrize("value", ["abc", "A-b_9", "x" * 128, "p_0123abcd", "u1-0001"])
def test_ids_accepted(value: str) -> None:
    assert validation.check_id(value, "file_id") == value


@pytest.mark.parametrize("value", ["", "x" * 129, "a/b", "../x", "a.b", "a:b", "a b", "abc\n", "é", None,
                                   True, 1.5, ["a"]])
def test_ids_refused(value: object) -> None:
    err = refused(validation.check_id, value, "file_id")
    assert "file_id" in err.message


def test_int_id_is_its_decimal_text_and_optional_id_allows_absence() -> None:
    assert validation.check_id(7, "pool_id") == "7"
    assert validation.optional_id(None, "pool_id") is None
    assert validation.optional_id("", "pool_id") is None


def test_sha256_lower_cased_and_strict() -> None:
    assert validation.check_sha256("AB" * 32) == "ab" * 32
    for bad in ["ab" * 31, "g" * 64, "ab" * 32 + "\n", 5]:
        refused(validation.check_sha256, bad)
    assert validation.optional_sha256("") is None


def test_int_bounds_and_no_bools() -> None:
    assert validation.check_int(3, "n", 0, 5) == 3
    for bad in [-1, 6, True, 2.0, "3"]:
        refused(validation.check_int, bad, "n", 0, 5)


@pytest.mark.parametrize(("raw", "expected"), [("a.txt", "a.txt"), ("C:\\fakepath\\x.txt", "x.txt"),
                                               ("dir/y.bin", "y.bin"), (" z ", "z")])
def test_file_names(raw: str, expected: str) -> None:
    assert validation.check_file_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "..", "a/", "a\x00b", "x" * 256, 3])
def test_file_names_refused(raw: object) -> None:
    refused(validation.check_file_name, raw)


def test_safe_name_never_escapes() -> None:
    assert validation.safe_name("../../etc/passwd") == "passwd"
    assert validation.safe_name("...") == "file"
    assert validation.safe_name("a b;c") == "a_b_c"


def test_timestamps_normalised_or_refused() -> None:
    assert validation.check_timestamp("2024-01-01T01:00:00+01:00") == "2024-01-01T00:00:00.000Z"
    err = refused(validation.check_timestamp, "soon", "since")
    assert err.message.startswith("since")


def test_user_names() -> None:
    assert validation.check_user_name("ann.b-1") == "ann.b-1"
    for bad in ["ab", "a" * 65, "ann\n", "a b"]:
        refused(validation.check_user_name, bad)


def test_status_map_both_ways() -> None:
    for status, code in errors.STATUS_CODES.items():
        assert errors.code_for(status) == code
        assert errors.status_for(code) == status
    assert errors.code_for(418) == "bad_request"
    assert errors.code_for(502) == "unavailable"
    assert ApiError.of("forbidden_type", "no").status == 415


def test_body_drops_empty_extras() -> None:
    err = errors.conflict("missing", missing=[1], retry_after=None)
    assert err.body() == {"error": {"code": "conflict", "message": "missing", "missing": [1]}}
    assert errors.overloaded("busy", 3).body()["error"]["retry_after"] == 3
