"""The messages file_uploader consumes: ``UploadStoreFailed`` -> retry or give up (``retries``)."""

from __future__ import annotations

import logging

from services.common import logs, topology
from services.common.contracts import UploadStoreFailed
from services.common.handlers import ConsumerSpec, bind

from . import retries
from .deps import Deps

log = logging.getLogger(__name__)


def on_upload_store_failed(deps: Deps, message: UploadStoreFailed) -> None:
    with logs.bound(file_id=message.upload_id, attempt=message.attempt):
        outcome = retries.store_failed(deps.uploads, message.upload_id, message.attempt, message.reason,
                                       message.command)
        log.info("store failure handled", extra={"outcome": outcome})


HANDLERS = {UploadStoreFailed: on_upload_store_failed}


def consumers(deps: Deps) -> list[ConsumerSpec]:
    """CONSUMERS: the store-failure queue with its table bound to ``deps``."""
    return [ConsumerSpec("store_failed", topology.STORE_FAILED_QUEUE, bind(HANDLERS, deps), prefetch=4)]
