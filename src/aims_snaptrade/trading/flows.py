"""The order flows: preview, confirm and place once, place now, cancel, replace.

Every flow is a generator on the one road (:meth:`aims_snaptrade.pipeline.Core.call` plus
``StoreCall(..., store="intents")``), so both clients run the same code. The order of things in
a placement is the safety argument:

1. every local check (terms, confirmation token, expiry, notional cap, trading switch, consent)
   raises before anything is written or sent;
2. the intent is journaled durably under its ``client_order_id`` (a second journaling of the
   same id is refused: that is what makes a confirmation single-use);
3. the request is sent once: the retry policy may resend it only when it provably did not
   arrive (``request_sent=False``) or SnapTrade refused it unprocessed (429). The journal says
   by when it can have left at the latest (``left_by``: the call's deadline bounds every
   trade-slot, rate-limit and retry wait), and that moment moves to the call's end once it ends;
4. the answer settles the intent (``placed`` / ``not_placed``); a lost answer leaves it
   ``pending`` and raises :class:`~aims_snaptrade.errors.SnapTradeUnknownOutcomeError` carrying it,
   for :mod:`~aims_snaptrade.trading.reconcile` to settle.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aims_snaptrade import errors as e
from aims_snaptrade._transport import Response, answer_conforms
from aims_snaptrade.models import _to_decimal
from aims_snaptrade.operations import get_operation
from aims_snaptrade.pipeline import CallOptions, Core, Flow, StoreCall, _parsed, checked_options
from aims_snaptrade.trading.confirmation import ConfirmationSigner
from aims_snaptrade.trading.models import Order, OrderIntent, OrderPreview, OrderRequest

__all__ = ["TradingFlows"]

INTENTS = "intents"
"""Name of the order-intent store in the shells' store table."""

_CANCELED = frozenset({"CANCELED", "PARTIAL_CANCELED", "CANCEL_PENDING"})

ORDER_WRITE_DEADLINE = 120.0
"""Seconds an order write may take, waits and retries included, when neither the call's options
nor the retry policy set a deadline: an order write always has one, so the journal can say by
when its request can have left at the latest."""


def _now() -> datetime:
    return datetime.now(UTC)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise e.SnapTradeValidationError(f"{name} must be a non-empty string, got {type(value).__name__}.")
    return value


def _body(response_body: Any) -> Mapping[str, Any]:
    return response_body if isinstance(response_body, Mapping) else {}


def misfit(response: Response, key: str | None = None) -> str | None:
    """Why a look-up answer proves nothing (empty, null, not what the SDK's schema allows), or ``None``.

    ``key`` names a list the answer must carry (the schema of recent orders allows ``{}``).
    """
    problem = answer_conforms(get_operation(response.operation), response.body)
    if problem is None and key is not None and not isinstance(response.body.get(key), list):
        problem = f"no {key!r} list"
    return None if problem is None else f"{response.operation} answered a body that proves nothing ({problem})"


def settled(intent: OrderIntent, status: str, *, order_id: str | None = None, detail: str) -> OrderIntent:
    """``intent`` settled as ``placed`` (with ``order_id``) or ``not_placed``."""
    return intent.model_copy(
        update={"status": status, "brokerage_order_id": order_id, "settled_at": _now(), "detail": detail}
    )


