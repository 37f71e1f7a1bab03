"""file_uploader's pure rules: names, sizes, types, items, chunk arithmetic, retries."""

from __future__ import annotations

import pytest

from services.common import validation
from services.common.errors import ApiError
from services.file_uploader import core
from services.file_uploader.config import Settings
from services.file_uploader.core import Limits
from services.file_uploader.uploads import StreamingHashes

LIMITS = Limits(max_file_size=10 * core.MiB, chunk_size=core.MiB, max_items=3)
NOW = "2024-05-01T10:00:00.000Z"


def refused(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("raw,expected", [
    ("report.csv", "report.csv"), ("C:\\fakepath\\a b.txt", "a b.txt"), ("../../etc/passwd", "passwd"),
    ("dir/sub/ünïcode.dat", "ünïcode.dat"),
])
def test_file_name_keeps_the_base_name(raw: str, expected: str) -> None:
    assert validation.check_file_name(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "..", "a/", "x\x00y", "bad\nname", "é" * 200, None, 5])
def test_file_name_refusals(raw) -> None:
    assert refused(validation.check_file_name, raw).code == "bad_request"


@pytest.mark.parametrize("name", ["setup.EXE", "x.Sh", "lib.dll", "run.bat.", "a.jar", "p.ps1"])
def test_forbidden_extensions(name: str) -> None:
    err = refused(core.check_extension, name, LIMITS.forbidden_extensions)
    assert (err.status, err.code) == (415, "forbidden_type")


def test_harmless_extensions_pass() -> None:
    for name in ("data.csv", "photo.jpg", "exe.txt", "archive.tar.gz"):
        core.check_extension(name, LIMITS.forbidden_extensions)


@pytest.mark.parametrize("head", [b"MZ\x90\x00", b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe",
                                  b"#!/b"])
def test_executable_content_is_refused(head: bytes) -> None:
    err = refused(core.check_content, head)
    assert (err.status, err.code) == (415, "forbidden_type")


def test_plain_content_passes() -> None:
    core.check_content(b"PK\x03\x04")
    core.check_content(b"hello")
    core.check_content(b"")


def test_executable_content_type_refused() -> None:
    assert refused(core.check_content_type, "application/x-msdownload").code == "forbidden_type"
    assert core.check_content_type(None) == "application/octet-stream"
    assert core.check_content_type("text/csv; charset=utf-8") == "text/csv; charset=utf-8"


def test_sizes() -> None:
    assert refused(core.check_size, 0, LIMITS).code == "empty_file"
    err = refused(core.check_size, 10 * core.MiB + 1, LIMITS)
    assert (err.status, err.code) == (413, "too_large")
    assert refused(core.check_size, -1, LIMITS).code == "bad_request"
    assert refused(core.check_size, "12", LIMITS).code == "bad_request"
    assert refused(core.check_size, True, LIMITS).code == "bad_request"
    assert core.check_size(10 * core.MiB, LIMITS) == 10 * core.MiB


def test_metadata_limit() -> None:
    assert core.parse_metadata('{"a": 1}', 100) == {"a": 1}
    assert refused(core.parse_metadata, "[1]", 100).code == "bad_request"
    assert refused(core.parse_metadata, {"a": "x" * 200}, 100).status == 413
    assert refused(core.parse_metadata, "{nope", 100).code == "bad_request"


def test_sha256_format() -> None:
    assert validation.optional_sha256("A" * 64) == "a" * 64
    assert refused(validation.optional_sha256, "abc").code == "bad_request"


def test_chunk_math() -> None:
    assert core.chunk_count(1, 1024) == 1
    assert core.chunk_count(1024, 1024) == 1
    assert core.chunk_count(1025, 1024) == 2
    assert core.chunk_length(2500, 1024, 0) == 1024
    assert core.chunk_length(2500, 1024, 2) == 452
    assert core.chunk_length(2048, 1024, 1) == 1024


