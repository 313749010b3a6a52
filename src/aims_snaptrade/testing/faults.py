"""Fault injection: make chosen requests fail the way networks and SnapTrade fail.

A :class:`Fault` says *what* goes wrong; :meth:`FaultInjector.add` says *which* requests it hits
and *how often*::

    emu.faults.add(Fault.status(503), operation="list_all_user_accounts", times=2)
    emu.faults.add(Fault.lost_response(), operation="place_force_order")   # order placed, no answer
    emu.faults.add(Fault.drop(), nth=3)                  # the 3rd request, whatever it is
    emu.faults.add(Fault.latency(0.2), path="/accounts/*", times=None)    # every account call

Kinds of fault and what the client sees:

======================  ==========================================================================
``status(code)``        An error answer (SnapTrade-shaped body); the request is not processed.
``rate_limited(n)``     429 with SnapTrade's throttling body and ``Retry-After: n``; not processed.
``unauthorized()``      401 code 1076; not processed.
``latency(s)``          The answer (normal processing) is delayed by ``s`` seconds.
``timeout(hold)``       Nothing is sent for ``hold`` seconds, then the connection is closed; not
                        processed. Pair with a client read timeout shorter than ``hold``.
``drop()``              The connection is closed before any answer; not processed.
``lost_response()``     The request *is processed* (an order is placed), then the connection is
                        closed without an answer: the unknown-outcome case.
``malformed_json()``    The request is processed, then answered 200 with a truncated JSON body.
``hold(s)``             The request is processed (an order is placed), then the answer is held for
                        ``s`` seconds: a client that times out or dies meanwhile never learns it.
``answer(body)``        The request is processed, then answered (200 by default) with ``body`` as
                        JSON instead of the real answer: missing, extra, null or mistyped fields.
``echo(status, fmt)``   An error answer whose body echoes the whole request (method, path and query
                        with ``userSecret``, headers with ``Signature``, body) as ``text``,
                        ``headers`` (header lines), ``json``, ``html``, ``form`` or ``values`` (the
                        values without their names, quoted in prose); not processed.
                        What a careless proxy or framework error page does.
======================  ==========================================================================

Matching: ``operation`` is an SDK method name (``place_force_order``); ``path`` is a path template
(``/accounts/{accountId}/balances``) or an ``fnmatch`` pattern over the request path without the
``/api/v1`` prefix (``/accounts/*/balances``); ``method`` an HTTP method; ``client_id`` a key. Omitted
criteria match everything. Each rule counts the requests it matches: the first ``skip`` pass
untouched (``nth=N`` is ``skip=N-1``), then the fault fires ``times`` times (``None``: forever).
When several rules are due on one request the earliest added wins.
"""

from __future__ import annotations

import enum
import fnmatch
import html
import itertools
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aims_snaptrade.testing.problems import error_body

__all__ = ["ECHO_FORMATS", "Fault", "FaultInjector", "FaultKind", "FaultRule", "echo_body"]


class FaultKind(enum.StrEnum):
    """What a fault does; see the module documentation for the client-side effect of each."""

    STATUS = "status"
    LATENCY = "latency"
    TIMEOUT = "timeout"
    DROP = "drop"
    LOST_RESPONSE = "lost_response"
    MALFORMED_JSON = "malformed_json"
    ANSWER = "answer"
    ECHO = "echo"
    HOLD = "hold"