class TradingFlows:
    """The trading flows of one client: the core's road, a confirmation signer and the settings."""

    def __init__(self, core: Core, signer: ConfirmationSigner) -> None:
        self.core = core
        self.settings = core.settings
        self.signer = signer

    # --- local checks ----------------------------------------------------------------------------

    def _precheck(self, operation: str, arguments: Mapping[str, Any]) -> Flow[None]:
        """The road's own guardrails (trading switch, rollout, consent), run before the intent is
        journaled; a refusal is audited like the road's own (one record)."""
        yield from self.core.admit_or_refuse(get_operation(operation), arguments)

    def _check_notional(
        self, notional: Decimal | None, operation: str, user_id: str, account_id: str | None
    ) -> Flow[None]:
        cap = self.settings.max_order_notional
        if cap is None:
            return
        refusal = None
        if notional is None:
            refusal = e.SnapTradeOrderLimitError(
                f"The order's value cannot be bounded, and orders are capped at {cap}.",
                operation=operation,
                hint="Give a limit price or a notional_value so the cap can be checked.",
            )
        elif notional > cap:
            refusal = e.SnapTradeOrderLimitError(
                f"The order is worth about {notional:.2f}, above the maximum of {cap} per order.",
                operation=operation,
            )
        if refusal is not None:
            yield from self.core.refuse(refusal, {"user_id": user_id, "account_id": account_id})

    def _write_options(self, options: CallOptions | None) -> CallOptions:
        # An order is never resent on the policy's say-so, whatever the policy allows for writes
        # carrying a client_order_id: only reconcile_order(resend=True) sends an intent again.
        options = checked_options(options)
        policy = options.retry or self.core.retry
        if policy.retry_idempotent_writes:
            options = dataclasses.replace(options, retry=dataclasses.replace(policy, retry_idempotent_writes=False))
        if options.deadline is None and policy.deadline is None:
            options = dataclasses.replace(options, deadline=ORDER_WRITE_DEADLINE)
        return options

    def left_by(self, options: CallOptions | None, start: datetime) -> datetime:
        """The last moment an order write started at ``start`` can send its request.

        The road bounds every wait of a call (trade slot, rate-limit budget, ``Retry-After``,
        backoff) by the call's deadline and sends nothing after it; the request's bytes leave at
        most one connect timeout later. One more road is possible (a resend after SnapTrade
        answered 1083 to a stale cached secret, which it never processes), hence twice.
        """
        write = self._write_options(options)
        policy = write.retry or self.core.retry
        # The call's deadline: the earlier of its own and its policy's (_write_options gives it
        # ORDER_WRITE_DEADLINE when neither has one, so there is always one). Not capped at
        # ORDER_WRITE_DEADLINE: a longer deadline lets the call wait longer before its request leaves.
        deadline = min(d for d in (write.deadline, policy.deadline) if d is not None)
        connect = write.timeouts(self.settings).connect
        return start + timedelta(seconds=2 * (deadline + connect))

    def _new_intent(self, options: CallOptions | None, **fields: Any) -> OrderIntent:
        """A pending intent journaled now (a fresh ``client_order_id`` unless given), with its ``left_by``."""
        now = _now()
        fields.setdefault("client_order_id", OrderIntent.new_client_order_id())
        return OrderIntent(created_at=now, sent_at=now, left_by=self.left_by(options, now), **fields)

    # --- reads the flows share -----------------------------------------------------------------

    def order_detail(
        self, user_id: str, account_id: str, brokerage_order_id: str, options: CallOptions | None = None
    ) -> Flow[Order]:
        """One order, live from the brokerage (``get_user_account_order_detail``)."""
        _text("brokerage_order_id", brokerage_order_id)
        response = yield from self.core.call(
            "get_user_account_order_detail",
            {"user_id": user_id, "account_id": account_id, "brokerage_order_id": brokerage_order_id},
            options=options,
        )
        return _parsed(response, lambda body: Order.from_api(_body(body), account_id))

    def checked_detail(self, intent: OrderIntent, order_id: str, options: CallOptions | None) -> Flow[Order | str]:
        """One order of ``intent``'s account, live, as evidence: the order, or why its answer proves nothing.

        The answer must be what the SDK's schema allows, about this very order, with a status.
        """
        response = yield from self.core.call(
            "get_user_account_order_detail",
            {"user_id": intent.user_id, "account_id": intent.account_id, "brokerage_order_id": order_id},
            options=options,
        )
        problem = misfit(response)
        if problem is None:
            try:
                order = _parsed(response, lambda body: Order.from_api(body, intent.account_id))
            except e.SnapTradeMalformedResponseError as bad:
                problem = bad.message
            else:
                if order.status is not None and order.brokerage_order_id == order_id:
                    return order
                problem = f"{response.operation} answered about another order, or without a status"
        return problem

    def _last_price(self, user_id: str, request: OrderRequest, options: CallOptions | None) -> Flow[Decimal | None]:
        by_ticker = request.universal_symbol_id is None
        response = yield from self.core.call(
            "get_user_account_quotes",
            {
                "user_id": user_id,
                "account_id": request.account_id,
                "symbols": request.symbol if by_ticker else request.universal_symbol_id,
                "use_ticker": by_ticker,
            },
            options=options,
        )
        quotes = response.body if isinstance(response.body, list) else []
        for quote in quotes:
            if isinstance(quote, Mapping):
                return _to_decimal(quote.get("last_trade_price") or quote.get("ask_price"))
        return None

    def _universal_symbol(self, request: OrderRequest, options: CallOptions | None) -> Flow[OrderRequest]:
        if request.universal_symbol_id is not None:
            return request
        response = yield from self.core.call("get_symbols_by_ticker", {"query": request.symbol}, options=options)
        found = _body(response.body).get("id")
        if not isinstance(found, str) or not found:
            raise e.SnapTradeNotFoundError(f"SnapTrade knows no symbol {request.symbol!r}.", operation="preview_order")
        return request.model_copy(update={"universal_symbol_id": found})

    # --- preview and confirmed placement -------------------------------------------------------

    def preview_order(
        self, user_id: str, account_id: str, terms: Mapping[str, Any], options: CallOptions | None = None
    ) -> Flow[OrderPreview]:
        """Check an order's impact with SnapTrade and return a confirmable :class:`OrderPreview`."""
        _text("user_id", user_id)
        request = OrderRequest.build(account_id, **terms)
        yield from self._precheck("get_order_impact", {"user_id": user_id})
        request = yield from self._universal_symbol(request, options)
        issued = _now()
        response = yield from self.core.call(
            "get_order_impact", {"user_id": user_id, **request.sdk_arguments()}, options=options
        )
        body = _body(response.body)
        trade = _body(body.get("trade"))
        trade_id = trade.get("id")
        if not isinstance(trade_id, str) or not trade_id:
            raise e.SnapTradeError(
                "SnapTrade's order impact came back without a trade id.",
                operation="get_order_impact",
                request_id=response.request_id,
            )
        impacts = [i for i in body.get("trade_impacts") or [] if isinstance(i, Mapping)]
        impact = next((i for i in impacts if i.get("account") == request.account_id), impacts[0] if impacts else {})
        symbol = _body(trade.get("symbol"))
        currency = _body(symbol.get("currency"))
        units = _to_decimal(trade.get("units")) or request.units
        estimated_price = _to_decimal(trade.get("price"))
        fees = [_to_decimal(impact.get(k)) for k in ("estimated_commission", "forex_fees")]
        fields: dict[str, Any] = {
            "user_id": user_id,
            "account_id": request.account_id,
            "trade_id": trade_id,
            "client_order_id": OrderIntent.new_client_order_id(),
            "action": request.action,
            "symbol": symbol.get("symbol") or request.symbol,
            "universal_symbol_id": symbol.get("universal_symbol_id") or request.universal_symbol_id,
            "order_type": request.order_type,
            "time_in_force": request.time_in_force,
            "units": units,
            "notional_value": request.notional_value,
            "price": request.price,
            "stop": request.stop,
            "estimated_price": estimated_price,
            "estimated_cost": units * estimated_price if units is not None and estimated_price is not None else None,
            "estimated_fees": sum((f for f in fees if f is not None), Decimal(0)),
            "buying_power_after": _to_decimal(impact.get("remaining_cash")),
            "currency": currency.get("code"),
            "expires_at": issued + timedelta(seconds=self.settings.order_preview_ttl),
        }
        unsigned = OrderPreview.model_validate({**fields, "confirmation": ""})
        preview = unsigned.model_copy(update={"confirmation": self.signer.sign(unsigned.bound_fields())})
        notional = preview.estimated_cost or request.notional_value
        yield from self._check_notional(notional, "get_order_impact", user_id, request.account_id)
        return preview

    def place_order(self, preview: OrderPreview, confirmation: Any, options: CallOptions | None = None) -> Flow[Order]:
        """Place a confirmed preview, once; see :meth:`aims_snaptrade.SafeSnapTradeClient.place_order`."""
        if not isinstance(preview, OrderPreview):
            raise e.SnapTradeValidationError(
                f"place_order needs the OrderPreview from preview_order, got {type(preview).__name__}."
            )
        subject = {"user_id": preview.user_id, "account_id": preview.account_id}
        if not self.signer.verify(preview.bound_fields(), confirmation):
            mismatch = e.SnapTradeConfirmationError(
                "The confirmation does not match this preview (another order, account, user or expiry, "
                "or a preview changed after it was issued); nothing was sent.",
                reason="mismatch",
                operation="place_order",
            )
            yield from self.core.refuse(mismatch, subject)
        if _now() >= preview.expires_at:
            expired = e.SnapTradeConfirmationError(
                f"The preview expired at {preview.expires_at.isoformat()}; nothing was sent.",
                reason="expired",
                operation="place_order",
            )
            yield from self.core.refuse(expired, subject)
        notional = preview.estimated_cost or preview.notional_value
        yield from self._check_notional(notional, "place_order", preview.user_id, preview.account_id)
        arguments = {"user_id": preview.user_id, "trade_id": preview.trade_id}
        yield from self._precheck("place_order", arguments)
        intent = self._new_intent(
            options,
            client_order_id=preview.client_order_id,
            kind="checked",
            user_id=preview.user_id,
            account_id=preview.account_id,
            action=preview.action,
            symbol=preview.symbol,
            universal_symbol_id=preview.universal_symbol_id,
            order_type=preview.order_type,
            time_in_force=preview.time_in_force,
            units=preview.units,
            notional_value=preview.notional_value,
            price=preview.price,
            stop=preview.stop,
            trade_id=preview.trade_id,
        )
        if not (yield StoreCall("record", (intent,), store=INTENTS)):
            raise e.SnapTradeConfirmationError(
                f"This preview was already placed (client_order_id {preview.client_order_id}); nothing was sent.",
                reason="used",
                operation="place_order",
                hint="To learn what became of it, reconcile_order(client_order_id); to trade again, preview again.",
            )
        return (yield from self.send(intent, options))

    def place_order_now(
        self,
        user_id: str,
        account_id: str,
        terms: Mapping[str, Any],
        *,
        confirm: bool,
        client_order_id: str | None = None,
        options: CallOptions | None = None,
    ) -> Flow[Order]:
        """Place an order without a preview (``/trade/place``), with ``confirm=True``."""
        _text("user_id", user_id)
        request = OrderRequest.build(account_id, **terms)
        if confirm is not True:
            unconfirmed = e.SnapTradeGuardrailError(
                "place_order_now places an order without a preview and needs confirm=True.",
                operation="place_force_order",
                hint="Prefer preview_order() and place_order(preview, confirmation=...); pass confirm=True otherwise.",
            )
            yield from self.core.refuse(unconfirmed, {"user_id": user_id, "account_id": request.account_id})
        if client_order_id is None:
            client_order_id = OrderIntent.new_client_order_id()
        else:
            try:
                parsed = uuid.UUID(client_order_id) if isinstance(client_order_id, str) else None
            except ValueError:
                parsed = None
            if parsed is None or parsed.version != 4:
                raise e.SnapTradeValidationError(
                    f"client_order_id must be a UUID4, got {client_order_id!r}.", operation="place_force_order"
                )
            client_order_id = str(parsed)  # the canonical spelling, as journaled and sent
        yield from self._precheck("place_force_order", {"user_id": user_id})
        notional = request.notional()
        if notional is None and self.settings.max_order_notional is not None:
            notional = request.notional((yield from self._last_price(user_id, request, options)))
        yield from self._check_notional(notional, "place_force_order", user_id, request.account_id)
        intent = self._new_intent(
            options, client_order_id=client_order_id, kind="force", user_id=user_id, **request.model_dump()
        )
        if not (yield StoreCall("record", (intent,), store=INTENTS)):
            raise e.SnapTradeConflictError(
                f"An order with client_order_id {client_order_id} is already journaled; nothing was sent.",
                operation="place_force_order",
                hint="Call reconcile_order(client_order_id) to learn what became of it.",
            )
        return (yield from self.send(intent, options))

    # --- cancel and replace --------------------------------------------------------------------

    def cancel_order(
        self, user_id: str, account_id: str, brokerage_order_id: str, options: CallOptions | None = None
    ) -> Flow[Order]:
        """Cancel an open order (journaled first, like a placement) and return it as the brokerage reports it."""
        _text("user_id", user_id)
        _text("account_id", account_id)
        _text("brokerage_order_id", brokerage_order_id)
        yield from self._precheck("cancel_order", {"user_id": user_id})
        intent = self._new_intent(
            options,
            kind="cancel",
            user_id=user_id,
            account_id=account_id,
            cancels=brokerage_order_id,
        )
        yield StoreCall("record", (intent,), store=INTENTS)
        return (yield from self.send_cancel(intent, options))

    def send_cancel(self, intent: OrderIntent, options: CallOptions | None = None) -> Flow[Order]:
        """Send a journaled cancellation once and settle it from the answer (or the order, at once)."""
        assert intent.cancels is not None
        try:
            yield from self._dispatch(intent, options)
        except e.SnapTradeUnknownOutcomeError as lost:
            # A cancellation can be looked up at once: the order itself says whether it happened.
            pending = lost.intent if isinstance(lost.intent, OrderIntent) else intent
            try:
                order = yield from self.checked_detail(intent, intent.cancels, options)
            except e.SnapTradeError:
                raise lost from None
            if isinstance(order, str) or order.status not in _CANCELED:
                raise lost from lost.__cause__
            detail = f"the order says {order.status}"
            yield StoreCall(
                "update", (settled(pending, "placed", order_id=intent.cancels, detail=detail),), store=INTENTS
            )
            return order
        yield StoreCall(
            "update", (settled(intent, "placed", order_id=intent.cancels, detail="answered"),), store=INTENTS
        )
        return (yield from self.order_detail(intent.user_id, intent.account_id, intent.cancels, options))

    def replace_order(
        self,
        user_id: str,
        account_id: str,
        brokerage_order_id: str,
        terms: Mapping[str, Any],
        *,
        confirm: bool,
        options: CallOptions | None = None,
    ) -> Flow[Order]:
        """Replace an open order's terms (a new order; the old one becomes ``REPLACED``)."""
        if confirm is not True:
            unconfirmed = e.SnapTradeGuardrailError(
                "replace_order changes a live order and needs confirm=True.", operation="replace_order"
            )
            yield from self.core.refuse(unconfirmed, {"user_id": user_id, "account_id": account_id})
        _text("brokerage_order_id", brokerage_order_id)
        # The security defaults to the replaced order's, learnt below.
        request = OrderRequest.build(account_id, require_symbol=False, **terms)
        if request.units is None:
            raise e.SnapTradeValidationError(
                "replace_order needs units (not notional_value).", operation="replace_order"
            )
        yield from self._precheck("replace_order", {"user_id": user_id})
        yield from self._check_notional(request.notional(), "replace_order", user_id, request.account_id)
        old = yield from self.order_detail(user_id, account_id, brokerage_order_id, options)
        if not old.is_open:
            raise e.SnapTradeValidationError(
                f"Order {brokerage_order_id} is {old.status}: only an open order can be replaced; nothing was sent.",
                operation="replace_order",
            )
        if request.symbol is None and request.universal_symbol_id is None:
            request = request.model_copy(update={"symbol": old.symbol, "universal_symbol_id": old.universal_symbol_id})
        intent = self._new_intent(
            options,
            kind="replace",
            user_id=user_id,
            replaces=brokerage_order_id,
            **request.model_dump(),
        )
        yield StoreCall("record", (intent,), store=INTENTS)
        return (yield from self.send(intent, options))

    # --- sending one intent ----------------------------------------------------------------------

    @staticmethod
    def request_of(intent: OrderIntent) -> tuple[str, dict[str, Any], str | None]:
        """The operation, SDK arguments and budget account that send ``intent``."""
        if intent.kind == "checked":
            return "place_order", {"user_id": intent.user_id, "trade_id": intent.trade_id}, intent.account_id
        if intent.kind == "cancel":
            arguments = {
                "user_id": intent.user_id,
                "account_id": intent.account_id,
                "brokerage_order_id": intent.cancels,
            }
            return "cancel_order", arguments, None
        terms = OrderRequest.model_validate(intent.model_dump(include=set(OrderRequest.model_fields)))
        arguments = {"user_id": intent.user_id, **terms.sdk_arguments()}
        if intent.kind == "force":
            return "place_force_order", {**arguments, "client_order_id": intent.client_order_id}, None
        arguments.pop("universal_symbol_id", None)
        arguments["symbol"] = intent.symbol
        return "replace_order", {**arguments, "brokerage_order_id": intent.replaces}, None

    def _dispatch(self, intent: OrderIntent, options: CallOptions | None) -> Flow[Response]:
        """Send a journaled intent's request once; a refusal settles it ``not_placed``, a lost answer raises."""
        operation, arguments, budget_account = self.request_of(intent)
        try:
            return (
                yield from self.core.call(
                    operation, arguments, options=self._write_options(options), budget_account=budget_account
                )
            )
        except e.SnapTradeUnknownOutcomeError as lost:
            raise self.unknown((yield from self._ended(intent)), lost) from lost
        except e.SnapTradeError as refused:
            # Everything else is definite: refused locally, not sent, or refused by SnapTrade.
            detail = f"{type(refused).__name__}: {refused.message}"
            yield StoreCall("update", (settled(intent, "not_placed", detail=detail),), store=INTENTS)
            raise

    def _ended(self, intent: OrderIntent) -> Flow[OrderIntent]:
        """``intent`` with ``left_by`` moved to now (journaled): the call is over, nothing more of it can leave."""
        ended = intent.model_copy(update={"left_by": _now()})
        try:
            yield StoreCall("update", (ended,), store=INTENTS)
        except e.SnapTradeError:
            return intent  # the journaled bound still holds
        return ended

    def send(self, intent: OrderIntent, options: CallOptions | None = None) -> Flow[Order]:
        """Send a journaled intent once and settle it from the answer."""
        if intent.kind == "cancel":
            return (yield from self.send_cancel(intent, options))
        response = yield from self._dispatch(intent, options)
        body = _body(response.body)
        order_id = body.get("brokerage_order_id")
        if not isinstance(order_id, str) or not order_id:
            raise self.unknown(
                (yield from self._ended(intent)),
                e.SnapTradeError("the answer carried no brokerage_order_id", request_id=response.request_id),
            )
        # Settled first: whatever else the answer holds, the order exists.
        yield StoreCall("update", (settled(intent, "placed", order_id=order_id, detail="answered"),), store=INTENTS)
        return _parsed(response, lambda answer: Order.from_api(_body(answer), intent.account_id))

    @staticmethod
    def unknown(intent: OrderIntent, lost: e.SnapTradeError) -> e.SnapTradeUnknownOutcomeError:
        """The error for an order whose answer was lost, carrying its journaled intent."""
        what = (
            f"The cancellation {intent.client_order_id} of order {intent.cancels}"
            if intent.kind == "cancel"
            else f"Order {intent.client_order_id} ({intent.action} {intent.units or intent.notional_value} "
            f"{intent.symbol or intent.universal_symbol_id})"
        )
        return e.SnapTradeUnknownOutcomeError(
            f"{what} was sent and its answer lost ({lost.message}).",
            intent=intent,
            status=lost.status,
            code=lost.code,
            request_id=lost.request_id,
            operation=lost.operation,
            hint="Do not resend it yourself: call reconcile_order(error.intent); it says placed, not placed, "
            "or when to look again.",
        )