def test_chunk_checks() -> None:
    core.check_chunk(2500, 1024, 2, 452)
    assert refused(core.check_chunk, 2500, 1024, 3, 10).code == "bad_request"
    assert refused(core.check_chunk, 2500, 1024, -1, 10).code == "bad_request"
    assert refused(core.check_chunk, 2500, 1024, 0, 1025).status == 413
    assert refused(core.check_chunk, 2500, 1024, 0, 1000).code == "bad_request"
    assert refused(core.check_chunk, 2500, 1024, 2, 453).status == 413
    assert refused(core.parse_index, "x").code == "bad_request"


def test_missing_indexes() -> None:
    assert core.missing_indexes(5, {0, 2, 4}) == [1, 3]
    assert core.missing_indexes(2, []) == [0, 1]


def test_plain_upload_is_one_item() -> None:
    items = core.build_items("u1", None, 100, "a.csv", NOW, LIMITS)
    assert len(items) == 1 and items[0].file_id == "u1" and items[0].length == 100


def test_batch_items() -> None:
    raw = [{"timestamp": "2024-05-01T09:00:00Z", "offset": 0, "length": 10, "name": "one.csv"},
           {"timestamp": "2024-05-01T09:01:00+02:00", "offset": 10, "length": 90}]
    items = core.build_items("u1", raw, 100, "batch.bin", NOW, LIMITS)
    assert [i.file_id for i in items] == ["u1-0000", "u1-0001"]
    assert items[1].timestamp == "2024-05-01T07:01:00.000Z"
    assert items[1].name == "batch.bin.0001"


@pytest.mark.parametrize("raw", [
    [{"timestamp": NOW, "offset": 0, "length": 0}],
    [{"timestamp": NOW, "offset": 90, "length": 20}],
    [{"timestamp": NOW, "offset": 0, "length": 50}, {"timestamp": NOW, "offset": 49, "length": 10}],
    [{"timestamp": "yesterday", "offset": 0, "length": 5}],
    [{"offset": 0, "length": 5}],
    [{"timestamp": NOW, "offset": "0", "length": 5}],
    [{"timestamp": NOW, "offset": i, "length": 1} for i in range(4)],
    {"not": "a list"},
])
def test_bad_items(raw) -> None:
    assert refused(core.build_items, "u1", raw, 100, "b.bin", NOW, LIMITS).code == "bad_request"


def test_item_heads_and_their_parts() -> None:
    items = core.build_items("u", [{"timestamp": NOW, "offset": o, "length": n}
                                   for o, n in ((0, 10), (1022, 5), (1030, 10), (2046, 2))],
                             3000, "b", NOW, Limits())
    assert [core.head_parts(i, 1024) for i in items] == [
        [(0, 0, 4)], [(0, 1022, 1024), (1, 0, 2)], [(1, 6, 10)], [(1, 1022, 1024)]]
    assert core.heads_touching_chunk(items, 0, 1024) == [[(0, 0, 4)], [(0, 1022, 1024), (1, 0, 2)]]
    assert core.heads_touching_chunk(items, 1, 1024) == [[(0, 1022, 1024), (1, 0, 2)], [(1, 6, 10)],
                                                         [(1, 1022, 1024)]]
    assert core.heads_touching_chunk(items, 2, 1024) == []
    assert core.straddling_heads(items, 1024) == [[(0, 1022, 1024), (1, 0, 2)]]


def test_plan_upload_defaults_and_refusals() -> None:
    plan = core.plan_upload({"file_name": "a.csv", "size": 2 * core.MiB + 1}, upload_id="u", owner_id="o",
                            owner_name="n", limits=LIMITS, now=NOW)
    assert (plan.chunk_count, plan.timestamp, plan.kind) == (3, NOW, "file")
    assert refused(core.plan_upload, {"file_name": "a.exe", "size": 1}, upload_id="u", owner_id="o",
                   owner_name="n", limits=LIMITS, now=NOW).code == "forbidden_type"
    assert refused(core.plan_upload, {"file_name": "a", "size": 1, "content_type": "application/x-sh"},
                   upload_id="u", owner_id="o", owner_name="n", limits=LIMITS,
                   now=NOW).code == "forbidden_type"
    assert refused(core.plan_upload, {"file_name": "a", "size": 1, "timestamp": "soon"}, upload_id="u",
                   owner_id="o", owner_name="n", limits=LIMITS, now=NOW).code == "bad_request"