ECHO_FORMATS = ("text", "headers", "json", "html", "form", "values")
"""Body formats of :meth:`Fault.echo`."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One failure to inject. Build it with the class methods, not the constructor.

    Attributes:
        kind: What happens.
        http_status: HTTP status of a ``STATUS`` fault (or of the malformed answer).
        body: JSON body of a ``STATUS`` fault.
        headers: Extra headers of a ``STATUS`` fault.
        seconds: Delay of ``LATENCY``; hold time of ``TIMEOUT``.
        name: Short label recorded in the request journal.
    """

    kind: FaultKind
    http_status: int | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    name: str = ""

    @property
    def processes_request(self) -> bool:
        """True when the request is still handled (state may change) despite the fault."""
        return self.kind in (
            FaultKind.LATENCY,
            FaultKind.LOST_RESPONSE,
            FaultKind.MALFORMED_JSON,
            FaultKind.ANSWER,
            FaultKind.HOLD,
        )

    @classmethod
    def status(
        cls,
        status: int = 503,
        *,
        code: str | None = None,
        detail: str | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer ``status`` with a SnapTrade-shaped body instead of processing the request.

        ``code`` and ``detail`` default to SnapTrade's usual ones for the status (503: 3002,
        500: 1000, 401: 1076...). ``retry_after`` adds a ``Retry-After`` header: note that the
        SDK's urllib3 pool sleeps and retries GETs answered 429/503 with ``Retry-After``.
        """
        if not 400 <= status <= 599:
            raise ValueError("a status fault needs a 4xx or 5xx status")
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        return cls(
            FaultKind.STATUS,
            http_status=status,
            body=error_body(status, code, detail),
            headers=extra,
            name=f"status_{status}",
        )

    @classmethod
    def rate_limited(cls, retry_after: int = 7) -> Fault:
        """429 with SnapTrade's throttling body and ``Retry-After`` (not counted by the limiter)."""
        detail = f"Request was throttled. Expected available in {retry_after} seconds."
        fault = cls.status(429, code="0000", detail=detail, retry_after=retry_after)
        return cls(fault.kind, fault.http_status, fault.body, fault.headers, name="rate_limited")

    @classmethod
    def unauthorized(cls, code: str = "1076") -> Fault:
        """401 (code 1076 by default; pass ``"1083"`` for a user-secret failure)."""
        detail = "Invalid userID or userSecret provided" if code == "1083" else "Unable to verify signature sent"
        fault = cls.status(401, code=code, detail=detail)
        return cls(fault.kind, fault.http_status, fault.body, fault.headers, name="unauthorized")

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Process normally, but only answer after ``seconds``."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        return cls(FaultKind.LATENCY, seconds=seconds, name="latency")

    @classmethod
    def timeout(cls, hold: float = 30.0) -> Fault:
        """Send nothing for ``hold`` seconds, then close the connection (request not processed).

        Use a client read timeout shorter than ``hold``. Stopping the emulator ends the hold.
        """
        if hold <= 0:
            raise ValueError("hold must be positive")
        return cls(FaultKind.TIMEOUT, seconds=hold, name="timeout")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection before answering; the request is not processed."""
        return cls(FaultKind.DROP, name="drop")

    @classmethod
    def lost_response(cls) -> Fault:
        """Process the request (the write happens), then close the connection without answering."""
        return cls(FaultKind.LOST_RESPONSE, name="lost_response")

    @classmethod
    def hold(cls, seconds: float = 30.0) -> Fault:
        """Process the request (the write happens), then hold the answer ``seconds`` before sending it.

        Stopping the emulator ends the hold.
        """
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        return cls(FaultKind.HOLD, seconds=seconds, name="hold")

    @classmethod
    def malformed_json(cls, status: int = 200) -> Fault:
        """Process the request, then answer ``status`` with a JSON body cut in half."""
        return cls(FaultKind.MALFORMED_JSON, http_status=status, name="malformed_json")

    @classmethod
    def answer(cls, body: Any, status: int = 200) -> Fault:
        """Process the request, then answer ``status`` with ``body`` instead of the real answer.

        ``body`` is any JSON value, or ``bytes`` sent as they are (``b""``: an empty body).
        """
        return cls(FaultKind.ANSWER, http_status=status, body=body, name="answer")

    @classmethod
    def echo(cls, status: int = 401, fmt: str = "json") -> Fault:
        """Answer ``status`` with a body echoing the request in format ``fmt`` (see :data:`ECHO_FORMATS`)."""
        if fmt not in ECHO_FORMATS:
            raise ValueError(f"fmt must be one of {ECHO_FORMATS}")
        if not 400 <= status <= 599:
            raise ValueError("an echo fault needs a 4xx or 5xx status")
        return cls(FaultKind.ECHO, http_status=status, body=fmt, name=f"echo_{fmt}")


def echo_body(fmt: str, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[bytes, str]:
    """The payload and content type of an echo fault: the request written back in ``fmt``."""
    text = body.decode("utf-8", "replace")
    lines = [f"{name}: {value}" for name, value in headers.items()]
    if fmt == "json":
        echoed = {"detail": f"{method} {target}", "headers": dict(headers), "body": text, "code": "echo"}
        return json.dumps(echoed).encode(), "application/json"
    if fmt == "html":
        escaped = html.escape("\n".join([f"{method} {target}", *lines, "", text]))
        return f"<html><body><h1>Error</h1><pre>{escaped}</pre></body></html>".encode(), "text/html"
    if fmt == "form":
        return urlencode({"method": method, "url": target, **dict(headers), "body": text}).encode(), (
            "application/x-www-form-urlencoded"
        )
    if fmt == "values":
        # Values without their names, as a debug page quoting locals would: no label to mask by.
        query = [value for _, value in parse_qsl(target.partition("?")[2], keep_blank_values=True)]
        try:
            fields = [str(v) for v in json.loads(text).values()] if text.strip() else []
        except (ValueError, AttributeError):
            fields = [text]
        quoted = ", ".join(repr(v) for v in [*query, *headers.values(), *fields])
        return json.dumps({"detail": f"Could not process the request with {quoted}"}).encode(), "application/json"
    if fmt == "headers":
        return "\r\n".join(lines).encode(), "text/plain"
    return "\n".join([f"{method} {target}", *lines, "", text]).encode(), "text/plain"


_rule_ids = itertools.count(1)


@dataclass(eq=False)
class FaultRule:
    """A fault and the requests it applies to; returned by :meth:`FaultInjector.add`.

    Attributes:
        fault: What happens.
        operation, path, method, client_id: Criteria (``None`` matches anything).
        skip: Matching requests let through before the fault starts firing.
        times: How many times it fires (``None``: forever).
        matched: Requests that matched so far.
        fired: Times the fault fired so far.
    """

    fault: Fault
    operation: str | None = None
    path: str | None = None
    method: str | None = None
    client_id: str | None = None
    skip: int = 0
    times: int | None = 1
    matched: int = 0
    fired: int = 0
    id: int = field(default_factory=lambda: next(_rule_ids))
    _owner: FaultInjector | None = field(default=None, repr=False)

    @property
    def exhausted(self) -> bool:
        """True when the rule will not fire again."""
        return self.times is not None and self.fired >= self.times

    def remove(self) -> None:
        """Stop applying this rule."""
        if self._owner is not None:
            self._owner.remove(self)

    def _matches(self, operation: str | None, template: str | None, method: str, path: str, client: str | None) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.client_id is not None and self.client_id != client:
            return False
        return self.path is None or self.path == template or fnmatch.fnmatchcase(path, self.path)


class FaultInjector:
    """The set of fault rules of one emulator (``emu.faults``). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(
        self,
        fault: Fault,
        *,
        operation: str | None = None,
        path: str | None = None,
        method: str | None = None,
        client_id: str | None = None,
        nth: int | None = None,
        skip: int = 0,
        times: int | None = 1,
    ) -> FaultRule:
        """Apply ``fault`` to matching requests; see the module documentation.

        Args:
            fault: What happens (``Fault.status(503)``, ``Fault.drop()``...).
            operation: SDK method name, e.g. ``"list_all_user_accounts"``.
            path: Path template or ``fnmatch`` pattern (without ``/api/v1``).
            method: HTTP method.
            client_id: Only requests signed with this client id.
            nth: Fire on the nth matching request (1-based): shorthand for ``skip=nth - 1``.
            skip: Let this many matching requests through first.
            times: Fire this many times; ``None`` fires on every later match.

        Returns:
            The rule, whose ``matched`` / ``fired`` counters tests can assert and which
            :meth:`FaultRule.remove` withdraws.
        """
        if nth is not None:
            if nth < 1:
                raise ValueError("nth is 1-based")
            skip = nth - 1
        if skip < 0 or (times is not None and times < 1):
            raise ValueError("skip must be >= 0 and times >= 1 (or None)")
        rule = FaultRule(
            fault,
            operation=operation,
            path=path,
            method=method.upper() if method else None,
            client_id=client_id,
            skip=skip,
            times=times,
            _owner=self,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        """Withdraw one rule (no error if it is already gone)."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Withdraw every rule."""
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        """A snapshot of the rules, oldest first."""
        with self._lock:
            return list(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def select(
        self, operation: str | None, template: str | None, method: str, path: str, client_id: str | None
    ) -> Fault | None:
        """Count the request against every matching rule; return the fault due, if any.

        Called by the server once per request (before authentication, so that a fault can hit
        requests that would fail anyway).
        """
        if not self._rules:  # the common case: no lock, no work
            return None
        chosen: Fault | None = None
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule._matches(operation, template, method, path, client_id):
                    continue
                rule.matched += 1
                if chosen is None and rule.matched > rule.skip:
                    rule.fired += 1
                    chosen = rule.fault
        return chosen
