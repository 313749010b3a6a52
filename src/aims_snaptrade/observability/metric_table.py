"""The one table of what the library measures and alerts on.

:data:`METRICS` names every OpenTelemetry instrument (name, kind, unit, attributes, and the
operators' guide metric it stands for); :data:`ALERTS` states the guide's alert thresholds as
Prometheus expressions over those instruments. :mod:`aims_snaptrade.observability.telemetry` creates its
instruments from :data:`METRICS`, :mod:`aims_snaptrade.observability.alert_rules` writes the Prometheus rule
file from :data:`ALERTS`, :class:`~aims_snaptrade.observability.health.HealthMonitor` takes its defaults from the
thresholds below, and the table in ``docs/telemetry.md`` is :func:`metrics_markdown` (a test
keeps the two equal).

Prometheus names are those an OpenTelemetry Collector's ``prometheus`` exporter gives the
instruments by default: dots become underscores, the unit becomes a suffix (``s`` ->
``_seconds``, ``1`` -> ``_ratio``; annotations such as ``{call}`` are dropped) and monotonic
counters end in ``_total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aims_snaptrade.ratelimit._policy import ALERT_FRACTION

__all__ = [
    "ALERTS",
    "BUDGET_THRESHOLD",
    "ERROR_RATE_MIN_CALLS",
    "ERROR_RATE_THRESHOLD",
    "METRICS",
    "UNUSUAL_ACTIVITY_BASELINE",
    "UNUSUAL_ACTIVITY_FACTOR",
    "UNUSUAL_ACTIVITY_MIN_CALLS",
    "WINDOW_SECONDS",
    "AlertSpec",
    "MetricSpec",
    "metric",
    "metrics_markdown",
]

ERROR_RATE_THRESHOLD = 0.05
"""The guide's "high error rate": more than 5% of calls failing over the window."""
ERROR_RATE_MIN_CALLS = 10
"""...counted once the window holds this many calls (one failure of a single call is not a rate)."""
BUDGET_THRESHOLD = ALERT_FRACTION
"""The guide's "rate limit approaching": a budget 80% used (the limiter's ``alert`` flag)."""
WINDOW_SECONDS = 300.0
"""The sliding window every alert looks at (5 minutes)."""
UNUSUAL_ACTIVITY_FACTOR = 5.0
"""Unusual activity: a subject's calls in the window exceed this many times its baseline."""
UNUSUAL_ACTIVITY_MIN_CALLS = 30
"""...and number at least this many (so a quiet user's third call is not "unusual")."""
UNUSUAL_ACTIVITY_BASELINE = 3600.0
"""The baseline: the average window over this much history before the current window."""

Kind = Literal["counter", "histogram", "updowncounter", "observable_gauge"]

_ENDPOINT = ("http.request.method", "server.address", "server.port", "url.template", "snaptrade.operation")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One instrument.

    Attributes:
        key: Short name used in code and alert expressions.
        name: The OpenTelemetry instrument name.
        kind: ``counter``, ``histogram``, ``updowncounter`` or ``observable_gauge``.
        unit: UCUM unit (``s``, ``1``, ``{call}``...).
        description: What one measurement is.
        attributes: Every attribute a measurement may carry.
        guide: The operators' guide metric this stands for (``""`` if none).
    """

    key: str
    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...]
    guide: str = ""

    @property
    def prometheus_name(self) -> str:
        """The series name behind a Collector's Prometheus exporter (histograms add ``_bucket`` etc.)."""
        base = self.name.replace(".", "_")
        suffix = {"s": "_seconds", "1": "_ratio"}.get(self.unit, "")
        if suffix and not base.endswith(suffix):
            base += suffix
        return base + ("_total" if self.kind == "counter" else "")


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "calls",
        "snaptrade.client.calls",
        "counter",
        "{call}",
        "Calls of the road that finished (retries inside one call count once).",
        (*_ENDPOINT, "http.response.status_code", "error.type", "snaptrade.refused_locally"),
        guide="snaptrade_api_calls_total",
    ),
    MetricSpec(
        "errors",
        "snaptrade.client.errors",
        "counter",
        "{call}",
        "Calls that ended in an error, local refusals included (marked snaptrade.refused_locally: nothing was sent).",
        (*_ENDPOINT, "http.response.status_code", "error.type", "snaptrade.error_code", "snaptrade.refused_locally"),
        guide="snaptrade_api_errors_total",
    ),
    MetricSpec(
        "rate_limit_hits",
        "snaptrade.client.rate_limit.hits",
        "counter",
        "{hit}",
        "429 answers from SnapTrade (source snaptrade) and local budget refusals (source local).",
        (*_ENDPOINT, "snaptrade.rate_limit.source", "snaptrade.rate_limit.scope"),
        guide="snaptrade_rate_limit_hits",
    ),
    MetricSpec(
        "request_duration",
        "http.client.request.duration",
        "histogram",
        "s",
        "Duration of one HTTP request to SnapTrade (each attempt; waits excluded).",
        (*_ENDPOINT, "http.response.status_code", "error.type"),
        guide="snaptrade_response_time_seconds",
    ),
    MetricSpec(
        "active_requests",
        "http.client.active_requests",
        "updowncounter",
        "{request}",
        "Requests to SnapTrade in flight right now.",
        _ENDPOINT,
        guide="snaptrade_active_connections",
    ),
    MetricSpec(
        "budget_utilization",
        "snaptrade.client.rate_limit.utilization",
        "observable_gauge",
        "1",
        "Fraction of each rate-limit budget used in its current window (the fullest bucket of a per-account budget).",
        ("snaptrade.rate_limit.budget", "snaptrade.rate_limit.scope"),
    ),
    MetricSpec(
        "call_duration",
        "snaptrade.client.operation.duration",
        "histogram",
        "s",
        "Duration of a whole call: guardrails, budget waits, every attempt and retry sleeps.",
        (*_ENDPOINT, "error.type", "snaptrade.refused_locally"),
    ),
    MetricSpec(
        "retries",
        "snaptrade.client.retries",
        "counter",
        "{retry}",
        "Attempts that failed and were sent again (error.type is the failure retried).",
        (*_ENDPOINT, "error.type"),
    ),
)


