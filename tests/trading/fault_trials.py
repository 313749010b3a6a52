"""Randomised fault trials around preview, place, cancel and replace, for the sync and async clients.

A trial is written once, as a generator that yields client calls ``(method, args, kwargs)`` and
receives their results (or has their errors thrown in); :func:`run_sync` and :func:`run_async`
drive it with a blocking or an awaiting client. Each worker owns an emulator, so a fault rule only
ever hits its own trial. Besides the fault on the write itself, a trial may make the request wait
before it leaves (a trade-slot wait, or a 429 whose ``Retry-After`` the client honours) and may
answer the first look-up of the reconciliation with a body that proves nothing (``[]``, ``null``,
an empty body, an object of the wrong shape) or with a well-formed list in which the order is not
listed yet. What is checked, on the emulator's own order book:

* no intent ever has two orders (force: its ``client_order_id``; checked: its trade id;
  replace: the order it replaced); a cancellation is ``placed`` exactly when its order is cancelled;
* an order answered is journaled ``placed``, a refusal ``not_placed`` with no order;
* every unknown outcome is reconciled, at once and if need be once more after ``retry_at``, and
  each verdict is true: ``placed`` has exactly one order, ``not_placed`` none;
* a ``not_placed`` intent resent with ``reconcile_order(resend=True)`` ends with exactly one order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aims_snaptrade import AsyncSafeSnapTradeClient, CallOptions, RetryPolicy, SafeSnapTradeClient
from aims_snaptrade import errors as e
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import Fault, SnapTradeEmulator
from aims_snaptrade.trading import MemoryOrderIntentStore, OrderIntent, Reconciliation

READ_TIMEOUT = 0.2
SETTLE = 1.5  # > the longest a faulty request can still be processed after it was sent (LATE)
LATE = 0.3  # a late answer: processed after the client gave up

FAULTS: dict[str, Callable[[], Fault] | None] = {
    "none": None,
    "lost_response": Fault.lost_response,  # processed, answer lost
    "drop": Fault.drop,  # closed before processing
    "status_500": lambda: Fault.status(500),  # not processed, but a 5xx to a write is unknown
    "status_503": lambda: Fault.status(503),
    "timeout": lambda: Fault.timeout(0.3),  # held past the read timeout, not processed
    "late": lambda: Fault.latency(LATE),  # processed after the client timed out
    "malformed": Fault.malformed_json,  # processed, answer unreadable
}
WRITES = {"checked": "place_order", "force": "place_force_order", "cancel": "cancel_order", "replace": "replace_order"}
# Before the write leaves: nothing, a wait for the account's trade slot, or a 429 and its Retry-After.
DELAYS = ("none",) * 18 + ("slot_wait", "retry_after")
# The first look-up of a reconciliation: the real answer, one that proves nothing, or "not listed yet".
LOOKUPS: dict[str, Any] = {
    "real": None,
    "empty_list": [],
    "null": None,
    "empty_body": b"",
    "wrong_shape": {"orders": "none"},
    "empty_object": {},
    "not_listed_yet": {"orders": []},
}
LOOKUP_NAMES = ("real",) * 8 + tuple(name for name in LOOKUPS if name != "real")
# After the settle window a missing order is "not placed" by definition: only shapes that prove nothing.
LATE_LOOKUP_NAMES = tuple(name for name in LOOKUP_NAMES if name != "not_listed_yet")

# Calls that are not under test get time enough never to fail on a busy machine.
CALM = CallOptions(timeout=10.0)

Call = tuple[str, tuple[Any, ...], dict[str, Any]]
Trial = Generator[Call, Any, None]


@dataclasses.dataclass
class Figures:
    """What the trials saw; added up over workers."""

    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    problems: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, *names: str) -> None:
        with self.lock:
            self.counts.update(names)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def report(self, label: str) -> str:
        c = self.counts
        unknown = c["unknown outcomes"]
        settled = c["settled at once"] + c["settled after retry_at"]
        share = 100.0 * settled / unknown if unknown else 100.0
        lines = [
            f"{label}: trials={c['trials']} (sync={c['sync trials']}, async={c['async trials']})",
            "  by operation: " + ", ".join(f"{op}={c['op ' + op]}" for op in WRITES),
            "  faults: " + ", ".join(f"{name}={c['fault ' + name]}" for name in FAULTS),
            "  before the send: " + ", ".join(f"{name}={c['delay ' + name]}" for name in sorted(set(DELAYS))),
            "  first look-up: " + ", ".join(f"{name}={c['lookup ' + name]}" for name in LOOKUPS),
            "  look after the settle window: "
            + ", ".join(f"{name}={c['late lookup ' + name]}" for name in LOOKUPS if name != "not_listed_yet")
            + f"; last looks: {c['last looks']}",
            f"  answered placed={c['answered placed']}, refused (not placed)={c['refused']}, "
            f"preview failed={c['preview failed']}, cancels done={c['cancel done']}",
            f"  unknown outcomes={unknown}: settled {settled} ({share:.2f}%): at once {c['settled at once']}, "
            f"later {c['settled after retry_at']}; still unknown {c['still unknown']}",
            f"  verdicts: placed={c['verdict placed']}, not placed={c['verdict not_placed']}; "
            f"resent={c['resent']} (placed once each: {c['resent placed']})",
            f"  intents with two orders: {c['duplicates']}; wrong verdicts: {len(self.problems)}",
        ]
        whys = [f"{k[5:]!r}={v}" for k, v in sorted(c.items()) if k.startswith("why: ")]
        if whys:
            lines.append("  still unknown because: " + ", ".join(whys))
        return "\n".join(lines)

    @property
    def settled_share(self) -> float:
        unknown = self.counts["unknown outcomes"]
        return (self.counts["settled at once"] + self.counts["settled after retry_at"]) / unknown if unknown else 1.0


class World:
    """One worker's emulator, user and accounts."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.emu = SnapTradeEmulator(seed=seed, customer_rate_limit=None).start()
        self.secrets = MemorySecretStore()
        self.intents = MemoryOrderIntentStore()
        self.traders = 0
        self.new_trader()

    def new_trader(self) -> None:
        """A fresh user with fresh accounts: keeps each account's day of orders within one page."""
        self.traders += 1
        self.user = self.emu.connect(f"trader-{self.seed}-{self.traders}", brokerage="ALPACA")
        self.secrets.put(self.user.user_id, self.user.user_secret)

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "client_id": self.emu.client_id,
            "consumer_key": self.emu.consumer_key,
            "environment": "sandbox",
            "base_url": self.emu.base_url,
            "secret_store": self.secrets,
            "order_intent_store": self.intents,
            "trading_enabled": True,
            "trade_limit_per_account": 1000,
            "customer_limit": 1_000_000,
            "read_timeout": READ_TIMEOUT,
            "order_settle_seconds": SETTLE,
            # Reads are retried quickly; writes only when provably unsent (the library's rule).
            "retry": RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05, deadline=5.0),
            "confirmation_key": "fault-trials-shared-confirmation-key",  # the slot client places previews too
        }

    def slot_client_kwargs(self) -> dict[str, Any]:
        """The same client, but with SnapTrade's own trade limit: one order write per account per second."""
        return {**self.client_kwargs(), "trade_limit_per_account": 1, "trade_limit_window": 1}

    def orders_of(self, intent: OrderIntent) -> list[str]:
        """Orders in the emulator's book that ``intent`` produced."""
        with self.emu.state.lock:
            book = list(self.emu.state.get_account(intent.account_id).orders)
        if intent.kind == "force":
            return [o.brokerage_order_id for o in book if o.client_order_id == intent.client_order_id]
        if intent.kind == "checked":
            return [o.brokerage_order_id for o in book if o.trade_id == intent.trade_id]
        if intent.kind == "cancel":  # "placed": the order is cancelled
            return [
                o.brokerage_order_id for o in book if o.brokerage_order_id == intent.cancels and o.status == "CANCELED"
            ]
        return [o.brokerage_order_id for o in book if o.replaces == intent.replaces]

    def stop(self) -> None:
        self.emu.stop()


