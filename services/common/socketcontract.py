"""The Socket.IO event names, read from ``socket_events.json`` beside this module.

One list for the gateway (which registers them), the frontend and the client
library (which use them); a unit test holds all three to it.
"""

from __future__ import annotations

import json
from pathlib import Path

_DOC = json.loads((Path(__file__).with_name("socket_events.json")).read_text())

CLIENT_EVENTS: tuple[str, ...] = tuple(_DOC["client_events"])  # client -> gateway, answered by ack
SERVER_EVENTS: tuple[str, ...] = tuple(_DOC["server_events"])  # gateway -> client pushes
