"""``HealthMonitor``: the guide's alerts, evaluated in process over a sliding window.

A monitor attached to a client sees every finished attempt and call (through
:meth:`~aims_snaptrade.client.SafeSnapTradeClient.add_call_observer`) and the rate limiter's
budget usage, and keeps five alerts, named as the Prometheus rules of
:data:`aims_snaptrade.observability.metric_table.ALERTS`:

* ``SnapTradeHighErrorRate``: over the window, at least ``min_calls`` calls and more than 5% of
  them failed;
* ``SnapTradeRateLimitBudgetHigh``: a budget (or one account's or user's bucket) is 80% used, or
  SnapTrade asked for a pause (one alert per budget and subject);
* ``SnapTradeAuthenticationFailures``: a call failed with 401 (``SnapTradeAuthError``) in the window;
* ``SnapTradeConnectionTimeouts``: a request timed out in the window (retried ones included);
* ``SnapTradeUnusualActivity``: a user or account whose calls in the window are at least
  ``unusual_min_calls`` and more than ``unusual_factor`` times its own baseline, the average
  window-sized count over the ``unusual_baseline`` seconds before the window (one alert per
  subject; a subject without history has a baseline of 0, so ``unusual_min_calls`` alone decides).

Only calls that reached SnapTrade count towards the error rate: a call refused locally (guardrails,
rollout, consent, bad input, a budget that would not wait, a store that failed) sent nothing, so it
says nothing about SnapTrade; the report counts such calls apart, in ``refused``.

An alert is raised the moment its condition holds and cleared when it stops holding: errors age
out of the window, budgets free up. Call-derived alerts are re-evaluated on every call; budgets and
the ageing are evaluated by :meth:`HealthMonitor.check` (or :meth:`HealthMonitor.acheck` for the
async client), which a service polls. Subscribers get every change.

Alerts are for people (a dashboard, a pager). Orchestrators ask two narrower questions, answered by
the report's checks (:data:`PROBES` says which check serves which probe):

* **liveness** (``report.live``): is this process worth keeping? Only the client itself: a closed
  client serves nothing. Nothing outside the process takes part, so an outage of SnapTrade,
  PostgreSQL or Redis never gets pods restarted.
* **readiness** (``report.ready``): can this replica serve now? It fails only on what stops it from
  serving: a store it uses is unreachable (every store the client opened, and the rate-limit
  storage), SnapTrade rejected the consumer key (a 401 other than a user's 1083), the clock is
  further from SnapTrade's than ``Settings.clock_skew_tolerance`` (every signed call would be
  refused), or a client-wide budget is exhausted: no slot frees (or SnapTrade's pause ends) within
  ``Settings.rate_limit_max_wait``, so calls would be refused rather than queued. Warnings (a budget 80%
  used, an error rate, timeouts, unusual activity) never take a replica out of rotation: every
  replica shares SnapTrade and the budgets, so removing one helps nobody.

Example::

    monitor = HealthMonitor(client)
    monitor.subscribe(lambda change: print("raised" if change.raised else "cleared", change.alert.name))
    report = monitor.check()
    if not report.ready: ...  # answer 503 on /readyz
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aims_snaptrade import errors as e
from aims_snaptrade.models import ApiStatus
from aims_snaptrade.observability.metric_table import (
    ALERTS,
    BUDGET_THRESHOLD,
    ERROR_RATE_MIN_CALLS,
    ERROR_RATE_THRESHOLD,
    UNUSUAL_ACTIVITY_BASELINE,
    UNUSUAL_ACTIVITY_FACTOR,
    UNUSUAL_ACTIVITY_MIN_CALLS,
    WINDOW_SECONDS,
)
from aims_snaptrade.observability.telemetry import CallObserver, CallRecord
from aims_snaptrade.operations import get_operation
from aims_snaptrade.ratelimit.limiter import BudgetUsage

if TYPE_CHECKING:
    from aims_snaptrade.settings import Settings

__all__ = [
    "PROBES",
    "Alert",
    "AlertChange",
    "HealthCheck",
    "HealthMonitor",
    "HealthReport",
    "Probe",
    "WatchedClient",
]


class WatchedClient(Protocol):
    """What the monitor reads of the client it watches; either shell
    (:class:`~aims_snaptrade.SafeSnapTradeClient`, :class:`~aims_snaptrade.AsyncSafeSnapTradeClient`)
    is one. On the async client ``rate_limit_usage``, ``api_status`` and ``call`` are coroutines.
    """

    @property
    def settings(self) -> Settings: ...

    @property
    def closed(self) -> bool: ...

    def add_call_observer(self, observer: CallObserver) -> Callable[[], None]: ...

    def _store_probes(self) -> dict[str, Callable[[], object]]: ...

    def rate_limit_usage(self) -> Any: ...

    def api_status(self) -> Any: ...

    def call(self, operation: str, /, **params: Any) -> Any: ...


log = logging.getLogger("aims_snaptrade.observability.health")

_SPECS = {spec.name: spec for spec in ALERTS}
HIGH_ERROR_RATE = "SnapTradeHighErrorRate"
BUDGET_HIGH = "SnapTradeRateLimitBudgetHigh"
AUTH_FAILURES = "SnapTradeAuthenticationFailures"
TIMEOUTS = "SnapTradeConnectionTimeouts"
UNUSUAL_ACTIVITY = "SnapTradeUnusualActivity"

Probe = Literal["liveness", "readiness"]
"""Which orchestrator probe a :class:`HealthCheck` serves."""

PROBES: MappingProxyType[str, Probe] = MappingProxyType(
    {
        "client": "liveness",
        "stores": "readiness",
        "rate-limit storage": "readiness",
        "consumer key": "readiness",
        "clock skew": "readiness",
        "budget": "readiness",
    }
)
"""Every check of :meth:`HealthMonitor.check` and the probe it serves. Alerts serve neither."""

# Set while the monitor probes SnapTrade itself, so its own calls stay out of the history.
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("aims_snaptrade_health_probing", default=False)
_USER_SECRET_REJECTED = "1083"  # one user's secret: that user's problem, not the replica's


@dataclass(frozen=True, slots=True)
class Alert:
    """One raised alert.

    Attributes:
        name: Alert name (as in the Prometheus rules).
        severity: ``warning`` or ``critical``.
        summary: What is wrong, with the figures.
        value: The measured value (error rate, budget fraction, failures, calls in the window).
        threshold: The value it is compared with.
        subject: Which budget (``customer``, ``account:<id>``) or subject (``user:<id>``,
            ``account:<id>``) the alert is about; ``None`` for client-wide alerts.
        since: Monitor clock time when it was raised.
    """

    name: str
    severity: str
    summary: str
    value: float
    threshold: float
    subject: str | None = None
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert raised (``raised=True``) or cleared."""

    alert: Alert
    raised: bool


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One liveness or readiness check.

    Attributes:
        name: A key of :data:`PROBES` (``stores``, ``consumer key``...).
        probe: ``liveness`` or ``readiness``.
        ok: Whether it passed.
        detail: What was found (never a secret, never a connection string).
    """

    name: str
    probe: Probe
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What :meth:`HealthMonitor.check` found.

    Attributes:
        healthy: No alert is raised (for people; probes use ``live`` and ``ready``).
        alerts: The raised alerts.
        window: Seconds the figures cover.
        calls: Calls finished in the window that sent a request to SnapTrade.
        errors: Of those, calls that failed.
        error_rate: ``errors / calls`` (0 without calls).
        auth_failures: 401 answers in the window.
        timeouts: Timed-out requests in the window.
        budgets: Budget usage last read from the rate limiter.
        budget_error: Why the budgets could not be read, if they could not.
        refused: Calls refused locally in the window (nothing sent; not errors of SnapTrade).
        checks: The liveness and readiness checks.
        live: Every liveness check passed (answer ``/livez`` with 200).
        ready: Every readiness check passed (answer ``/readyz`` with 200, else 503).
    """

    healthy: bool
    alerts: tuple[Alert, ...]
    window: float
    calls: int
    errors: int
    error_rate: float
    auth_failures: int
    timeouts: int
    budgets: tuple[BudgetUsage, ...] = ()
    budget_error: str | None = None
    refused: int = 0
    checks: tuple[HealthCheck, ...] = ()
    live: bool = True
    ready: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``aims-snaptrade health --json``)."""
        return asdict(self)


@dataclass(slots=True)
class _State:
    calls: deque[tuple[float, bool]] = field(default_factory=deque)
    failures: int = 0  # failed calls in ``calls``, kept as they come and go
    refused: deque[float] = field(default_factory=deque)
    key_rejected: bool = False  # the last signed answer was a 401 other than 1083
    skew: float | None = None
    skew_at: float | None = None
    key_probe_at: float | None = None
    auth: deque[float] = field(default_factory=deque)
    timeouts: deque[float] = field(default_factory=deque)
    activity: dict[str, deque[float]] = field(default_factory=dict)
    budgets: tuple[BudgetUsage, ...] = ()
    budget_error: str | None = None
    active: dict[tuple[str, str | None], Alert] = field(default_factory=dict)


class HealthMonitor:
    """The guide's alerts for one client, polled with :meth:`check` or pushed to subscribers.

    Args:
        client: The client to watch (sync or async); ``None`` to feed :meth:`record` and
            :meth:`check` yourself.
        window: Sliding window of every alert, seconds (default 300).
        error_rate: Error-rate threshold (default 0.05: the guide's 5%).
        min_calls: Fewest calls in the window for the error rate to count (default 10).
        budget: Budget fraction threshold (default 0.8: the guide's 80%).
        unusual_factor: How many times its baseline a subject's calls must exceed (default 5).
        unusual_min_calls: Fewest calls in the window for activity to be unusual (default 30).
        unusual_baseline: Seconds of history before the window that make the baseline (default 3600).
        probe_interval: Seconds between the monitor's own probes of SnapTrade (default 60): the
            clock-skew measurement (one unsigned status check) and, while the consumer key is
            rejected, one signed call to see whether it works again. The monitor's probes take
            budget like any call but stay out of the call history.
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        client: WatchedClient | None = None,
        *,
        window: float = WINDOW_SECONDS,
        error_rate: float = ERROR_RATE_THRESHOLD,
        min_calls: int = ERROR_RATE_MIN_CALLS,
        budget: float = BUDGET_THRESHOLD,
        unusual_factor: float = UNUSUAL_ACTIVITY_FACTOR,
        unusual_min_calls: int = UNUSUAL_ACTIVITY_MIN_CALLS,
        unusual_baseline: float = UNUSUAL_ACTIVITY_BASELINE,
        probe_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        problems = [
            f"{name} must be positive, got {value!r}"
            for name, value in (
                ("window", window),
                ("min_calls", min_calls),
                ("unusual_factor", unusual_factor),
                ("unusual_min_calls", unusual_min_calls),
                ("unusual_baseline", unusual_baseline),
                ("probe_interval", probe_interval),
            )
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
        ]
        problems += [
            f"{name} must be a fraction in (0, 1], got {value!r}"
            for name, value in (("error_rate", error_rate), ("budget", budget))
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1
        ]
        if problems:
            raise e.SnapTradeValidationError("Invalid HealthMonitor: " + "; ".join(problems) + ".")
        self.window = float(window)
        self.error_rate = float(error_rate)
        self.min_calls = int(min_calls)
        self.budget = float(budget)
        self.unusual_factor = float(unusual_factor)
        self.unusual_min_calls = int(unusual_min_calls)
        self.unusual_baseline = float(unusual_baseline)
        self.probe_interval = float(probe_interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()
        self._subscribers: list[Callable[[AlertChange], None]] = []
        self._client = client
        self._detach: Callable[[], None] | None = client.add_call_observer(self.record) if client else None

    # --- feeding -------------------------------------------------------------------------------

    def record(self, record: CallRecord) -> None:
        """Take one finished attempt or call into account (the client calls this)."""
        now = self._clock()
        changes: list[AlertChange] = []
        with self._lock:
            state = self._state
            if record.kind == "attempt":
                if record.error is not None and issubclass(record.error, e.SnapTradeTimeoutError):
                    state.timeouts.append(now)
            elif _PROBING.get():
                return  # the monitor's own probe: not the service's traffic
            else:
                if not record.sent:
                    # Refused before anything was sent: says nothing about SnapTrade.
                    state.refused.append(now)
                else:
                    # A call, not an attempt: a 1083 the road cured by re-reading a secret another
                    # replica rotated is not an authentication failure.
                    if record.error is not None and issubclass(record.error, e.SnapTradeAuthError):
                        state.auth.append(now)
                    state.calls.append((now, record.error is not None))
                    state.failures += record.error is not None
                    _judge_key(state, record, now)
                for subject in _subjects(record):
                    state.activity.setdefault(subject, deque()).append(now)
                    changes += self._set_unusual(subject, now)
            changes += self._evaluate_calls(now)
        self._notify(changes)

    def check(self, usage: Sequence[BudgetUsage] | None = None, *, probe: bool = True) -> HealthReport:
        """Evaluate every alert and every liveness and readiness check now, and report.

        ``usage`` is the rate limiter's budget usage; by default it is read from the attached
        sync client (an async client's is read by :meth:`acheck`; without either, the last known
        usage is kept). With a sync client attached, each store it uses is read once (a lookup of
        a user no one has), and SnapTrade is probed when :attr:`probe_interval` has passed
        (``probe=False`` sends nothing to SnapTrade).
        """
        client = self._client
        if client is None or _is_async(client):
            return self._check(usage, None, None)
        sync = client
        error: str | None = None
        if usage is None:
            try:
                usage = sync.rate_limit_usage()
            except e.SnapTradeError as exc:
                error = exc.message
        unreachable = self._read_stores(sync)
        skew_due, key_due = self._probes_due() if probe else (False, False)
        token = _PROBING.set(True)
        try:
            if skew_due:
                self._took_skew(_attempt(sync.api_status))
            if key_due:
                self._took_key(_attempt(lambda: sync.call("get_partner_info")))
        finally:
            _PROBING.reset(token)
        return self._check(usage, error, unreachable)

    async def acheck(self, *, probe: bool = True) -> HealthReport:
        """:meth:`check` for an attached :class:`~aims_snaptrade.client.AsyncSafeSnapTradeClient`.

        The stores are read in a worker thread, so the event loop never waits on them.
        """
        client = self._client
        if client is None or not _is_async(client):
            return self.check(probe=probe)
        run = client
        usage: Sequence[BudgetUsage] | None = None
        error: str | None = None
        try:
            usage = await run.rate_limit_usage()
        except e.SnapTradeError as exc:
            error = exc.message
        unreachable = await asyncio.to_thread(self._read_stores, run)
        skew_due, key_due = self._probes_due() if probe else (False, False)
        token = _PROBING.set(True)
        try:
            if skew_due:
                self._took_skew(await _aattempt(run.api_status()))
            if key_due:
                self._took_key(await _aattempt(run.call("get_partner_info")))
        finally:
            _PROBING.reset(token)
        return self._check(usage, error, unreachable)

    def live(self) -> bool:
        """Liveness alone, without reading any store or calling SnapTrade (for ``/livez``)."""
        return all(c.ok for c in self._checks(None, self._state.budget_error) if c.probe == "liveness")

    def subscribe(self, callback: Callable[[AlertChange], None]) -> Callable[[], None]:
        """Call ``callback`` with every raised or cleared alert; returns the undo.

        Callbacks run on the thread that caused the change (a calling thread, or the poller):
        keep them quick, for example hand the change to a queue.
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    @property
    def alerts(self) -> list[Alert]:
        """The alerts raised right now (as of the last evaluation)."""
        with self._lock:
            return list(self._state.active.values())

    def close(self) -> None:
        """Stop watching the client."""
        if self._detach is not None:
            self._detach()
            self._detach = None

    # --- evaluation ----------------------------------------------------------------------------

    # --- probes ------------------------------------------------------------------------------

    @staticmethod
    def _read_stores(client: WatchedClient) -> dict[str, str]:
        """Read each store once; the ones that failed, with the error's class (never its text,
        which may carry a connection string)."""
        unreachable: dict[str, str] = {}
        for name, read in client._store_probes().items():
            try:
                read()
            except Exception as exc:  # whatever the backend raises, the store cannot serve
                unreachable[name] = type(exc).__name__
        return unreachable

    def _probes_due(self) -> tuple[bool, bool]:
        now = self._clock()
        with self._lock:
            state = self._state
            skew_due = state.skew_at is None or now - state.skew_at >= self.probe_interval
            key_due = state.key_rejected and (
                state.key_probe_at is not None and now - state.key_probe_at >= self.probe_interval
            )
            if skew_due:
                state.skew_at = now
            if key_due:
                state.key_probe_at = now
        return skew_due, key_due

    def _took_skew(self, outcome: object) -> None:
        if isinstance(outcome, ApiStatus) and outcome.clock_skew_seconds is not None:
            with self._lock:
                self._state.skew = outcome.clock_skew_seconds
        # An unanswered status check proves nothing about the clock: the last measure stands.

    def _took_key(self, outcome: object) -> None:
        rejected = isinstance(outcome, e.SnapTradeAuthError) and outcome.code != _USER_SECRET_REJECTED
        answered = not isinstance(outcome, e.SnapTradeError) or outcome.status is not None
        if answered:
            with self._lock:
                self._state.key_rejected = rejected

    def _checks(self, unreachable: dict[str, str] | None, budget_error: str | None) -> list[HealthCheck]:
        state, client = self._state, self._client
        closed = client is not None and client.closed
        checks = [HealthCheck("client", "liveness", not closed, "closed" if closed else "open")]
        if client is not None and unreachable is not None:
            names = sorted(client._store_probes())
            if unreachable:
                detail = "unreachable: " + ", ".join(f"{n} ({why})" for n, why in sorted(unreachable.items()))
            else:
                detail = "reachable: " + ", ".join(names)
            checks.append(HealthCheck("stores", "readiness", not unreachable, detail))
        checks.append(
            HealthCheck(
                "rate-limit storage",
                "readiness",
                budget_error is None,
                "reachable" if budget_error is None else f"unreachable: {budget_error}",
            )
        )
        checks.append(
            HealthCheck(
                "consumer key",
                "readiness",
                not state.key_rejected,
                "SnapTrade rejected the consumer key or signature (a 401 other than 1083)"
                if state.key_rejected
                else "not rejected",
            )
        )
        tolerance = client.settings.clock_skew_tolerance if client is not None else None
        if state.skew is None or tolerance is None:
            checks.append(HealthCheck("clock skew", "readiness", True, "not measured"))
        else:
            ok = abs(state.skew) <= tolerance
            checks.append(
                HealthCheck(
                    "clock skew", "readiness", ok, f"{state.skew:+.3f} s against SnapTrade (tolerance {tolerance:g} s)"
                )
            )
        # Exhausted means calls would be refused: a client-wide budget with no slot free before the
        # longest wait a call accepts (or paused by SnapTrade that long). A window merely full,
        # as a batch running at the budget's pace keeps it, frees a slot within the wait: the
        # limiter queues the calls, and readiness must not flap with it.
        wall = time.time()
        patience = client.settings.rate_limit_max_wait if client is not None else 0.0
        exhausted = [
            u.name
            for u in state.budgets
            if u.subject is None
            and (
                (u.remaining <= 0 and u.reset_at - wall > patience)
                or (u.paused_until is not None and u.paused_until - wall > patience)
            )
        ]
        checks.append(
            HealthCheck(
                "budget",
                "readiness",
                not exhausted,
                "exhausted or paused: " + ", ".join(sorted(set(exhausted))) if exhausted else "available",
            )
        )
        return checks

    def _check(
        self, usage: Sequence[BudgetUsage] | None, error: str | None, unreachable: dict[str, str] | None
    ) -> HealthReport:
        now = self._clock()
        with self._lock:
            state = self._state
            changes = self._evaluate_calls(now)
            for subject in list(state.activity):
                changes += self._set_unusual(subject, now)
            if usage is not None:
                state.budgets = tuple(usage)
            if usage is not None or error is not None:
                state.budget_error = error
            changes += self._evaluate_budgets(now)
            calls, errors = len(state.calls), state.failures
            checks = tuple(self._checks(unreachable, state.budget_error))
            report = HealthReport(
                healthy=not state.active,
                alerts=tuple(state.active.values()),
                window=self.window,
                calls=calls,
                errors=errors,
                error_rate=errors / calls if calls else 0.0,
                auth_failures=len(state.auth),
                timeouts=len(state.timeouts),
                budgets=state.budgets,
                budget_error=state.budget_error,
                refused=len(state.refused),
                checks=checks,
                live=all(c.ok for c in checks if c.probe == "liveness"),
                ready=all(c.ok for c in checks),
            )
        self._notify(changes)
        return report

    def _evaluate_calls(self, now: float) -> list[AlertChange]:
        state = self._state
        start = now - self.window
        for queue in (state.auth, state.timeouts, state.refused):
            while queue and queue[0] <= start:
                queue.popleft()
        while state.calls and state.calls[0][0] <= start:
            state.failures -= state.calls.popleft()[1]
        calls, errors = len(state.calls), state.failures
        rate = errors / calls if calls else 0.0
        minutes = f"{self.window:g} s"
        high = calls >= self.min_calls and rate > self.error_rate
        return [
            *self._set(
                HIGH_ERROR_RATE,
                None,
                high,
                rate,
                self.error_rate,
                f"{errors} of {calls} SnapTrade calls failed in the last {minutes} ({rate:.1%}).",
                now,
            ),
            *self._set(
                AUTH_FAILURES,
                None,
                bool(state.auth),
                len(state.auth),
                0,
                f"SnapTrade rejected credentials {len(state.auth)} time(s) in the last {minutes}.",
                now,
            ),
            *self._set(
                TIMEOUTS,
                None,
                bool(state.timeouts),
                len(state.timeouts),
                0,
                f"{len(state.timeouts)} request(s) to SnapTrade timed out in the last {minutes}.",
                now,
            ),
        ]

    def _set_unusual(self, subject: str, now: float) -> list[AlertChange]:
        times = self._state.activity[subject]
        horizon = now - self.window - self.unusual_baseline
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._state.activity[subject]
        cutoff, recent = now - self.window, 0
        for stamp in reversed(times):  # appended in clock order: the window is the tail
            if stamp <= cutoff:
                break
            recent += 1
        baseline = (len(times) - recent) * self.window / self.unusual_baseline
        unusual = recent >= self.unusual_min_calls and recent > self.unusual_factor * baseline
        summary = (
            f"{subject} made {recent} calls in the last {self.window:g} s, against a baseline of "
            f"{baseline:.1f} per {self.window:g} s over the previous {self.unusual_baseline:g} s."
        )
        return self._set(UNUSUAL_ACTIVITY, subject, unusual, recent, self.unusual_factor * baseline, summary, now)

    def _evaluate_budgets(self, now: float) -> list[AlertChange]:
        changes: list[AlertChange] = []
        high: set[str] = set()
        for usage in self._state.budgets:
            subject = usage.name if usage.subject is None else f"{usage.name}:{usage.subject}"
            if usage.fraction >= self.budget or usage.paused_until is not None:
                high.add(subject)
                paused = " (SnapTrade asked for a pause)" if usage.paused_until is not None else ""
                summary = f"Budget {subject} is {usage.fraction:.0%} used ({usage.used}/{usage.limit}){paused}."
                changes += self._set(BUDGET_HIGH, subject, True, usage.fraction, self.budget, summary, now)
        for name, held in list(self._state.active):
            if name == BUDGET_HIGH and held not in high:
                changes += self._set(BUDGET_HIGH, held, False, 0.0, self.budget, "", now)
        return changes

    def _set(
        self,
        name: str,
        subject: str | None,
        raised: bool,
        value: float,
        threshold: float,
        summary: str,
        now: float,
    ) -> list[AlertChange]:
        key = (name, subject)
        active = self._state.active
        current = active.get(key)
        if raised:
            spec = _SPECS[name]
            since = current.since if current else now
            active[key] = Alert(name, spec.severity, summary, float(value), float(threshold), subject, since)
            return [] if current else [AlertChange(active[key], True)]
        if current is None:
            return []
        del active[key]
        return [AlertChange(current, False)]

    def _notify(self, changes: Iterable[AlertChange]) -> None:
        changes = list(changes)
        if not changes:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for change in changes:
            log.log(
                logging.WARNING if change.raised else logging.INFO,
                "%s %s: %s",
                "Alert" if change.raised else "Cleared",
                change.alert.name,
                change.alert.summary,
            )
            for callback in subscribers:
                try:
                    callback(change)
                except Exception:  # a subscriber must never break a call or a poll
                    log.exception("A HealthMonitor subscriber failed.")


def _judge_key(state: _State, record: CallRecord, now: float) -> None:
    """Whether SnapTrade accepts the consumer key, from one answered call."""
    if record.error is not None and issubclass(record.error, e.SnapTradeAuthError):
        if record.code != _USER_SECRET_REJECTED:
            state.key_rejected = True
            state.key_probe_at = now  # the next signed probe one interval from now
    elif record.status is not None and get_operation(record.operation).signed:
        state.key_rejected = False  # a signed request was answered: the key works


def _attempt(call: Callable[[], Any]) -> object:
    try:
        return call()
    except e.SnapTradeError as exc:
        return exc


async def _aattempt(call: Awaitable[Any]) -> object:
    try:
        return await call
    except e.SnapTradeError as exc:
        return exc


def _subjects(record: CallRecord) -> list[str]:
    subjects = []
    if record.user_id:
        subjects.append(f"user:{record.user_id}")
    if record.account_id:
        subjects.append(f"account:{record.account_id}")
    return subjects


def _is_async(client: WatchedClient) -> bool:
    # By shape, not by class: the monitor never imports a client (docs/architecture.md).
    return inspect.iscoroutinefunction(client.rate_limit_usage)
