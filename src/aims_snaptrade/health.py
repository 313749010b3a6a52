"""``HealthMonitor``: the guide's alerts, evaluated in process over a sliding window.

A monitor attached to a client sees every finished attempt and call (through
:meth:`~aims_snaptrade.client.SafeSnapTradeClient.add_call_observer`) and the rate limiter's
budget usage, and keeps five alerts, named as the Prometheus rules of
:data:`aims_snaptrade.metric_table.ALERTS`:

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

An alert is raised the moment its condition holds and cleared when it stops holding: errors age
out of the window, budgets free up. Call-derived alerts are re-evaluated on every call; budgets and
the ageing are evaluated by :meth:`HealthMonitor.check` (or :meth:`HealthMonitor.acheck` for the
async client), which a service polls. Subscribers get every change.

Example::

    monitor = HealthMonitor(client)
    monitor.subscribe(lambda change: print("raised" if change.raised else "cleared", change.alert.name))
    report = monitor.check()
    if not report.healthy: ...
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from aims_snaptrade import errors as e
from aims_snaptrade.metric_table import (
    ALERTS,
    BUDGET_THRESHOLD,
    ERROR_RATE_MIN_CALLS,
    ERROR_RATE_THRESHOLD,
    UNUSUAL_ACTIVITY_BASELINE,
    UNUSUAL_ACTIVITY_FACTOR,
    UNUSUAL_ACTIVITY_MIN_CALLS,
    WINDOW_SECONDS,
)
from aims_snaptrade.ratelimit import BudgetUsage
from aims_snaptrade.telemetry import CallRecord

if TYPE_CHECKING:
    from aims_snaptrade.client import AsyncSafeSnapTradeClient, SafeSnapTradeClient

__all__ = ["Alert", "AlertChange", "HealthMonitor", "HealthReport", "health_command"]

log = logging.getLogger("aims_snaptrade.health")

_SPECS = {spec.name: spec for spec in ALERTS}
HIGH_ERROR_RATE = "SnapTradeHighErrorRate"
BUDGET_HIGH = "SnapTradeRateLimitBudgetHigh"
AUTH_FAILURES = "SnapTradeAuthenticationFailures"
TIMEOUTS = "SnapTradeConnectionTimeouts"
UNUSUAL_ACTIVITY = "SnapTradeUnusualActivity"


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
class HealthReport:
    """What :meth:`HealthMonitor.check` found.

    Attributes:
        healthy: No alert is raised.
        alerts: The raised alerts.
        window: Seconds the figures cover.
        calls: Calls finished in the window.
        errors: Of those, calls that failed.
        error_rate: ``errors / calls`` (0 without calls).
        auth_failures: 401 answers in the window.
        timeouts: Timed-out requests in the window.
        budgets: Budget usage last read from the rate limiter.
        budget_error: Why the budgets could not be read, if they could not.
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``aims-snaptrade health --json``)."""
        return asdict(self)


@dataclass(slots=True)
class _State:
    calls: deque[tuple[float, bool]] = field(default_factory=deque)
    failures: int = 0  # failed calls in ``calls``, kept as they come and go
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
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        client: SafeSnapTradeClient | AsyncSafeSnapTradeClient | None = None,
        *,
        window: float = WINDOW_SECONDS,
        error_rate: float = ERROR_RATE_THRESHOLD,
        min_calls: int = ERROR_RATE_MIN_CALLS,
        budget: float = BUDGET_THRESHOLD,
        unusual_factor: float = UNUSUAL_ACTIVITY_FACTOR,
        unusual_min_calls: int = UNUSUAL_ACTIVITY_MIN_CALLS,
        unusual_baseline: float = UNUSUAL_ACTIVITY_BASELINE,
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
            else:
                # A call, not an attempt: a 1083 the road cured by re-reading a secret another
                # replica rotated is not an authentication failure.
                if record.error is not None and issubclass(record.error, e.SnapTradeAuthError):
                    state.auth.append(now)
                state.calls.append((now, record.error is not None))
                state.failures += record.error is not None
                for subject in _subjects(record):
                    state.activity.setdefault(subject, deque()).append(now)
                    changes += self._set_unusual(subject, now)
            changes += self._evaluate_calls(now)
        self._notify(changes)

    def check(self, usage: Sequence[BudgetUsage] | None = None) -> HealthReport:
        """Evaluate every alert now and report.

        ``usage`` is the rate limiter's budget usage; by default it is read from the attached
        sync client (an async client's is read by :meth:`acheck`; without either, the last known
        usage is kept).
        """
        error: str | None = None
        if usage is None and self._client is not None and not _is_async(self._client):
            try:
                usage = self._client.rate_limit_usage()  # type: ignore[assignment]
            except e.SnapTradeError as exc:
                error = exc.message
        return self._check(usage, error)

    async def acheck(self) -> HealthReport:
        """:meth:`check` for an attached :class:`~aims_snaptrade.client.AsyncSafeSnapTradeClient`."""
        usage: Sequence[BudgetUsage] | None = None
        error: str | None = None
        if self._client is not None and _is_async(self._client):
            try:
                usage = await self._client.rate_limit_usage()  # type: ignore[misc]
            except e.SnapTradeError as exc:
                error = exc.message
        elif self._client is not None:
            return self.check()
        return self._check(usage, error)

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

    def _check(self, usage: Sequence[BudgetUsage] | None, error: str | None) -> HealthReport:
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
            )
        self._notify(changes)
        return report

    def _evaluate_calls(self, now: float) -> list[AlertChange]:
        state = self._state
        start = now - self.window
        for queue in (state.auth, state.timeouts):
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


def _subjects(record: CallRecord) -> list[str]:
    subjects = []
    if record.user_id:
        subjects.append(f"user:{record.user_id}")
    if record.account_id:
        subjects.append(f"account:{record.account_id}")
    return subjects


def _is_async(client: object) -> bool:
    from aims_snaptrade.client import AsyncSafeSnapTradeClient

    return isinstance(client, AsyncSafeSnapTradeClient)


# --- aims-snaptrade health -------------------------------------------------------------------------


def health_command(*, as_json: bool = False, probe: bool = True) -> int:
    """``aims-snaptrade health``: probe SnapTrade from this configuration and print the monitor's state.

    The client is built as a service builds it, with ``SafeSnapTradeClient.from_env()`` (so in
    production with its consent and audit stores), and closed afterwards.

    The probe sends two calls (the unsigned status check and a signed ``get_partner_info``), so an
    outage, a timeout or a rejected consumer key raises its alert; the budgets are read from the
    configured rate-limit storage, shared with every replica when it is Redis. Call-history alerts
    (error rate, unusual activity) cover only this process: fleet-wide ones are the Prometheus
    rules' job. Returns 0 when healthy, 1 otherwise.
    """
    from aims_snaptrade.client import SafeSnapTradeClient

    probes: dict[str, str] = {}
    with SafeSnapTradeClient.from_env() as client:
        settings = client.settings
        monitor = HealthMonitor(client)
        if probe:
            for name, run in (
                ("api status", client.api_status),
                ("signed call", lambda: client.call("get_partner_info")),
            ):
                try:
                    run()
                    probes[name] = "ok"
                except e.SnapTradeError as exc:
                    probes[name] = f"{type(exc).__name__}: {exc.message}"
        report = monitor.check()
        monitor.close()
    failed = [name for name, outcome in probes.items() if outcome != "ok"]
    if as_json:
        print(json.dumps({**report.to_dict(), "probes": probes}, indent=2, default=str))
    else:
        state = "healthy" if report.healthy and not failed else "UNHEALTHY"
        print(f"health            {state} ({settings.environment}, {settings.base_url})")
        for name, outcome in probes.items():
            print(f"{'probe ' + name:<17} {outcome}")
        if report.budget_error:
            print(f"budgets           UNAVAILABLE: {report.budget_error}")
        for usage in report.budgets:
            subject = usage.name if usage.subject is None else f"{usage.name}:{usage.subject}"
            print(f"{'budget ' + subject:<17} {usage.used}/{usage.limit} per {usage.window} s ({usage.fraction:.0%})")
        for alert in report.alerts:
            print(f"{'ALERT ' + alert.severity:<17} {alert.name}: {alert.summary}")
    return 0 if report.healthy and not failed else 1
