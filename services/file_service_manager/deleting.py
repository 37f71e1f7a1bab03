"""Delete a file (SPEC ``DELETE /file/<file_id>``): its bytes leave its backend, its record says
``deleted``, the audit trail keeps the deletion.

Owner or admin; anyone else gets the same 404 as for an unknown id (ids cannot be probed). The
bytes go first, then the record: a crash in between leaves a record whose bytes are gone (its
downloads already 404) and a retried DELETE finishes it; the other order could leave bytes no
record points to. A second DELETE answers 200 with the same body (idempotent) and audits nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.authclient import Identity
from services.common.errors import ApiError, conflict, not_found, unavailable

from . import core
from .backends import LEGACY
from .deps import Deps

log = logging.getLogger(__name__)


def delete_file(deps: Deps, identity: Identity, file_id: str) -> dict[str, Any]:
    record = deps.index.record(file_id)
    if record is None or (not identity.is_admin and record.get("owner_id") != identity.user_id):
        raise not_found("no such file")
    answer = {"file_id": file_id, "status": core.DELETED}
    if record.get("status") == core.DELETED:
        return answer
    if record.get("status") not in core.DELETABLE:
        raise conflict("the file is still being stored; delete it once it is stored or failed")
    try:
        deps.storage.for_record(record).delete(file_id)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - the record is unchanged: the client may retry
        log.warning("delete failed in the backend", extra={"file_id": file_id, "reason": f"{type(exc).__name__}"})
        raise unavailable("the file's storage is unavailable; try again") from exc
    deps.hot.discard(file_id)
    if deps.index.mark_deleted(file_id, identity.user_id):
        storage = record.get("storage")
        deps.audit.record("deleted", actor=identity.user_id, file_id=file_id, pool_id=record.get("pool_id"),
                          size=record.get("size"), sha256=record.get("sha256"),
                          storage=storage.get("id") if isinstance(storage, dict) else LEGACY.id,
                          reason="delete_request")
    return answer
