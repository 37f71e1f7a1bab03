"""serviceclient.UploaderClient's requests, seen through a requests transport (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from services.common.errors import ApiError
from services.common.serviceclient import UploaderClient


class Recorder(BaseAdapter):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__()
        self.status, self.body = status, body
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        response = requests.Response()
        response.status_code = self.status
        response._content = json.dumps(self.body).encode()
        response.request = request
        return response

    def close(self) -> None:
        pass


def client_with(adapter: Recorder) -> UploaderClient:
    client = UploaderClient("http://uploader", "key")
    client.session.mount("http://", adapter)
    return client


def test_cancel_posts_the_owner_to_the_internal_route() -> None:
    adapter = Recorder(200, {"file_id": "f1", "status": "cancelled"})
    assert client_with(adapter).cancel("f1", owner_id="7") == {"file_id": "f1", "status": "cancelled"}
    [sent] = adapter.sent
    assert (sent.method, sent.url) == ("POST", "http://uploader/uploads/f1/cancel")
    assert sent.headers["X-Internal-Key"] == "key" and json.loads(sent.body or b"{}") == {"owner_id": "7"}


def test_cancel_of_a_complete_upload_is_its_conflict() -> None:
    adapter = Recorder(409, {"error": {"code": "conflict", "message": "the upload is complete"}})
    with pytest.raises(ApiError) as err:
        client_with(adapter).cancel("f1", owner_id="7")
    assert (err.value.status, err.value.code) == (409, "conflict")
