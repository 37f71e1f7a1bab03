"""A result's staging status (SPEC ``GET /pools/<pool_id>/results/<result_id>/staging``).

file_service_manager delivers results to their pool's staging targets and keeps the
status; this checks that the result is one of this pool's published results (404
otherwise: another pool's result id says nothing) and asks it.
"""

from __future__ import annotations

from typing import Any

from services.common import validation
from services.common.httpkit import not_found

from .deps import Deps


def result_staging(deps: Deps, pool_id: str, result_id: str) -> dict[str, Any]:
    validation.check_id(result_id, "result_id")
    result = deps.store.get_result(result_id)
    if result is None or result.get("pool_id") != pool_id or result.get("seq") is None:
        raise not_found("no such result in this pool")
    found = deps.staging.status(result_id)
    targets = found.get("targets")
    return {"targets": targets if isinstance(targets, list) else []}
