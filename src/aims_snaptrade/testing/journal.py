"""The request journal: what reached the emulator and what it answered.

Tests assert on it, e.g. that a client retried a read three times but sent an order only once::

    assert emu.journal.count(operation="place_force_order", processed=True) == 1

Entries hold no credentials: the query string (which carries ``userSecret``) and the
``Signature`` header are never stored, only ids.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Journal", "JournalEntry"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One request.

    Attributes:
        request_id: The ``X-Request-ID`` the emulator sent (or would have sent).
        time: Wall-clock time the request arrived (Unix seconds).
        duration: Seconds spent by the emulator, faults' delays included.
        method: HTTP method.
        path: Request path without query string and without the ``/api/v1`` prefix.
        operation: SDK method name, or ``None`` for paths that are no SnapTrade operation.
        status: HTTP status sent, or ``None`` when the connection was closed without an answer.
        code: SnapTrade error code of an error answer.
        client_id: ``clientId`` the request claimed (verified or not).
        user_id: ``userId`` of user-scoped requests.
        account_id: Account addressed, for account-level requests.
        fault: Name of the injected fault, if any.
        processed: The operation ran (its effects, like a placed order, happened). For a
            webhook delivery: the receiver answered 200, 201, 202 or 204.
        webhook_id: For webhook deliveries (``operation="webhook"``): the payload's ``webhookId``.
        event_type: For webhook deliveries: the payload's ``eventType``.
        attempt: For webhook deliveries: 1 for the first attempt, 2 for the first redelivery...
        url: For webhook deliveries: the receiver URL the attempt went to.
    """

    request_id: str
    time: float
    duration: float
    method: str
    path: str
    operation: str | None
    status: int | None
    code: str | None
    client_id: str | None
    user_id: str | None
    account_id: str | None
    fault: str | None
    processed: bool
    webhook_id: str | None = None
    event_type: str | None = None
    attempt: int | None = None
    url: str | None = None


_FILTERS = frozenset(
    {
        "operation",
        "method",
        "path",
        "status",
        "code",
        "client_id",
        "user_id",
        "account_id",
        "fault",
        "processed",
        "webhook_id",
        "event_type",
        "attempt",
        "url",
    }
)


class Journal:
    """A bounded, thread-safe log of :class:`JournalEntry` (``emu.journal``)."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[JournalEntry] = deque(maxlen=maxlen)
        self._file: IO[str] | None = None

    def append(self, entry: JournalEntry) -> None:
        """Record one request (called by the server)."""
        with self._lock:
            self._entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(dataclasses.asdict(entry), default=str, sort_keys=True) + "\n")
                self._file.flush()

    def write_to(self, file: IO[str] | None) -> None:
        """Also append every later entry to ``file`` as one JSON line (the CLI's ``--journal``); ``None`` stops."""
        with self._lock:
            self._file = file

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def entries(self, **criteria: Any) -> list[JournalEntry]:
        """Entries, oldest first, whose fields equal every given criterion.

        Criteria are field names of :class:`JournalEntry` (``operation="place_force_order"``,
        ``status=429``, ``processed=True``...).
        """
        unknown = set(criteria) - _FILTERS
        if unknown:
            raise TypeError(f"unknown journal criteria: {sorted(unknown)}")
        with self._lock:
            snapshot = list(self._entries)
        if not criteria:
            return snapshot
        items = criteria.items()
        return [e for e in snapshot if all(getattr(e, k) == v for k, v in items)]

    def count(self, **criteria: Any) -> int:
        """Number of entries matching ``criteria`` (see :meth:`entries`)."""
        return len(self.entries(**criteria))

    def last(self, **criteria: Any) -> JournalEntry | None:
        """The most recent entry matching ``criteria``, or ``None``."""
        found = self.entries(**criteria)
        return found[-1] if found else None

    def operations(self) -> list[str | None]:
        """Operation names in arrival order: handy for asserting call sequences."""
        return [e.operation for e in self.entries()]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[JournalEntry]:
        return iter(self.entries())

    def __repr__(self) -> str:
        return f"Journal({len(self)} entries)"