def metric(key: str) -> MetricSpec:
    """The row of :data:`METRICS` with this ``key``."""
    for spec in METRICS:
        if spec.key == key:
            return spec
    raise KeyError(key)


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert: the guide's condition, as a Prometheus expression and as the monitor's check.

    Attributes:
        name: Alert name, shared by the Prometheus rule and :class:`~aims_snaptrade.observability.health.Alert`.
        guide: The guide's wording.
        expr: PromQL over the series of :data:`METRICS`.
        for_: How long the condition must hold before Prometheus fires.
        severity: ``warning`` or ``critical``.
        summary: One line for the notification.
        runbook: Anchor in ``docs/operations.md``.
    """

    name: str
    guide: str
    expr: str
    for_: str
    severity: Literal["warning", "critical"]
    summary: str
    runbook: str


def _p(key: str) -> str:
    return metric(key).prometheus_name


def _duration(seconds: float) -> str:
    """A PromQL duration (``5m``, ``1h``)."""
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


_W = _duration(WINDOW_SECONDS)
_SENT = '{snaptrade_refused_locally!="true"}'  # the calls that reached SnapTrade
_BASE = _duration(UNUSUAL_ACTIVITY_BASELINE)

ALERTS: tuple[AlertSpec, ...] = (
    AlertSpec(
        "SnapTradeHighErrorRate",
        "High error rates (>5%)",
        # Calls refused locally sent nothing: they are neither SnapTrade's errors nor its calls.
        f"sum(rate({_p('errors')}{_SENT}[{_W}])) / sum(rate({_p('calls')}{_SENT}[{_W}])) > {ERROR_RATE_THRESHOLD}"
        f" and sum(increase({_p('calls')}{_SENT}[{_W}])) >= {ERROR_RATE_MIN_CALLS}",
        "2m",
        "critical",
        f"More than {ERROR_RATE_THRESHOLD:.0%} of SnapTrade calls failed over the last {_W}.",
        "high-error-rate",
    ),
    AlertSpec(
        "SnapTradeRateLimitBudgetHigh",
        "Rate limit approaching (>80%)",
        f"max by (snaptrade_rate_limit_budget) ({_p('budget_utilization')}) >= {BUDGET_THRESHOLD}",
        "1m",
        "warning",
        f"A SnapTrade rate-limit budget is at least {BUDGET_THRESHOLD:.0%} used.",
        "rate-limit-budget-high",
    ),
    AlertSpec(
        "SnapTradeAuthenticationFailures",
        "Authentication failures",
        f'sum(increase({_p("errors")}{{error_type="SnapTradeAuthError"}}[{_W}])) > 0',
        "0m",
        "critical",
        "SnapTrade rejected credentials (401: consumer key, signature, clock or a user secret).",
        "authentication-failures",
    ),
    AlertSpec(
        "SnapTradeConnectionTimeouts",
        "Connection timeouts",
        f'sum(increase({_p("request_duration")}_count{{error_type="SnapTradeTimeoutError"}}[{_W}])) > 0',
        "0m",
        "warning",
        "Requests to SnapTrade timed out (retried ones included).",
        "connection-timeouts",
    ),
    AlertSpec(
        "SnapTradeUnusualActivity",
        "Unusual activity patterns",
        f"sum(rate({_p('calls')}[{_W}])) > {UNUSUAL_ACTIVITY_FACTOR} * sum(rate({_p('calls')}[{_BASE}] offset {_W}))"
        f" and sum(increase({_p('calls')}[{_W}])) >= {UNUSUAL_ACTIVITY_MIN_CALLS}",
        "0m",
        "warning",
        f"SnapTrade call rate is over {UNUSUAL_ACTIVITY_FACTOR:g}x its average of the previous {_BASE}.",
        "unusual-activity",
    ),
)


def metrics_markdown() -> str:
    """The metrics table of ``docs/telemetry.md``, generated from :data:`METRICS`."""
    lines = [
        "| instrument | kind | unit | Prometheus series | guide's metric | attributes |",
        "|---|---|---|---|---|---|",
    ]
    for spec in METRICS:
        attributes = ", ".join(f"`{name}`" for name in spec.attributes)
        guide = f"`{spec.guide}`" if spec.guide else ""
        lines.append(
            f"| `{spec.name}` | {spec.kind} | `{spec.unit}` | `{spec.prometheus_name}` | {guide} | {attributes} |"
        )
    return "\n".join(lines) + "\n"
