"""The tus door's completion when something failed around it (found by review): a completer that
died before its publish, a last PATCH answered 503, a chunk lost before the last PATCH, a store
failure reported before the completer finished. Each used to leave an upload that a tus client
took as done and nobody stored (or a final status overwritten); HEAD now completes it."""

from __future__ import annotations

import time

import pytest

from services.common.contracts import StoreUpload

from .test_tus import BOB, auth, client, created, head, patch  # noqa: F401 - fixtures


class Killed(BaseException):
    """The replica's death right after mark_cached (SIGKILL, OOM)."""


def test_a_tus_upload_whose_completer_died_before_publishing_is_stored(client, cache, broker,  # noqa: F811
                                                                       monkeypatch) -> None:
    file_id = created(client, 10)
    real = broker.publish

    def dying(message, **kwargs):
        if isinstance(message, StoreUpload):
            raise Killed()
        return real(message, **kwargs)

    monkeypatch.setattr(broker, "publish", dying)
    with pytest.raises(Killed):
        patch(client, file_id, 0, b"0123456789")
    monkeypatch.setattr(broker, "publish", real)
    cache.uploads[file_id].session["cached_at"] = str(time.time() - 60)  # long past REPUBLISH_AFTER_SECONDS
    # What a tus client does after its PATCH's connection broke: HEAD, and PATCH on from the offset.
    response = head(client, file_id)
    assert response.headers["Upload-Offset"] == "10"  # "done" for the client: it will not come back
    patch(client, file_id, 10, b"")
    assert broker.of_type(StoreUpload), "nothing will ever store this upload; the client was told it is done"


def test_a_last_patch_refused_503_by_the_broker_is_not_reported_done_by_head(client, cache, broker,  # noqa: F811
                                                                            monkeypatch) -> None:
    """The last PATCH's StoreUpload could not be published (broker blip): 503, the session back to
    uploading. The tus client retries as tus clients do -- HEAD first -- and HEAD says
    Upload-Offset == Upload-Length, which tus-js-client/tuspy take as "finished": no PATCH follows,
    nothing completes the upload, it is swept as abandoned. HEAD must not say done until it is."""
    from services.common import messaging

    file_id = created(client, 10)
    real = broker.publish

    def refusing(message, **kwargs):
        if isinstance(message, StoreUpload):
            raise messaging.PublishError("broker away")
        return real(message, **kwargs)

    monkeypatch.setattr(broker, "publish", refusing)
    assert patch(client, file_id, 0, b"0123456789").status_code == 503
    monkeypatch.setattr(broker, "publish", real)
    offset = head(client, file_id).headers["Upload-Offset"]
    assert offset != "10" or broker.of_type(StoreUpload), "HEAD says done; nothing will store the upload"


def test_a_store_failure_reported_before_the_completer_finishes_is_not_overwritten(client, cache, broker,  # noqa: F811
                                                                                    monkeypatch) -> None:
    """file_service_manager may consume the StoreUpload, fail it and PUT upload_failed before the
    completer's ``published`` script runs (it follows the publish confirm); that script then sets
    the tombstone back to 'cached' (and renews it for STATUS_TTL): HEAD answers the failed upload
    complete, complete-upload answers cached."""
    from services.common import contracts

    uploads = client.application.extensions["deps"].uploads
    file_id = created(client, 10)
    real = broker.publish

    def fast_manager(message, **kwargs):
        out = real(message, **kwargs)
        if isinstance(message, StoreUpload):
            uploads.update_status(file_id, contracts.FAILED)  # the manager's PUT, served meanwhile
        return out

    monkeypatch.setattr(broker, "publish", fast_manager)
    assert patch(client, file_id, 0, b"0123456789").status_code == 204
    assert cache.status(file_id)["status"] == contracts.FAILED


def test_a_chunk_lost_during_the_last_patch_is_not_published_as_complete(client, cache, broker,  # noqa: F811
                                                                         monkeypatch) -> None:
    """complete(written=session) skips the existence check of the chunks: the tus PATCH's own
    scripts "checked each chunk". But chunk 0 was sealed by an earlier PATCH (or earlier in this
    one) with its own expiry; lost meanwhile (expired within a PATCH longer than
    UPLOAD_TTL_SECONDS, or evicted), the streaming sha256 needs no read of it, and the StoreUpload
    is published for bytes that are not there (answer 204; the manager then fails it)."""
    file_id = created(client, 24)  # three 8-byte chunks
    assert patch(client, file_id, 0, b"A" * 16).status_code == 204
    name = "seal_tail" if hasattr(cache, "seal_tail") else "put_chunk"  # (before tusfile: put_chunk)
    real = getattr(cache, name)

    def seal_and_lose_chunk_0(fid, index, *args, **kwargs):
        outcome = real(fid, index, *args, **kwargs)
        if index == 2:
            cache.uploads[fid].chunks.pop(0)  # what an expiry/eviction of chunk 0 does meanwhile
        return outcome

    monkeypatch.setattr(cache, name, seal_and_lose_chunk_0)
    response = patch(client, file_id, 16, b"B" * 8)
    assert not broker.of_type(StoreUpload), "a StoreUpload for an upload whose chunk 0 is gone"
    assert response.status_code != 204
