"""pool_aggregator: timestamp windows, groups, triggers, the external-processor API, results.

Consumes: ``FileStored`` and ``UploadStored`` (queues ``pool_aggregator.stored.<k>``, one
per pool shard k of ``topology.STORED_SHARDS``, ``GROUPING_CONSUMERS`` competing consumers
spread over them; as many as one shard gets on the legacy ``pool_aggregator.stored``, for an older
file_service_manager's unsharded keys) — pool files are put into the group of their
window, a slice at a time (a batch upload's ``UploadStored``, up to ``MAX_ITEMS`` files,
is one slice); a stored result (``FileStored``) is numbered (``seq``), finishes its group
and is announced. ``FileStored`` of every file of a batch, as older file_service_managers
published, is still grouped.
``PoolDeleted`` (queue ``pool_aggregator.pools``) — the pool's open and ready groups end
(``failed``, reason ``pool_deleted``).
Publishes: ``FileGrouped`` (answers a ``FileStored``), ``FilesGrouped`` (answers an
``UploadStored``: its files by group, one message), ``GroupChanged``, ``ResultPublished``,
audit records (``AuditsRecorded`` batches or a lone ``AuditRecorded``).
Owns: MongoDB collections ``groups`` (one document per pool window, with counters),
``group_files`` (a group's files, one document per file), ``group_slices`` (which
slices of files are counted in their group), ``results`` (numbered by ``seq`` per pool),
``result_counters`` (each pool's last ``seq``), ``leases`` (the ticker's leader lease),
``fences`` (the ticker's term that new and newly leased groups are adopted with) and
``acks`` (each member's acknowledged ``seq`` per pool, moved forward only; internal routes
``/internal/pools/<id>/acks/<user_id>`` called by the gateway for ``ack-result`` and the
catch-up on connect).
Replicas: every one serves HTTP and consumes; only the holder of the ticker's leader lease
(``leadership.py``, ``LEADER_LEASE_SECONDS``) ticks and announces what its ticks moved, its
writes fenced by the lease's term so a paused old leader cannot act after a takeover, on
the groups that existed then or on those created or leased later (``store.py``, "Fencing").
Transitions: open -> ready (time, quorum, ``close``) or failed (quorum not met);
ready -> processing (a lease); processing -> done (result stored and numbered), ready
(lease expired) or failed; failed -> ready (``retry``). Each publishes ``GroupChanged``.
Calls: auth (pool settings, processor keys, tokens), file_uploader's internal
upload routes (results go through the same pipeline as every file),
file_service_manager ``GET /file/<id>`` (archive members), a pool's
``processor_url`` (announcements).
"""
