"""JSON-lines logging to stdout, and to Logstash when ``LOGSTASH_HOST`` is set.

Every record carries ``service`` and whatever ids are bound in the current
context (``request_id``, ``file_id``, ``pool_id``, ...). Values whose key looks
like a credential are replaced before they leave the process: a token or a
password never reaches a log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

# Never mutated in place: bind() sets a new dict, so one immutable empty default is safe.
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("log_context", default=_EMPTY)

_SECRET_KEY = re.compile(r"(pass(word)?|token|secret|api[_-]?key|access[_-]?key|credential|authorization|cookie)",
                         re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+", re.I)
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return "[redacted]"
    if isinstance(value, str):
        return _JWT.sub("[redacted-jwt]", _BEARER.sub(r"\1[redacted]", value))
    return value


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add ids to every log line of the current request/message until reset."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _context.set(merged)


def reset(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def build(self, record: logging.LogRecord) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": redact("message", record.getMessage()),
        }
        for key, value in _context.get().items():
            doc[key] = redact(key, value)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = redact(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return doc

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.build(record), default=str)


class _ContextFilter(logging.Filter):
    """Copies the bound ids onto the record so the Logstash handler ships them too."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, redact(key, value))
        for key in list(vars(record)):
            if key not in _STANDARD_ATTRS and _SECRET_KEY.search(key):
                setattr(record, key, "[redacted]")
        record.msg = redact("message", record.getMessage())
        record.args = ()
        return True


def configure(
    service: str,
    level: str = "INFO",
    logstash_host: str | None = None,
    logstash_port: int = 5959,
    logstash_transport: str = "udp",
) -> None:
    """Install the JSON stdout handler (and the Logstash one). Idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(JsonFormatter(service))
    root.addHandler(stdout)
    if logstash_host:
        import logstash  # python-logstash

        handler_cls = logstash.TCPLogstashHandler if logstash_transport == "tcp" else logstash.LogstashHandler
        shipper = handler_cls(logstash_host, logstash_port, version=1, tags=[service])
        shipper.addFilter(_ContextFilter(service))
        root.addHandler(shipper)
    # Chatty libraries: their INFO lines are per-request noise.
    for noisy in ("pika", "werkzeug", "urllib3", "engineio.server", "socketio.server", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_service(service: str, common: Any) -> None:
    """``configure`` from a service's ``CommonSettings`` (level and Logstash target)."""
    configure(service, common.log_level, common.logstash_host, common.logstash_port)
