"""file_service_manager: permanent storage (storage backends), the file index, the audit trail, downloads.

Consumes: ``upload.store`` (``StoreUpload``, queue ``file_service_manager.store``, prefetch 2),
``upload.prestore`` (``PrestoreUpload``, queue ``file_service_manager.prestore``: a big upload
written to its storage backend while its chunks arrive, ``prestoring``),
``file.status.*``, ``file.grouped`` and ``files.grouped`` (``FilesGrouped``: a batch's files
at once) (queue ``file_service_manager.index``),
``audit.recorded`` (``AuditsRecorded``: one insert per batch, and ``AuditRecorded``) (queue
``file_service_manager.audit``), ``pool.result_published``
(``ResultPublished``) and ``staging.deliver`` (``StageResult``) (queue
``file_service_manager.staging``: results delivered to their pool's staging targets).
Publishes: ``FileStored`` (a single-file upload or a result; and again, per file, for a stored
pool file whose group is not known in time: ``regrouping``), ``UploadStored`` (a batch
upload: all its stored items in one message), ``FileStatusChanged`` (uploaded_successfully),
``UploadStoreFailed`` (file_uploader decides on a retry), ``StageResult`` (one per staging
target and attempt; retries through ``dropbox.staging_delay``), audit records as
``AuditsRecorded`` batches or a lone ``AuditRecorded`` (stored, downloaded, deleted,
staging_done/staging_attempt_failed/staging_failed).
Owns: the bytes, in a storage backend (``backends``: GridFS ``fs`` by default, a filesystem
root or an S3 bucket: a pool's own ``storage`` (auth's internal pool route, kept briefly),
``DEFAULT_STORAGE`` for files without a pool; key = file_id; each record names its backend),
MongoDB ``files`` (the index of file records, ``_id`` = file_id), ``audit``
(append-only, ``_id`` = audit_id), ``storages`` (every storage location written to,
credentials encrypted with STORAGE_SECRETS_KEY: what the probe and the sweeper cover) and
``staging`` (each result's status per staging target, ``_id`` = ``<result_id>:<target>``),
``sweep_claims`` (a sweep pass's claim on one leftover while it removes it). Reads and then
deletes the Redis chunks named by ``StoreUpload`` (the cache file_uploader filled); its own
Redis keys beside them: ``{cache_key}:prestore`` (a prestore's outcome) and
``{cache_key}:prestore-lease`` (which consumer is prestoring).
Runs the retention pass (pools' ``retention_days`` from auth, ``RETENTION_DAYS``), the storage
probe pass (every backend in use, ``health``: /ready's ``storage:<id>`` checks, only the default's
deciding readiness) and answers auth's ``POST /internal/storage/probe`` (a pool's storage
checked before it is saved).
"""
