"""A fake SnapTrade for ``sync_portfolio``'s flow, and a driver that performs its effects.

The flow reaches SnapTrade only through the core's typed reads and the ledger only through
``StoreCall`` effects, so it can run without HTTP: :class:`Broker` stands for the core (one
``Send`` per read, as the core's own reads yield, and the errors the core maps SnapTrade's
answers to), :func:`run` answers the ledger calls from a real ledger. The flow's clock is
:class:`Clock`, which moves one second for every request, so that "during the sync" has a time.
Fast enough for properties; the emulator tests check the same flow through the real SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from aims_snaptrade.models import Account, Activity, Balance, Position
from aims_snaptrade.pipeline import Flow, Send, StoreCall, T
from aims_snaptrade.sync import SyncLedger
from aims_snaptrade.sync import flow as flow_module

LISTING = ("list_brokerage_authorizations", "list_all_user_accounts")
HOLDINGS = ("get_user_account_balance", "get_all_account_positions")
ACTIVITIES = "get_account_activities"


class Clock:
    """The flow's ``time.time()``: ``now``, moved by :meth:`tick` (the broker ticks once per request)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@contextmanager
def flow_clock(clock: Clock) -> Iterator[Clock]:
    """Run the flow on ``clock`` (only the flow module's ``time``; nothing else is touched)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flow_module, "time", SimpleNamespace(time=clock.time))
        yield clock


def activity(activity_id: str | None, day: date, hour: int = 12) -> Activity:
    return Activity(id=activity_id, trade_date=datetime(day.year, day.month, day.day, hour, tzinfo=UTC))


class Broker:
    """One user's accounts at a fake SnapTrade.

    Attributes:
        accounts: Account id to connection id (or ``None``); what the listing shows.
        disabled: Connections the listing reports ``disabled``.
        activities: Each account's activities (any order; ``startDate`` is inclusive; one without
            a trade date is in every answer).
        failures: ``(operation, account id or None)`` to the error that read raises.
        sent: Every request, as ``(operation, account id, start date)``.
        asked: Every request's user id and call options, as the flow passed them.
        on_send: Called with each request before it is answered (a webhook arriving meanwhile).
        authorizations: Turns the connections' listing body into what SnapTrade answers (junk,
            numeric ids...).
        refuse: Raised by the next read before anything is sent (as the core refuses a user
            whose secret is missing), then cleared.
    """

    def __init__(self, accounts: dict[str, str | None], clock: Clock) -> None:
        self.accounts = dict(accounts)
        self.clock = clock
        self.disabled: set[str] = set()
        self.activities: dict[str, list[Activity]] = {a: [] for a in accounts}
        self.failures: dict[tuple[str, str | None], BaseException] = {}
        self.sent: list[tuple[str, str | None, date | None]] = []
        self.asked: list[tuple[str, Any]] = []
        self.on_send: Callable[[str, str | None], None] | None = None
        self.refuse: BaseException | None = None
        self.authorizations: Callable[[list[dict[str, Any]]], Any] = lambda body: body

    def _send(self, operation: str, account_id: str | None = None, start: date | None = None) -> Flow[None]:
        refused, self.refuse = self.refuse, None
        if refused is not None:
            raise refused
        self.sent.append((operation, account_id, start))
        self.clock.tick()
        if self.on_send is not None:
            self.on_send(operation, account_id)
        # The driver throws a failing request's error into the flow, as the shells do.
        failure = self.failures.get((operation, account_id))
        yield Send(operation, {"account_id": account_id, "failure": failure}, None)  # type: ignore[arg-type]

    def operations(self, account_id: str | None = None) -> list[str]:
        return [op for op, account, _ in self.sent if account_id is None or account == account_id]

    # --- what sync_portfolio calls on the core -----------------------------------------------------

    def call(self, operation: str, arguments: dict[str, Any], options: Any = None) -> Flow[Any]:
        assert operation == "list_brokerage_authorizations"
        self.asked.append((arguments["user_id"], options))
        yield from self._send(operation)
        connections = sorted({c for c in self.accounts.values() if c is not None})
        return SimpleNamespace(
            body=self.authorizations([{"id": c, "disabled": c in self.disabled} for c in connections])
        )

    def list_accounts(self, user_id: str, options: Any = None) -> Flow[list[Account]]:
        self.asked.append((user_id, options))
        yield from self._send("list_all_user_accounts")
        return [Account(id=a, connection_id=c) for a, c in sorted(self.accounts.items())]

    def get_balances(self, user_id: str, account_id: str, options: Any = None) -> Flow[list[Balance]]:
        self.asked.append((user_id, options))
        yield from self._send("get_user_account_balance", account_id)
        return [Balance(currency="USD", cash=len(self.sent))]

    def get_positions(self, user_id: str, account_id: str, options: Any = None) -> Flow[list[Position]]:
        self.asked.append((user_id, options))
        yield from self._send("get_all_account_positions", account_id)
        return [Position(symbol=f"P{len(self.sent)}")]

    def get_activities(
        self, user_id: str, account_id: str, *, start_date: date | None = None, options: Any = None
    ) -> Flow[list[Activity]]:
        self.asked.append((user_id, options))
        yield from self._send(ACTIVITIES, account_id, start_date)
        return [
            a
            for a in self.activities.get(account_id, [])
            if start_date is None or a.trade_date is None or a.trade_date.date() >= start_date
        ]


def run(flow: Flow[T], ledger: SyncLedger) -> T:
    """Perform ``flow``'s effects: ledger calls on ``ledger``; a request is answered by the broker
    (its data), or fails: its error is thrown into the flow where it yielded the request."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        if isinstance(effect, StoreCall):
            assert effect.store == "ledger", effect
            try:
                value = getattr(ledger, effect.method)(*effect.args)
            except Exception as exc:  # handed to the flow, as the shells do
                error = exc
        else:
            assert isinstance(effect, Send), effect
            error = effect.arguments.get("failure")
