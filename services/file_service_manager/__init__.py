"""file_service_manager: permanent storage (storage backends), the file index, the audit trail, downloads.

Consumes: ``upload.store`` (``StoreUpload``, queue ``file_service_manager.store``, prefetch 2),
``upload.prestore`` (``PrestoreUpload``, queue ``file_service_manager.prestore``: a big upload
written to GridFS while its chunks arrive, ``prestoring``),
``file.status.*`` and ``file.grouped`` (queue ``file_service_manager.index``),
``audit.recorded`` (queue ``file_service_manager.audit``).
Publishes: ``FileStored`` (per item), ``FileStatusChanged`` (uploaded_successfully),
``UploadStoreFailed`` (file_uploader decides on a retry), ``AuditRecorded`` (stored, downloaded, deleted).
Owns: the bytes, in a storage backend (``backends``: GridFS ``fs`` by default, a filesystem
root or an S3 bucket, per ``DEFAULT_STORAGE``; key = file_id; each record names its
backend), MongoDB ``files`` (the index of file records, ``_id`` = file_id), ``audit``
(append-only, ``_id`` = audit_id) and ``storages`` (storage locations, credentials
encrypted with STORAGE_SECRETS_KEY). Reads and then
deletes the Redis chunks named by ``StoreUpload`` (the cache file_uploader filled); its own
Redis keys beside them: ``{cache_key}:prestore`` (a prestore's outcome) and
``{cache_key}:prestore-lease`` (which consumer is prestoring).
"""
