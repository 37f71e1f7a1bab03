"""The dashboard against the whole fleet, driven like a person in headless Chromium.

Each test signs in through the page, acts through the page, and checks what the
page shows against what the services hold (sha256 of downloads, records, events).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from ..helpers import RawSocket, signup, unique_name
from ..pools import Admin, Processor

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct-horse-battery"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_in(page, gateway: str, user: str, password: str) -> None:
    page.goto(gateway + "/")
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")
    page.locator("#nav").wait_for(state="visible")
    page.locator("#conn.online").wait_for()


def go(page, route: str) -> None:
    page.click(f"#nav a[data-route={route}]")
    page.locator(f"#nav a[data-route={route}][aria-current=page]").wait_for()


def test_signup_upload_progress_status_and_download(fleet, new_page, tmp_path, screenshots) -> None:
    page, console = new_page()
    user = unique_name("web")
    page.goto(fleet.gateway + "/")
    page.fill("#signup-user", user)
    page.fill("#signup-password", PASSWORD)
    page.click("#signup-form button[type=submit]")
    page.locator("#user-badge", has_text=user).wait_for()
    page.locator("#conn.online").wait_for()
    # The token lives in sessionStorage, never in a cookie.
    assert page.context.cookies() == []
    assert user in page.evaluate("sessionStorage.getItem('dropbox.session')")

    source = tmp_path / "five-mb.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024))
    page.set_input_files("#upload-files", str(source))
    row = page.locator("li.upload", has_text="five-mb.bin")
    row.wait_for()
    assert row.locator("progress").get_attribute("aria-label") == "Upload progress of five-mb.bin"
    page.wait_for_function("document.querySelector('li.upload progress').value === 100", timeout=60_000)
    page.locator("li.upload[data-status=uploaded_successfully]").wait_for(timeout=60_000)
    assert row.locator(".pct").inner_text() == "100%"
    file_id = row.get_attribute("data-file-id")
    assert file_id
    page.screenshot(path=str(screenshots / "upload.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(screenshots / "upload-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 860})

    go(page, "history")
    table_row = page.locator(f"#history-table tr[data-file-id='{file_id}']")
    table_row.wait_for()
    expected = sha256_file(source)
    assert expected.startswith(table_row.locator("td.mono").inner_text())
    assert "uploaded" in table_row.locator(".cell-status").inner_text()
    page.screenshot(path=str(screenshots / "history.png"), full_page=True)

    with page.expect_download(timeout=60_000) as info:
        table_row.get_by_role("button", name="Download five-mb.bin").click()
    download = info.value
    assert download.suggested_filename == "five-mb.bin"
    assert sha256_file(download.path()) == expected

    # Sorting by size is keyboard-operable and announced through aria-sort.
    header = page.locator("th[data-key=size]")
    header.locator("button").focus()
    page.keyboard.press("Enter")
    assert page.locator("th[data-key=size]").get_attribute("aria-sort") == "ascending"

    page.click("#logout")
    page.locator("#login-form").wait_for()
    assert page.evaluate("sessionStorage.getItem('dropbox.session')") is None
    assert console.errors == []


def test_bad_login_shows_the_services_message(fleet, new_page, screenshots) -> None:
    auth = fleet.urls["auth"]
    user = signup(auth)
    answer = requests.put(f"{auth}/auth/login/{user['user_name']}", json={"password": "wrong-password"},
                          timeout=10)
    assert answer.status_code == 401
    message = answer.json()["error"]["message"]

    page, _ = new_page()
    page.goto(fleet.gateway + "/")
    for name in (user["user_name"], unique_name("nobody")):  # same message for both (SPEC)
        page.fill("#login-user", name)
        page.fill("#login-password", "wrong-password")
        page.click("#login-form button[type=submit]")
        alert = page.locator("#login-form .error[role=alert]")
        alert.wait_for(state="visible")
        assert alert.inner_text() == message
    assert page.locator("#nav").is_hidden()
    page.screenshot(path=str(screenshots / "login-error.png"), full_page=True)

    # A taken user name at sign-up shows the 409's message too.
    page.fill("#signup-user", user["user_name"])
    page.fill("#signup-password", PASSWORD)
    page.click("#signup-form button[type=submit]")
    taken = page.locator("#signup-form .error[role=alert]")
    taken.wait_for(state="visible")
    assert taken.inner_text().strip()


def test_admin_sees_other_users_files_users_feed_and_audit(fleet, new_page, screenshots) -> None:
    other = signup(fleet.urls["auth"])
    name = unique_name("other") + ".bin"
    sock = RawSocket(fleet.gateway, other["access_token"])
    try:
        first = sock.upload_bytes(os.urandom(150_000), file_name=name)
        sock.wait_event("file-status",
                        lambda d: d["file_id"] == first and d["status"] == "uploaded_successfully")

        page, console = new_page()
        log_in(page, fleet.gateway, *fleet.admin)
        assert page.locator("#nav a[data-route=admin]").is_visible()
        go(page, "history")
        row = page.locator(f"#history-table tr[data-file-id='{first}']")
        row.wait_for()
        assert other["user_name"] in row.inner_text()

        go(page, "admin")
        page.locator("#users-table", has_text=other["user_name"]).wait_for()
        # A live file-status event reaches the admin's feed.
        second = sock.upload_bytes(os.urandom(120_000), file_name="feed-" + name)
        page.locator("#feed li", has_text=second[:8]).first.wait_for(timeout=30_000)
        page.locator("#audit-table").wait_for(timeout=30_000)
        page.screenshot(path=str(screenshots / "admin.png"), full_page=True)
        assert console.errors == []
    finally:
        sock.close()


def test_admin_manages_a_pool_through_the_page(fleet, new_page) -> None:
    user = signup(fleet.urls["auth"])
    page, console = new_page()
    log_in(page, fleet.gateway, *fleet.admin)
    go(page, "admin")
    pool_name = unique_name("pool")
    page.fill("#np-name", pool_name)
    page.fill("#np-window_seconds", "30")
    page.click("#create-pool button[type=submit]")
    card = page.locator("details", has_text=pool_name)
    card.wait_for()
    card.locator("summary").click()
    card.get_by_label("User name").fill(user["user_name"])
    card.get_by_label("Role").select_option("listener")
    card.get_by_role("button", name="Add member").click()
    card.locator(".members li", has_text=user["user_name"]).wait_for()
    card.get_by_role("button", name="Issue processor key").click()
    key = card.locator("output.secret").inner_text()
    assert len(key) >= 16
    card.locator(".keys li").first.wait_for()
    card.get_by_role("button", name="Revoke key").first.click()
    card.locator(".keys li", has_text="revoked").wait_for()
    card.get_by_role("button", name=f"Remove {user['user_name']} from the pool").click()
    card.locator(".members li", has_text=user["user_name"]).wait_for(state="detached")
    assert console.errors == []


def test_pool_member_sees_a_result_arrive_live(fleet, new_page, tmp_path, screenshots) -> None:
    admin = Admin(fleet)
    pool = admin.create_pool(unique_name("pool"), window_seconds=2, close_grace_seconds=0)
    member = admin.member(pool["pool_id"], "contributor")
    processor = Processor(fleet, pool["pool_id"], admin.processor_key(pool["pool_id"]))

    page, console = new_page()
    log_in(page, fleet.gateway, member["user_name"], member["password"])
    source = tmp_path / "update.bin"
    source.write_bytes(os.urandom(200_000))
    page.select_option("#upload-pool", pool["pool_id"])
    page.set_input_files("#upload-files", str(source))
    page.locator("li.upload[data-status=uploaded_successfully]").wait_for(timeout=60_000)

    go(page, "pools")
    card = page.locator(f"article.pool[data-pool-id='{pool['pool_id']}']")
    card.wait_for()
    assert "contributor" in card.inner_text()

    group = processor.wait_ready(timeout=60)
    files = processor.files(group["group_id"])
    assert files.status_code == 200 and len(files.json()["files"]) == 1
    result = os.urandom(50_000)
    posted = processor.post_result(group["group_id"], result, name="summary.bin")
    assert posted.status_code == 201, posted.text

    notice = page.locator("#notices .notice-result", has_text="summary.bin")
    notice.wait_for(timeout=30_000)
    assert page.locator("#notices").get_attribute("aria-live") == "polite"
    card.locator(".results li", has_text="summary.bin").wait_for()
    page.screenshot(path=str(screenshots / "pools.png"), full_page=True)
    with page.expect_download(timeout=30_000) as info:
        notice.get_by_role("button", name="Download result summary.bin").click()
    assert sha256_file(info.value.path()) == hashlib.sha256(result).hexdigest()
    assert console.errors == []


def _progress(page, name: str) -> int:
    return int(page.locator("li.upload", has_text=name).locator("progress").get_attribute("value") or 0)


def test_upload_survives_a_dropped_connection_and_a_pause(fleet, new_page, tmp_path) -> None:
    page, console = new_page()
    user = signup(fleet.urls["auth"])
    log_in(page, fleet.gateway, user["user_name"], user["password"])

    dropped = tmp_path / "dropped.bin"
    dropped.write_bytes(os.urandom(24 * 1024 * 1024))
    page.set_input_files("#upload-files", str(dropped))
    page.wait_for_function("(document.querySelector('li.upload progress')?.value || 0) >= 5", timeout=60_000)
    # Kill the WebSocket under the client: socket.io reconnects, the uploader asks for `missing`.
    page.evaluate("window.dropbox.state.gateway.socket.io.engine.close()")
    row = page.locator("li.upload", has_text="dropped.bin")
    row.locator("[data-status=uploaded_successfully]").first.wait_for(timeout=90_000)
    assert _progress(page, "dropped.bin") == 100

    paused = tmp_path / "paused.bin"
    paused.write_bytes(os.urandom(24 * 1024 * 1024))
    page.set_input_files("#upload-files", str(paused))
    prow = page.locator("li.upload", has_text="paused.bin")
    page.wait_for_function(
        "(document.querySelector('li.upload progress')?.value || 0) >= 5", timeout=60_000)
    prow.get_by_role("button", name="Pause upload of paused.bin").click()
    page.locator("li.upload[data-status=paused]").wait_for()
    page.wait_for_timeout(1000)  # chunks already in flight when pausing may still land
    held = _progress(page, "paused.bin")
    page.wait_for_timeout(1500)
    assert _progress(page, "paused.bin") == held < 100  # nothing moves while paused
    prow.get_by_role("button", name="Resume upload of paused.bin").click()
    prow.locator("[data-status=uploaded_successfully]").first.wait_for(timeout=90_000)

    go(page, "history")
    for path in (dropped, paused):
        cell = page.locator("#history-table tr", has_text=path.name).locator("td.mono")
        cell.wait_for()
        assert cell.get_attribute("title") == sha256_file(path)
    assert console.errors == []


def test_admin_sees_a_results_staging_status(fleet, new_page, tmp_path, screenshots) -> None:
    admin = Admin(fleet)
    stage = tmp_path / "stage"
    stage.mkdir()
    pool = admin.create_pool(unique_name("pool"), window_seconds=2,
                             staging=[{"kind": "filesystem", "path": f"{stage}/{{pool_id}}"}])
    processor = Processor(fleet, pool["pool_id"], admin.processor_key(pool["pool_id"]))
    sock = RawSocket(fleet.gateway, admin.member(pool["pool_id"])["access_token"])
    try:
        sock.upload_bytes(os.urandom(100_000), "u.bin", pool_id=pool["pool_id"])
        group = processor.wait_ready(timeout=60)
        assert processor.files(group["group_id"]).status_code == 200
    finally:
        sock.close()
    posted = processor.post_result(group["group_id"], os.urandom(40_000), name="staged.bin")
    assert posted.status_code == 201, posted.text

    page, console = new_page()
    log_in(page, fleet.gateway, *fleet.admin)
    go(page, "pools")
    card = page.locator(f"article.pool[data-pool-id='{pool['pool_id']}']")
    # Cards load a few at a time, oldest pool first, and the shared fleet holds every pool the
    # worker's earlier tests made: this card's own Refresh loads it now.
    card.get_by_role("button", name=f"Refresh pool {pool['name']}").click()
    card.locator(".results li", has_text="staged.bin").wait_for(timeout=30_000)
    # The status is read when asked for; the copy may still be on its way: ask until it is done.
    line = card.locator(".staging li[data-staging-kind=filesystem]")
    # Before the first attempt there is no status yet ("No staging targets."): ask again, each
    # look bounded (30 looks of at most 3.5 s). wait_for raises on its timeout; a look that
    # finds nothing is not the end of the test (CI once spent its one look before the copy).
    for _ in range(30):
        card.get_by_role("button", name="Staging of result staged.bin").click()
        try:
            line.wait_for(timeout=3_000)
        except PlaywrightTimeoutError:
            continue
        if "done" in line.inner_text():
            break
        page.wait_for_timeout(500)
    text = line.inner_text()
    assert "done" in text and "1 attempt" in text and str(stage / pool["pool_id"]) in text, text
    page.screenshot(path=str(screenshots / "staging.png"), full_page=True)
    assert console.errors == []


def test_an_admin_with_many_pools_sees_every_card_load(fleet, new_page) -> None:
    """More pools than the gateway's events in flight per socket (64): every card loads its
    groups and results (the dashboard loads a few cards at a time), none shows an error."""
    admin = Admin(fleet)
    made = [admin.create_pool(unique_name("many"), window_seconds=60)["pool_id"] for _ in range(80)]
    page, console = new_page()
    log_in(page, fleet.gateway, *fleet.admin)
    go(page, "pools")
    for pool_id in (made[0], made[-1]):
        card = page.locator(f"article.pool[data-pool-id='{pool_id}']")
        card.locator("[data-results-for] p", has_text="No results yet.").wait_for(timeout=60_000)
        card.locator("[data-groups-for] p", has_text="No groups yet.").wait_for(timeout=60_000)
    # Every card of the page has finished loading, and not one of them with an error.
    page.wait_for_function("() => ![...document.querySelectorAll('article.pool p.muted')]"
                           ".some((p) => p.textContent === 'Loading…')", timeout=120_000)
    errors = page.locator("article.pool .error")
    assert errors.count() == 0, errors.all_inner_texts()[:5]
    assert console.errors == []
