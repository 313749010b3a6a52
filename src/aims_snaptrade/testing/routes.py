"""Request handling: routing, authentication, rate limits, faults, journal and the handlers.

One aiohttp low-level handler (:meth:`Dispatcher.handle`) serves every request, in this order,
which is SnapTrade's (Django REST framework's) order of checks:

1. route (SDK operation table; paths answer with or without ``/api/v1``);
2. fault injection (before anything else, so a fault can hit any request);
3. signature (401 code 1076) for signed operations;
4. customer-level rate limit (429 code 0000), counted only for authenticated requests;
5. 410 for retired operations, 501 for operations the emulator does not implement;
6. user (401 code 1083) for user-scoped operations;
7. account-level rate limit for account-data operations;
8. the handler, which raises :class:`ApiProblem` for 4xx answers.

Handlers are synchronous (the state is in memory and fast), which keeps per-request overhead low;
only fault delays await.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from aiohttp import web

from aims_snaptrade.operations import OPERATIONS, Operation
from aims_snaptrade.testing import signing
from aims_snaptrade.testing.config import API_PREFIX, ClientCredentials, EmulatorConfig
from aims_snaptrade.testing.faults import Fault, FaultInjector, FaultKind, echo_body
from aims_snaptrade.testing.history import BALANCE_HISTORY_DAYS, ValueWalk, combined_rates, parse_timeframes
from aims_snaptrade.testing.journal import Journal, JournalEntry
from aims_snaptrade.testing.problems import ApiProblem
from aims_snaptrade.testing.ratelimit import SlidingWindowLimiter, WindowState
from aims_snaptrade.testing.records import Account, Authorization, Order, PortalSession, User
from aims_snaptrade.testing.render import (
    iso,
    render_account,
    render_account_order,
    render_activity,
    render_authorization,
    render_authorization_types,
    render_balance,
    render_balance_history,
    render_balances_v2,
    render_brokerage,
    render_brokerage_instrument,
    render_connection_account,
    render_crypto_pair,
    render_crypto_quote,
    render_exchange,
    render_holdings,
    render_institution,
    render_option_quote,
    render_order,
    render_order_v2,
    render_partner,
    render_partner_stats,
    render_position_v2,
    render_quote,
    render_return_rates,
    render_subscription,
    render_trade_impact,
    render_universal_symbol,
)
from aims_snaptrade.testing.seed import (
    BROKERAGES,
    CRYPTO_PAIRS,
    EXCHANGES,
    SECURITIES,
    ConnectionPortalError,
    Scenario,
)
from aims_snaptrade.testing.state import EmulatorState

__all__ = ["Dispatcher", "Route", "RouteTable", "portal_session_id"]

logger = logging.getLogger("aims_snaptrade.testing")

_JSON = "application/json"
_ACTIVITIES_DEPRECATION = "@1781222400"  # SnapTrade's header on /api/v1/.../activities
_MAX_ACTIVITY_PAGE = 1000
_MAX_ORDER_DAYS = 90  # "Values greater than 90 will be capped at 90" (orders' ``days``)
_MAX_QUOTE_SYMBOLS = 10  # "Maximum of 10 values allowed" (quotes' ``symbols``)
# Operations whose userId / userSecret travel in the body, checked by the handler itself.
_BODY_CREDENTIALS = frozenset({"reset_snap_trade_user_secret"})


# --- routing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """A matched operation and its decoded path parameters."""

    operation: Operation
    params: Mapping[str, str]


class RouteTable:
    """Maps (method, path without prefix) to SDK operations.

    Static paths are a dict lookup; templated ones are regexes grouped by segment count, tried
    with fewer parameters first so ``/accounts/all`` wins over ``/accounts/{accountId}``.
    """

    def __init__(self, operations: Mapping[str, Operation]) -> None:
        self._static: dict[tuple[str, str], Operation] = {}
        self._dynamic: dict[tuple[str, int], list[tuple[re.Pattern[str], Operation]]] = {}
        self._paths: set[str] = set()
        for op in operations.values():
            if "{" not in op.path:
                self._static[(op.method, op.path)] = op
                self._paths.add(op.path)
                continue
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(op.path)) + "$")
            key = (op.method, op.path.count("/"))
            self._dynamic.setdefault(key, []).append((pattern, op))
        for routes in self._dynamic.values():
            routes.sort(key=lambda item: (item[1].path.count("{"), -len(item[1].path)))

    def match(self, method: str, path: str) -> Route | None:
        """The operation for this request, or ``None``."""
        op = self._static.get((method, path))
        if op is not None:
            return Route(op, {})
        for pattern, candidate in self._dynamic.get((method, path.count("/")), ()):
            found = pattern.match(path)
            if found:
                return Route(candidate, {k: unquote(v) for k, v in found.groupdict().items()})
        return None

    def path_exists(self, path: str) -> bool:
        """True when some method serves ``path`` (to tell 405 from 404)."""
        if path in self._paths:
            return True
        return any(
            pattern.match(path)
            for (_, depth), routes in self._dynamic.items()
            if depth == path.count("/")
            for pattern, _ in routes
        )


def portal_session_id(redirect_uri_or_session: str) -> str:
    """The session id in a Connection Portal link (or the argument itself if it is an id)."""
    value = redirect_uri_or_session.strip()
    if "/portal/" in value:
        value = value.split("/portal/", 1)[1]
        value = value.split("?", 1)[0].split("/", 1)[0]
    return value


# --- per-request context ------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """What a handler needs to know about its request."""

    request: web.BaseRequest
    method: str
    raw_path: str
    api_path: str
    prefixed: bool
    query: dict[str, str]
    body: Any
    route: Route | None = None
    client: ClientCredentials | None = None
    user: User | None = None
    account_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    processed: bool = False

    @property
    def op(self) -> Operation:
        assert self.route is not None
        return self.route.operation

    def param(self, name: str) -> str:
        assert self.route is not None
        return self.route.params[name]

    def require_user(self) -> User:
        assert self.user is not None
        return self.user

    def require_client(self) -> ClientCredentials:
        assert self.client is not None
        return self.client

    def body_dict(self) -> dict[str, Any]:
        if self.body is None:
            return {}
        if not isinstance(self.body, dict):
            raise ApiProblem.invalid("The request body must be a JSON object")
        return self.body


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _required_object(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict):
        raise ApiProblem.invalid(f"{name} is required (an object)")
    return value


def _legs(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    legs = body.get("legs")
    if not isinstance(legs, list) or not legs or not all(isinstance(leg, dict) for leg in legs):
        raise ApiProblem.invalid("legs must be a non-empty list of legs")
    return legs


def _decimal_or_none(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise ApiProblem.invalid(f"{value!r} is not a number") from None
    return number if number.is_finite() else None


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiProblem.invalid(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiProblem.invalid(f"{name} must be {bound}")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool_param(query: Mapping[str, str], name: str, default: bool) -> bool:
    # Django REST framework's BooleanField spellings; anything else is a 400, not a silent default.
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ApiProblem.invalid(f"{name} must be a boolean")


def _date_param(query: Mapping[str, str], name: str) -> str | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise ApiProblem.invalid(f"{name} must be a date (YYYY-MM-DD)") from None


# --- the dispatcher -----------------------------------------------------------------------------


class Dispatcher:
    """Serves every HTTP request of one emulator. Created by the emulator, not by users.

    Methods named ``op_<sdk operation name>`` are the handlers: operations without one answer 501.
    """

    def __init__(self, config: EmulatorConfig, state: EmulatorState, faults: FaultInjector, journal: Journal) -> None:
        self.config = config
        self.state = state
        self.faults = faults
        self.journal = journal
        self.routes = RouteTable(OPERATIONS)
        self.root_url = ""  # set once the server is bound
        self.customer_limiter = SlidingWindowLimiter(config.customer_rate_limit) if config.customer_rate_limit else None
        self.account_limiter = SlidingWindowLimiter(config.account_rate_limit) if config.account_rate_limit else None
        self._retired = config.effective_retired_operations
        self._stopping = asyncio.Event()
        self._handlers: dict[str, Callable[[_Call], Any]] = {
            name: getattr(self, "op_" + name) for name in OPERATIONS if hasattr(self, "op_" + name)
        }

    @property
    def implemented_operations(self) -> frozenset[str]:
        """SDK operation names with a handler (the others answer 501)."""
        return frozenset(self._handlers)

    def starting(self) -> None:
        """Arm delayed answers again (call on the loop when the server starts or restarts)."""
        self._stopping = asyncio.Event()

    def stopping(self) -> None:
        """Wake every delayed answer so the server can stop at once (call on the loop)."""
        self._stopping.set()

    def reset_rate_limits(self) -> None:
        """Forget every counted request of both limiters."""
        for limiter in (self.customer_limiter, self.account_limiter):
            if limiter is not None:
                limiter.reset()

    async def _sleep(self, seconds: float) -> None:
        # Ends early when the emulator stops, so stop() never waits for a held answer.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # --- the one handler --------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one request (the aiohttp low-level server's handler)."""
        started = time.perf_counter()
        arrived = time.time()
        request_id = uuid.uuid4().hex
        raw_path, _, raw_query = request.raw_path.partition("?")
        prefixed = raw_path == API_PREFIX or raw_path.startswith(API_PREFIX + "/")
        api_path = raw_path[len(API_PREFIX) :] if prefixed else raw_path
        if len(api_path) > 1 and api_path.endswith("/"):
            api_path = api_path.rstrip("/")
        api_path = api_path or "/"
        method = request.method
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        call = _Call(request, method, raw_path, api_path, prefixed, query, None)
        call.headers["X-Request-ID"] = request_id

        if api_path == "/portal" or api_path.startswith("/portal/"):
            return self._portal(call)

        call.route = self.routes.match(method, api_path)
        op = call.route.operation if call.route else None
        fault = self.faults.select(
            op.name if op else None, op.path if op else None, method, api_path, query.get("clientId")
        )
        raw_body = await request.read()

        status: int | None
        payload: bytes | None
        code: str | None = None
        content_type = _JSON
        if fault is not None and fault.kind is FaultKind.ECHO:
            status, code = fault.http_status or 500, None
            target = raw_path + ("?" + raw_query if raw_query else "")
            payload, content_type = echo_body(str(fault.body), method, target, dict(request.headers), raw_body)
        elif fault is not None and not fault.processes_request:
            status, payload, code = await self._preempt(call, fault)
        else:
            if fault is not None and fault.kind is FaultKind.LATENCY:
                await self._sleep(fault.seconds)
            status, body = self._process(call, raw_body, raw_query)
            if status >= 400 and isinstance(body, dict):
                code = body.get("code")
            if fault is not None and fault.kind is FaultKind.HOLD:
                await self._sleep(fault.seconds)
            payload = _json_bytes(body)
            if fault is not None and fault.kind is FaultKind.LOST_RESPONSE:
                status, payload = None, None
            elif fault is not None and fault.kind is FaultKind.MALFORMED_JSON:
                status = fault.http_status or 200
                payload = payload[: max(1, len(payload) // 2)]
            elif fault is not None and fault.kind is FaultKind.ANSWER:
                raw = isinstance(fault.body, bytes)  # bytes go as they are (b"": an empty body)
                status, payload = fault.http_status or 200, fault.body if raw else _json_bytes(fault.body)

        self.journal.append(
            JournalEntry(
                request_id=request_id,
                time=arrived,
                duration=time.perf_counter() - started,
                method=method,
                path=api_path,
                operation=op.name if op else None,
                status=status,
                code=code,
                client_id=query.get("clientId"),
                user_id=call.user.user_id if call.user else query.get("userId"),
                account_id=call.account_id,
                fault=fault.name if fault else None,
                processed=call.processed,
            )
        )
        if status is None or payload is None:
            self._close(request)
            return web.Response(status=500)  # never written: the transport is closed
        return web.Response(body=payload, status=status, headers=call.headers, content_type=content_type)

    @staticmethod
    def _close(request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is not None:
            transport.close()

    async def _preempt(self, call: _Call, fault: Fault) -> tuple[int | None, bytes | None, str | None]:
        """Apply a fault that replaces processing: (status, payload, code), ``None`` for no answer."""
        if fault.kind is FaultKind.STATUS:
            call.headers.update(fault.headers)
            body = dict(fault.body or {})
            return fault.http_status or 500, _json_bytes(body), body.get("code")
        if fault.kind is FaultKind.TIMEOUT:
            await self._sleep(fault.seconds)
        return None, None, None  # TIMEOUT (after the hold) and DROP: close without an answer

    # --- processing -------------------------------------------------------------------------

    def _process(self, call: _Call, raw_body: bytes, raw_query: str) -> tuple[int, Any]:
        try:
            return 200, self._run(call, raw_body, raw_query)
        except ApiProblem as problem:
            call.headers.update(problem.headers)
            return problem.status, problem.body()
        except Exception:
            logger.exception("SnapTrade emulator: unexpected error in %s %s", call.method, call.api_path)
            unexpected = ApiProblem(500, "1000", "Unexpected error")
            return unexpected.status, unexpected.body()

    def _run(self, call: _Call, raw_body: bytes, raw_query: str) -> Any:
        route = call.route
        if route is None:
            self._anonymous_limit(call)
            if self.routes.path_exists(call.api_path):
                raise ApiProblem(405, "405", f'Method "{call.method}" not allowed.')
            raise ApiProblem(404, "1011", f"No SnapTrade endpoint at {call.method} {call.api_path}.")
        op = route.operation
        if raw_body:
            try:
                call.body = json.loads(raw_body)
            except ValueError:
                raise ApiProblem.invalid("The request body is not valid JSON.") from None
        if not op.signed:
            self._anonymous_limit(call)
            result = self._handlers[op.name](call)
            call.processed = True
            return result
        client = self._authenticate(call, raw_query)
        self._customer_limit(call, client)
        if op.name in self._retired:
            raise ApiProblem(410, "410", f"{op.name} ({op.method} {op.path}) has been retired for your API key.")
        handler = self._handlers.get(op.name)
        if handler is None:
            raise ApiProblem(
                501, "501", f"{op.name} ({op.method} {op.path}) is not implemented by the SnapTrade emulator."
            )
        if op.needs_user_secret and op.name not in _BODY_CREDENTIALS:
            call.user = self.state.authenticate_user(client, call.query.get("userId"), call.query.get("userSecret"))
        if op.account_scoped:
            account_id = route.params.get("accountId")
            if account_id is None and isinstance(call.body, dict):
                body_account = call.body.get("account_id")
                account_id = body_account if isinstance(body_account, str) else None
            call.account_id = account_id
            if account_id:
                self._account_limit(call, client, account_id)
        result = handler(call)
        call.processed = True
        return result

    def _authenticate(self, call: _Call, raw_query: str) -> ClientCredentials:
        client = self.state.client(call.query.get("clientId"))
        if client is None:
            self._anonymous_limit(call)
            raise ApiProblem.bad_signature("Invalid clientId provided")
        call.client = client
        signature = call.request.headers.get("Signature")
        timestamp = call.query.get("timestamp", "")
        if not signature:
            self._peek_limit(call, client)
            raise ApiProblem.bad_signature("Missing Signature header")
        try:
            skew = abs(time.time() - int(timestamp))
        except ValueError:
            skew = None
        if skew is None or skew > self.config.clock_skew_seconds:
            self._peek_limit(call, client)
            raise ApiProblem.bad_signature("Unable to verify signature sent: timestamp outside the allowed window")
        paths: tuple[str, ...] = (call.api_path, API_PREFIX + call.api_path)
        if call.raw_path not in paths:  # e.g. a trailing slash the route lookup ignored
            paths = (*paths, call.raw_path, call.raw_path.removeprefix(API_PREFIX))
        if not signing.verify(client.consumer_key, signature, paths, raw_query, call.body):
            self._peek_limit(call, client)
            raise ApiProblem.bad_signature()
        return client

    # --- rate limits ------------------------------------------------------------------------

    @staticmethod
    def _set_headers(call: _Call, prefix: str, window: WindowState) -> None:
        call.headers[f"{prefix}-Limit"] = str(window.limit)
        call.headers[f"{prefix}-Remaining"] = str(window.remaining)
        call.headers[f"{prefix}-Reset"] = str(window.reset_seconds)

    @staticmethod
    def _throttled(call: _Call, window: WindowState) -> ApiProblem:
        call.headers["Retry-After"] = str(window.retry_after)
        return ApiProblem(429, "0000", f"Request was throttled. Expected available in {window.retry_after} seconds.")

    def _customer_limit(self, call: _Call, client: ClientCredentials) -> None:
        if self.customer_limiter is None:
            return
        window = self.customer_limiter.hit(client.client_id)
        self._set_headers(call, "X-RateLimit", window)
        if not window.allowed:
            raise self._throttled(call, window)

    def _peek_limit(self, call: _Call, client: ClientCredentials) -> None:
        # Rejected requests show the client's window without drawing on it.
        if self.customer_limiter is not None:
            self._set_headers(call, "X-RateLimit", self.customer_limiter.peek(client.client_id))

    def _anonymous_limit(self, call: _Call) -> None:
        # Unsigned requests are throttled per remote address, like DRF's anonymous throttle.
        if self.customer_limiter is None:
            return
        window = self.customer_limiter.hit(("anonymous", call.request.remote))
        self._set_headers(call, "X-RateLimit", window)
        if not window.allowed:
            raise self._throttled(call, window)

    def _account_limit(self, call: _Call, client: ClientCredentials, account_id: str) -> None:
        if self.account_limiter is None:
            return
        if self.config.account_rate_limit_scope == "personal" and not client.personal:
            return
        window = self.account_limiter.hit((client.client_id, account_id))
        self._set_headers(call, "X-RateLimit-Account", window)
        if not window.allowed:
            raise self._throttled(call, window)

    # --- connection portal (the page a user would open) -------------------------------------

    def portal_uri(self, session_id: str, client_id: str, connection_type: str, broker: str | None) -> str:
        """The ``redirectURI`` handed out by ``loginSnapTradeUser``.

        Its query mirrors SnapTrade's documented example (``clientId``, ``broker``,
        ``connectionPortalVersion=v4``, ``sessionId``); the session id is also the path segment.
        """
        uri = f"{self.root_url}/portal/{session_id}?clientId={quote(client_id)}&connectionType={connection_type}"
        uri += f"&broker={quote(broker)}" if broker else ""
        return uri + f"&connectionPortalVersion=v4&sessionId={session_id}"

    def _portal(self, call: _Call) -> web.Response:
        """The portal page a person opens, and how it reports the outcome to the partner's app.

        ``GET /portal/{session}`` lists the scenarios; ``.../connect?scenario=...`` connects and
        ``.../abandon`` leaves without connecting. The outcome is reported as SnapTrade documents
        it: the window message posted to the opener or parent frame (also embedded in the page as
        ``<script id="snaptrade-portal-message" type="application/json">``), and the return to
        ``customRedirect`` with ``status``, ``connection_id`` or ``status_code`` and
        ``error_code``: at once (302) with ``immediateRedirect``, else from the finish screen's
        Done link.
        """
        parts = call.api_path.split("/")
        session_id = parts[2] if len(parts) > 2 else ""
        session = self.state.session(session_id)
        status = 200
        action = parts[3] if len(parts) > 3 else None
        if action in ("connect", "abandon"):
            if action == "abandon" and session is None:
                text, status = "<h1>Unknown connection link</h1>", 404
                return self._portal_page(call, session, text, status)
            try:
                if action == "abandon":
                    query: dict[str, str] = {"status": "ABANDONED"}
                    message: Any = "ABANDONED"
                    text = "<h1>Connection abandoned</h1>"
                else:
                    auth = self.state.complete_connection(
                        session_id,
                        brokerage=call.query.get("broker") or None,
                        scenario=call.query.get("scenario") or Scenario.SELF_DIRECTED.value,
                    )
                    query = {"status": "SUCCESS", "connection_id": auth.id}
                    message = {"status": "SUCCESS", "authorizationId": auth.id}
                    text = f"<h1>Connected</h1><p>connection_id: {html.escape(auth.id)}</p>"
            except (ConnectionPortalError, ValueError) as exc:
                reason = exc.reason if isinstance(exc, ConnectionPortalError) else "invalid_scenario"
                detail = exc.detail if isinstance(exc, ConnectionPortalError) else str(exc)
                code = str(_PORTAL_FAILURE_STATUS.get(reason, 400))
                query = {"status": "ERROR", "status_code": code, "error_code": reason}
                message = {"status": "ERROR", "errorCode": reason, "statusCode": code, "detail": detail}
                text, status = f"<h1>Connection failed</h1><p>{html.escape(reason)}: {html.escape(detail)}</p>", 400
            back = (
                _append_query(session.custom_redirect, urlencode(query))
                if session and session.custom_redirect
                else None
            )
            if back is not None and session is not None and session.immediate_redirect:
                return self._redirect(call, back)
            if back is not None:
                text += f'<p><a id="snaptrade-done" href="{html.escape(back)}">Done</a></p>'
            text += _window_message(message)
        elif session is None:
            text, status = "<h1>Unknown connection link</h1>", 404
        else:
            links = "".join(
                f'<li><a href="/portal/{html.escape(session_id)}/connect?scenario={s.value}">{s.value}</a></li>'
                for s in Scenario
            )
            abandon = f'<p><a href="/portal/{html.escape(session_id)}/abandon">Exit without connecting</a></p>'
            text = f"<h1>SnapTrade emulator: connect a brokerage</h1><ul>{links}</ul>{abandon}"
        return self._portal_page(call, session, text, status)

    def _portal_page(self, call: _Call, session: PortalSession | None, text: str, status: int) -> web.Response:
        self.journal.append(
            JournalEntry(
                call.headers["X-Request-ID"],
                time.time(),
                0.0,
                call.method,
                call.api_path,
                None,
                status,
                None,
                None,
                session.user_id if session else None,
                None,
                None,
                status == 200,
            )
        )
        return web.Response(
            text=f'<!doctype html><html lang="{session.locale if session else "en"}">{text}',
            status=status,
            headers=call.headers,
            content_type="text/html",
        )

    def _redirect(self, call: _Call, location: str) -> web.Response:
        call.headers["Location"] = location
        self.journal.append(
            JournalEntry(
                call.headers["X-Request-ID"],
                time.time(),
                0.0,
                call.method,
                call.api_path,
                None,
                302,
                None,
                None,
                None,
                None,
                None,
                True,
            )
        )
        return web.Response(status=302, headers=call.headers)

    # --- handlers: API status and users -----------------------------------------------------

    def op_check(self, call: _Call) -> Any:
        return {"version": self.config.api_version, "timestamp": iso(datetime.now(UTC)), "online": True}

    def op_register_snap_trade_user(self, call: _Call) -> Any:
        user = self.state.register_user(call.require_client(), call.body_dict().get("userId"))
        call.user = user
        return {"userId": user.user_id, "userSecret": user.secret}

    def op_list_snap_trade_users(self, call: _Call) -> Any:
        return self.state.list_users(call.require_client())

    def op_delete_snap_trade_user(self, call: _Call) -> Any:
        user_id = call.query.get("userId")
        if not user_id:
            raise ApiProblem.invalid("userId is required")  # a required query parameter, not an unknown user
        self.state.delete_user(call.require_client(), user_id)
        return {
            "status": "deleted",
            "detail": "User queued for deletion; please wait for webhook for confirmation.",
            "userId": user_id,
        }

    def op_reset_snap_trade_user_secret(self, call: _Call) -> Any:
        body = call.body_dict()
        user = self.state.reset_secret(call.require_client(), body.get("userId"), body.get("userSecret"))
        call.user = user
        return {"userId": user.user_id, "userSecret": user.secret}

    def op_login_snap_trade_user(self, call: _Call) -> Any:
        session = self.state.create_session(call.require_user(), call.body_dict())
        uri = self.portal_uri(session.session_id, session.client_id, session.connection_type, session.broker)
        return {"redirectURI": uri, "sessionId": session.session_id}

    # --- handlers: connections ----------------------------------------------------------------

    def op_list_brokerage_authorizations(self, call: _Call) -> Any:
        with self.state.lock:
            return [render_authorization(a) for a in self.state.authorizations(call.require_user())]

    def op_detail_brokerage_authorization(self, call: _Call) -> Any:
        with self.state.lock:
            return render_authorization(self.state.authorization(call.require_user(), call.param("authorizationId")))

    def op_delete_connection(self, call: _Call) -> Any:
        connection_id = call.param("connectionId")
        self.state.delete_authorization(call.require_user(), connection_id)
        return {
            "detail": "Connection queued for deletion; please wait for webhook for confirmation.",
            "connection_id": connection_id,
        }

    def op_disable_brokerage_authorization(self, call: _Call) -> Any:
        auth = self.state.authorization(call.require_user(), call.param("authorizationId"))
        self.state.disable_authorization(auth)
        return {"detail": f"Connection {auth.id} has been disabled"}

    def op_refresh_brokerage_authorization(self, call: _Call) -> Any:
        auth = self.state.authorization(call.require_user(), call.param("authorizationId"))
        self.state.refresh_authorization(auth)
        return {"detail": f"Connection {auth.id} scheduled for refresh"}

    def op_sync_brokerage_authorization_transactions(self, call: _Call) -> Any:
        auth = self.state.authorization(call.require_user(), call.param("authorizationId"))
        if auth.disabled:
            raise ApiProblem.connection_disabled()
        return {"detail": f"Connection {auth.id} scheduled for transactions sync"}

    def op_list_brokerage_authorization_accounts(self, call: _Call) -> Any:
        user = call.require_user()
        with self.state.lock:
            auth = self.state.authorization(user, call.param("authorizationId"))
            ready = self.state.is_ready(auth)
            return [render_account(a, ready) for a in self.state.accounts(user, auth.id)]

    def op_list_connection_accounts(self, call: _Call) -> Any:
        user = call.require_user()
        with self.state.lock:
            auth = self.state.authorization(user, call.param("connectionId"))
            ready = self.state.is_ready(auth)
            return {
                "results": [
                    render_connection_account(a, auth.brokerage.id, ready) for a in self.state.accounts(user, auth.id)
                ]
            }

    # --- handlers: accounts -------------------------------------------------------------------

    def _account(self, call: _Call) -> Account:
        return self.state.account(call.require_user(), call.param("accountId"))

    def op_list_user_accounts(self, call: _Call) -> Any:
        with self.state.lock:
            return [
                render_account(a, self.state.is_ready(self.state.account_authorization(a)))
                for a in self.state.accounts(call.require_user())
            ]

    def op_list_all_user_accounts(self, call: _Call) -> Any:
        with self.state.lock:
            results = []
            for account in self.state.accounts(call.require_user()):
                auth = self.state.account_authorization(account)
                results.append(render_connection_account(account, auth.brokerage.id, self.state.is_ready(auth)))
            return {"results": results}

    def op_get_user_account_details(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            return render_account(account, self.state.is_ready(self.state.account_authorization(account)))

    def op_get_account_details(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            auth = self.state.account_authorization(account)
            return render_connection_account(account, auth.brokerage.id, self.state.is_ready(auth))

    def op_get_user_account_balance(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            self.state.require_ready(account)
            return [render_balance(account)]

    def op_get_account_balances_v2(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            auth = self.state.require_ready(account)
            return render_balances_v2(account, auth.updated_at)

    def op_get_all_account_positions(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            auth = self.state.require_ready(account)
            return {
                "results": [render_position_v2(p) for p in account.positions.values()],
                "data_freshness": {"as_of": iso(auth.updated_at)},
            }

    def op_get_user_holdings(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            self.state.require_ready(account)
            return render_holdings(account, self.state.recent_orders(account, only_executed=False))

    def op_get_account_activities(self, call: _Call) -> Any:
        query = call.query
        offset = _int_param(query, "offset", 0, 0)
        # SnapTrade caps pages at 1,000 whatever the limit asked for.
        limit = min(_int_param(query, "limit", _MAX_ACTIVITY_PAGE, 1), _MAX_ACTIVITY_PAGE)
        start, end = _date_param(query, "startDate"), _date_param(query, "endDate")
        types = {t.strip().upper() for t in query.get("type", "").split(",") if t.strip()}
        if call.prefixed:
            call.headers["Deprecation"] = _ACTIVITIES_DEPRECATION
        with self.state.lock:
            account = self._account(call)
            self.state.require_ready(account)
            selected = account.activities
            if start or end or types:
                selected = [
                    a
                    for a in selected
                    if (not start or a.trade_date.date().isoformat() >= start)
                    and (not end or a.trade_date.date().isoformat() <= end)
                    and (not types or a.type in types)
                ]
            page = selected[offset : offset + limit]
            return {
                "data": [render_activity(a) for a in page],
                "pagination": {"offset": offset, "limit": limit, "total": len(selected)},
            }

    def op_update_user_account(self, call: _Call) -> Any:
        # The SDK sends no body, so there is nothing to change: SnapTrade's schema answers the
        # account as a one-item list, which is what the emulator returns.
        with self.state.lock:
            account = self._account(call)
            return [render_account(account, self.state.is_ready(self.state.account_authorization(account)))]

    # --- handlers: value history and returns ---------------------------------------------------

    @staticmethod
    def _value_snapshot(account: Account) -> tuple[str, Decimal, date]:
        """What a value walk depends on, read under the lock; the walk is built outside it."""
        return account.id, account.total_value, account.opening_date.date()

    def _walk(self, snapshot: tuple[str, Decimal, date], today: date) -> ValueWalk:
        account_id, value, opened = snapshot
        return ValueWalk.build(self.config.seed, account_id, value, opened, today)

    def _timeframes(self, call: _Call) -> tuple[str, ...]:
        try:
            return parse_timeframes(call.query.get("timeframes"))
        except ValueError as exc:
            raise ApiProblem.invalid(str(exc)) from None

    def op_get_account_balance_history(self, call: _Call) -> Any:
        now = datetime.now(UTC)
        with self.state.lock:
            account = self._account(call)
            self.state.require_ready(account)
            snapshot, currency = self._value_snapshot(account), account.currency
        walk = self._walk(snapshot, now.date())
        return render_balance_history(walk.history(BALANCE_HISTORY_DAYS), currency)

    def op_get_user_account_return_rates(self, call: _Call) -> Any:
        timeframes = self._timeframes(call)
        now = datetime.now(UTC)
        with self.state.lock:
            account = self._account(call)
            self.state.require_ready(account)
            snapshot = self._value_snapshot(account)
        return render_return_rates(self._walk(snapshot, now.date()).rates(timeframes), now)

    def op_return_rates(self, call: _Call) -> Any:
        timeframes = self._timeframes(call)
        now = datetime.now(UTC)
        user = call.require_user()
        with self.state.lock:
            auth = self.state.authorization(user, call.param("authorizationId"))
            if not self.state.is_ready(auth):
                raise ApiProblem.populating()
            snapshots = [self._value_snapshot(a) for a in self.state.accounts(user, auth.id)]
        walks = [self._walk(snapshot, now.date()) for snapshot in snapshots]
        return render_return_rates(combined_rates(walks, timeframes), now)

    # --- handlers: orders ---------------------------------------------------------------------

    # The v1, v2 and "all orders" reads below share one order state and the same filters; only
    # the rendering differs. Like SnapTrade, the listings answer 425 while a connection populates
    # and all of them keep serving the last known orders once it is disabled.

    def _listed_orders(self, call: _Call) -> tuple[Authorization, list[Order]]:
        """``state`` / ``days`` filtered orders of the call's account (newest first)."""
        # SnapTrade caps ``days`` rather than refusing it (the SDK refuses >90 before sending).
        days = min(_int_param(call.query, "days", 30, 1), _MAX_ORDER_DAYS)
        account = self._account(call)
        auth = self.state.require_ready(account)
        return auth, self.state.orders(account, call.query.get("state") or "all", days)

    def _recent_orders(self, call: _Call) -> list[Order]:
        only_executed = _bool_param(call.query, "only_executed", True)
        account = self._account(call)
        self.state.require_ready(account)
        return self.state.recent_orders(account, only_executed)

    def op_get_user_account_orders(self, call: _Call) -> Any:
        with self.state.lock:
            return [render_order(o) for o in self._listed_orders(call)[1]]

    def op_get_user_account_orders_v2(self, call: _Call) -> Any:
        with self.state.lock:
            return {"orders": [render_order_v2(o) for o in self._listed_orders(call)[1]]}

    def op_get_all_account_orders(self, call: _Call) -> Any:
        with self.state.lock:
            auth, orders = self._listed_orders(call)
            return {
                "results": [render_account_order(o) for o in orders],
                "data_freshness": {"as_of": iso(auth.updated_at)},
            }

    def op_get_user_account_recent_orders(self, call: _Call) -> Any:
        with self.state.lock:
            return {"orders": [render_order(o) for o in self._recent_orders(call)]}

    def op_get_user_account_recent_orders_v2(self, call: _Call) -> Any:
        with self.state.lock:
            return {"orders": [render_order_v2(o) for o in self._recent_orders(call)]}

    def op_get_user_account_order_detail(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            return render_order(self.state.order(account, call.body_dict().get("brokerage_order_id")))

    def op_get_user_account_order_detail_v2(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            return render_order_v2(self.state.order(account, call.param("brokerageOrderId")))

    def op_place_force_order(self, call: _Call) -> Any:
        with self.state.lock:
            return render_order(self.state.place_order(call.require_user(), call.body_dict()))

    def op_get_order_impact(self, call: _Call) -> Any:
        with self.state.lock:
            trade, account, remaining = self.state.check_trade(call.require_user(), call.body_dict())
            return render_trade_impact(trade, account, remaining)

    def op_place_order(self, call: _Call) -> Any:
        with self.state.lock:
            return render_order(self.state.place_checked_trade(call.require_user(), call.param("tradeId")))

    def op_cancel_order(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            order = self.state.cancel_order(call.require_user(), account, call.body_dict().get("brokerage_order_id"))
            return {"brokerage_order_id": order.brokerage_order_id, "raw_response": {"status": order.status}}

    def op_replace_order(self, call: _Call) -> Any:
        with self.state.lock:
            account = self._account(call)
            return render_order(self.state.replace_order(call.require_user(), account, call.body_dict()))

    # --- handlers: the other order forms ------------------------------------------------------

    # Single-leg simple orders of emulated equities are booked like /trade/place orders. Crypto, multi-leg
    # option and complex (OCO/OTO/OTOCO) orders are checked for their required fields and
    # acknowledged with fresh ids, but not booked: the emulator has no crypto or option book.

    _SIMPLE_TYPES = {"market": "Market", "limit": "Limit", "stop": "Stop", "stop_limit": "StopLimit"}

    def op_place_simple_order(self, call: _Call) -> Any:
        body = call.body_dict()
        order_type = self._SIMPLE_TYPES.get(str(body.get("order_type") or "").lower())
        if order_type is None:
            raise ApiProblem.invalid("order_type must be market, limit, stop or stop_limit")
        legs = _legs(body)
        with self.state.lock:
            account = self._account(call)
            leg = legs[0]
            instrument = _required_object(leg, "instrument")
            action = str(leg.get("action") or "").upper()  # the simple form spells actions in lower case
            if len(legs) > 1 or instrument.get("kind") != "equity" or action not in ("BUY", "SELL"):
                # Only single-leg equity orders are booked; others are acknowledged.
                self.state.require_ready(account)
                return {"brokerage_order_id": self.state.new_id("order")}
            terms = {
                "account_id": account.id,
                "action": action,
                "symbol": instrument.get("symbol"),
                "order_type": order_type,
                "time_in_force": {"day": "Day", "gtc": "GTC", "fok": "FOK", "ioc": "IOC"}.get(
                    str(body.get("time_in_force") or "").lower(), body.get("time_in_force")
                ),
                "units": leg.get("units"),
                "notional_value": body.get("notional_value"),
                "price": body.get("limit_price"),
                "stop": body.get("stop_price"),
                "client_order_id": body.get("client_order_id"),
            }
            order = self.state.place_order(call.require_user(), terms)
            return {"brokerage_order_id": order.brokerage_order_id}

    def _ready(self, call: _Call) -> Account:
        """The call's account, once its connection has populated (else 425)."""
        with self.state.lock:
            account = self._account(call)
            self.state.require_ready(account)
            return account

    def _crypto_order(self, call: _Call) -> dict[str, Any]:
        body = call.body_dict()
        symbol = _required_object(body, "instrument").get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise ApiProblem.invalid("instrument.symbol is required")
        for name in ("side", "type", "time_in_force", "amount"):
            if body.get(name) in (None, ""):
                raise ApiProblem.invalid(f"{name} is required")
        if str(body["side"]).upper() not in ("BUY", "SELL"):
            raise ApiProblem.invalid("side must be BUY or SELL")
        self._ready(call)
        return body

    def op_preview_crypto_order(self, call: _Call) -> Any:
        body = self._crypto_order(call)
        pair = CRYPTO_PAIRS.get(str(body["instrument"]["symbol"]).upper())
        return {"estimated_fee": {"amount": "0.00", "currency": pair[1] if pair else "USD"}}

    def op_place_crypto_order(self, call: _Call) -> Any:
        self._crypto_order(call)
        return {"brokerage_order_id": self.state.new_id("order"), "order": None}

    def _option_legs(self, call: _Call) -> list[dict[str, Any]]:
        legs = _legs(call.body_dict())
        for leg in legs:
            if leg.get("action") in (None, "") or not isinstance(leg.get("instrument"), dict) or "units" not in leg:
                raise ApiProblem.invalid("every leg needs action, instrument and units")
        self._ready(call)
        return legs

    def op_get_option_impact(self, call: _Call) -> Any:
        legs = self._option_legs(call)
        body = call.body_dict()
        price = _decimal_or_none(body.get("limit_price"))
        if price is None:
            return {"cash_change_direction": "UNKNOWN"}
        contracts = sum(abs(_decimal_or_none(leg.get("units")) or Decimal(0)) for leg in legs)
        change = (price * contracts * 100).quantize(Decimal("0.01"))
        effect = str(body.get("price_effect") or "DEBIT").upper()
        direction = "EVEN" if change == 0 else ("CREDIT" if effect == "CREDIT" else "DEBIT")
        return {"estimated_cash_change": str(change), "estimated_fee_total": "0.00", "cash_change_direction": direction}

    def op_place_mleg_order(self, call: _Call) -> Any:
        self._option_legs(call)
        return {"brokerage_order_id": self.state.new_id("order"), "orders": []}

    def op_place_complex_order(self, call: _Call) -> Any:
        body = call.body_dict()
        kind = body.get("type")
        if kind not in ("OCO", "OTO", "OTOCO"):
            raise ApiProblem.invalid("type must be OCO, OTO or OTOCO")
        orders = body.get("orders")
        if not isinstance(orders, list) or len(orders) < 2:
            raise ApiProblem.invalid("orders must list the legs of the complex order")
        self._ready(call)
        return {"brokerage_group_order_id": self.state.new_id("order-group"), "type": kind}

    # --- handlers: option quotes, crypto pairs ----------------------------------------------------

    def op_get_user_account_option_quotes(self, call: _Call) -> Any:
        symbol = call.query.get("symbol")
        if not symbol:
            raise ApiProblem.invalid("symbol is required")
        self._ready(call)
        return render_option_quote(symbol, datetime.now(UTC))

    def op_search_cryptocurrency_pair_instruments(self, call: _Call) -> Any:
        base, quote_ = (call.query.get(k, "").upper() for k in ("base", "quote"))
        self._ready(call)
        return {
            "items": [
                render_crypto_pair(symbol, b, q)
                for symbol, (b, q, _) in CRYPTO_PAIRS.items()
                if (not base or b == base) and (not quote_ or q == quote_)
            ]
        }

    def op_get_cryptocurrency_pair_quote(self, call: _Call) -> Any:
        pair = CRYPTO_PAIRS.get(call.param("instrumentSymbol").upper())
        self._ready(call)
        if pair is None:
            raise ApiProblem.not_found("Cryptocurrency pair")
        return render_crypto_quote(pair[2], datetime.now(UTC))

    # --- handlers: trade-detection subscriptions, partner statistics ----------------------------

    def op_add_subscription(self, call: _Call) -> Any:
        body = call.body_dict()
        account, interval = self.state.subscribe(
            call.require_user(), body.get("account_id"), body.get("check_interval_seconds")
        )
        return render_subscription(account.id, interval)

    def op_cancel_subscription(self, call: _Call) -> Any:
        return {"success": self.state.unsubscribe(call.require_client(), call.body_dict().get("account_id"))}

    def op_list_subscriptions(self, call: _Call) -> Any:
        return [render_subscription(a, every) for a, every in self.state.subscriptions(call.require_client())]

    def op_get_stats(self, call: _Call) -> Any:
        stats = self.state.partner_stats(call.require_client())
        return render_partner_stats(stats, call.query.get("currency") or "USD", datetime.now(UTC), legacy=False)

    def op_get_stats_legacy(self, call: _Call) -> Any:
        stats = self.state.partner_stats(call.require_client())
        return render_partner_stats(stats, call.query.get("currency") or "USD", datetime.now(UTC), legacy=True)

    # --- handlers: reference data and quotes --------------------------------------------------

    def op_list_all_brokerages(self, call: _Call) -> Any:
        return [render_brokerage(b) for b in BROKERAGES.values()]

    def op_get_partner_info(self, call: _Call) -> Any:
        return render_partner(call.require_client(), BROKERAGES.values())

    def op_get_stock_exchanges(self, call: _Call) -> Any:
        return [render_exchange(e) for e in EXCHANGES.values()]

    def op_list_institutions(self, call: _Call) -> Any:
        return [render_institution(b) for b in BROKERAGES.values()]

    def op_list_all_brokerage_authorization_type(self, call: _Call) -> Any:
        wanted = {s.strip().upper() for s in call.query.get("brokerage", "").split(",") if s.strip()}
        return [
            entry
            for brokerage in BROKERAGES.values()
            if not wanted or brokerage.slug in wanted
            for entry in render_authorization_types(brokerage)
        ]

    def op_list_all_brokerage_instruments(self, call: _Call) -> Any:
        brokerage = BROKERAGES.get(call.param("slug").strip().upper())
        if brokerage is None:
            raise ApiProblem.not_found("Brokerage")
        return {"instruments": [render_brokerage_instrument(s, brokerage) for s in SECURITIES.values()]}

    def op_get_symbols(self, call: _Call) -> Any:
        substring = str(call.body_dict().get("substring") or "").upper()
        return [
            render_universal_symbol(s)
            for s in SECURITIES.values()
            if substring in s.ticker or substring in s.name.upper()
        ]

    def op_get_symbols_by_ticker(self, call: _Call) -> Any:
        query = call.param("query")
        for security in SECURITIES.values():
            if query.upper() == security.ticker or query == security.id:
                return render_universal_symbol(security)
        raise ApiProblem.not_found("Symbol")

    def op_symbol_search_user_account(self, call: _Call) -> Any:
        self._account(call)
        return self.op_get_symbols(call)

    def op_get_user_account_quotes(self, call: _Call) -> Any:
        self._account(call)
        wanted = [s.strip() for s in call.query.get("symbols", "").split(",") if s.strip()]
        if not wanted:
            raise ApiProblem.invalid("symbols is required")
        if len(wanted) > _MAX_QUOTE_SYMBOLS:
            raise ApiProblem.invalid(f"A maximum of {_MAX_QUOTE_SYMBOLS} symbols is allowed")
        by_ticker = _bool_param(call.query, "use_ticker", False)
        quotes = []
        for item in wanted:
            security = (
                SECURITIES.get(item.upper())
                if by_ticker
                else next((s for s in SECURITIES.values() if s.id == item), None)
            )
            if security is None:
                raise ApiProblem.not_found(f"Symbol {item}")
            quotes.append(render_quote(security))
        return quotes


# HTTP statuses the emulator's portal reports for its failures (SnapTrade sends the status of the
# failed step; these are the emulator's choices for its own reasons).
_PORTAL_FAILURE_STATUS = {
    "invalid_credentials": 401,
    "account_locked": 403,
    "rate_limited": 429,
    "session_expired": 410,
    "session_used": 409,
    "unknown_session": 404,
    "invalid_scenario": 400,
}


def _window_message(message: Any) -> str:
    """The portal's window message: posted to the opener (new tab) or parent (iframe), and
    embedded as JSON so a test without a browser can read it."""
    data = json.dumps(message).replace("</", "<\\/")
    return (
        f'<script id="snaptrade-portal-message" type="application/json">{data}</script>'
        "<script>(window.opener || window.parent).postMessage("
        "JSON.parse(document.getElementById('snaptrade-portal-message').textContent), '*');</script>"
    )


def _append_query(url: str, extra: str) -> str:
    return url + ("&" if "?" in url else "?") + extra
