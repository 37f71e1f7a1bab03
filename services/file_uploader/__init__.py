"""file_uploader: upload sessions and their chunks, cached in Redis until stored.

Doors: the internal ``/uploads`` routes (the gateway's socket uploads), ``POST /file/upload``
and tus 1.0.0 at ``/files/`` (``tus_routes``), all through ``uploads.UploadService``.

Consumes: ``upload.store_failed`` (``UploadStoreFailed``, queue ``file_uploader.store_failed``)
to decide on a retry. Reads a pool's ``max_late_seconds`` from auth's internal pool route
(``pools.PoolPolicies``, cached 5 s) to refuse updates older than the pool accepts.
Publishes: ``PrestoreUpload`` (``upload.prestore``, when an upload of several chunks starts),
``StoreUpload`` (``upload.store``; retries through the ``dropbox.retry`` delay queue),
``FileStatusChanged`` (cached, retrying, upload_failed; and the statuses PUT /file/update/status
is told), audit records (``AuditsRecorded`` batches or a lone ``AuditRecorded``, published off the
request path by ``services.common.audit``).
Owns: Redis ``{REDIS_PREFIX}:upload:*`` (sessions, chunks, received sets, writer locks, the
per-upload status/retry tombstone, the tus door's partial tail ``{cache_key}:tail``),
``{REDIS_PREFIX}:upload-owner:*`` (per-user unfinished uploads, each slot living as long as its
upload), ``{REDIS_PREFIX}:upload-bytes:*`` (per-user chunk bytes cached),
``{REDIS_PREFIX}:upload-quota:*`` (per-user stored bytes, the USER_QUOTA_BYTES ledger) and
``{REDIS_PREFIX}:upload-pending`` (bytes cached but not stored).
"""
