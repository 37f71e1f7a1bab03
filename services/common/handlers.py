"""Consumed messages as tables: each queue a service consumes maps every message
type it expects to exactly one ``on_<message>`` function.

A service's ``handlers.py`` builds its ``ConsumerSpec`` list from its deps;
``messaging.start_consumers`` runs them against RabbitMQ, and
``testing.InMemoryBroker.deliver`` runs the same specs in memory. No pika here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .contracts import Message
from .topology import QueueSpec

# A handler takes one message of the type it is registered for. Typed loosely
# (Any) because a table maps each class to a function of that exact class.
Handler = Callable[[Any], None]
D = TypeVar("D")


def bind(table: Mapping[type[Any], Callable[[D, Any], None]], deps: D) -> dict[type[Message], Handler]:
    """A service's ``HANDLERS`` table (functions of ``(deps, message)``) bound to its deps."""
    return {cls: partial(fn, deps) for cls, fn in table.items()}


class UnhandledMessage(Exception):
    """A known contract arrived on a queue whose table has no entry for it.

    That is a topology mistake, not a transient failure: retrying cannot help,
    so the consumer dead-letters the message (the dead-letter queue keeps it).
    """


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumed queue: its handler table and how many competing consumers run it.

    ``queue`` None means a private, exclusive queue bound to ``bindings``
    (per-process control events every replica must see, e.g. token revocations).
    """

    name: str
    queue: QueueSpec | None
    handlers: Mapping[type[Message], Handler]
    prefetch: int = 4  # unacked messages per consumer: bounds memory and redelivery after a crash
    count: int = 1  # competing consumers in this process (threads), each with its own connection
    bindings: tuple[str, ...] = ()

    def dispatch(self, message: Message) -> None:
        handler = self.handlers.get(type(message))
        if handler is None:
            raise UnhandledMessage(f"{self.name}: no handler for {type(message).__name__}")
        handler(message)