def trial(world: World, rng: random.Random, figures: Figures, deferred: list[OrderIntent]) -> Trial:
    """One randomised trial (see the module documentation)."""
    user, account = world.user.user_id, rng.choice(world.user.account_ids)
    kind = rng.choice(list(WRITES))
    fault_name = rng.choice(list(FAULTS))
    figures.add("trials", f"op {kind}", f"fault {fault_name}")
    units = Decimal(rng.randint(1, 100)) / 1000  # varied, as real orders are: identical ones are ambiguous
    symbol = rng.choice(["AAPL", "MSFT", "VTI"])
    working = None
    if kind in ("cancel", "replace"):
        working = yield (
            "place_order_now",
            (user, account),
            {
                "action": "BUY",
                "symbol": symbol,
                "units": units,
                "order_type": "Limit",
                "price": "1.00",
                "confirm": True,
                "options": CALM,
            },
        )
    preview = None
    if kind == "checked":
        if rng.random() < 0.1:  # sometimes the preview's read fails instead
            world.emu.faults.add(Fault.status(503), operation="get_order_impact", times=rng.choice([1, 5]))
        try:
            preview = yield ("preview_order", (user, account), {"action": "BUY", "symbol": symbol, "units": units})
        except e.SnapTradeError:
            figures.add("preview failed")
            world.emu.faults.clear()
            return
        world.emu.faults.clear()
    delay = rng.choice(DELAYS)
    lookup = rng.choice(LOOKUP_NAMES)
    figures.add(f"delay {delay}")
    via = ""
    if delay == "slot_wait":
        # Take the account's trade slot first: the write under test then waits about a second for it.
        via = "slot:"
        terms = {"action": "BUY", "symbol": symbol, "units": units + Decimal("0.0005"), "order_type": "Limit"}
        yield ("slot:place_order_now", (user, account), {**terms, "price": "1.00", "confirm": True, "options": CALM})
    elif delay == "retry_after":
        world.emu.faults.add(Fault.rate_limited(retry_after=1), operation=WRITES[kind])
    make = FAULTS[fault_name]
    if make is not None:
        world.emu.faults.add(make(), operation=WRITES[kind], skip=1 if delay == "retry_after" else 0)
    intent: OrderIntent | None = None
    try:
        if kind == "checked":
            yield (via + "place_order", (preview,), {"confirmation": preview.confirmation})
        elif kind == "force":
            yield (
                via + "place_order_now",
                (user, account),
                {"action": "BUY", "symbol": symbol, "units": units, "confirm": True},
            )
        elif kind == "cancel":
            order = yield (via + "cancel_order", (user, account, working.brokerage_order_id), {})
            figures.add("cancel done")
            if order.status != "CANCELED":
                figures.problem(f"cancel returned {order.status}")
            return
        else:
            terms = {"action": "BUY", "units": units * 2, "order_type": "Limit", "price": "1.50", "confirm": True}
            yield (via + "replace_order", (user, account, working.brokerage_order_id), terms)
        figures.add("answered placed")
    except e.SnapTradeUnknownOutcomeError as lost:
        intent = lost.intent
        figures.add("unknown outcomes")
    except e.SnapTradeError:
        figures.add("refused")
    finally:
        world.emu.faults.clear()
    if intent is None:
        return
    figures.add(f"lookup {lookup}")
    verdict: Reconciliation = yield from look(world, intent, lookup)
    if verdict.outcome == "unknown":
        deferred.append(intent)
        return
    figures.add("settled at once")
    yield from judge(world, verdict, rng, figures)


