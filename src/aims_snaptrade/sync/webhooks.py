"""Webhook-driven freshness: turn SnapTrade's webhook events into ledger marks.

SnapTrade tells you when data changed; polling is the fallback. Each event below marks the ledger
so that the next ``sync_due()`` fetches exactly what changed (and nothing for accounts that did
not change). Verify and deduplicate webhooks first (``aims_snaptrade.webhooks``); marking twice
is harmless anyway.

=================================================  ==================================================
``ACCOUNT_HOLDINGS_UPDATED``                       the account's balances and positions are due
                                                   (not when its details say ``success: false``)
``ACCOUNT_TRANSACTIONS_UPDATED`` / ``..._INITIAL``  the account's new activities are due
``NEW_ACCOUNT_AVAILABLE``, ``CONNECTION_ADDED``,   list the user's connections and accounts again
``CONNECTION_UPDATED``
``CONNECTION_BROKEN``                              the connection's accounts are stale (not fetched)
``CONNECTION_FIXED``                               its accounts are active and everything is due
``CONNECTION_DELETED``                             its accounts are gone
``ACCOUNT_REMOVED``                                the account is gone
``USER_DELETED``                                   the ledger forgets the user
=================================================  ==================================================

Other event types change nothing (they are returned as no marks, never rejected).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.pipeline import Flow, StoreCall
from aims_snaptrade.sync.records import LedgerChange

__all__ = ["LedgerMark", "ledger_marks", "mark_ledger"]

_BY_EVENT: dict[str, tuple[LedgerChange, str | None]] = {
    "ACCOUNT_HOLDINGS_UPDATED": (LedgerChange.HOLDINGS_DIRTY, "account"),
    "ACCOUNT_TRANSACTIONS_UPDATED": (LedgerChange.ACTIVITIES_DIRTY, "account"),
    "ACCOUNT_TRANSACTIONS_INITIAL_UPDATE": (LedgerChange.ACTIVITIES_DIRTY, "account"),
    "NEW_ACCOUNT_AVAILABLE": (LedgerChange.ACCOUNTS_DIRTY, None),
    "CONNECTION_ADDED": (LedgerChange.ACCOUNTS_DIRTY, None),
    "CONNECTION_UPDATED": (LedgerChange.ACCOUNTS_DIRTY, None),
    "CONNECTION_BROKEN": (LedgerChange.CONNECTION_BROKEN, "connection"),
    "CONNECTION_FIXED": (LedgerChange.CONNECTION_FIXED, "connection"),
    "CONNECTION_DELETED": (LedgerChange.CONNECTION_REMOVED, "connection"),
    "ACCOUNT_REMOVED": (LedgerChange.ACCOUNT_REMOVED, "account"),
    "USER_DELETED": (LedgerChange.USER_REMOVED, None),
}

# Payload keys (SnapTrade's camelCase) and the attribute names of typed event objects.
_FIELDS = {
    "event_type": ("eventType", "event_type"),
    "user_id": ("userId", "user_id"),
    "account_id": ("accountId", "account_id"),
    "connection_id": ("brokerageAuthorizationId", "brokerage_authorization_id", "connectionId", "connection_id"),
    "details": ("details",),
}


@dataclass(frozen=True, slots=True)
class LedgerMark:
    """One ledger change derived from a webhook."""

    user_id: str
    change: LedgerChange
    account_id: str | None = None
    connection_id: str | None = None


def _field(event: Any, name: str) -> Any:
    for key in _FIELDS[name]:
        value = event.get(key) if isinstance(event, Mapping) else getattr(event, key, None)
        if value is not None:
            return value
    if not isinstance(event, Mapping):
        payload = getattr(event, "payload", None)  # typed events that keep their raw payload
        if isinstance(payload, Mapping):
            return _field(payload, name)
    return None


def ledger_marks(event: Any) -> list[LedgerMark]:
    """The ledger changes a webhook event asks for (empty for other event types).

    ``event`` is a webhook payload (a mapping with SnapTrade's ``eventType``, ``userId``,
    ``accountId``, ``brokerageAuthorizationId``) or an event object with the snake_case attributes.

    Raises:
        SnapTradeValidationError: the event has no ``eventType`` or no ``userId`` (a type this
            module acts on needs both), or lacks the account / connection id its type needs.
    """
    event_type = _field(event, "event_type")
    event_type = getattr(event_type, "value", event_type)  # an enum member from a typed event
    if not isinstance(event_type, str) or not event_type:
        raise SnapTradeValidationError("The webhook event has no eventType.", hint="Pass the verified JSON payload.")
    found = _BY_EVENT.get(event_type.upper())
    if found is None:
        return []
    change, needs = found
    details = _field(event, "details")
    if change is LedgerChange.HOLDINGS_DIRTY and isinstance(details, Mapping) and details.get("success") is False:
        return []  # SnapTrade's own refresh failed: nothing new to fetch
    user_id = _field(event, "user_id")
    if not isinstance(user_id, str) or not user_id:
        raise SnapTradeValidationError(f"The {event_type} webhook event has no userId.")
    account_id = _field(event, "account_id")
    connection_id = _field(event, "connection_id")
    if needs == "account" and not account_id:
        # Which account is unknown: list the user's accounts again instead of guessing.
        return [LedgerMark(user_id, LedgerChange.ACCOUNTS_DIRTY)]
    if needs == "connection" and not connection_id:
        raise SnapTradeValidationError(f"The {event_type} webhook event has no brokerageAuthorizationId.")
    return [
        LedgerMark(
            user_id,
            change,
            str(account_id) if account_id else None,
            str(connection_id) if connection_id else None,
        )
    ]


def mark_ledger(event: Any) -> Flow[list[LedgerMark]]:
    """Apply ``event``'s marks to the ledger (a flow: the clients' ``mark_from_webhook``)."""
    marks = ledger_marks(event)
    at = time.time()
    for mark in marks:
        yield StoreCall("mark", (mark.user_id, mark.change, at, mark.account_id, mark.connection_id), store="ledger")
    return marks
