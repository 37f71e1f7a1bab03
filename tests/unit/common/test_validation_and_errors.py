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


# --- input bounds (issue 10) ---------------------------------------------------------------

@pytest.mark.parametrize("raw", ["a:b.txt", "what?.bin", "x*.y", 'say "hi".txt', "a<b", "a|b", "CON", "con.txt",
                                 "Nul.tar.gz", "COM1", "lpt9.log", "COM¹", "...", " . ", "\u202etxt.exe",
                                 "a\u2028b", "\ud800.bin"])
def test_file_names_unsafe_on_some_os_are_refused(raw: str) -> None:
    refused(validation.check_file_name, raw)


@pytest.mark.parametrize(("raw", "expected"), [("name.", "name"), ("name . ", "name"), ("console.txt", "console.txt"),
                                               ("COM10", "COM10"), ("résumé 2026.pdf", "résumé 2026.pdf"),
                                               ("数据.bin", "数据.bin")])
def test_file_names_trailing_dots_stripped_unicode_kept(raw: str, expected: str) -> None:
    assert validation.check_file_name(raw) == expected


def test_file_name_bound_is_utf8_bytes() -> None:
    assert validation.check_file_name("é" * 127) == "é" * 127  # 254 bytes
    refused(validation.check_file_name, "é" * 128)  # 256 bytes


NOW = validation.timeutil.parse("2026-06-01T12:00:00Z")


@pytest.mark.parametrize("raw", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                                 "1969-12-31T23:59:59Z", "0001-01-01", "2026-13-01", "2026-06-01T12:00:00+25:00",
                                 "x" * 5000, "", None, 17, "2026-06-01T12:00:00Z\n\n" * 2])
def test_timestamps_outside_the_range_or_unparsable_are_400(raw: object) -> None:
    refused(validation.check_timestamp, raw)


def test_event_times_at_most_the_clock_skew_in_the_future() -> None:
    skew = validation.MAX_CLOCK_SKEW_SECONDS
    assert skew == 300
    ok = validation.timeutil.iso(NOW + validation.timedelta(seconds=skew))
    assert validation.check_event_time(ok, now=NOW) == ok
    late = validation.timeutil.iso(NOW + validation.timedelta(seconds=skew + 1))
    err = refused(lambda value: validation.check_event_time(value, now=NOW), late)
    assert "future" in err.message
    refused(validation.check_event_time, "9999-12-31T23:59:59Z")  # the year-9999 upload of the issue
    assert validation.check_event_time("1970-01-01T00:00:00Z", now=NOW) == "1970-01-01T00:00:00.000Z"
    # A query bound (since) may be in the future: nothing is newer, not an error.
    assert validation.check_timestamp("2999-01-01T00:00:00Z", "since") == "2999-01-01T00:00:00.000Z"


@pytest.mark.parametrize(("raw", "expected"), [
    (None, "application/octet-stream"), ("", "application/octet-stream"), ("Text/Plain", "text/plain"),
    ("text/plain; charset=UTF-8", "text/plain; charset=UTF-8"),
    ("application/vnd.api+json", "application/vnd.api+json"),
    ('multipart/mixed; boundary="a b"', 'multipart/mixed; boundary="a b"'), ("a/" + "b" * 127, "a/" + "b" * 127),
])
def test_content_types_are_rfc6838_media_types(raw: object, expected: str) -> None:
    assert validation.check_content_type(raw) == expected
    assert validation.is_content_type(expected)


@pytest.mark.parametrize("raw", ["text/plaïn", "тип/подтип", "text", "text/", "/plain", "text/plain/x",
                                 "a/" + "b" * 128, "text/plain\r\nX-Evil: 1", "text/pl ain", "text/plain; charset",
                                 "text/plain; a=\"\x01\"", "t" * 300, 5, ["text/plain"]])
def test_content_types_refused(raw: object) -> None:
    refused(validation.check_content_type, raw)
    assert not validation.is_content_type(raw)


def test_metadata_size_depth_and_shape() -> None:
    assert validation.check_metadata(None) == {}
    assert validation.check_metadata('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    deep: dict = {}
    node = deep
    for _ in range(validation.MAX_METADATA_DEPTH - 1):
        node["k"] = {}
        node = node["k"]
    assert validation.check_metadata(deep) == deep  # exactly 8 levels
    node["k"] = {}
    refused(validation.check_metadata, deep)
    very_deep: list = []
    for _ in range(100_000):  # would overflow a recursive encoder
        very_deep = [very_deep]
    refused(validation.check_metadata, {"a": very_deep})
    refused(validation.check_metadata, "[" * 10_000)
    for bad in ["[1]", "nope", 3, {"x": float("nan")}, {"x": {1, 2}}]:
        refused(validation.check_metadata, bad)
    with pytest.raises(ApiError) as info:
        validation.check_metadata({"x": "y" * validation.MAX_METADATA_BYTES})
    assert (info.value.status, info.value.code) == (413, "too_large")


@pytest.mark.parametrize("raw", ["²", "0", "1001", "-1", "1e3", " 5", "9" * 5000, 5])
def test_page_limits_refuse_anything_but_1_to_1000(raw: object) -> None:
    with pytest.raises(ApiError) as info:
        validation.page_limit(raw)
    assert info.value.status == 400


def test_page_limits_default_and_bounds() -> None:
    assert validation.page_limit(None) == 100 and validation.page_limit("1") == 1
    assert validation.page_limit("1000") == 1000


@pytest.mark.parametrize(("raw", "signed"), [("²", False), ("-1", False), ("-" + "9" * 20, True), ("1-", True),
                                             ("9" * 19, False)])
def test_count_params_fit_a_64_bit_field_or_are_refused(raw: str, signed: bool) -> None:
    with pytest.raises(ApiError):
        validation.count_param(raw, "after_seq", signed=signed)


def test_count_params_parse() -> None:
    assert validation.count_param(None, "x") is None and validation.count_param("", "x") is None
    assert validation.count_param("42", "x") == 42 and validation.count_param("-42", "x", signed=True) == -42
