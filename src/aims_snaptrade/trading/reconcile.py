"""Settling unknown outcomes: does the order of an intent exist?

The look-up reads the account's recent orders (``only_executed=false``, the last 24 hours; the
full order list for older intents or a full page) and takes, in this order:

1. a record carrying the intent's ``client_order_id`` (the emulator and brokerages that echo it);
2. otherwise a record without a ``client_order_id`` that matches the intent's account, symbol,
   side and quantity, was placed no earlier than the intent (less the clock-skew tolerance), and is
   not already attributed to another journaled intent; the oldest such record wins;
3. for a replacement: the replaced order must say ``REPLACED`` before a new order is looked for.

Nothing found means "not placed" only once the request can no longer arrive
(``order_settle_seconds`` after it was sent); before that the answer is "unknown" with the time to
look again. Only ``resend=True`` sends an intent again, and only after it was settled as not placed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aims_snaptrade import errors as e
from aims_snaptrade.pipeline import CallOptions, Flow, StoreCall, _parsed
from aims_snaptrade.trading.flows import INTENTS, TradingFlows, settled
from aims_snaptrade.trading.models import Order, OrderIntent, Reconciliation

__all__ = ["Reconciler", "matches"]

_RECENT_PAGE = 100  # recentOrders returns at most one page of 100
_RECENT_HORIZON = timedelta(hours=23)  # recentOrders covers 24 hours; keep a margin

Found = tuple[Literal["placed", "absent", "unclear"], Order | None, str]


def _kind(order_type: str | None) -> str:
    # v1 spells "StopLimit", v2 "STOP_LIMIT": compare letters only.
    return "".join(c for c in (order_type or "") if c.isalpha()).upper()


def matches(intent: OrderIntent, order: Order) -> bool:
    """Whether ``order`` has the intent's symbol, side, quantity, order type and prices.

    The account is the caller's to check; a field the record leaves out does not count against it.
    """
    if order.action is not None and order.action.upper() != intent.action:
        return False
    symbols = {s for s in (intent.symbol, intent.universal_symbol_id) if s}
    listed = {s for s in (order.symbol, order.universal_symbol_id) if s}
    if symbols and listed and not (symbols & listed):
        return False
    if order.order_type is not None and _kind(order.order_type) != _kind(intent.order_type):
        return False
    for wanted, got in ((intent.price, order.limit_price), (intent.stop, order.stop_price)):
        if wanted is not None and got is not None and wanted != got:
            return False
    return intent.units is None or order.total_quantity is None or order.total_quantity == intent.units


class Reconciler:
    """The reconciliation flows, on the trading flows' road."""

    def __init__(self, flows: TradingFlows) -> None:
        self.flows = flows
        self.core = flows.core
        self.settings = flows.settings

    def _orders(self, intent: OrderIntent, options: CallOptions | None) -> Flow[list[Order]]:
        arguments = {"user_id": intent.user_id, "account_id": intent.account_id}
        age = datetime.now(UTC) - intent.created_at
        records: list[Any] = []
        if age < _RECENT_HORIZON:
            response = yield from self.core.call(
                "get_user_account_recent_orders", {**arguments, "only_executed": False}, options=options
            )
            body = response.body if isinstance(response.body, Mapping) else {}
            records = list(body.get("orders") or [])
        if age >= _RECENT_HORIZON or len(records) >= _RECENT_PAGE:
            days = min(90, max(1, math.ceil(age / timedelta(days=1)) + 1))
            response = yield from self.core.call(
                "get_user_account_orders", {**arguments, "state": "all", "days": days}, options=options
            )
            records = list(response.body) if isinstance(response.body, list) else []
        return _parsed(
            response, lambda _: [Order.from_api(r, intent.account_id) for r in records if isinstance(r, Mapping)]
        )

    def _find(self, intent: OrderIntent, options: CallOptions | None) -> Flow[Found]:
        if intent.kind == "replace":
            assert intent.replaces is not None
            try:
                old = yield from self.flows.order_detail(intent.user_id, intent.account_id, intent.replaces, options)
            except e.SnapTradeNotFoundError:
                return "unclear", None, f"the replaced order {intent.replaces} is no longer listed"
            if old.status not in ("REPLACED", "REPLACE_PENDING"):
                return "absent", None, f"the order to replace is still {old.status}"
        orders = yield from self._orders(intent, options)
        for order in orders:
            if order.client_order_id == intent.client_order_id:
                return "placed", order, "found by client_order_id"
        claimed = set((yield StoreCall("claimed_order_ids", (intent.account_id,), store=INTENTS)))
        earliest = intent.created_at - timedelta(seconds=self.settings.clock_skew_tolerance)
        candidates = [
            o
            for o in orders
            if o.client_order_id is None
            and o.brokerage_order_id not in claimed
            and o.time_placed is not None
            and _aware(o.time_placed) >= earliest
            and matches(intent, o)
        ]
        if candidates:
            order = min(candidates, key=lambda o: _aware(o.time_placed or intent.created_at))
            pending: list[OrderIntent] = yield StoreCall("pending", (), store=INTENTS)
            rivals = [
                i.client_order_id
                for i in pending
                if i.client_order_id != intent.client_order_id
                and i.account_id == intent.account_id
                and i.created_at <= _aware(order.time_placed or intent.created_at)
                and matches(i, order)
            ]
            if rivals:
                # Identical orders of several unsettled intents: which one was placed is not knowable
                # from the listing, and a wrong guess could lead to a resend. Settle the others first.
                return "unclear", None, f"order {order.brokerage_order_id} could also be intent(s) {', '.join(rivals)}"
            return "placed", order, "found by account, symbol, side, quantity, order type, price and time"
        if intent.kind == "replace":
            return "unclear", None, "the old order says REPLACED but its replacement is not listed yet"
        return "absent", None, "no matching order is listed"

    def reconcile(
        self, intent: OrderIntent | str, *, resend: bool = False, options: CallOptions | None = None
    ) -> Flow[Reconciliation]:
        """Settle one intent; see :meth:`aims_snaptrade.SafeSnapTradeClient.reconcile_order`."""
        client_order_id = intent.client_order_id if isinstance(intent, OrderIntent) else intent
        if not isinstance(client_order_id, str) or not client_order_id:
            raise e.SnapTradeValidationError("reconcile_order needs an OrderIntent or its client_order_id.")
        current: OrderIntent | None = yield StoreCall("get", (client_order_id,), store=INTENTS)
        if current is None:
            raise e.SnapTradeNotFoundError(
                f"No order intent {client_order_id!r} is journaled.",
                hint="Check the id, and that this client uses the journal the order was placed with.",
            )
        if current.status == "placed":
            assert current.brokerage_order_id is not None
            placed = yield from self.flows.order_detail(
                current.user_id, current.account_id, current.brokerage_order_id, options
            )
            return Reconciliation(outcome="placed", intent=current, order=placed, reason=current.detail or "")
        if current.status == "pending":
            verdict, found, why = yield from self._find(current, options)
            if verdict == "placed" and found is not None:
                current = settled(current, "placed", order_id=found.brokerage_order_id, detail=why)
                yield StoreCall("update", (current,), store=INTENTS)
                # Order detail only knows single-leg orders placed through SnapTrade: else keep the listing.
                with contextlib.suppress(e.SnapTradeNotFoundError):
                    found = yield from self.flows.order_detail(
                        current.user_id, current.account_id, found.brokerage_order_id, options
                    )
                return Reconciliation(outcome="placed", intent=current, order=found, reason=why)
            settle_at = current.sent_at + timedelta(seconds=self.settings.order_settle_seconds)
            if verdict == "unclear" or datetime.now(UTC) < settle_at:
                retry_at = (
                    max(settle_at, datetime.now(UTC) + timedelta(seconds=1)) if verdict == "unclear" else settle_at
                )
                reason = why if verdict == "unclear" else f"{why}, but the request may still arrive"
                return Reconciliation(outcome="unknown", intent=current, retry_at=retry_at, reason=reason)
            current = settled(current, "not_placed", detail=why)
            yield StoreCall("update", (current,), store=INTENTS)
        if not resend:
            return Reconciliation(outcome="not_placed", intent=current, reason=current.detail or "")
        again = current.model_copy(
            update={
                "status": "pending",
                "attempts": current.attempts + 1,
                "sent_at": datetime.now(UTC),
                "settled_at": None,
                "brokerage_order_id": None,
                "detail": None,
            }
        )
        yield StoreCall("update", (again,), store=INTENTS)
        order = yield from self.flows.send(again, options)
        journaled = yield StoreCall("get", (client_order_id,), store=INTENTS)
        return Reconciliation(outcome="placed", intent=journaled, order=order, resent=True, reason="sent again")

    def reconcile_pending(self, options: CallOptions | None = None) -> Flow[list[Reconciliation]]:
        """Settle every pending intent (never resending); a failed look-up reads as unknown."""
        pending: list[OrderIntent] = yield StoreCall("pending", (), store=INTENTS)
        results = []
        for intent in pending:
            try:
                results.append((yield from self.reconcile(intent, options=options)))
            except e.SnapTradeError as failed:
                retry_at = datetime.now(UTC) + timedelta(seconds=getattr(failed, "retry_after", None) or 30)
                results.append(
                    Reconciliation(outcome="unknown", intent=intent, retry_at=retry_at, reason=failed.message)
                )
        return results


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