def look(world: World, intent: OrderIntent, lookup: str) -> Trial:
    """Reconcile ``intent`` once, its first look-up answered as ``lookup`` says (``real``: truthfully)."""
    if lookup != "real":
        where = "get_user_account_order_detail" if intent.kind == "cancel" else "get_user_account_recent_orders"
        world.emu.faults.add(Fault.answer(LOOKUPS[lookup]), operation=where)
    try:
        return (yield ("reconcile_order", (intent,), {"options": CALM}))
    finally:
        world.emu.faults.clear()


def settle_later(
    world: World, intent: OrderIntent, rng: random.Random, figures: Figures, again: list[OrderIntent] | None
) -> Trial:
    """A later look at an intent that was still unknown, once its settle window is over.

    The second look's first look-up may prove nothing too (where a wrong shape used to read as "no
    orders" and settle the intent as not placed); then it goes to ``again``, for a last look
    (answered truthfully) once the batch's other intents are settled.
    """
    lookup = "real" if again is None else rng.choice(LATE_LOOKUP_NAMES)
    figures.add(f"late lookup {lookup}" if again is not None else "last looks")
    verdict: Reconciliation = yield from look(world, intent, lookup)
    if verdict.outcome == "unknown" and again is not None:
        again.append(intent)
        return
    if verdict.outcome == "unknown":
        why = "identical unsettled intents" if "could also be" in verdict.reason else verdict.reason
        figures.add("still unknown", "why: " + why)
        return
    figures.add("settled after retry_at")
    yield from judge(world, verdict, rng, figures)


def judge(world: World, verdict: Reconciliation, rng: random.Random, figures: Figures) -> Trial:
    """Check a verdict against the emulator's book; sometimes resend a not-placed intent."""
    orders = world.orders_of(verdict.intent)
    figures.add(f"verdict {verdict.outcome}")
    if verdict.outcome == "placed" and (verdict.order is None or orders != [verdict.order.brokerage_order_id]):
        figures.problem(f"placed verdict for {verdict.intent.client_order_id} but the book has {orders}")
    if verdict.outcome == "not_placed":
        if orders:
            figures.problem(f"not-placed verdict for {verdict.intent.client_order_id} but the book has {orders}")
        elif rng.random() < 0.5:
            resent: Reconciliation = yield ("reconcile_order", (verdict.intent,), {"resend": True, "options": CALM})
            figures.add("resent")
            if resent.resent and len(world.orders_of(verdict.intent)) == 1:
                figures.add("resent placed")
            else:
                figures.problem(f"resend of {verdict.intent.client_order_id} gave {world.orders_of(verdict.intent)}")


