"""socket_gateway: the Socket.IO endpoint of File Dropbox (python-socketio on eventlet).

Consumes (``handlers.py``):
- ``socket_gateway.notifications`` (shared by every gateway process): FileStatusChanged ->
  ``file-status`` to ``user:<owner_id>`` and ``admins``; ResultPublished -> ``pool-result``
  to ``pool:<pool_id>``; GroupChanged -> ``group-status`` to ``pool:<pool_id>`` and ``admins``.
  Emits travel through python-socketio's Redis manager, so they reach the sockets of every
  gateway process; each process sends what it receives fairly (``fanout.py``): broadcasts wait
  per room, in order, and rooms take turns of 200 sockets, so one pool's fan-out to thousands
  does not hold up another pool's result.
- a private queue per process bound to ``auth.token_revoked`` / ``auth.membership_changed``:
  disconnects the local sockets of a revoked token, moves local sockets in/out of pool rooms.

Identity is checked on every event (``guard.py``), not only at connect: an expired, revoked
or disabled token gets ``token-expired {}`` once, every event but ``reauth`` is refused with
``unauthorized`` and the socket is disconnected after GATEWAY_REAUTH_GRACE_SECONDS (30 s)
unless ``reauth`` succeeds; every chunk and completion of a pool upload asks auth whether its
writer still contributes to the pool.

Catch-up (``sockets.catch_up``): on connect (and after a reauth that ended an expiry) a member
is sent every result of its pools after its last acknowledged ``seq`` (``ack-result``, kept by
pool_aggregator), or created since it joined the pool (auth's ``joined``) when it never
acknowledged one: all of them, in seq order, a page at a time, bounded per socket (one page in
its queue) and per process (GATEWAY_MAX_CATCHUPS at once). The pool rooms are joined first, so
a result published meanwhile comes live too; the client drops duplicates by ``seq``.

Calls: auth ``/auth/validate`` (at connect, at reauth and on every pool event); reads auth's
revocation list in Redis on every event (``services.common.revocations``, 1-s cache);
file_uploader's internal ``/uploads`` routes (one writer = one socket sid; cancel);
file_service_manager ``GET /files``; pool_aggregator ``GET /pools/<id>/results`` (as the member)
and its internal ``/internal/pools/<id>/acks/<user_id>`` (``ack-result``, catch-up start).

Publishes: audit records (``result_delivered``: one per live broadcast, one per catch-up page),
batched as ``AuditsRecorded`` (a lone one as ``AuditRecorded``); no other message.

Owns: only short-lived Redis keys ``{prefix}:gw:sent:*`` (which once-only notifications a
replica already emitted: ``uploaded_successfully``/``upload_failed``, ``pool-result``; 10 minutes).
Uses Redis: ``{prefix}:socketio`` (the socket.io message-queue channel) and auth's revocation
list (read, ``store.py``).
Serves frontend/ at ``/`` and ``/config.json``.

Shape: ``events.py`` maps each event of ``socket_events.json`` to a use case of
``sockets.py``; ``handlers.py`` the consumed messages; ``routes.py`` the dashboard;
``store.py`` the Redis connection; ``server.py`` eventlet's WSGI server.
"""
