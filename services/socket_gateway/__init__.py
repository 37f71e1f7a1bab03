"""socket_gateway: the Socket.IO endpoint of File Dropbox (python-socketio on eventlet).

Consumes (``handlers.py``):
- ``socket_gateway.notifications`` (shared by every gateway process): FileStatusChanged ->
  ``file-status`` to ``user:<owner_id>`` and ``admins``; ResultPublished -> ``pool-result``
  to ``pool:<pool_id>``; GroupChanged -> ``group-status`` to ``pool:<pool_id>`` and ``admins``.
  Emits travel through python-socketio's Redis manager, so they reach the sockets of every
  gateway process.
- a private queue per process bound to ``auth.token_revoked`` / ``auth.membership_changed``:
  disconnects the local sockets of a revoked token, moves local sockets in/out of pool rooms.

Identity is checked on every event (``guard.py``), not only at connect: an expired, revoked
or disabled token gets ``token-expired {}`` once, every event but ``reauth`` is refused with
``unauthorized`` and the socket is disconnected after GATEWAY_REAUTH_GRACE_SECONDS (30 s)
unless ``reauth`` succeeds; every chunk and completion of a pool upload asks auth whether its
writer still contributes to the pool.

Calls: auth ``/auth/validate`` (at connect, at reauth and on every pool event); reads auth's
revocation list in Redis on every event (``services.common.revocations``, 1-s cache);
file_uploader's internal ``/uploads`` routes (one writer = one socket sid; cancel);
file_service_manager ``GET /files``; pool_aggregator ``GET /pools/<id>/results``.

Publishes: ``AuditRecorded`` (``result_delivered``, live and on connect); no other message.

Owns: Redis ``{prefix}:socketio`` (the socket.io message-queue channel) and
``{prefix}:gw:seen:<user_id>:<pool_id>`` (when a member was last connected, for offline
delivery of pool results). Serves frontend/ at ``/`` and ``/config.json``.

Shape: ``events.py`` maps each event of ``socket_events.json`` to a use case of
``sockets.py``; ``handlers.py`` the consumed messages; ``routes.py`` the dashboard;
``store.py`` the only Redis code; ``server.py`` eventlet's WSGI server.
"""
