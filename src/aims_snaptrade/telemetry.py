"""OpenTelemetry spans and metrics for every call on the road.

Only ``opentelemetry-api`` is used: without an SDK configured by the application everything here
is a no-op. With one, each call of the road becomes one CLIENT span named ``SnapTrade
<operation>`` and feeds three instruments:

* ``snaptrade.client.operation.duration`` (histogram, s): whole call, retries and waits included;
* ``snaptrade.client.attempts`` (counter): requests sent, by operation and outcome;
* ``snaptrade.client.retries`` (counter): attempts that were retried.

Attributes are chosen so that nothing secret can ride along: the operation name, HTTP method,
path *template* (never the URL, which carries ``userSecret``), status, SnapTrade code, request
id and error class. Spans are started and ended inside the sans-IO road, without being made
current, so the sync and async clients share them unchanged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from aims_snaptrade.errors import SnapTradeError

if TYPE_CHECKING:
    from aims_snaptrade._transport import Response
    from aims_snaptrade.operations import Operation

__all__ = ["CallTelemetry"]

_SCOPE = "aims_snaptrade"
_tracer = trace.get_tracer(_SCOPE)
_meter = metrics.get_meter(_SCOPE)
_duration = _meter.create_histogram(
    "snaptrade.client.operation.duration", unit="s", description="Duration of SnapTrade calls, retries included."
)
_attempts = _meter.create_counter(
    "snaptrade.client.attempts", unit="{request}", description="Requests sent to SnapTrade."
)
_retries = _meter.create_counter(
    "snaptrade.client.retries", unit="{retry}", description="SnapTrade requests that were retried."
)


class CallTelemetry:
    """The span and measurements of one call of the road."""

    __slots__ = ("_base", "_span", "_started")

    def __init__(self, operation: Operation, server_address: str | None) -> None:
        self._base: dict[str, str] = {"snaptrade.operation": operation.name, "http.request.method": operation.method}
        self._started = time.perf_counter()
        attributes = {**self._base, "url.template": "/api/v1" + operation.path}
        if server_address:
            attributes["server.address"] = server_address
        self._span = _tracer.start_span(f"SnapTrade {operation.name}", kind=SpanKind.CLIENT, attributes=attributes)

    def attempt_failed(self, error: SnapTradeError) -> None:
        """Record one attempt that ended in ``error`` (whether or not it will be retried)."""
        _attempts.add(1, {**self._base, "outcome": type(error).__name__})
        self._span.add_event("attempt failed", _error_attributes(error))

    def retrying(self, delay: float) -> None:
        """Record that the call sleeps ``delay`` seconds and tries again."""
        _retries.add(1, self._base)
        self._span.add_event("retry", {"snaptrade.retry.delay_s": delay})

    def succeeded(self, response: Response) -> None:
        """Close the call with its successful response."""
        _attempts.add(1, {**self._base, "outcome": "ok"})
        self._span.set_attribute("http.response.status_code", response.status)
        if response.request_id:
            self._span.set_attribute("snaptrade.request_id", response.request_id)
        self._finish("ok")

    def failed(self, error: BaseException) -> None:
        """Close the call with the error it raises (or the flow being abandoned)."""
        self._span.set_attributes(_error_attributes(error))
        self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self._finish(type(error).__name__)

    def _finish(self, outcome: str) -> None:
        _duration.record(time.perf_counter() - self._started, {**self._base, "outcome": outcome})
        self._span.end()


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