def _all_intents(store: MemoryOrderIntentStore) -> list[OrderIntent]:
    with store._lock:
        return list(store._rows.values())


def audit(world: World, figures: Figures) -> None:
    """After a worker: no intent with two orders; answered and refused intents match the book."""
    for intent in _all_intents(world.intents):
        orders = world.orders_of(intent)
        if len(orders) > 1:
            figures.add("duplicates")
            figures.problem(f"intent {intent.client_order_id} ({intent.kind}) has orders {orders}")
        if intent.status == "placed" and orders != [intent.brokerage_order_id]:
            figures.problem(f"journaled placed {intent.client_order_id} but the book has {orders}")
        if intent.status == "not_placed" and orders:
            figures.problem(f"journaled not placed {intent.client_order_id} but the book has {orders}")


def _wait_for(deferred: list[OrderIntent]) -> float:
    # The verdict can change once the settle window of the last deferred intent is over.
    if not deferred:
        return 0.0
    last = max(i.left_by or i.sent_at for i in deferred).timestamp() + SETTLE
    return max(0.0, last - datetime.now(UTC).timestamp() + 0.05)


def run_sync(trials: int, seed: int, figures: Figures, batch: int = 60) -> None:
    """``trials`` trials on one worker with a blocking client."""
    world = World(seed)
    rng = random.Random(seed)
    try:
        with (
            SafeSnapTradeClient(**world.client_kwargs()) as client,
            SafeSnapTradeClient(**world.slot_client_kwargs()) as slot,
        ):

            def drive(gen: Trial) -> None:
                value: Any = None
                error: BaseException | None = None
                while True:
                    try:
                        method, args, kwargs = gen.send(value) if error is None else gen.throw(error)
                    except StopIteration:
                        return
                    value, error = None, None
                    try:
                        on, name = (slot, method[5:]) if method.startswith("slot:") else (client, method)
                        value = getattr(on, name)(*args, **kwargs)
                    except e.SnapTradeError as exc:
                        error = exc

            done = 0
            while done < trials:
                deferred: list[OrderIntent] = []
                world.new_trader()
                for _ in range(min(batch, trials - done)):
                    drive(trial(world, rng, figures, deferred))
                    figures.add("sync trials")
                    done += 1
                time.sleep(_wait_for(deferred))
                again: list[OrderIntent] = []
                for intent in deferred:
                    drive(settle_later(world, intent, rng, figures, again))
                for intent in again:
                    drive(settle_later(world, intent, rng, figures, None))
        audit(world, figures)
    finally:
        world.stop()


async def run_async(trials: int, seed: int, figures: Figures, batch: int = 60) -> None:
    """``trials`` trials on one worker with an awaiting client."""
    world = World(seed)
    rng = random.Random(seed)
    try:
        async with (
            AsyncSafeSnapTradeClient(**world.client_kwargs()) as client,
            AsyncSafeSnapTradeClient(**world.slot_client_kwargs()) as slot,
        ):

            async def drive(gen: Trial) -> None:
                value: Any = None
                error: BaseException | None = None
                while True:
                    try:
                        method, args, kwargs = gen.send(value) if error is None else gen.throw(error)
                    except StopIteration:
                        return
                    value, error = None, None
                    try:
                        on, name = (slot, method[5:]) if method.startswith("slot:") else (client, method)
                        value = await getattr(on, name)(*args, **kwargs)
                    except e.SnapTradeError as exc:
                        error = exc

            done = 0
            while done < trials:
                deferred: list[OrderIntent] = []
                world.new_trader()
                for _ in range(min(batch, trials - done)):
                    await drive(trial(world, rng, figures, deferred))
                    figures.add("async trials")
                    done += 1
                await asyncio.sleep(_wait_for(deferred))
                again: list[OrderIntent] = []
                for intent in deferred:
                    await drive(settle_later(world, intent, rng, figures, again))
                for intent in again:
                    await drive(settle_later(world, intent, rng, figures, None))
        audit(world, figures)
    finally:
        world.stop()


def run_all(trials: int, workers: int, seed: int) -> Figures:
    """Half the trials on sync workers (threads), half on async workers (one event loop)."""
    figures = Figures()
    per_worker = max(1, trials // (2 * workers))
    threads = [threading.Thread(target=run_sync, args=(per_worker, seed * 1000 + i, figures)) for i in range(workers)]
    for thread in threads:
        thread.start()

    async def all_async() -> None:
        await asyncio.gather(*(run_async(per_worker, seed * 1000 + 500 + i, figures) for i in range(workers)))

    asyncio.run(all_async())
    for thread in threads:
        thread.join()
    return figures
