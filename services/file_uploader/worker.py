"""RabbitMQ handlers of file_uploader: store failures -> retry or give up."""

from __future__ import annotations

import logging

from services.common import logs
from services.common.contracts import Message, UploadStoreFailed

from .service import UploadService

log = logging.getLogger(__name__)


def store_failed_handler(service: UploadService):
    """Handler for ``messaging.STORE_FAILED_QUEUE``.

    Idempotent: the attempt number is claimed in Redis (compare-and-set), so a
    redelivered UploadStoreFailed for an attempt already handled does nothing.
    """

    def handle(message: Message) -> None:
        if not isinstance(message, UploadStoreFailed):
            log.warning("ignoring unexpected message", extra={"message_type": type(message).__name__})
            return
        with logs.bound(file_id=message.upload_id, attempt=message.attempt):
            outcome = service.store_failed(message.upload_id, message.attempt, message.reason,
                                           message.command)
            log.info("store failure handled", extra={"outcome": outcome})

    return handle
