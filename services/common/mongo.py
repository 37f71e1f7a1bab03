"""The one way any service reaches MongoDB.

Production and docker-compose point ``MONGODB_URI`` at a real MongoDB 7;
development, the tests and CI at secantusdb (a MongoDB-wire-compatible
server) started by ``devtools``. Code above this module only sees pymongo's
``Database`` and GridFS buckets, so it does not care which server answers.
"""

from __future__ import annotations

from typing import Any

import gridfs
import pymongo
from pymongo.database import Database


def connect(uri: str, db_name: str, *, timeout_ms: int = 5000) -> Database[Any]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        # No operation may hang a thread forever on a server that stopped answering
        # (a stalled store thread would hold its RabbitMQ message unacked indefinitely).
        socketTimeoutMS=30_000,
        retryWrites=False,  # secantusdb is a single node; writes are made idempotent by ids instead
        tz_aware=True,
        appname="file-dropbox",
    )
    return client[db_name]


def bucket(db: Database[Any], name: str = "fs", chunk_size: int = 255 * 1024) -> gridfs.GridFSBucket:
    return gridfs.GridFSBucket(db, bucket_name=name, chunk_size_bytes=chunk_size)


def ping(db: Database[Any]) -> bool:
    db.client.admin.command("ping")
    return True
