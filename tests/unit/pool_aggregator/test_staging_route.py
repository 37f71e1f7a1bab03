"""SPEC ``GET /pools/<pool_id>/results/<result_id>/staging``: admin or the pool's key, this pool's results only."""

from __future__ import annotations

from services.common.authclient import Identity

from .conftest import KEY, MEMBER, OTHER_KEY, POOL, Kit
from .test_results_and_groups import _post, _ready_group

ADMIN = "tok-admin"
STATUS = {"targets": [{"kind": "webhook", "status": "pending", "attempts": 2,
                       "error": "webhook: the receiver answered 500"},
                      {"kind": "filesystem", "status": "done", "attempts": 1, "location": "/stage/p1/r.bin"}]}


def _result(kit: Kit) -> str:
    answer = _post(kit, _ready_group(kit))
    assert answer.status_code == 201, answer.get_json()
    return str(answer.get_json()["result_id"])


def test_the_pool_key_and_an_admin_read_the_status_file_service_manager_keeps(kit: Kit) -> None:
    rid = _result(kit)
    kit.staging.statuses[rid] = STATUS
    kit.auth.tokens[ADMIN] = Identity("u0", "admin", "admin", {})
    client = kit.app.test_client()
    url = f"/pools/{POOL}/results/{rid}/staging"
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {ADMIN}"}):
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json() == STATUS
    assert kit.staging.asked == [rid, rid]


def test_members_other_keys_and_strangers_are_refused(kit: Kit) -> None:
    rid = _result(kit)
    client = kit.app.test_client()
    url = f"/pools/{POOL}/results/{rid}/staging"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-API-Key": OTHER_KEY}).status_code == 403
    member = client.get(url, headers={"Authorization": f"Bearer {MEMBER}"})
    assert member.status_code == 403 and member.get_json()["error"]["code"] == "forbidden"
    assert kit.staging.asked == []


def test_an_unknown_or_foreign_result_is_404_without_asking(kit: Kit) -> None:
    rid = _result(kit)
    kit.store.results[rid]["pool_id"] = "p2"  # another pool's result id says nothing here
    client = kit.app.test_client()
    for result_id in (rid, "nope"):
        answer = client.get(f"/pools/{POOL}/results/{result_id}/staging", headers={"X-API-Key": KEY})
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"
    bad = client.get(f"/pools/{POOL}/results/{'x' * 300}/staging", headers={"X-API-Key": KEY})
    assert bad.status_code == 400
    assert kit.staging.asked == []