def test_retry_decisions() -> None:
    assert core.retry_decision(1) == core.RetryDecision(True, 2)
    assert core.retry_decision(2) == core.RetryDecision(True, 3)
    assert core.retry_decision(3) == core.RetryDecision(False, None)


def test_overload_reasons() -> None:
    assert core.overload_reasons(queue_depth=5, max_queue_depth=10, redis_memory=1, max_redis_memory=10,
                                 pending_bytes=1, max_pending_bytes=10) == []
    assert len(core.overload_reasons(queue_depth=10, max_queue_depth=10, redis_memory=10, max_redis_memory=10,
                                     pending_bytes=10, max_pending_bytes=10)) == 3
    assert core.overload_reasons(queue_depth=10**6, max_queue_depth=0, redis_memory=None, max_redis_memory=5,
                                 pending_bytes=None, max_pending_bytes=5) == []


def test_streaming_hash_in_order_and_behind() -> None:
    import hashlib

    hashes = StreamingHashes()
    hashes.advance("u", 1, b"b")  # out of order: ignored
    hashes.advance("u", 0, b"a")
    hashes.advance("u", 0, b"a")  # rewrite: ignored
    hasher, nxt = hashes.take("u")
    assert nxt == 1
    hasher.update(b"b")
    assert hasher.hexdigest() == hashlib.sha256(b"ab").hexdigest()
    assert hashes.take("u")[1] == 0


def test_streaming_hash_by_parts_of_chunks() -> None:
    """The tus door hashes each PATCH's bytes as Redis keeps them; a state inside a chunk is not finished."""
    import hashlib

    hashes = StreamingHashes()
    hashes.advance_part("u", 0, 0, b"ab", 4)
    hashes.advance_part("u", 0, 1, b"zz", 4)  # not where the state stands: ignored
    hashes.advance_part("u", 0, 2, b"cd", 4)  # chunk 0 complete
    hashes.advance_part("u", 1, 0, b"e", 4)
    assert hashes.take("u")[1] == 0  # inside chunk 1: completion hashes from the start
    for index, at, data in ((0, 0, b"abcd"), (1, 0, b"ef"), (1, 2, b"gh"), (2, 0, b"i")):
        hashes.advance_part("v", index, at, data, 4 if index < 2 else 1)
    hasher, nxt = hashes.take("v")
    assert nxt == 3 and hasher.hexdigest() == hashlib.sha256(b"abcdefghi").hexdigest()


def test_settings_from_env() -> None:
    s = Settings.from_env({"CHUNK_SIZE": "65536", "MAX_FILE_SIZE": "1000",
                           "FORBIDDEN_EXTENSIONS": "exe, .BIN"})
    assert s.limits.chunk_size == 65536 and s.limits.max_file_size == 1000
    assert s.limits.forbidden_extensions == (".exe", ".bin")
    from services.common.settings import ConfigError

    with pytest.raises(ConfigError):
        Settings.from_env({"CHUNK_SIZE": "10"})


def test_the_cached_bytes_budget_setting() -> None:
    from services.common.settings import ConfigError

    assert Settings.from_env({}).max_cached_bytes_per_user == 256 * 1024 * 1024
    big = Settings.from_env({"MAX_FILE_SIZE": str(1 << 30)})
    assert big.max_cached_bytes_per_user == 1 << 30  # the default never refuses a file of the largest size
    assert Settings.from_env({"MAX_CACHED_BYTES_PER_USER": "0"}).max_cached_bytes_per_user == 0
    with pytest.raises(ConfigError):
        Settings.from_env({"MAX_FILE_SIZE": "1000", "MAX_CACHED_BYTES_PER_USER": "999"})


def test_the_user_quota_setting() -> None:
    from services.common.settings import ConfigError

    assert Settings.from_env({}).user_quota_bytes == 0  # SPEC: unlimited by default
    assert Settings.from_env({"USER_QUOTA_BYTES": "1000"}).user_quota_bytes == 1000
    with pytest.raises(ConfigError):
        Settings.from_env({"USER_QUOTA_BYTES": "-1"})
