"""Sans-IO core of the rate limiter: budgets, keys, waiting order and server feedback.

Nothing here touches a storage, a clock or a sleep. The decisions of one ``acquire`` are written
once, as a generator that *yields* the storage work it needs (:class:`Take`: one composed,
atomic check over every budget of the call; :class:`Pause`) and receives its result; the sync
shell (:class:`aims_snaptrade.ratelimit.limiter.RateLimiter`) answers with blocking calls and
``time.sleep``, the async shell awaits them and ``asyncio.sleep``. ``observe`` needs no storage
at all: what SnapTrade reports rides on the next :class:`Take`. Import the public names from
:mod:`aims_snaptrade.ratelimit.limiter`.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, cast

from limits import RateLimitItem, RateLimitItemPerSecond

from aims_snaptrade._headers import as_number, header, parse_retry_after, seconds_from
from aims_snaptrade.errors import (
    SnapTradeBudgetExhaustedError,
    SnapTradeConfigurationError,
    SnapTradeDeadlineExceededError,
    SnapTradeError,
)
from aims_snaptrade.operations import Operation

if TYPE_CHECKING:
    from aims_snaptrade.settings import Settings

__all__ = [
    "ALERT_FRACTION",
    "NAMESPACE",
    "PLAN_PRESETS",
    "Budget",
    "BudgetKey",
    "BudgetUsage",
    "RateLimitPolicy",
    "Scope",
    "parse_retry_after",
]

log = logging.getLogger("aims_snaptrade.ratelimit.limiter")

Scope = Literal["plan", "customer", "account", "user", "trade"]
"""Which limit a budget stands for; it becomes ``SnapTradeRateLimitError.limit_scope``."""

NAMESPACE = "aims-snaptrade"
"""First part of every storage key (after the storage's own prefix, ``LIMITS:`` on Redis)."""

ALERT_FRACTION = 0.8
"""Usage fraction at which :class:`BudgetUsage` raises its ``alert`` flag (the guide's 80%)."""

MINUTE, HOUR, DAY = 60, 3600, 86400

PLAN_PRESETS: Mapping[str, Mapping[int, int]] = {
    "starter": {MINUTE: 60, HOUR: 1_000, DAY: 10_000},
    "growth": {MINUTE: 120, HOUR: 5_000, DAY: 50_000},
}
"""The AIMS plans as ``{window seconds: requests}``; ``enterprise`` and ``custom`` take
``SNAPTRADE_RATE_LIMIT_PER_MINUTE/HOUR/DAY``, ``none`` has no plan budget."""

_PLAN_WINDOW_NAMES = {MINUTE: "plan-minute", HOUR: "plan-hour", DAY: "plan-day"}
_PLAN_ENV = {
    MINUTE: "SNAPTRADE_RATE_LIMIT_PER_MINUTE",
    HOUR: "SNAPTRADE_RATE_LIMIT_PER_HOUR",
    DAY: "SNAPTRADE_RATE_LIMIT_PER_DAY",
}
_STRATEGIES = ("moving-window", "sliding-window")

# SnapTrade answers 429 on a refresh of a connection refreshed too recently: a per-connection
# cool-down, not a client budget, so it must not pause every other call.
_COOLDOWN_OPERATIONS = frozenset({"refresh_brokerage_authorization"})

# A slot that frees up "now" by our clock may not be free yet by SnapTrade's: the server stamps a
# request when it arrives, a little after we counted it, and that delay varies from request to
# request. Reusing a slot only once it has been free for a short margin keeps a saturated client
# from landing on the edge of SnapTrade's rolling window. The margin is capped at this share of
# the window so that shrunk test windows do not pay for it in throughput.
_MARGIN_SHARE = 0.02
# The smallest pause between two checks, so a slot that frees "now" cannot make a waiter spin.
_MIN_PAUSE = 0.001
# Re-stamps kept per budget until its next check (a bound, should checks stop).
_MOVES_KEPT = 256
# How long a waiter looks away when the queue ahead of it was changing as it counted.
_SETTLE_PAUSE = 0.003
# Differences between SnapTrade's and our remaining count treated as timing noise (see feedback_noise).
_NOISE_MIN = 2
_NOISE_SHARE = 0.05
# Remember this many account/user buckets for usage(); older ones are still enforced, only not reported.
_TRACKED_SUBJECTS = 1024


@dataclass(frozen=True, slots=True)
class Budget:
    """One limit: at most ``limit`` requests in any ``window`` seconds.

    Attributes:
        name: ``customer``, ``account``, ``user``, ``plan-minute``, ``plan-hour`` or ``plan-day``.
        scope: Which limit it stands for (reported as ``limit_scope`` when it refuses).
        limit: Requests allowed per window.
        window: Window length in whole seconds (``limits`` counts windows in seconds).
    """

    name: str
    scope: Scope
    limit: int
    window: int

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise SnapTradeConfigurationError(
                f"Rate budget {self.name!r}: limit must be a whole number of requests >= 1, got {self.limit!r}."
            )
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SnapTradeConfigurationError(
                f"Rate budget {self.name!r}: window must be whole seconds >= 1, got {self.window!r}."
            )

    @property
    def item(self) -> RateLimitItem:
        """The ``limits`` item for this budget (``limit`` per ``window`` seconds)."""
        return _item(self.limit, self.window)


@functools.lru_cache(maxsize=64)
def _item(limit: int, window: int) -> RateLimitItem:
    return RateLimitItemPerSecond(limit, window, namespace=NAMESPACE)


@dataclass(frozen=True, slots=True)
class BudgetKey:
    """A budget applied to one subject: its storage identifiers are shared by every replica.

    Attributes:
        budget: The budget.
        subject: The account id (``account``) or user id (``user``); ``None`` for client-wide budgets.
        identifiers: ``(client_id, budget name[, subject])``, handed to ``limits`` to build the key.
    """

    budget: Budget
    subject: str | None
    identifiers: tuple[str, ...]
    storage_key: str = field(init=False, repr=False, compare=False)
    """The key ``limits`` stores this bucket under (before the storage's own prefix)."""

    def __post_init__(self) -> None:
        # Computed once: every check names every key, and limits builds them character by character.
        object.__setattr__(self, "storage_key", self.budget.item.key_for(*self.identifiers))


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """How much of one budget is used right now (for dashboards and the 80% alert).

    Attributes:
        name: Budget name (``customer``, ``plan-hour``, ``account``...).
        scope: Which limit it stands for.
        subject: Account or user id for per-account/per-user buckets, else ``None``.
        limit: Requests allowed per window.
        window: Window length, seconds.
        used: Requests counted in the current window (including any SnapTrade reported that we
            had not counted ourselves).
        remaining: ``limit - used``.
        fraction: ``used / limit``, between 0 and 1.
        reset_at: Unix time at which the next slot frees.
        paused_until: Unix time until which SnapTrade asked us to pause this scope, if it did.
        alert: ``fraction`` reached the alert threshold (80%) or SnapTrade asked for a pause.
    """

    name: str
    scope: Scope
    subject: str | None
    limit: int
    window: int
    used: int
    remaining: int
    fraction: float
    reset_at: float
    paused_until: float | None
    alert: bool


@functools.lru_cache(maxsize=_TRACKED_SUBJECTS * 4)
def _budget_key(client_id: str, budget: Budget, subject: str | None) -> BudgetKey:
    identifiers = (client_id, budget.name) if subject is None else (client_id, budget.name, subject)
    return BudgetKey(budget, subject, identifiers)


# --- the storage work the engine asks its shell to do ------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What SnapTrade reported about one budget, to be recorded by the next composed check.

    ``used`` is SnapTrade's count; the check compares it with the local use since
    ``since - window - margin`` and records the difference when it exceeds ``noise``. With
    ``hold_until`` (SnapTrade said the window is empty and when it resets) the budget's scope is
    paused until then instead.
    """

    since: float
    used: int
    noise: int
    hold_until: float | None = None


class Claim(NamedTuple):
    """One budget within a :class:`Take`: ``amount`` slots (0: only record ``report``).

    ``depth`` is the number of this process's waiters queued ahead on the same budget: the call
    needs room for them and for itself, so a later arrival never takes a slot an earlier waiter
    is waiting for. ``moves`` re-stamps earlier slots of this process, ``(taken at, answered
    at)``: SnapTrade counts a request when it arrives, at the latest when its answer came, so a
    slot answered more than half the margin after it was taken counts from the answer (moving
    windows only).
    """

    key: BudgetKey
    margin: float
    amount: int = 1
    depth: int = 0
    report: Report | None = None
    moves: tuple[tuple[float, float], ...] = ()


class Take(NamedTuple):
    """Take every claim at once, or none (one storage round trip); answered with an :class:`Outcome`."""

    claims: tuple[Claim, ...]
    now: float
    sliding: bool


class Outcome(NamedTuple):
    """The answer to a :class:`Take`.

    Attributes:
        taken: Every claim was taken (``False``: none was).
        waits: Per claim, ``None`` when it has room, else seconds until it has (``0`` when held).
        held: Per claim, whether SnapTrade's report holds the budget (see :class:`Report`).
        recorded: Per claim, the slots recorded for use SnapTrade reported and we had not counted.
        stamp: The time the slots were stamped with: the check's ``now``, or the newest entry's
            when another caller's clock reading was newer (entries stay sorted).
    """

    taken: bool
    waits: tuple[float | None, ...]
    held: tuple[bool, ...]
    recorded: tuple[int, ...]
    stamp: float


class CallPlan(NamedTuple):
    """What every acquire of one (operation, user, account) needs, computed once (:meth:`RateLimitPolicy.plan`).

    Attributes:
        keys: The buckets the call draws on (:meth:`RateLimitPolicy.keys_for`).
        names: Their storage keys, the :class:`WaitQueue`'s and :class:`ReportBook`'s names.
        claims: One slot of each, nobody queued ahead, no feedback: the first attempt of a call
            when nobody waits and nothing is pending (the same tuple every time, so a storage
            may keep what it derives from it).
        scopes: The ``(scope, subject)`` pauses that stop the call (a 429's scopes).
        subjects: The account and user buckets among ``keys`` (tracked for ``usage()``).
        sliding: The budgets are sliding-window counters (else moving windows).
    """

    keys: list[BudgetKey]
    names: tuple[str, ...]
    claims: tuple[Claim, ...]
    scopes: tuple[tuple[Scope, str | None], ...]
    subjects: tuple[BudgetKey, ...]
    sliding: bool


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep ``seconds`` (``time.sleep`` or ``asyncio.sleep``); answered with ``None``."""

    seconds: float


Step = Take | Pause
Engine = Generator[Step, object, float]


class WaitQueue:
    """This process's acquires in arrival order, per budget key; thread-safe, no IO.

    Each acquire draws a ticket on arrival and stays queued under the storage keys of its
    budgets until it is served, refused or cancelled. A call asks for room for itself *and* every
    queued call with an earlier ticket on the same key (:attr:`Claim.depth`), so slots go to
    callers in arrival order and a waiter learns at once when its turn comes too late. While an
    earlier caller's check is in flight, the count may be one too high (it may just have been
    served): ``ahead`` says so, and the waiter looks again instead of refusing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets = 0
        self._waiting: dict[int, tuple[str, ...]] = {}
        self._taking: set[int] = set()
        self._left = 0  # calls that have left so far: a change tells a count taken before it is stale

    def arrive(self, names: tuple[str, ...]) -> int:
        """Queue a new call under the storage keys ``names``; its ticket is larger than every earlier one's."""
        with self._lock:
            self._tickets += 1
            self._waiting[self._tickets] = names
            return self._tickets

    def idle(self) -> bool:
        """Whether no call is queued: read without the lock (one dict read is atomic), so a call
        that arrives just after the reading arrived after the reader, which may go first."""
        return not self._waiting

    def leave(self, ticket: int) -> None:
        """Leave the queue (served, refused or cancelled)."""
        with self._lock:
            if self._waiting.pop(ticket, None) is not None:
                self._left += 1
            self._taking.discard(ticket)

    def departures(self) -> int:
        """How many calls have left the queue so far (compare two readings to see if any left)."""
        with self._lock:
            return self._left

    def taking(self, ticket: int, busy: bool) -> None:
        """Mark a queued call's check as in flight (its outcome not known yet) or settled."""
        with self._lock:
            if busy and ticket in self._waiting:
                self._taking.add(ticket)
            else:
                self._taking.discard(ticket)

    def ahead(self, ticket: int, names: tuple[str, ...]) -> tuple[tuple[int, ...], bool]:
        """Per key of ``names``, how many queued calls arrived before ``ticket``, and whether any
        of them has a check in flight (it may just have been served: the count is an upper bound)."""
        with self._lock:
            if len(self._waiting) <= 1:  # only this call: the common case
                return (0,) * len(names), False
            counts = dict.fromkeys(names, 0)
            unsettled = False
            for other, keys in self._waiting.items():
                if other < ticket:
                    for name in keys:
                        if name in counts:
                            counts[name] += 1
                            unsettled = unsettled or other in self._taking
            return tuple(counts[name] for name in names), unsettled


class ReportBook:
    """Feedback waiting for the next composed check of its budget; thread-safe.

    Per storage key: SnapTrade's latest :class:`Report`, and the slots to re-stamp
    (:attr:`Claim.moves`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: dict[str, Report] = {}
        self._moves: dict[str, list[tuple[float, float]]] = {}

    def put(self, name: str, report: Report) -> None:
        """Keep ``report`` for the storage key ``name`` (a newer report replaces an older one)."""
        with self._lock:
            self._reports[name] = report

    def move(self, name: str, taken_at: float, answered_at: float) -> None:
        """Re-stamp the slot of ``name`` taken at ``taken_at`` to ``answered_at``."""
        with self._lock:
            moves = self._moves.setdefault(name, [])
            if len(moves) < _MOVES_KEPT:
                moves.append((taken_at, answered_at))

    def restore(self, name: str, report: Report | None, moves: tuple[tuple[float, float], ...]) -> None:
        """Give back what :meth:`pop` returned and nothing recorded (a newer report stays)."""
        with self._lock:
            if report is not None:
                self._reports.setdefault(name, report)
            if moves:
                kept = self._moves.setdefault(name, [])
                kept[:0] = moves[: max(0, _MOVES_KEPT - len(kept))]

    def empty(self) -> bool:
        """Whether nothing is pending for any budget (read without the lock)."""
        return not self._reports and not self._moves

    def pop(self, name: str) -> tuple[Report | None, tuple[tuple[float, float], ...]]:
        """The pending report and re-stamps of ``name``, removed."""
        if not self._reports and not self._moves:  # the common case, without the lock
            return None, ()
        with self._lock:
            return self._reports.pop(name, None), tuple(self._moves.pop(name, ()))


class PauseBook:
    """Pauses SnapTrade asked for (429, ``Remaining: 0``), per scope and subject; thread-safe.

    Kept in process: a pause is a reaction to one answer, and each replica sees SnapTrade's
    answers to its own requests. The budgets themselves are shared through the storage.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[tuple[str, str | None], float] = {}

    def pause(self, scope: str, subject: str | None, until: float) -> None:
        """Refuse ``scope``/``subject`` until ``until`` (keeps the later of two pauses)."""
        with self._lock:
            key = (scope, subject)
            self._until[key] = max(until, self._until.get(key, 0.0))

    def until(self, scope: str, subject: str | None, now: float) -> float | None:
        """The end of an active pause, or ``None``."""
        if not self._until:  # the common case, without the lock
            return None
        with self._lock:
            key = (scope, subject)
            end = self._until.get(key)
            if end is not None and end <= now:
                del self._until[key]
                return None
            return end


class SubjectTracker:
    """The most recently used account/user buckets, so ``usage()`` can report them; thread-safe."""

    def __init__(self, size: int = _TRACKED_SUBJECTS) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._keys: OrderedDict[tuple[str, str | None], BudgetKey] = OrderedDict()
        self._last: tuple[BudgetKey, ...] = ()

    def add(self, keys: tuple[BudgetKey, ...]) -> None:
        """Remember the subject buckets among ``keys`` as the most recently used."""
        if keys is self._last:  # the same call's buckets as the last time: already the newest
            return
        with self._lock:
            for key in keys:
                if key.subject is None:
                    continue
                ident = (key.budget.name, key.subject)
                self._keys[ident] = key
                self._keys.move_to_end(ident)
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
            self._last = keys

    def keys(self) -> list[BudgetKey]:
        """The remembered buckets, oldest first."""
        with self._lock:
            return list(self._keys.values())


@dataclass(frozen=True, slots=True)
class _Feedback:
    scope: Literal["customer", "account"]
    subject: str | None
    limit: float | None
    remaining: float | None
    reset: float | None


# --- the policy --------------------------------------------------------------------------------


def _whole_seconds(value: float, variable: str) -> int:
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise SnapTradeConfigurationError(
            f"{variable} must be a whole number of seconds >= 1 (limits counts windows in seconds), got {value!r}."
        )
    return int(value)


@dataclass(frozen=True)
class RateLimitPolicy:
    """What the client may send, and how long to wait when it may not: a value, no IO.

    Build it with :meth:`from_settings`. Every call draws on all budgets that apply to it at once:
    the plan budgets and SnapTrade's customer budget for every signed request, the per-account
    bucket for account-scoped operations (``Operation.account_scoped``) given an account id, and the
    per-user budget for user-scoped operations given a user id.

    Attributes:
        client_id: The SnapTrade client id; part of every key, so replicas sharing one storage
            share one budget.
        budgets: Client-wide budgets (plan and customer).
        account_budget: Template for per-account buckets, or ``None`` (off).
        user_budget: Template for per-user budgets, or ``None`` (off).
        trade_budget: Template for per-account order-write buckets (place, cancel, replace:
            SnapTrade asks for at most one trade per account per second), or ``None`` (off).
        strategy: ``moving-window`` (exact rolling window, the default) or ``sliding-window``
            (``limits``' sliding-window counter: O(1) storage, approximate).
        mode: Default reaction to an exhausted budget: ``wait`` or ``fail``.
        max_wait: Default longest wait for budget, seconds.
        safety_margin: A freed slot is reused only once it has been free this long (capped at 2% of
            the window), so SnapTrade, which stamps requests on arrival, has freed it too.
        default_pause: Pause after a 429 that names no wait, seconds.
        alert_fraction: Usage fraction that raises :attr:`BudgetUsage.alert`.
    """

    client_id: str
    budgets: tuple[Budget, ...]
    account_budget: Budget | None = None
    user_budget: Budget | None = None
    trade_budget: Budget | None = None
    strategy: Literal["moving-window", "sliding-window"] = "moving-window"
    mode: Literal["wait", "fail"] = "wait"
    max_wait: float = 30.0
    safety_margin: float = 0.25
    default_pause: float = 1.0
    alert_fraction: float = ALERT_FRACTION
    _warned: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.client_id, str) or not self.client_id:
            problems.append("client_id must be a non-empty string")
        if self.strategy not in _STRATEGIES:
            problems.append(f"strategy must be one of {', '.join(_STRATEGIES)}, got {self.strategy!r}")
        if self.mode not in ("wait", "fail"):
            problems.append(f"mode must be 'wait' or 'fail', got {self.mode!r}")
        for name in ("max_wait", "safety_margin", "default_pause"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be finite seconds >= 0, got {value!r}")
        if not 0 < self.alert_fraction <= 1:
            problems.append(f"alert_fraction must be in (0, 1], got {self.alert_fraction!r}")
        names = [budget.name for budget in self.budgets]
        if len(set(names)) != len(names):
            problems.append(f"budget names must be unique, got {names}")
        if problems:
            raise SnapTradeConfigurationError("Invalid rate-limit policy: " + "; ".join(problems) + ".")

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimitPolicy:
        """The policy ``settings`` describe; raises :class:`SnapTradeConfigurationError` if they are wrong.

        ``rate_limit_plan``: ``none`` (no plan budget), ``starter`` or ``growth`` (presets, see
        :data:`PLAN_PRESETS`), ``enterprise`` or ``custom`` (from ``rate_limit_per_minute/hour/day``,
        at least one required). Per-window values given with a preset plan are refused rather than
        silently ignored. Windows must be whole seconds.
        """
        plan = str(settings.rate_limit_plan).strip().lower()
        custom = {
            window: value
            for window, value in (
                (MINUTE, settings.rate_limit_per_minute),
                (HOUR, settings.rate_limit_per_hour),
                (DAY, settings.rate_limit_per_day),
            )
            if value is not None
        }
        given = ", ".join(_PLAN_ENV[window] for window in custom)
        if plan in PLAN_PRESETS:
            if custom:
                raise SnapTradeConfigurationError(
                    f"SNAPTRADE_RATE_LIMIT_PLAN={plan} is a preset, but {given} is also set.",
                    hint="Use SNAPTRADE_RATE_LIMIT_PLAN=custom to set your own per-window values.",
                )
            plan_limits = dict(PLAN_PRESETS[plan])
        elif plan in ("enterprise", "custom"):
            if not custom:
                raise SnapTradeConfigurationError(
                    f"SNAPTRADE_RATE_LIMIT_PLAN={plan} needs its own values, and none is set.",
                    hint="Set at least one of SNAPTRADE_RATE_LIMIT_PER_MINUTE, _PER_HOUR, _PER_DAY.",
                )
            plan_limits = custom
        elif plan == "none":
            if custom:
                raise SnapTradeConfigurationError(
                    f"{given} is set but SNAPTRADE_RATE_LIMIT_PLAN is 'none'.",
                    hint="Set SNAPTRADE_RATE_LIMIT_PLAN=custom to apply them, or unset them.",
                )
            plan_limits = {}
        else:
            raise SnapTradeConfigurationError(
                f"SNAPTRADE_RATE_LIMIT_PLAN={plan!r} is not a plan.",
                hint="Use one of none, starter, growth, enterprise, custom.",
            )
        budgets = [Budget(_PLAN_WINDOW_NAMES[window], "plan", limit, window) for window, limit in plan_limits.items()]
        budgets.append(
            Budget(
                "customer",
                "customer",
                settings.customer_limit,
                _whole_seconds(settings.customer_limit_window, "SNAPTRADE_CUSTOMER_LIMIT_WINDOW"),
            )
        )
        account = (
            Budget(
                "account",
                "account",
                settings.account_limit,
                _whole_seconds(settings.account_limit_window, "SNAPTRADE_ACCOUNT_LIMIT_WINDOW"),
            )
            if settings.account_limit is not None
            else None
        )
        user = (
            Budget("user", "user", settings.user_limit_per_minute, MINUTE)
            if settings.user_limit_per_minute is not None
            else None
        )
        trade = (
            Budget(
                "trade",
                "trade",
                settings.trade_limit_per_account,
                _whole_seconds(settings.trade_limit_window, "SNAPTRADE_TRADE_LIMIT_WINDOW"),
            )
            if settings.trade_limit_per_account is not None
            else None
        )
        return cls(
            client_id=settings.client_id,
            budgets=tuple(budgets),
            account_budget=account,
            user_budget=user,
            trade_budget=trade,
            strategy=settings.rate_limit_strategy,
            mode=settings.rate_limit_mode,
            max_wait=settings.rate_limit_max_wait,
        )

    # --- keys --------------------------------------------------------------------------------

    def _key(self, budget: Budget, subject: str | None = None) -> BudgetKey:
        return _budget_key(self.client_id, budget, subject)

    def client_keys(self) -> list[BudgetKey]:
        """The client-wide buckets (plan and customer)."""
        return [self._key(budget) for budget in self.budgets]

    def keys_for(self, op: Operation, *, user_id: str | None, account_id: str | None) -> list[BudgetKey]:
        """Every bucket a call of ``op`` draws on, tightest first (all are taken in one step).

        Unsigned operations (``check``) carry no client id, so SnapTrade cannot count them
        against the customer budget; they still count against the plan.
        """
        keys = [self._key(b) for b in self.budgets if op.signed or b.scope != "customer"]
        if self.account_budget is not None and op.account_scoped and account_id:
            keys.append(self._key(self.account_budget, account_id))
        if self.user_budget is not None and op.user_scoped and user_id:
            keys.append(self._key(self.user_budget, user_id))
        if self.trade_budget is not None and op.trading and not op.idempotent and account_id:
            keys.append(self._key(self.trade_budget, account_id))
        return sorted(keys, key=lambda k: (k.budget.limit, k.budget.window))

    def _pause_scopes(self, op: Operation, account_id: str | None) -> list[tuple[Scope, str | None]]:
        scopes: list[tuple[Scope, str | None]] = []
        if op.signed:
            scopes.append(("customer", None))
        if op.account_scoped and account_id:
            scopes.append(("account", account_id))
        return scopes

    def plan(self, op: Operation, *, user_id: str | None, account_id: str | None) -> CallPlan:
        """What every acquire of ``op`` for this user and account needs (:class:`CallPlan`)."""
        keys = self.keys_for(op, user_id=user_id, account_id=account_id)
        return CallPlan(
            keys=keys,
            names=tuple([key.storage_key for key in keys]),
            claims=tuple([Claim(key, self.margin_for(key.budget)) for key in keys]),
            scopes=tuple(self._pause_scopes(op, account_id)),
            subjects=tuple([key for key in keys if key.subject is not None]),
            sliding=self.strategy != "moving-window",
        )

    @staticmethod
    def feedback_noise(budget: Budget) -> int:
        """How far SnapTrade's ``Remaining`` may fall below ours before it counts as someone else's use.

        Near a window edge the two views legitimately differ by a few requests: SnapTrade stamps
        requests on arrival, later than we count them, and ``memory://`` forgets an entry the
        moment it leaves the window. Reacting to that noise would throw budget away.
        """
        return max(_NOISE_MIN, math.ceil(_NOISE_SHARE * budget.limit))

    def margin_for(self, budget: Budget) -> float:
        """Seconds a freed slot must stay free before reuse (0 for the sliding-window counter)."""
        if self.strategy != "moving-window":
            return 0.0
        return min(self.safety_margin, _MARGIN_SHARE * budget.window)

    # --- the acquire engine ------------------------------------------------------------------

    def refusal(
        self,
        op: Operation,
        *,
        scope: Scope,
        name: str,
        subject: str | None,
        retry_after: float,
        waited: float,
        paused: bool,
        deadline_left: float | None = None,
    ) -> SnapTradeError:
        """The error an exhausted budget (or an active SnapTrade pause) raises: nothing was sent.

        With ``deadline_left`` (the call's deadline, not ``max_wait``, bounded the wait) it is a
        :class:`SnapTradeDeadlineExceededError` saying what the call was waiting for.
        """
        what = f"{name} budget" + (f" of {subject!r}" if subject else "")
        if paused:
            why = f"SnapTrade asked to pause the {scope} rate limit"
            what = f"{scope} rate limit" + (f" of {subject!r}" if subject else "")
        else:
            why = f"the local {what} is exhausted"
        waited_text = f" after waiting {waited:.2f} s" if waited >= 0.01 else ""
        if deadline_left is not None:
            return SnapTradeDeadlineExceededError(
                f"Not sent: {why} and the call's deadline ends in {deadline_left:.2f} s{waited_text}, "
                f"before the next slot frees in {retry_after:.2f} s.",
                waiting_for="rate-limit pause" if paused else "rate-limit budget",
                retry_after=round(retry_after, 3),
                limit_scope=scope,
                operation=op.name,
            )
        return SnapTradeBudgetExhaustedError(
            f"Not sent: {why}{waited_text}; the next slot frees in {retry_after:.2f} s.",
            retry_after=round(retry_after, 3),
            limit_scope=scope,
            operation=op.name,
        )

    def first_take(
        self, plan: CallPlan, *, pauses: PauseBook, queue: WaitQueue, reports: ReportBook, now: float
    ) -> Take | None:
        """The first attempt of a call when it may skip the queue, else ``None`` (use :meth:`acquire_steps`).

        It may when no call of this process is queued (it arrives, and is served, before any call
        that queues after this reading) and SnapTrade asked for no pause of its scopes. Its claims
        are the plan's own, with the pending feedback of its budgets when there is some. Only
        when the storage refuses it does the call queue: :meth:`acquire_steps` with ``first``.
        """
        if not queue.idle():
            return None
        for scope, subject in plan.scopes:
            if pauses.until(scope, subject, now) is not None:
                return None
        return Take(self._claims(plan, reports), now, plan.sliding)

    @staticmethod
    def _claims(plan: CallPlan, reports: ReportBook, depths: tuple[int, ...] | None = None) -> tuple[Claim, ...]:
        """One slot of each of the plan's budgets, behind ``depths`` calls queued ahead, with their pending feedback.

        The plan's own tuple when nobody is ahead and nothing is pending (a storage keeps what it
        derived from that tuple).
        """
        ahead = depths is not None and any(depths)
        if not ahead and reports.empty():
            return plan.claims
        pending = [reports.pop(name) for name in plan.names]
        if not ahead and not any(report is not None or moves for report, moves in pending):
            return plan.claims
        return tuple(
            [
                Claim(claim.key, claim.margin, 1, depth, report, moves)
                for claim, depth, (report, moves) in zip(
                    plan.claims, depths or (0,) * len(plan.claims), pending, strict=True
                )
            ]
        )

    def _blocked_by(
        self, take: Take, outcome: Outcome, pauses: PauseBook
    ) -> list[tuple[float, Scope, str, str | None, bool]]:
        """What a refused :class:`Take` waits for: ``(seconds, scope, name, subject, paused)`` per budget."""
        blocked: list[tuple[float, Scope, str, str | None, bool]] = []
        for claim, wait, held in zip(take.claims, outcome.waits, outcome.held, strict=True):
            budget = claim.key.budget
            hold = claim.report.hold_until if held and claim.report is not None else None
            if hold is not None:
                pauses.pause(budget.scope, claim.key.subject, hold)
                blocked.append((hold - take.now, budget.scope, budget.scope, claim.key.subject, True))
            elif wait is not None:
                blocked.append((wait, budget.scope, budget.name, claim.key.subject, False))
        if not blocked:  # a malformed answer must not spin
            key = take.claims[0].key
            blocked.append((_MIN_PAUSE, key.budget.scope, key.budget.name, key.subject, False))
        return blocked

    def acquire_steps(
        self,
        op: Operation,
        plan: CallPlan,
        *,
        pauses: PauseBook,
        queue: WaitQueue,
        reports: ReportBook,
        mode: Literal["wait", "fail"],
        max_wait: float,
        deadline: float | None,
        clock: Callable[[], float],
        start: float | None = None,
        first: tuple[Take, Outcome] | None = None,
        ticket: int | None = None,
    ) -> Engine:
        """Take one slot of every bucket of ``plan`` at once, waiting (bounded, in turn) or refusing.

        Yields :class:`Take` (one composed, atomic check: every bucket or none) and
        :class:`Pause`; returns the time the slots were taken, or raises. Waiting ends at
        ``max_wait`` or at ``deadline`` (seconds left of the call), whichever comes first; when the
        awaited slot frees later than that, the call is refused at once, not after waiting.
        Waiters of this process are served in arrival order (see :class:`WaitQueue`).

        ``start`` is when the call began (default: now); ``first`` a refused first attempt
        (:meth:`first_take`) and its outcome, which the engine takes as its own first check;
        ``ticket`` the call's place in ``queue`` when it was queued already (left when the
        engine ends).
        """
        start = clock() if start is None else start
        bound = max_wait
        by_deadline = deadline is not None and deadline < max_wait
        if deadline is not None and by_deadline:
            bound = max(deadline, 0.0)
        limit_at = start + bound
        names = plan.names
        if ticket is None:
            ticket = queue.arrive(names)  # from arrival on, later arrivals count this call as ahead
        try:
            while True:
                unsettled = False
                if first is not None:
                    blocked = self._blocked_by(*first, pauses)
                    first = None
                else:
                    now = clock()
                    blocked = []
                    for scope, subject in plan.scopes:
                        end = pauses.until(scope, subject, now)
                        if end is not None:
                            blocked.append((end - now, scope, scope, subject, True))
                if not blocked:
                    departed = queue.departures()
                    depths, unsettled = queue.ahead(ticket, names)
                    claims = self._claims(plan, reports, depths)
                    queue.taking(ticket, True)
                    take = Take(claims, clock(), plan.sliding)
                    outcome = cast(Outcome, (yield take))
                    if outcome.taken:
                        queue.leave(ticket)  # before anyone counts it as still waiting
                        return outcome.stamp
                    queue.taking(ticket, False)
                    # A call counted ahead may have been served between the count and this check
                    # (its slot then counted twice): the refusal would be wrong, so look again.
                    unsettled = unsettled or queue.departures() != departed
                    blocked = self._blocked_by(take, outcome, pauses)
                wait, scope, name, subject, paused = max(blocked, key=lambda b: b[0])
                wait = max(wait, _MIN_PAUSE)
                now = clock()
                if mode == "wait" and unsettled and not paused and now + _SETTLE_PAUSE <= limit_at:
                    # Calls ahead were being served while we counted them: the count may be too
                    # high, and the wait with it. Look again shortly rather than sleep (or refuse)
                    # on it and leave their slots' successors unused.
                    wait = min(wait, _SETTLE_PAUSE)
                elif mode == "fail" or now + wait > limit_at:
                    raise self.refusal(
                        op,
                        scope=scope,
                        name=name,
                        subject=subject,
                        retry_after=wait,
                        waited=now - start,
                        paused=paused,
                        deadline_left=max(limit_at - now, 0.0) if by_deadline and mode == "wait" else None,
                    )
                yield Pause(wait)
        finally:
            queue.leave(ticket)

    def flush_steps(self, keys: list[BudgetKey], *, reports: ReportBook, clock: Callable[[], float]) -> Engine:
        """Record the pending feedback of ``keys`` without taking anything (before reading usage)."""
        claims = []
        for key in keys:
            report, moves = reports.pop(key.storage_key)
            if report is not None or moves:
                claims.append(Claim(key, self.margin_for(key.budget), 0, 0, report, moves))
        now = clock()
        if claims:
            yield Take(tuple(claims), now, self.strategy != "moving-window")
        return now

    # --- the feedback engine -----------------------------------------------------------------

    def _feedback(
        self, op: Operation, account_id: str | None, headers: Mapping[str, str], now: float
    ) -> list[_Feedback]:
        found = []
        if op.signed:
            found.append(
                _Feedback(
                    "customer",
                    None,
                    as_number(header(headers, "X-RateLimit-Limit")),
                    as_number(header(headers, "X-RateLimit-Remaining")),
                    seconds_from(header(headers, "X-RateLimit-Reset"), now),
                )
            )
        if op.account_scoped and account_id:
            found.append(
                _Feedback(
                    "account",
                    account_id,
                    as_number(header(headers, "X-RateLimit-Account-Limit")),
                    as_number(header(headers, "X-RateLimit-Account-Remaining")),
                    seconds_from(header(headers, "X-RateLimit-Account-Reset"), now),
                )
            )
        return found

    def _throttled_scope(self, op: Operation, feedback: list[_Feedback]) -> _Feedback | None:
        """Which limit a 429 came from, or ``None`` when it is not a client budget."""
        if op.name in _COOLDOWN_OPERATIONS:
            return None
        by_scope = {fb.scope: fb for fb in feedback}
        customer = by_scope.get("customer")
        account = by_scope.get("account")
        if account is not None and account.remaining == 0:
            return account
        if customer is not None and (customer.remaining is None or customer.remaining == 0):
            # Without headers nothing says which limit it was: pausing the whole client is safe.
            return customer
        if account is not None:
            # The customer budget has room, so an account-scoped call was refused by its account.
            return account
        return None

    def _budget_for(self, fb: _Feedback) -> BudgetKey | None:
        if fb.scope == "customer":
            budget = next((b for b in self.budgets if b.scope == "customer"), None)
            return self._key(budget) if budget is not None else None
        if self.account_budget is None:
            return None
        return self._key(self.account_budget, fb.subject)

    def _warn_once(self, tag: str, message: str, *args: object) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            log.warning(message, *args)

    def observe(
        self,
        op: Operation,
        *,
        account_id: str | None,
        status: int,
        headers: Mapping[str, str],
        pauses: PauseBook,
        reports: ReportBook,
        sent_at: float | None,
        clock: Callable[[], float],
        keys: list[BudgetKey] | None = None,
    ) -> Scope | None:
        """Let SnapTrade's answer tighten the local view (never loosen it); no storage IO.

        * 429: pause the limit it came from until ``Retry-After``, else its ``*-Reset``, else
          :attr:`default_pause` seconds; returns the paused scope (the 429's ``limit_scope``).
        * ``X-RateLimit-[Account-]Remaining``: kept as a :class:`Report` that the next composed
          check records in the same round trip: when SnapTrade counted more than the local
          bucket did since ``sent_at`` (the time the call's slots were taken) by more than
          :meth:`feedback_noise`, the difference is counted in the shared bucket; at ``Remaining:
          0`` with a ``Reset`` the scope is paused until the reset instead.

        Absent headers prove nothing and change nothing. ``keys`` (the call's budgets) with
        ``sent_at`` re-stamp its slots to the answer's time when the answer came more than half
        the margin after the slots were taken (:attr:`Claim.moves`; moving windows only: the
        sliding-window counter keeps no stamps); a 429 was not counted by SnapTrade and moves
        nothing.
        """
        now = clock()
        if keys and sent_at is not None and status != 429 and self.strategy == "moving-window":
            # SnapTrade counted the request when it arrived: at the latest, when the answer came.
            # When that is later than the margin absorbs (a busy event loop or CPU, a slow first
            # connection, a slow server), count the slot from the answer.
            for taken in keys:
                if now - sent_at > self.margin_for(taken.budget) / 2:
                    reports.move(taken.storage_key, sent_at, now)
        feedback = self._feedback(op, account_id, headers, now)
        if status == 429:
            throttled = self._throttled_scope(op, feedback)
            if throttled is None:
                return None
            wait = parse_retry_after(header(headers, "Retry-After"), now=now)
            if wait is None:
                wait = throttled.reset if throttled.reset is not None else self.default_pause
            pauses.pause(throttled.scope, throttled.subject, now + wait)
            if throttled.scope == "account" and self.account_budget is None:
                self._warn_once(
                    "account-limit-off",
                    "SnapTrade throttled an account-level call but no per-account budget is set; "
                    "set SNAPTRADE_ACCOUNT_LIMIT (10 for Personal keys) to avoid these 429s.",
                )
            return throttled.scope
        for fb in feedback:
            if fb.limit is None and fb.remaining is None:
                continue  # absent headers prove nothing and change nothing
            reported = self._budget_for(fb)
            if reported is None:
                continue
            budget = reported.budget
            if fb.limit is not None and fb.limit < budget.limit:
                self._warn_once(
                    f"limit-{budget.name}",
                    "SnapTrade reports a %s limit of %d but the local budget allows %d; lower it.",
                    budget.name,
                    int(fb.limit),
                    budget.limit,
                )
            if fb.remaining is None:
                continue
            # Compare what was *used*: a local budget larger than SnapTrade's limit would
            # otherwise read as millions of requests made by someone else.
            limit = fb.limit if fb.limit is not None else budget.limit
            hold = now + fb.reset if fb.remaining <= 0 and fb.reset is not None else None
            reports.put(
                reported.storage_key,
                Report(
                    since=now if sent_at is None else min(sent_at, now),
                    used=int(limit - max(fb.remaining, 0)),
                    noise=self.feedback_noise(budget),
                    hold_until=hold,
                ),
            )
        return None
