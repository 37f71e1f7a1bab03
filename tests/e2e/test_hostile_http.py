"""Issue 10, the HTTP side, as a hostile client would do it against the running fleet.

Every probe asserts the clear refusal (SPEC's JSON error), that the attacked service's
memory stays bounded, and that a normal user is still served afterwards. Each probe is
bounded in time (socket timeouts of a few seconds, hypothesis runs of a few dozen cases).
The gateway's own server (eventlet) and auth's rate limits are covered by their owners'
probes in test_hostile.py.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.settings import DEV_SECRETS

from .helpers import assert_error, bearer, signup

pytestmark = pytest.mark.e2e

HTTP_SERVICES = ("auth", "file_uploader", "file_service_manager", "pool_aggregator")
# How much a service's resident memory may grow over the whole module's probes.
RSS_GROWTH_BOUND = 150 * 1024 * 1024


def rss(fleet, service: str) -> int:
    """Resident bytes of the service's process (Linux /proc)."""
    pid = fleet.fleet.procs[service].pid
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {service}")


def address(fleet, service: str) -> tuple[str, int]:
    parts = urlsplit(fleet.urls[service])
    return parts.hostname or "127.0.0.1", int(parts.port or 80)


def raw_exchange(where: tuple[str, int], raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` (the whole of what we send), read one answer: status, headers, body."""
    with socket.create_connection(where, timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server may answer and close before taking everything we meant to send
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
        return int(lines[0].split()[1]), headers, body


def spec_error(status: int, headers: dict[str, str], body: bytes, expected_status: int, code: str) -> None:
    assert status == expected_status, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"], error


@pytest.fixture(scope="module")
def memory(fleet) -> Iterator[dict[str, int]]:
    before = {name: rss(fleet, name) for name in HTTP_SERVICES}
    yield before
    for name in HTTP_SERVICES:
        grown = rss(fleet, name) - before[name]
        assert grown < RSS_GROWTH_BOUND, f"{name} grew by {grown >> 20} MiB under the probes"


@pytest.fixture(scope="module")
def user(fleet) -> dict:
    return signup(fleet.urls["auth"])


def still_serves_a_normal_user(fleet) -> None:
    someone = signup(fleet.urls["auth"])
    r = requests.get(f"{fleet.urls['file_service_manager']}/files", headers=bearer(someone["access_token"]),
                     timeout=10)
    assert r.status_code == 200, r.text


# --- bodies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("service,request_line,announced", [
    ("auth", b"POST /auth/signup", 10 * 1024 * 1024),
    ("file_uploader", b"POST /file/upload", 10 * 1024 ** 3),
    ("file_service_manager", b"DELETE /file/x", 1024 * 1024),
    ("pool_aggregator", b"POST /pools/p/groups/g/result", 10 * 1024 ** 3),
])
def test_a_huge_content_length_is_refused_from_the_headers(fleet, memory, service, request_line, announced) -> None:
    # Not one byte of the body is sent: the JSON 413 comes from the headers alone, at once.
    began = time.monotonic()
    status, headers, body = raw_exchange(address(fleet, service), request_line + b" HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % announced)
    spec_error(status, headers, body, 413, "too_large")
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("service,path", [("file_service_manager", b"/files"), ("auth", b"/auth/signup")])
def test_an_endless_chunked_body_is_cut_at_the_bound(fleet, memory, service, path) -> None:
    chunk = b"x" * 65536
    many = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40))  # 2.5 MiB, past both bounds
    status, headers, body = raw_exchange(address(fleet, service), b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\n" + many)
    spec_error(status, headers, body, 413, "too_large")


def test_a_small_json_route_refuses_a_large_body(fleet, memory) -> None:
    # Within file_uploader's server bound (it takes whole files), over the route's JSON bound.
    payload = json.dumps({"file_name": "a.bin", "size": 1, "pad": "x" * (12 * 1024 * 1024)})
    r = requests.put(f"{fleet.urls['file_uploader']}/file/update/status", data=payload, timeout=30,
                     headers={"Content-Type": "application/json", "X-Internal-Key": DEV_SECRETS["INTERNAL_API_KEY"]})
    assert_error(r, 413, "too_large")


# --- connections and timeouts ----------------------------------------------------------------

@pytest.mark.parametrize("service", ["auth", "file_service_manager"])
def test_many_idle_sockets_do_not_take_the_service_away(fleet, memory, service) -> None:
    idle: list[socket.socket] = []
    try:
        for _ in range(120):
            idle.append(socket.create_connection(address(fleet, service), timeout=5))
        began = time.monotonic()
        r = requests.get(f"{fleet.urls[service]}/health", timeout=5)
        assert r.status_code == 200 and time.monotonic() - began < 3
    finally:
        for sock in idle:
            sock.close()


def test_headers_sent_a_byte_at_a_time_are_cut_off(fleet, memory) -> None:
    with socket.create_connection(address(fleet, "file_service_manager"), timeout=30) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        closed = False
        while time.monotonic() - began < 40:
            try:
                slow.sendall(b"X")  # a byte a second: still no end of headers
            except OSError:
                closed = True
                break
            slow.settimeout(1)
            try:
                if slow.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:  # reset by the server: cut off just the same
                closed = True
                break
        assert closed, "a slowloris client kept its connection"
        # Header timeout 10 s + the 5 s sweep, with room for a loaded CI machine (never the 40 s loop).
        assert time.monotonic() - began < 35
    still_serves_a_normal_user(fleet)


# --- input bounds through the real doors -----------------------------------------------------

def upload(fleet, user: dict, data: bytes, name: str = "report.csv", content_type: str = "text/csv",
           **form: str) -> requests.Response:
    return requests.post(f"{fleet.urls['file_uploader']}/file/upload", headers=bearer(user["access_token"]),
                         files={"file": (name, data, content_type)}, data=form, timeout=30)


@pytest.mark.parametrize("name,content_type,form", [
    ("a.bin", "application/octet-stream", {"timestamp": "9999-12-31T23:59:59Z"}),
    ("a.bin", "application/octet-stream", {"timestamp": "9999-12-31T23:59:59-01:00"}),
    ("a.bin", "application/octet-stream", {"timestamp": "1960-01-01T00:00:00Z"}),
    ("a.bin", "текст/plain", {}),
    ("a.bin", "text/plain\x7f", {}),
    ("CON.txt", "application/octet-stream", {}),
    ("what?.bin", "application/octet-stream", {}),
    ("a.bin", "application/octet-stream", {"metadata": "[" * 5000}),
    ("a.bin", "application/octet-stream", {"metadata": json.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": {
        "h": {"i": 1}}}}}}}}})}),
])
def test_unsafe_input_is_refused_with_400(fleet, memory, user, name, content_type, form) -> None:
    r = upload(fleet, user, os.urandom(1024), name=name, content_type=content_type, **form)
    assert_error(r, 400, "bad_request")


@pytest.fixture(scope="module")
def stored_file(fleet, user) -> str:
    r = upload(fleet, user, bytes(range(256)) * 400, name="résumé 数据.csv")
    assert r.status_code == 201, r.text
    file_id = r.json()["file_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = requests.get(f"{fleet.urls['file_service_manager']}/file/{file_id}", headers=bearer(user["access_token"]),
                         timeout=10)
        if r.status_code == 200:
            return file_id
        time.sleep(0.3)
    raise AssertionError("the upload was not stored within 30 s")


@pytest.mark.parametrize("header,statuses", [
    ("bytes=²-5", {200}), ("bytes=0-" + "9" * 5000, {206}), ("bytes=" + "1" * 5000 + "-", {416}),
    ("bytes=-" + "7" * 5000, {206}), ("bytes=0-1,3-4", {200}), ("bytes=-5-", {200}), ("bytes=9-2", {200}),
    ("bytes=0-0", {206}), ("bytes=102400-", {416}),
])
def test_odd_ranges_never_answer_500(fleet, memory, user, stored_file, header, statuses) -> None:
    r = requests.get(f"{fleet.urls['file_service_manager']}/file/{stored_file}",
                     headers={**bearer(user["access_token"]), "Range": header.encode("utf-8").decode("latin-1")},
                     timeout=10)
    assert r.status_code in statuses, (r.status_code, r.text[:200])


def test_a_download_names_the_original_file(fleet, user, stored_file) -> None:
    r = requests.get(f"{fleet.urls['file_service_manager']}/file/{stored_file}", headers=bearer(user["access_token"]),
                     timeout=10)
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%95%B0%E6%8D%AE.csv" in r.headers["Content-Disposition"]
    assert r.headers["Content-Type"].startswith("text/csv")


# --- surface ---------------------------------------------------------------------------------

@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_cors_only_for_the_gateway_origin(fleet, service) -> None:
    good = fleet.urls["socket_gateway"]
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    r = requests.options(f"{fleet.urls[service]}/health", headers={"Origin": good, **preflight}, timeout=10)
    assert r.headers.get("Access-Control-Allow-Origin") == good
    r = requests.options(f"{fleet.urls[service]}/health", headers={"Origin": "https://evil.example", **preflight},
                         timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers


# --- fuzz: JSON bodies of the HTTP routes ------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=4),
                    max_leaves=12)
BODIES = st.one_of(JSON, st.fixed_dictionaries({}, optional={
    "user_name": JSON, "password": JSON, "refresh_token": JSON, "file_id": JSON, "status": JSON,
    "file_name": JSON, "size": JSON, "content_type": JSON, "timestamp": JSON, "items": JSON, "metadata": JSON,
    "owner_id": JSON, "writer": JSON}))
ROUTES = [("auth", "POST", "/auth/signup"), ("auth", "PUT", "/auth/login/fuzz_user"),
          ("auth", "POST", "/auth/refresh"), ("file_uploader", "POST", "/uploads"),
          ("file_uploader", "PUT", "/file/update/status"), ("file_uploader", "POST", "/uploads/abc/complete")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=BODIES)
def test_fuzzed_json_bodies_never_answer_500(fleet, route, body) -> None:
    service, method, path = route
    r = requests.request(method, f"{fleet.urls[service]}{path}", data=json.dumps(body), timeout=10,
                         headers={"Content-Type": "application/json",
                                  "X-Internal-Key": DEV_SECRETS["INTERNAL_API_KEY"]})
    assert r.status_code < 500, (route, body, r.status_code, r.text[:300])
    assert "error" in r.json() or r.status_code < 300


def test_the_fleet_still_serves_a_normal_user_afterwards(fleet, memory) -> None:
    still_serves_a_normal_user(fleet)
