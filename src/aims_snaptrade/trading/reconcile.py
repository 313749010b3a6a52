"""Settling unknown outcomes: does the order of an intent exist?

Only positive evidence settles an intent. The look-up reads the account's recent orders
(``only_executed=false``, the last 24 hours, real time) and takes, in this order:

1. a record carrying the intent's ``client_order_id`` (the emulator and brokerages that echo it);
2. otherwise a record without a ``client_order_id`` that matches the intent's account, symbol,
   side and quantity, was placed no earlier than the intent (less the clock-skew tolerance), and is
   not already attributed to another journaled intent; the oldest such record wins;
3. for a replacement: the replaced order (its detail, real time) must say ``REPLACED`` before a new
   order is looked for; for a cancellation, the order's detail says whether it was cancelled.

Every look-up answer is checked against the SDK's own schema first: an empty body, ``null`` or a
body of the wrong shape proves nothing and gives ``unknown`` (``malformed_answer``). When the
recent orders are a full page, or the intent is older than a day, the account's order list is read
too; SnapTrade caches it, so an order found there is ``placed`` (marked ``stale``) and an order
missing there is ``unknown`` (``stale_source``), never ``not_placed``.

Nothing found means "not placed" only once the request can no longer arrive:
``order_settle_seconds`` after the last moment it could have left (``left_by``: after every
trade-slot, rate-limit and retry wait). Before that the answer is ``unknown`` (``settling``) with
the time to look again. Only ``resend=True`` sends an intent again, and only after it was settled
as not placed on fresh evidence.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aims_snaptrade import errors as e
from aims_snaptrade._transport import Response
from aims_snaptrade.pipeline import CallOptions, Flow, StoreCall, _parsed
from aims_snaptrade.trading.flows import _CANCELED, INTENTS, TradingFlows, misfit, settled
from aims_snaptrade.trading.models import Order, OrderIntent, Reconciliation, Source, UnknownReason

__all__ = ["Reconciler", "matches"]

_RECENT_PAGE = 100  # recentOrders returns at most one page of 100
_RECENT_HORIZON = timedelta(hours=23)  # recentOrders covers 24 hours; keep a margin


class _Found:
    """What one look-up established: a verdict, the order, why, from where."""

    __slots__ = ("order", "source", "unknown_reason", "verdict", "why")

    def __init__(
        self,
        verdict: Literal["placed", "absent", "unclear"],
        why: str,
        source: Source,
        order: Order | None = None,
        unknown_reason: UnknownReason | None = None,
    ) -> None:
        self.verdict, self.why, self.source, self.order, self.unknown_reason = (
            verdict,
            why,
            source,
            order,
            unknown_reason,
        )


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

    def _orders(self, intent: OrderIntent, options: CallOptions | None) -> Flow[tuple[list[Order], Source, str | None]]:
        """The account's orders around the intent, where they came from, and why they prove nothing (if so)."""
        arguments = {"user_id": intent.user_id, "account_id": intent.account_id}
        age = datetime.now(UTC) - intent.created_at
        recent: list[Order] = []
        if age < _RECENT_HORIZON:
            response = yield from self.core.call(
                "get_user_account_recent_orders", {**arguments, "only_executed": False}, options=options
            )
            problem = misfit(response, "orders")
            if problem is not None:
                return [], "recent_orders", problem
            records = response.body["orders"]
            recent = _records(response, records, intent.account_id)
            if len(records) < _RECENT_PAGE:
                return recent, "recent_orders", None
        # A full page of recent orders, or an intent older than a day: SnapTrade's cached order list.
        days = min(90, max(1, math.ceil(age / timedelta(days=1)) + 1))
        response = yield from self.core.call(
            "get_user_account_orders", {**arguments, "state": "all", "days": days}, options=options
        )
        problem = misfit(response)
        listed = [] if problem is not None else _records(response, response.body, intent.account_id)
        return recent + listed, "orders", problem

    def _find(self, intent: OrderIntent, options: CallOptions | None) -> Flow[_Found]:
        if intent.kind == "cancel":
            assert intent.cancels is not None
            order = yield from self.flows.checked_detail(intent, intent.cancels, options)
            if isinstance(order, str):
                return _Found("unclear", order, "order_detail", unknown_reason="malformed_answer")
            if order.status in _CANCELED:
                return _Found("placed", f"the order says {order.status}", "order_detail", order)
            return _Found("absent", f"the order is still {order.status}", "order_detail")
        if intent.kind == "replace":
            assert intent.replaces is not None
            try:
                old = yield from self.flows.checked_detail(intent, intent.replaces, options)
            except e.SnapTradeNotFoundError:
                return _Found(
                    "unclear",
                    f"the replaced order {intent.replaces} is no longer listed",
                    "order_detail",
                    unknown_reason="replacement_pending",
                )
            if isinstance(old, str):
                return _Found("unclear", old, "order_detail", unknown_reason="malformed_answer")
            if old.status not in ("REPLACED", "REPLACE_PENDING"):
                return _Found("absent", f"the order to replace is still {old.status}", "order_detail")
        orders, source, problem = yield from self._orders(intent, options)
        for order in orders:
            if order.client_order_id == intent.client_order_id:
                return _Found("placed", "found by client_order_id", source, order)
        claimed = set((yield StoreCall("claimed_order_ids", (intent.account_id,), store=INTENTS)))
        earliest = intent.created_at - timedelta(seconds=self.settings.clock_skew_tolerance)
        candidates = [
            o
            for o in orders
            if o.client_order_id is None
            and o.brokerage_order_id not in claimed
            and o.time_placed is not None
            and _aware(o.time_placed) >= earliest
            and intent.action is not None
            and matches(intent, o)
        ]
        if candidates:
            order = min(candidates, key=lambda o: _aware(o.time_placed or intent.created_at))
            pending: list[OrderIntent] = yield StoreCall("pending", (), store=INTENTS)
            rivals = [
                i.client_order_id
                for i in pending
                if i.client_order_id != intent.client_order_id
                and i.kind != "cancel"
                and i.account_id == intent.account_id
                and i.created_at <= _aware(order.time_placed or intent.created_at)
                and matches(i, order)
            ]
            if rivals:
                # Identical orders of several unsettled intents: which one was placed is not knowable
                # from the listing, and a wrong guess could lead to a resend. Settle the others first.
                why = f"order {order.brokerage_order_id} could also be intent(s) {', '.join(rivals)}"
                return _Found("unclear", why, source, unknown_reason="ambiguous")
            return _Found(
                "placed", "found by account, symbol, side, quantity, order type, price and time", source, order
            )
        if problem is not None:
            return _Found("unclear", problem, source, unknown_reason="malformed_answer")
        if source == "orders":
            why = "no matching order in SnapTrade's cached order list, which proves nothing"
            return _Found("unclear", why, source, unknown_reason="stale_source")
        if intent.kind == "replace":
            why = "the old order says REPLACED but its replacement is not listed yet"
            return _Found("unclear", why, source, unknown_reason="replacement_pending")
        return _Found("absent", "no matching order is listed", source)

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
            return Reconciliation(
                outcome="placed", intent=current, order=placed, reason=current.detail or "", source="journal"
            )
        if current.status == "pending":
            found = yield from self._find(current, options)
            stale = found.source == "orders"
            if found.verdict == "placed" and found.order is not None:
                order = found.order
                current = settled(current, "placed", order_id=order.brokerage_order_id, detail=found.why)
                yield StoreCall("update", (current,), store=INTENTS)
                if found.source != "order_detail":
                    # Order detail only knows single-leg orders placed through SnapTrade: else keep the listing.
                    with contextlib.suppress(e.SnapTradeNotFoundError):
                        order = yield from self.flows.order_detail(
                            current.user_id, current.account_id, order.brokerage_order_id, options
                        )
                return Reconciliation(
                    outcome="placed", intent=current, order=order, reason=found.why, source=found.source, stale=stale
                )
            # The settle window counts from the last moment the request could have left.
            settle_at = (current.left_by or current.sent_at) + timedelta(seconds=self.settings.order_settle_seconds)
            now = datetime.now(UTC)
            if found.verdict == "unclear" or now < settle_at:
                unclear = found.verdict == "unclear"
                retry_at = max(settle_at, now + timedelta(seconds=1)) if unclear else settle_at
                return Reconciliation(
                    outcome="unknown",
                    intent=current,
                    retry_at=retry_at,
                    reason=found.why if unclear else f"{found.why}, but the request may still arrive",
                    unknown_reason=found.unknown_reason if unclear else "settling",
                    source=found.source,
                    stale=stale,
                )
            current = settled(current, "not_placed", detail=found.why)
            yield StoreCall("update", (current,), store=INTENTS)
            if not resend:
                return Reconciliation(outcome="not_placed", intent=current, reason=found.why, source=found.source)
        if not resend:
            return Reconciliation(outcome="not_placed", intent=current, reason=current.detail or "", source="journal")
        now = datetime.now(UTC)
        again = current.model_copy(
            update={
                "status": "pending",
                "attempts": current.attempts + 1,
                "sent_at": now,
                "left_by": self.flows.left_by(options, now),
                "settled_at": None,
                "brokerage_order_id": None,
                "detail": None,
            }
        )
        yield StoreCall("update", (again,), store=INTENTS)
        order = yield from self.flows.send(again, options)
        journaled = yield StoreCall("get", (client_order_id,), store=INTENTS)
        return Reconciliation(
            outcome="placed", intent=journaled, order=order, resent=True, reason="sent again", source="answer"
        )

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
                    Reconciliation(
                        outcome="unknown",
                        intent=intent,
                        retry_at=retry_at,
                        reason=failed.message,
                        unknown_reason="lookup_failed",
                    )
                )
        return results


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _records(response: Response, records: Any, account_id: str) -> list[Order]:
    return _parsed(response, lambda _: [Order.from_api(r, account_id) for r in records if isinstance(r, Mapping)])
