"""OpenTelemetry spans and metrics for every call on the road, by the HTTP client conventions.

Only ``opentelemetry-api`` is used: without an SDK configured by the application everything here
is a no-op. With one, each call of the road becomes one CLIENT span named ``SnapTrade
<operation>`` and feeds the instruments of :data:`aims_snaptrade.observability.metric_table.METRICS`
(``http.client.request.duration``, ``http.client.active_requests``, the calls, errors and
rate-limit-hit counters, the budget-utilisation gauge...).

Attribute names are OpenTelemetry's HTTP client semantic conventions (``http.request.method``,
``server.address``, ``server.port``, ``url.template``, ``http.response.status_code``,
``error.type``, ``http.request.resend_count``) plus ``snaptrade.*`` ones. Nothing secret can ride
along: the path *template* is recorded, never the URL (it carries ``userSecret``), and user or
account ids only when ``Settings.telemetry_include_user_ids`` allows it. What is recorded comes
from the road's own values (status, request id, the error), never from the transport.

Spans are started and ended inside the sans-IO road, without being made current, so the sync and
async clients share them unchanged. The same facts also go, as :class:`CallRecord`, to in-process
observers such as :class:`~aims_snaptrade.observability.health.HealthMonitor`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypedDict
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from aims_snaptrade.errors import SnapTradeError, SnapTradeRateLimitError
from aims_snaptrade.observability.metric_table import metric

if TYPE_CHECKING:
    from aims_snaptrade.operations import Operation
    from aims_snaptrade.ratelimit._policy import BudgetUsage

__all__ = ["CallObserver", "CallRecord", "CallTelemetry", "Endpoint", "watch_budgets"]

log = logging.getLogger("aims_snaptrade.observability.telemetry")

_SCOPE = "aims_snaptrade"
REFUSED_LOCALLY = "snaptrade.refused_locally"
"""Attribute (``True``) of a call that failed before any request was sent; absent otherwise."""
_tracer = trace.get_tracer(_SCOPE)
_meter = metrics.get_meter(_SCOPE)

# The semantic conventions' advised buckets for http.client.request.duration.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class _Named(TypedDict):
    name: str
    unit: str
    description: str


def _spec(key: str) -> _Named:
    spec = metric(key)
    return {"name": spec.name, "unit": spec.unit, "description": spec.description}


_calls = _meter.create_counter(**_spec("calls"))
_errors = _meter.create_counter(**_spec("errors"))
_rate_limit_hits = _meter.create_counter(**_spec("rate_limit_hits"))
_retries = _meter.create_counter(**_spec("retries"))
_active = _meter.create_up_down_counter(**_spec("active_requests"))
_request_duration = _meter.create_histogram(
    **_spec("request_duration"), explicit_bucket_boundaries_advisory=_DURATION_BUCKETS
)
_call_duration = _meter.create_histogram(**_spec("call_duration"))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the calls go, as the conventions name it: ``server.address``, ``server.port`` and the path prefix."""

    address: str | None
    port: int | None
    prefix: str

    @classmethod
    def of(cls, base_url: str) -> Endpoint:
        """The endpoint of ``base_url`` (``https://api.snaptrade.com/api/v1`` -> host, 443, ``/api/v1``)."""
        parts = urlsplit(base_url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        return cls(parts.hostname, port, parts.path.rstrip("/"))


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished attempt or call, for in-process observers (never exported as is).

    Attributes:
        kind: ``"attempt"`` (one request, or one local budget refusal) or ``"call"`` (the whole
            call, retries included).
        operation: SDK operation name.
        user_id: The user the call was for, if any.
        account_id: The account the call was for, if any.
        error: The error class it ended with, ``None`` on success.
        status: HTTP status, when an answer arrived.
        sent: ``True`` when a request left for SnapTrade (``False`` for local refusals: guardrails,
            rollout, consent, bad input, a budget that refused to wait, a store that failed).
        duration: Seconds.
        code: SnapTrade's error code of the failure (``"1076"``, ``"1083"``...), when it sent one.
    """

    kind: Literal["attempt", "call"]
    operation: str
    user_id: str | None
    account_id: str | None
    error: type[BaseException] | None
    status: int | None
    sent: bool
    duration: float
    code: str | None = None


CallObserver = Callable[[CallRecord], None]
"""Called with every :class:`CallRecord`, on the calling thread: keep it quick."""


@functools.lru_cache(maxsize=1024)
def _base_attributes(operation: Operation, endpoint: Endpoint) -> Mapping[str, str | int]:
    """The attributes every measurement of ``operation`` carries, built once (never mutated)."""
    base: dict[str, str | int] = {
        "http.request.method": operation.method,
        "url.template": endpoint.prefix + operation.path,
        "snaptrade.operation": operation.name,
    }
    if endpoint.address:
        base["server.address"] = endpoint.address
    if endpoint.port:
        base["server.port"] = endpoint.port
    return MappingProxyType(base)


class CallTelemetry:
    """The span, measurements and records of one call of the road."""

    __slots__ = (
        "_attempt_started",
        "_base",
        "_budget_wait",
        "_include_ids",
        "_last_code",
        "_last_error",
        "_observers",
        "_operation",
        "_resends",
        "_retry_wait",
        "_sent",
        "_span",
        "_started",
        "_subject",
        "_waiting_since",
    )

    def __init__(
        self,
        operation: Operation,
        endpoint: Endpoint,
        *,
        observers: Sequence[CallObserver] = (),
        include_ids: bool = False,
    ) -> None:
        base = _base_attributes(operation, endpoint)
        self._base = base
        self._operation = operation.name
        self._observers = tuple(observers)
        self._include_ids = include_ids
        self._subject: tuple[str | None, str | None] = (None, None)
        self._started = time.perf_counter()
        self._waiting_since: float | None = None
        self._attempt_started: float | None = None
        self._budget_wait = 0.0
        self._retry_wait = 0.0
        self._resends = 0
        self._sent = False
        self._last_error: str | None = None
        self._last_code: str | None = None
        self._span = _tracer.start_span(f"SnapTrade {operation.name}", kind=SpanKind.CLIENT, attributes=base)

    def subject(self, user_id: str | None, account_id: str | None) -> None:
        """Who the call is for: kept for observers, put on the span only if the settings allow it."""
        self._subject = (user_id, account_id)
        if self._include_ids:
            if user_id:
                self._span.set_attribute("snaptrade.user_id", user_id)
            if account_id:
                self._span.set_attribute("snaptrade.account_id", account_id)

    def acquiring(self) -> None:
        """The call starts taking rate-limit budget (it may wait)."""
        self._waiting_since = time.perf_counter()

    def sending(self) -> None:
        """Budget taken; the request leaves now."""
        now = time.perf_counter()
        if self._waiting_since is not None:
            self._budget_wait += now - self._waiting_since
            self._waiting_since = None
        self._attempt_started = now
        self._sent = True
        _active.add(1, self._base)

    def attempt_succeeded(self, status: int) -> None:
        """The request was answered with a success ``status``."""
        self._end_attempt({"http.response.status_code": status}, None, status)

    def attempt_failed(self, error: SnapTradeError) -> None:
        """Record one attempt that ended in ``error`` (whether or not it will be retried)."""
        self._last_error = type(error).__name__
        self._last_code = error.code
        if self._waiting_since is not None:  # refused while taking budget: nothing was sent
            self._budget_wait += time.perf_counter() - self._waiting_since
            self._waiting_since = None
        if isinstance(error, SnapTradeRateLimitError):
            source = "snaptrade" if error.status == 429 else "local"
            hit = {**self._base, "snaptrade.rate_limit.source": source, "snaptrade.rate_limit.scope": error.limit_scope}
            _rate_limit_hits.add(1, hit)
        self._span.add_event("attempt failed", _error_attributes(error))
        attributes: dict[str, str | int] = {"error.type": type(error).__name__}
        if error.status is not None:
            attributes["http.response.status_code"] = error.status
        self._end_attempt(attributes, type(error), error.status)

    def retrying(self, delay: float) -> None:
        """Record that the call sleeps ``delay`` seconds and sends again."""
        self._resends += 1
        self._retry_wait += delay
        _retries.add(1, {**self._base, "error.type": self._last_error or "_OTHER"})
        self._span.add_event("retry", {"snaptrade.retry.delay_s": delay, "http.request.resend_count": self._resends})

    def succeeded(self, status: int, request_id: str | None) -> None:
        """Close the call with the status and request id of its successful answer."""
        self._span.set_attribute("http.response.status_code", status)
        if request_id:
            self._span.set_attribute("snaptrade.request_id", request_id)
        self._finish({"http.response.status_code": status}, None)

    def failed(self, error: BaseException) -> None:
        """Close the call with the error it raises (or the flow being abandoned)."""
        if self._attempt_started is not None:  # abandoned mid-request (cancelled, closed)
            self._end_attempt({"error.type": type(error).__name__}, type(error), None)
        attributes = _error_attributes(error)
        self._span.set_attributes(attributes)
        self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        measured: dict[str, Any] = {
            k: v for k, v in attributes.items() if k in ("error.type", "http.response.status_code")
        }
        if not self._sent:
            # Nothing reached SnapTrade (guardrails, consent, rollout, bad input, a budget that
            # would not wait): the error-rate alert must not read it as SnapTrade failing.
            measured[REFUSED_LOCALLY] = True
            self._span.set_attribute(REFUSED_LOCALLY, True)
        code = {k: v for k, v in attributes.items() if k == "snaptrade.error_code"}
        _errors.add(1, {**self._base, **measured, **code})
        self._last_code = error.code if isinstance(error, SnapTradeError) else None
        self._finish(measured, type(error))

    # --- internals -----------------------------------------------------------------------------

    def _end_attempt(
        self, attributes: dict[str, str | int], error: type[BaseException] | None, status: int | None
    ) -> None:
        sent = self._attempt_started is not None
        duration = 0.0
        if self._attempt_started is not None:
            duration = time.perf_counter() - self._attempt_started
            self._attempt_started = None
            _active.add(-1, self._base)
            _request_duration.record(duration, {**self._base, **attributes})
        if self._observers:
            code = self._last_code if error is not None else None
            self._notify(CallRecord("attempt", self._operation, *self._subject, error, status, sent, duration, code))

    def _finish(self, attributes: dict[str, Any], error: type[BaseException] | None) -> None:
        duration = time.perf_counter() - self._started
        measured = {**self._base, **attributes}
        _calls.add(1, measured)
        # A call's duration is not split by status: without other attributes it is the base set.
        if attributes.keys() <= {"http.response.status_code"}:
            _call_duration.record(duration, self._base)
        else:
            _call_duration.record(duration, {k: v for k, v in measured.items() if k != "http.response.status_code"})
        if self._resends:
            self._span.set_attribute("http.request.resend_count", self._resends)
            self._span.set_attribute("snaptrade.retry.wait_s", self._retry_wait)
        if self._budget_wait:
            self._span.set_attribute("snaptrade.rate_limit.wait_s", self._budget_wait)
        self._span.end()
        status = attributes.get("http.response.status_code")
        code = status if isinstance(status, int) else None
        if self._observers:
            failure = self._last_code if error is not None else None
            self._notify(
                CallRecord("call", self._operation, *self._subject, error, code, self._sent, duration, failure)
            )

    def _notify(self, record: CallRecord) -> None:
        for observer in self._observers:  # callers build the record only when there are observers
            try:
                observer(record)
            except Exception:  # an observer must never break a call
                log.exception("A call observer failed; the call itself is unaffected.")


def _error_attributes(error: BaseException) -> dict[str, str | int | bool]:
    attributes: dict[str, str | int | bool] = {"error.type": type(error).__name__}
    if not isinstance(error, SnapTradeError):
        return attributes
    attributes["snaptrade.retryable"] = error.retryable
    if error.status is not None:
        attributes["http.response.status_code"] = error.status
    if error.code is not None:
        attributes["snaptrade.error_code"] = error.code
    if error.request_id is not None:
        attributes["snaptrade.request_id"] = error.request_id
    return attributes


# --- the budget-utilisation gauge ------------------------------------------------------------------

BudgetSource = Callable[[], Iterable["BudgetUsage"]]

_sources: dict[int, Callable[[], BudgetSource | None]] = {}
_sources_lock = threading.Lock()


def watch_budgets(source: BudgetSource) -> Callable[[], None]:
    """Feed the budget-utilisation gauge from ``source`` (a bound method, held weakly); returns the undo."""
    ref: Any = weakref.WeakMethod(source) if hasattr(source, "__self__") else (lambda: source)
    key = id(ref)
    with _sources_lock:
        _sources[key] = ref

    def unwatch() -> None:
        with _sources_lock:
            _sources.pop(key, None)

    return unwatch


def _observe_budgets(options: CallbackOptions) -> Iterable[Observation]:
    with _sources_lock:
        refs = list(_sources.items())
    fullest: dict[tuple[str, str], float] = {}
    for handle, ref in refs:
        source = ref()
        if source is None:  # its client was garbage-collected without being closed
            with _sources_lock:
                _sources.pop(handle, None)
            continue
        try:
            usages = list(source())
        except Exception as exc:  # a storage outage must not break the metrics export
            log.debug("Budget usage unavailable for the gauge (%s).", type(exc).__name__)
            continue
        for usage in usages:
            key = (usage.name, usage.scope)
            fullest[key] = max(fullest.get(key, 0.0), usage.fraction)
    return [
        Observation(fraction, {"snaptrade.rate_limit.budget": name, "snaptrade.rate_limit.scope": scope})
        for (name, scope), fraction in fullest.items()
    ]


_meter.create_observable_gauge(callbacks=[_observe_budgets], **_spec("budget_utilization"))
