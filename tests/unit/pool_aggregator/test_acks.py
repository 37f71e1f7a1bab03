"""Acks (SPEC ack-result): each member's acknowledged seq per pool, forward only, never past the last result."""

from __future__ import annotations

from services.common.settings import DEV_SECRETS

from .conftest import POOL, Kit
from .test_results_and_groups import _post, _ready_group

INTERNAL = {"X-Internal-Key": DEV_SECRETS["INTERNAL_API_KEY"]}


def _ack(kit: Kit, seq: object, user: str = "u1", headers: dict[str, str] | None = None):
    return kit.app.test_client().put(f"/internal/pools/{POOL}/acks/{user}", json={"seq": seq},
                                     headers=INTERNAL if headers is None else headers)


def test_an_ack_moves_forward_only_and_is_read_back(kit: Kit) -> None:
    client = kit.app.test_client()
    never = client.get(f"/internal/pools/{POOL}/acks/u1", headers=INTERNAL)
    assert never.status_code == 200
    assert never.get_json() == {"pool_id": POOL, "user_id": "u1", "acked_seq": None, "last_seq": 0}
    for n in range(3):
        assert _post(kit, _ready_group(kit, count=1, prefix=f"w{n}-")).status_code == 201
    assert _ack(kit, 2).get_json() == {"pool_id": POOL, "user_id": "u1", "acked_seq": 2}
    # An older ack (another gateway's, late) does not move it back.
    assert _ack(kit, 1).get_json()["acked_seq"] == 2
    assert _ack(kit, 3).get_json()["acked_seq"] == 3
    assert client.get(f"/internal/pools/{POOL}/acks/u1", headers=INTERNAL).get_json() == {
        "pool_id": POOL, "user_id": "u1", "acked_seq": 3, "last_seq": 3}
    # Per member: u2 never acked.
    assert client.get(f"/internal/pools/{POOL}/acks/u2", headers=INTERNAL).get_json()["acked_seq"] is None


def test_an_ack_beyond_the_last_result_or_malformed_is_bad_request(kit: Kit) -> None:
    assert _post(kit, _ready_group(kit, count=1)).status_code == 201
    for bad in (2, -1, "1", 1.5, True, None, 10**19):
        answer = _ack(kit, bad)
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "bad_request", bad
    assert kit.store.acks == {}
    assert _ack(kit, 0).get_json()["acked_seq"] == 0


def test_acks_are_internal_only(kit: Kit) -> None:
    for headers in ({}, {"X-Internal-Key": "wrong"}, {"Authorization": "Bearer tok-member"}):
        assert _ack(kit, 0, headers=headers).status_code == 401
        assert kit.app.test_client().get(f"/internal/pools/{POOL}/acks/u1", headers=headers).status_code == 401
    bad_user = kit.app.test_client().put(f"/internal/pools/{POOL}/acks/a%20b", json={"seq": 0}, headers=INTERNAL)
    assert bad_user.status_code == 400


def test_acks_of_seq_0_write_nothing_even_for_unknown_pools(kit: Kit) -> None:
    # An admin is a member of every pool id: acks of nothing (seq 0) on made-up pool ids must
    # not grow the collection one document per call.
    client = kit.app.test_client()
    for n in range(5):
        answer = client.put(f"/internal/pools/nopool{n}/acks/admin1", json={"seq": 0}, headers=INTERNAL)
        assert answer.status_code == 200 and answer.get_json()["acked_seq"] == 0
    assert kit.store.acks == {}
    # A real ack still lands, and a later seq 0 answers it unchanged.
    assert _post(kit, _ready_group(kit, count=1)).status_code == 201
    assert _ack(kit, 1).get_json()["acked_seq"] == 1
    assert _ack(kit, 0).get_json()["acked_seq"] == 1
    assert kit.store.acks == {(POOL, "u1"): 1}
