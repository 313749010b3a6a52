"""The one road every call takes, written once for the sync and the async client.

``guardrails -> rollout -> consent -> secret lookup -> [rate limiter -> signed SDK call -> error
mapping -> limiter feedback] under the retry policy -> audit``.

The road and the typed helpers are *flows*: generators that never do IO themselves. They yield
effects (:class:`Send`, :class:`Acquire`, :class:`Sleep`, :class:`StoreCall`, ...) and receive
their results; :class:`~aims_snaptrade.client.SafeSnapTradeClient` performs effects with blocking
IO and :class:`~aims_snaptrade.client.AsyncSafeSnapTradeClient` awaits them. Retry decisions are
tenacity's (``Retrying.iter``) over our errors; only who sleeps differs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn, TypeVar

import tenacity
from pydantic import ValidationError

from aims_snaptrade import errors as e
from aims_snaptrade._ids import check_id
from aims_snaptrade._transport import Response, Timeouts
from aims_snaptrade.compliance.audit import AuditEvent
from aims_snaptrade.compliance.consent import ConsentDecision, ConsentRecord
from aims_snaptrade.compliance.rollout import Rollout
from aims_snaptrade.guardrails import ConsentChecker, check_call, consent_scope
from aims_snaptrade.models import (
    Account,
    Activity,
    ApiStatus,
    Balance,
    ConnectionPortalLink,
    DeletedUser,
    Position,
    RegisteredUser,
)
from aims_snaptrade.observability.telemetry import CallObserver, CallTelemetry, Endpoint
from aims_snaptrade.operations import ORDER_WRITES, Operation, get_operation
from aims_snaptrade.redaction import register_secret
from aims_snaptrade.retry import RetryPolicy
from aims_snaptrade.secret_cache import SecretCache
from aims_snaptrade.secrets._rows import check_user_id
from aims_snaptrade.settings import Settings

__all__ = ["CallOptions", "Core", "Flow"]

T = TypeVar("T")

PORTAL_LINK_LIFETIME = timedelta(minutes=5)
MAX_TIMEOUT = 600.0
"""Longest per-call timeout, seconds (as ``SNAPTRADE_READ_TIMEOUT``): beyond it a call is a hang."""
MAX_WAIT = 3600.0
"""Longest per-call wait for rate-limit budget, seconds."""
ACTIVITIES_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call overrides; anything left unset takes the client's value.

    Attributes:
        timeout: Seconds for connect and read, or ``(connect, read)``.
        rate_limit_mode: ``"wait"`` for budget or ``"fail"`` fast.
        max_wait: Longest wait for budget, seconds.
        retry: A :class:`~aims_snaptrade.retry.RetryPolicy` for this call.
        deadline: Seconds the whole call may take from its first attempt, retries included (the
            earlier of this and the retry policy's ``deadline`` applies). It bounds every wait:
            for rate-limit budget, for a pause SnapTrade asked for, for backoff, and each attempt's
            read timeout, shortened to what is left. The call returns by then (plus at most one
            connect timeout) or raises :class:`~aims_snaptrade.errors.SnapTradeDeadlineExceededError`
            saying what it was waiting for.
    """

    timeout: float | tuple[float, float] | None = None
    rate_limit_mode: Literal["wait", "fail"] | None = None
    max_wait: float | None = None
    retry: RetryPolicy | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.timeout is not None:
            pair = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
            if len(pair) != 2 or not all(_positive_number(t) and t <= MAX_TIMEOUT for t in pair):
                problems.append(
                    f"timeout must be seconds in (0, {MAX_TIMEOUT:g}] or a (connect, read) pair of them, "
                    f"got {self.timeout!r}"
                )
        if self.rate_limit_mode not in (None, "wait", "fail"):
            problems.append(f"rate_limit_mode must be 'wait' or 'fail', got {self.rate_limit_mode!r}")
        if self.max_wait is not None and not (
            (_positive_number(self.max_wait) or self.max_wait == 0) and self.max_wait <= MAX_WAIT
        ):
            problems.append(f"max_wait must be seconds in [0, {MAX_WAIT:g}], got {self.max_wait!r}")
        if self.deadline is not None and not _positive_number(self.deadline):
            problems.append(f"deadline must be positive seconds, got {self.deadline!r}")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            problems.append(f"retry must be a RetryPolicy, got {type(self.retry).__name__}")
        if problems:
            raise e.SnapTradeValidationError("Invalid CallOptions: " + "; ".join(problems) + ".")

    def timeouts(self, settings: Settings) -> Timeouts:
        """The connect and read timeouts of this call."""
        if self.timeout is None:
            return Timeouts(settings.connect_timeout, settings.read_timeout)
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        return Timeouts(float(connect), float(read))


_NO_OPTIONS = CallOptions()  # immutable: one instance serves every call given no options


def _positive_number(value: object) -> bool:
    # Finite: an infinite deadline or wait is a hang (None already means "the client's value").
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# --- effects -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send one request; the driver answers with a :class:`Response` or throws a mapped error."""

    operation: Operation
    arguments: Mapping[str, Any] = field(repr=False)
    timeouts: Timeouts


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take rate-limit budget for one request (may wait, or raise ``SnapTradeRateLimitError``).

    ``deadline`` is the seconds left of the call; the answer is the time the budget was taken.
    """

    operation: Operation
    user_id: str | None
    account_id: str | None
    mode: Literal["wait", "fail"] | None
    max_wait: float | None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Observe:
    """Feed a response's status and headers back to the rate limiter (no storage IO).

    ``sent_at`` is :class:`Acquire`'s answer and ``user_id`` its user; the answer is the scope a
    429 paused, if any.
    """

    operation: Operation
    account_id: str | None
    status: int
    headers: Mapping[str, str]
    sent_at: float | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait before the next attempt."""

    seconds: float


@dataclass(frozen=True, slots=True)
class StoreCall:
    """Call a method of one of the stores the shell owns (blocking IO, so the shell performs it).

    ``store`` names the store: ``"secrets"`` (``get``, ``put``, ``delete``, ``begin_rotation``,
    ...) and whatever else a feature registers on the shell (consent, audit, order intents, sync
    ledger). The async shell runs every store call off its event loop.
    """

    method: str
    args: tuple[Any, ...] = field(repr=False)
    store: str = "secrets"


Effect = Send | Acquire | Observe | Sleep | StoreCall
Flow = Generator[Effect, Any, T]
"""A flow yields effects, receives their results, and returns its value."""


def _require_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise e.SnapTradeValidationError(f"{name} must be a non-empty string, got {type(value).__name__}.")
    return value


def _user_id(value: Any) -> str:
    """A user id every store accepts (the stores' shared rule), checked before anything is sent."""
    _require_text("user_id", value)
    try:
        return check_user_id(value)
    except e.SnapTradeValidationError as error:
        raise e.SnapTradeValidationError(
            f"{error.message}; got {len(value)} characters.", hint="Use the service's own stable user identifier."
        ) from None


def _checked_call(name: Any, arguments: Any, confirm: Any, options: Any) -> CallOptions:
    """Type checks of :meth:`Core.call`'s own parameters; the options to use."""
    if not isinstance(name, str):
        raise e.SnapTradeValidationError(f"The operation name must be a string, got {type(name).__name__}.")
    if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
        raise e.SnapTradeValidationError(f"Arguments of {name} must be keyword arguments.", operation=name)
    if not isinstance(confirm, bool):
        raise e.SnapTradeValidationError(
            f"confirm must be True or False, got {type(confirm).__name__}.",
            operation=name,
            hint="Pass confirm=True (the bool) to confirm a destructive call.",
        )
    return checked_options(options, name)


def checked_options(options: Any, operation: str | None = None) -> CallOptions:
    """``options`` as given (a fresh :class:`CallOptions` for ``None``); anything else is a validation error.

    For every flow that reads its options before handing them to :meth:`Core.call`.
    """
    if options is None:
        return _NO_OPTIONS
    if not isinstance(options, CallOptions):
        raise e.SnapTradeValidationError(
            f"options must be a CallOptions, got {type(options).__name__}.",
            operation=operation,
            hint="Pass options=CallOptions(timeout=..., rate_limit_mode=..., max_wait=..., retry=...).",
        )
    return options


# The SDK's own parameter containers: a caller passing them would bypass the library's checks.
_RESERVED = frozenset({"query_params", "header_params", "path_params"})

_MALFORMED = (ValidationError, TypeError, ValueError, AttributeError, KeyError, ArithmeticError)


def _parsed(response: Response, build: Callable[[Any], T]) -> T:
    """``build(response.body)``; a body of the wrong shape becomes a typed error without the body in it."""
    try:
        return build(response.body)
    except _MALFORMED as exc:
        if isinstance(exc, ValidationError):
            places = sorted({".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors()})
            what = "unexpected values at " + ", ".join(places[:5])
        else:
            what = str(exc) if isinstance(exc, TypeError) else type(exc).__name__
        # `from None`: the original's text (pydantic's included) can quote the body.
        raise e.SnapTradeMalformedResponseError(
            f"SnapTrade answered {response.operation} with a body the library cannot read ({what}).",
            operation=response.operation,
            status=response.status,
            request_id=response.request_id,
        ) from None


def _object(body: Any) -> Mapping[str, Any]:
    """The body as a JSON object (an empty body reads as an empty object)."""
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise TypeError(f"the body is a {type(body).__name__}, not an object")
    return body


def _list(value: Any, what: str = "the body") -> list[Any]:
    """A JSON array (missing or null reads as empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{what} is a {type(value).__name__}, not a list")
    return value


class Core:
    """Everything the two clients share: settings, policy and the flows."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry: RetryPolicy,
        consent: ConsentChecker | None,
        audit: bool = False,
    ) -> None:
        self.settings = settings
        self.retry = retry
        # Compliance: the shell registers ``consent`` (a lookup) and ``audit`` (a trail) as stores.
        self.consent = consent
        self.audit = audit
        self.rollout = Rollout.parse(settings.rollout) if settings.rollout and settings.rollout.strip() else None
        self._endpoint = Endpoint.of(settings.base_url)
        self.observers: list[CallObserver] = []
        """Called with every finished attempt and call (see :mod:`~aims_snaptrade.observability.health`)."""
        self.secrets = SecretCache(settings.secret_cache_size)
        self._timeouts = _NO_OPTIONS.timeouts(settings)  # the settings' own, for calls that set none

    # --- the road ------------------------------------------------------------------------------

    def call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        confirm: bool = False,
        options: CallOptions | None = None,
        budget_account: str | None = None,
        exempt: bool = False,
    ) -> Flow[Response]:
        """The one road: every request, from a helper or :meth:`SafeSnapTradeClient.call`.

        ``budget_account`` names the account whose budgets a request draws on when its arguments
        carry none (placing a checked trade addresses the trade, not the account).

        ``exempt`` skips the rollout and consent checks, for the data-rights flows only (a person
        may export or erase their data after withdrawing consent); such calls are audited too.
        """
        checked = _checked_call(name, arguments, confirm, options)
        operation = get_operation(name)
        telemetry = CallTelemetry(
            operation,
            self._endpoint,
            observers=self.observers,
            include_ids=self.settings.telemetry_include_user_ids,
        )
        trace = _Trace(time.perf_counter())
        try:
            try:
                response = yield from self._road(
                    operation, arguments, confirm, checked, telemetry, budget_account, trace, exempt
                )
            except e.SnapTradeAuthError as rejected:
                if not (yield from self._refreshed_secret(operation, arguments, rejected)):
                    raise
                # SnapTrade never processes a request it answers 1083, so one resend is safe.
                telemetry.retrying(0.0)
                response = yield from self._road(
                    operation, arguments, confirm, checked, telemetry, budget_account, trace, exempt
                )
        except e.SnapTradeError as error:
            telemetry.failed(error)
            if self.audit:
                yield from self._audit_call(operation, arguments, trace, error.status, error.request_id, error)
            raise
        except BaseException as error:
            telemetry.failed(error)
            raise
        telemetry.succeeded(response.status, response.request_id)
        if self.audit:
            yield from self._audit_call(operation, arguments, trace, response.status, response.request_id, None)
        return response

    def call_any(
        self, name: str, arguments: Mapping[str, Any], *, confirm: bool = False, options: CallOptions | None = None
    ) -> Flow[Response]:
        """The public ``call()``: :meth:`call`, except for order writes, which only the trading flows send.

        An order sent without its intent journaled first cannot be reconciled when its answer is
        lost, so ``call()`` refuses every order write (:data:`~aims_snaptrade.operations.ORDER_WRITES`)
        with the method that sends it safely, before anything else is checked or sent.

        Not a generator itself: it checks at once and hands back :meth:`call`'s flow, so every
        effect of the call resumes one generator fewer.
        """
        if isinstance(name, str) and name in ORDER_WRITES:
            safe = ORDER_WRITES[name]
            raise e.SnapTradeGuardrailError(
                f"call() does not send order writes ({name}): an order sent without its intent journaled "
                "first could be placed twice after a lost answer; nothing was sent.",
                operation=name,
                hint=f"Use {safe}: it journals the intent and reconciles a lost answer."
                if safe
                else f"The library has no journaled flow for {name} yet, so it is refused; "
                "equity orders go through preview_order / place_order / place_order_now.",
            )
        return self.call(name, arguments, confirm=confirm, options=options)

    def _audit_call(
        self,
        operation: Operation,
        arguments: Mapping[str, Any],
        trace: _Trace,
        status: int | None,
        request_id: str | None,
        error: e.SnapTradeError | None,
    ) -> Flow[None]:
        duration = (time.perf_counter() - trace.started) * 1000
        if not trace.sent and error is not None:
            yield from self._record_refusal(operation.name, arguments, error, status, request_id, duration)
            return
        event = AuditEvent(
            kind="call",
            action=operation.name,
            user_id=_audited_id(arguments.get("user_id")),
            account_id=_audited_id(arguments.get("account_id")),
            outcome="ok" if error is None else type(error).__name__,
            status=status,
            request_id=request_id,
            attempts=trace.sent,
            duration_ms=duration,
            # A write to SnapTrade is on disk before the call returns; reads survive a crash of
            # this process but may be lost with the machine (see docs/compliance.md).
            durable=not operation.idempotent,
        )
        yield from self.record(event, request_id=request_id, succeeded=error is None)

    def _record_refusal(
        self,
        action: str,
        arguments: Mapping[str, Any],
        error: e.SnapTradeError,
        status: int | None = None,
        request_id: str | None = None,
        duration_ms: float | None = None,
    ) -> Flow[None]:
        """The one audit record of a refusal: whatever stopped an operation before anything was sent."""
        event = AuditEvent(
            kind="refused",
            action=action,
            user_id=_audited_id(arguments.get("user_id")),
            account_id=_audited_id(arguments.get("account_id")),
            outcome=type(error).__name__,
            status=status,
            request_id=request_id,
            attempts=0,
            duration_ms=duration_ms,
            durable=False,
        )
        yield from self.record(event, request_id=request_id, succeeded=False)

    def refuse(self, error: e.SnapTradeError, arguments: Mapping[str, Any]) -> Flow[NoReturn]:
        """Audit a refusal decided outside :meth:`call` (a flow's own local check), then raise it.

        ``arguments`` name the user and account concerned (``user_id``, ``account_id``). Refusals
        inside :meth:`call` are recorded by the road itself: each refusal is one record.
        """
        if self.audit:
            yield from self._record_refusal(error.operation or "unknown", arguments, error)
        raise error

    def admit_or_refuse(
        self, operation: Operation, arguments: Mapping[str, Any], *, confirm: bool = False
    ) -> Flow[None]:
        """:meth:`admit` for flows that check before journaling: a refusal is audited, then raised."""
        try:
            yield from self.admit(operation, arguments, confirm=confirm)
        except e.SnapTradeError as refused:
            if refused.operation is None:
                refused.operation = operation.name
            yield from self.refuse(refused, arguments)

    def record(self, event: AuditEvent, *, request_id: str | None = None, succeeded: bool = True) -> Flow[None]:
        """Append ``event`` to the audit trail when one is configured (an effect, like any IO)."""
        if not self.audit:
            return
        try:
            yield StoreCall("append", (event,), store="audit")
        except e.SnapTradeError as failure:
            done = "succeeded" if succeeded else "failed"
            raise e.SnapTradeAuditError(
                f"The audit trail could not record {event.action} ({type(failure).__name__}); "
                f"the {event.kind} itself {done}.",
                operation=event.action,
                request_id=request_id,
            ) from failure

    def _stored_secret(self, name: str, user_id: str) -> Flow[str]:
        """The user's secret from the store, remembered in the cache."""
        secret = yield StoreCall("get", (user_id,))
        if secret is None:
            raise e.SnapTradeNotFoundError(
                f"No user secret is stored for user {user_id!r}.",
                operation=name,
                hint="Register the user with register_user() first (it stores the secret).",
            )
        self.secrets.put(user_id, secret)
        return secret  # type: ignore[no-any-return]

    def _refreshed_secret(
        self, operation: Operation, arguments: Mapping[str, Any], rejected: e.SnapTradeAuthError
    ) -> Flow[bool]:
        """After a 1083 on a cached secret: ``True`` when the store holds another one (now cached).

        A secret rotated or deleted through another replica is only noticed when SnapTrade rejects
        the cached copy; the store is the source of truth.
        """
        user_id = arguments.get("user_id")
        if (
            rejected.code != "1083"
            or not operation.needs_user_secret
            or self.settings.key_type != "commercial"
            or arguments.get("user_secret") is not None
            or not isinstance(user_id, str)
        ):
            return False
        stale = self.secrets.get(user_id)
        if stale is None:  # the rejected secret was read from the store itself
            return False
        self.secrets.forget(user_id)
        fresh = yield StoreCall("get", (user_id,))
        if fresh is None or fresh == stale:
            return False
        register_secret(fresh)
        self.secrets.put(user_id, fresh)
        return True

    def _road(
        self,
        operation: Operation,
        arguments: Mapping[str, Any],
        confirm: bool,
        options: CallOptions,
        telemetry: CallTelemetry,
        budget_account: str | None,
        trace: _Trace,
        exempt: bool,
    ) -> Flow[Response]:
        name = operation.name
        args = dict(arguments)
        reserved = _RESERVED & args.keys()
        if reserved:
            raise e.SnapTradeValidationError(
                f"{min(reserved)} is not accepted; pass parameters by their SDK keyword names.", operation=name
            )
        timeouts = self._timeouts if options.timeout is None else options.timeouts(self.settings)
        yield from self.admit(operation, args, confirm=confirm, exempt=exempt)
        user_id = args.get("user_id")
        commercial = self.settings.key_type == "commercial"
        checked_user = _user_id(user_id) if operation.user_scoped and commercial else None
        if operation.needs_user_secret and commercial:
            given = args.get("user_secret")
            if given is not None and (not isinstance(given, str) or not given):
                # Checked before registration for redaction: a bad value must change nothing.
                raise e.SnapTradeValidationError(
                    f"user_secret must be a non-empty string, got {type(given).__name__}.", operation=name
                )
            if given is None:
                user = _user_id(user_id) if checked_user is None else checked_user
                args["user_secret"] = self.secrets.get(user) or (yield from self._stored_secret(name, user))
            register_secret(args["user_secret"])
        elif self.settings.key_type == "personal":
            # Personal keys carry no user secret: never send one, even if the caller passed it.
            args.pop("user_secret", None)
        account_id = budget_account or (args.get("account_id") if isinstance(args.get("account_id"), str) else None)
        budget_user = user_id if isinstance(user_id, str) else None
        telemetry.subject(budget_user, account_id)
        idempotency_key = args.get(operation.idempotency_param) if operation.idempotency_param else None
        policy = options.retry or self.retry
        deadline = _earliest(options.deadline, policy.deadline)
        started = time.monotonic()  # one clock for the whole call: tenacity's, from the first attempt
        attempt = _Attempt(operation, args, options, timeouts, telemetry, trace, budget_user, account_id, deadline)
        policy.stats.add("attempts")
        try:
            response = yield from self._attempt(attempt, started)
        except e.SnapTradeError as error:
            failure = error
        else:
            # Most calls succeed at once: they settle with the budget without building tenacity's
            # objects, which only the retries below need.
            policy.first_attempt_succeeded()
            return response
        run = policy.start(operation, has_idempotency_key=bool(idempotency_key), deadline=deadline)
        retrying = tenacity.Retrying(**run.kwargs)
        state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
        state.start_time = started
        retrying.begin()
        state.set_exception((type(failure), failure, failure.__traceback__))  # attempt 1, counted above
        while True:
            try:
                do = retrying.iter(state)
            except e.SnapTradeError as error:
                final = _final(operation, error)
                if isinstance(final, e.SnapTradeDeadlineExceededError):
                    final.deadline = deadline
                elif run.stopped_by_deadline and final is error:
                    raise _backoff_past(operation, error, deadline, state.upcoming_sleep) from error
                raise final from error.__cause__
            if isinstance(do, tenacity.DoAttempt):
                try:
                    response = yield from self._attempt(attempt, started)
                except e.SnapTradeError as error:
                    state.set_exception((type(error), error, error.__traceback__))
                else:
                    state.set_result(response)
            elif isinstance(do, tenacity.DoSleep):
                state.prepare_for_next_attempt()
                telemetry.retrying(float(do))
                yield Sleep(float(do))
            else:
                # tenacity hands back the successful result; failures were raised by iter() above.
                return do  # type: ignore[no-any-return]

    def _attempt(self, at: _Attempt, started: float) -> Flow[Response]:
        """One attempt: budget, the request, feedback to the limiter. A failure is raised, observed."""
        operation, deadline, telemetry = at.operation, at.deadline, at.telemetry
        sent_at = None
        try:
            telemetry.acquiring()
            options = at.options
            sent_at = yield Acquire(
                operation,
                at.user_id,
                at.account_id,
                options.rate_limit_mode,
                options.max_wait,
                _left(deadline, started),
            )
            left = _left(deadline, started)
            timeouts = at.timeouts
            limits = timeouts if left is None or left >= timeouts.read else Timeouts(timeouts.connect, left)
            if limits.read <= 0:
                raise _no_time(operation, deadline, "rate-limit budget")
            telemetry.sending()
            at.trace.sent += 1
            try:
                response = yield Send(operation, at.args, limits)
            except e.SnapTradeTimeoutError as timed_out:
                # The read timeout was the deadline's: no time is left for another attempt.
                if limits is timeouts or _final(operation, timed_out) is not timed_out:
                    raise
                raise _no_time(operation, deadline, "response") from timed_out
        except e.SnapTradeError as error:
            telemetry.attempt_failed(error)
            if error.status is not None:
                scope = yield Observe(operation, at.account_id, error.status, error.headers or {}, sent_at, at.user_id)
                if scope is not None and isinstance(error, e.SnapTradeRateLimitError):
                    error.limit_scope = scope  # the scope the limiter now pauses
            raise
        telemetry.attempt_succeeded(response.status)
        yield Observe(operation, at.account_id, response.status, response.headers, sent_at, at.user_id)
        return response  # type: ignore[no-any-return]

    def admit(
        self, operation: Operation, arguments: Mapping[str, Any], *, confirm: bool = False, exempt: bool = False
    ) -> Flow[None]:
        """The local checks of the road, before anything is sent: guardrails, rollout, consent.

        Consent is read from the consent store every time (an effect the shell performs), so a
        revocation by any replica refuses the next call. Flows that journal something before
        calling the road (trading) run this first.
        """
        check_call(self.settings, operation, arguments, confirm=confirm)
        user_id = arguments.get("user_id")
        if exempt or not isinstance(user_id, str):
            return
        self._check_rollout(operation, user_id)
        scope = consent_scope(operation)
        if scope and self.consent is not None and self.settings.consent_required:
            decision = yield StoreCall("decide", (user_id, scope), store="consent")
            if not decision.allowed:
                raise _consent_refusal(operation.name, user_id, decision)

    # --- consent -------------------------------------------------------------------------------

    def grant_consent(
        self,
        user_id: str,
        scope: str,
        *,
        disclosure_version: str,
        source: str,
        expires_at: datetime | None = None,
    ) -> Flow[ConsentRecord]:
        """Record the user's consent for ``scope`` in the consent store, then audit it (durably)."""
        self._consent_store("grant_consent")
        args = (user_id, scope, disclosure_version, source, None, expires_at)
        record: ConsentRecord = yield StoreCall("grant", args, store="consent")
        detail = {"scope": scope, "disclosure_version": disclosure_version, "source": source}
        expiry = record.expires_at.isoformat()
        yield from self.record(
            AuditEvent("consent", "consent.grant", user_id=user_id, detail={**detail, "expires_at": expiry})
        )
        return record

    def revoke_consent(self, user_id: str, scope: str | None = None, *, source: str) -> Flow[int]:
        """Revoke the user's consent for ``scope`` (every scope when ``None``), then audit it."""
        self._consent_store("revoke_consent")
        revoked: int = yield StoreCall("revoke", (user_id, scope, source), store="consent")
        detail: dict[str, str | int] = {"scope": scope or "all", "source": source, "revoked": revoked}
        yield from self.record(AuditEvent("consent", "consent.revoke", user_id=user_id, detail=detail))
        return revoked

    def _consent_store(self, what: str) -> None:
        if self.consent is None or not hasattr(self.consent, "grant"):
            raise e.SnapTradeConfigurationError(
                f"{what} needs a consent store; set SNAPTRADE_CONSENT_STORE_URL or pass consent=<ConsentStore>."
            )

    def _check_rollout(self, operation: Operation, user_id: str) -> None:
        # Deleting a user stays possible outside the rollout: rolling back must be able to clean up.
        if self.rollout is None or not operation.user_scoped or operation.name == "delete_snap_trade_user":
            return
        if not self.rollout.includes(user_id):
            raise e.SnapTradeRolloutError(
                f"User {user_id!r} is outside the SnapTrade rollout (SNAPTRADE_ROLLOUT); {operation.name} was refused.",
                operation=operation.name,
            )

    def api_status(self, options: CallOptions | None = None) -> Flow[ApiStatus]:
        """SnapTrade's status, with the local clock's skew against the server's."""
        response = yield from self.call("check", {}, options=options)
        status = _parsed(response, lambda body: ApiStatus.from_answer(_object(body)))
        if status.timestamp is not None:
            server = status.timestamp if status.timestamp.tzinfo else status.timestamp.replace(tzinfo=UTC)
            skew = (datetime.now(UTC) - server).total_seconds()
            status = status.model_copy(update={"clock_skew_seconds": round(skew, 3)})
        return status

    def register_user(self, user_id: str, options: CallOptions | None = None) -> Flow[RegisteredUser]:
        """Register a SnapTrade user and store the secret SnapTrade issues before returning.

        Every local check comes first: the id must suit the secret store, and the store must
        answer, before SnapTrade creates a user whose secret could not be kept.
        """
        user_id = _user_id(user_id)
        yield StoreCall("get", (user_id,))
        try:
            response = yield from self.call("register_snap_trade_user", {"user_id": user_id}, options=options)
        except e.SnapTradeUnknownOutcomeError as lost:
            raise e.SnapTradeUnknownOutcomeError(
                f"registerUser for {user_id!r} may have succeeded but its answer was lost, so the "
                "user's secret is unknown.",
                operation="register_snap_trade_user",
                request_id=lost.request_id,
                hint=(
                    "Do not retry registration (it would answer 1010 'already exists'). Delete the user "
                    "with delete_user(user_id, confirm=True), then register it again."
                ),
            ) from lost
        except e.SnapTradeConflictError as exists:
            # 1010: say whether the secret is here (nothing is lost) or not (the user must be re-created).
            stored = yield StoreCall("get", (user_id,))
            raise _already_registered(user_id, stored is not None, exists) from exists
        body = response.body if isinstance(response.body, Mapping) else {}
        secret = body.get("userSecret")
        if not isinstance(secret, str) or not secret:
            raise e.SnapTradeMalformedResponseError(
                f"registerUser for {user_id!r} answered without a userSecret.",
                operation="register_snap_trade_user",
                request_id=response.request_id,
                hint="Delete the user and register it again; report the request id to SnapTrade.",
            )
        register_secret(secret)
        yield StoreCall("put", (user_id, secret))
        self.secrets.put(user_id, secret)
        yield from self.record(AuditEvent("secret", "secret.put", user_id=user_id))
        answered = body.get("userId")
        return RegisteredUser(user_id=answered if isinstance(answered, str) and answered else user_id)

    def ensure_user(self, user_id: str, options: CallOptions | None = None) -> Flow[RegisteredUser]:
        """Get or register: the user whose secret is stored (no request sent), else :meth:`register_user`.

        ``created`` on the result says which happened. A stored secret is trusted as it is; a call
        that SnapTrade answers 1083 later means it is stale (see docs/errors.md).
        """
        user_id = _user_id(user_id)
        stored = yield StoreCall("get", (user_id,))
        if stored is not None:
            return RegisteredUser(user_id=user_id, created=False)
        return (yield from self.register_user(user_id, options))

    def rotate_user_secret(self, user_id: str, options: CallOptions | None = None) -> Flow[RegisteredUser]:
        """Rotate a user's secret (``resetUserSecret``) without ever holding only a lost secret.

        The rotation is marked pending before the call, the new secret is written durably the
        moment it arrives, and only then is the marker cleared. A crash in between leaves the
        marker, which the store reports on the next start (``pending_rotations()``).
        """
        user_id = _user_id(user_id)
        old = yield StoreCall("get", (user_id,))
        if old is None:
            raise e.SnapTradeNotFoundError(f"No user secret is stored for user {user_id!r}.")
        yield StoreCall("begin_rotation", (user_id,))
        yield from self.record(AuditEvent("secret", "secret.rotation.begin", user_id=user_id))
        try:
            response = yield from self.call(
                "reset_snap_trade_user_secret", {"user_id": user_id, "user_secret": old}, options=options
            )
        except e.SnapTradeUnknownOutcomeError as lost:
            raise e.SnapTradeSecretRotationError(
                f"resetUserSecret for {user_id!r} may have succeeded but the new secret was lost.",
                operation="reset_snap_trade_user_secret",
                request_id=lost.request_id,
            ) from lost
        except e.SnapTradeError:
            # A definite refusal: the old secret is still the valid one.
            yield StoreCall("abort_rotation", (user_id,))
            yield from self.record(AuditEvent("secret", "secret.rotation.abort", user_id=user_id))
            raise
        body = response.body if isinstance(response.body, Mapping) else {}
        new = body.get("userSecret")
        if not isinstance(new, str) or not new:
            raise e.SnapTradeSecretRotationError(
                f"resetUserSecret for {user_id!r} answered without a userSecret.",
                operation="reset_snap_trade_user_secret",
                request_id=response.request_id,
            )
        register_secret(new)
        self.secrets.forget(user_id)
        yield StoreCall("complete_rotation", (user_id, new))
        self.secrets.put(user_id, new)
        yield from self.record(AuditEvent("secret", "secret.rotation.complete", user_id=user_id))
        return RegisteredUser(user_id=user_id)

    def resolve_secret_rotation(self, user_id: str, options: CallOptions | None = None) -> Flow[bool]:
        """Settle an interrupted rotation: keep the stored secret if SnapTrade still accepts it.

        A pending marker means the new secret was never stored. If the reset never reached
        SnapTrade, the stored secret still works: the marker is cleared and ``True`` returned
        (``False`` when no rotation was pending). If SnapTrade answers 1083, the reset happened and
        its secret is lost: :class:`~aims_snaptrade.errors.SnapTradeSecretRotationError` says how
        to recover.
        """
        user_id = _user_id(user_id)
        pending = yield StoreCall("pending_rotations", ())
        if user_id not in pending:
            return False
        try:
            yield from self.call("list_brokerage_authorizations", {"user_id": user_id}, options=options)
        except e.SnapTradeAuthError as rejected:
            raise e.SnapTradeSecretRotationError(
                f"SnapTrade rejects the stored secret of {user_id!r}: the interrupted rotation did reset the "
                "secret, and the new one is lost.",
                operation="reset_snap_trade_user_secret",
                request_id=rejected.request_id,
                hint=(
                    "Delete the user (delete_user(user_id, confirm=True)), register it again and have the "
                    "person reconnect their brokerage."
                ),
            ) from rejected
        yield StoreCall("abort_rotation", (user_id,))
        yield from self.record(AuditEvent("secret", "secret.rotation.abort", user_id=user_id))
        return True

    def delete_user(self, user_id: str, *, confirm: bool, options: CallOptions | None = None) -> Flow[DeletedUser]:
        """Delete a SnapTrade user (queued by SnapTrade) and purge its local secret."""
        user_id = _user_id(user_id)
        response = yield from self.call(
            "delete_snap_trade_user", {"user_id": user_id}, confirm=confirm, options=options
        )
        self.secrets.forget(user_id)
        removed = yield StoreCall("delete", (user_id,))
        yield from self.record(
            AuditEvent("secret", "secret.delete", user_id=user_id, detail={"removed": bool(removed)})
        )
        body = response.body if isinstance(response.body, Mapping) else {}
        # The user is deleted whatever the body says: its fields are informational, so odd ones are dropped.
        status, detail = body.get("status"), body.get("detail")
        return DeletedUser(
            user_id=user_id,
            status=status if isinstance(status, str) else None,
            detail=detail if isinstance(detail, str) else None,
            local_secret_removed=bool(removed),
        )

    def connection_portal_url(
        self,
        user_id: str,
        *,
        broker: str | None = None,
        connection_type: Literal["read", "trade", "trade-if-available"] = "read",
        custom_redirect: str | None = None,
        reconnect: str | None = None,
        immediate_redirect: bool | None = None,
        options: CallOptions | None = None,
    ) -> Flow[ConnectionPortalLink]:
        """A Connection Portal link for the user to connect (or, with ``reconnect``, repair) a brokerage.

        ``immediate_redirect=True`` sends the person straight back to ``custom_redirect`` when the
        attempt ends, skipping the portal's finish screen; read the outcome with
        :meth:`~aims_snaptrade.portal.PortalResult.from_redirect`.
        """
        if immediate_redirect is not None and not isinstance(immediate_redirect, bool):
            raise e.SnapTradeValidationError(
                f"immediate_redirect must be True, False or None, got {type(immediate_redirect).__name__}."
            )
        if connection_type not in ("read", "trade", "trade-if-available"):
            raise e.SnapTradeValidationError(
                f"connection_type must be 'read', 'trade' or 'trade-if-available', got {connection_type!r}."
            )
        if connection_type != "read" and not self.settings.trading_enabled:
            raise e.SnapTradeGuardrailError(
                f"A {connection_type!r} connection grants trading, and trading is disabled.",
                operation="login_snap_trade_user",
                hint="Ask for connection_type='read', or enable trading for this service.",
            )
        arguments: dict[str, Any] = {"user_id": user_id, "connection_type": connection_type}
        for key, value in (
            ("broker", broker),
            ("custom_redirect", custom_redirect),
            ("reconnect", reconnect),
            ("immediate_redirect", immediate_redirect),
        ):
            if value is not None:
                arguments[key] = value
        issued = datetime.now(UTC)
        response = yield from self.call("login_snap_trade_user", arguments, options=options)
        return _parsed(
            response,
            lambda body: ConnectionPortalLink.from_answer(_object(body), expires_at=issued + PORTAL_LINK_LIFETIME),
        )

    def list_accounts(self, user_id: str, options: CallOptions | None = None) -> Flow[list[Account]]:
        """Every account of the user across all connections."""
        response = yield from self.call("list_all_user_accounts", {"user_id": user_id}, options=options)
        return _parsed(
            response, lambda body: [Account.from_api(item) for item in _list(_object(body).get("results"), "results")]
        )

    def get_balances(self, user_id: str, account_id: str, options: CallOptions | None = None) -> Flow[list[Balance]]:
        """Cash and buying power of one account, per currency."""
        _require_text("account_id", account_id)
        response = yield from self.call(
            "get_user_account_balance", {"user_id": user_id, "account_id": account_id}, options=options
        )
        return _parsed(response, lambda body: [Balance.from_answer(_object(item)) for item in _list(body)])

    def get_positions(self, user_id: str, account_id: str, options: CallOptions | None = None) -> Flow[list[Position]]:
        """Every position of one account."""
        _require_text("account_id", account_id)
        response = yield from self.call(
            "get_all_account_positions", {"user_id": user_id, "account_id": account_id}, options=options
        )
        return _parsed(
            response, lambda body: [Position.from_api(item) for item in _list(_object(body).get("results"), "results")]
        )

    def get_activities(
        self,
        user_id: str,
        account_id: str,
        *,
        start_date: Any = None,
        end_date: Any = None,
        type: str | None = None,
        options: CallOptions | None = None,
    ) -> Flow[list[Activity]]:
        """Every activity of one account, following SnapTrade's pagination to the last page."""
        _require_text("account_id", account_id)
        base: dict[str, Any] = {"user_id": user_id, "account_id": account_id, "limit": ACTIVITIES_PAGE_SIZE}
        for key, value in (("start_date", start_date), ("end_date", end_date), ("type", type)):
            if value is not None:
                base[key] = value
        activities: list[Activity] = []
        offset = 0
        while True:
            response = yield from self.call("get_account_activities", {**base, "offset": offset}, options=options)
            page, total = _parsed(response, _activity_page)
            activities.extend(page)
            offset += len(page)
            if not page or (isinstance(total, int) and offset >= total) or len(page) < ACTIVITIES_PAGE_SIZE:
                return activities


def _activity_page(body: Any) -> tuple[list[Activity], int | None]:
    """One page of activities and the total SnapTrade reports, if any."""
    page = _object(body)
    pagination = page.get("pagination")
    total = _object(pagination).get("total") if pagination is not None else None
    activities = [Activity.from_api(item) for item in _list(page.get("data"), "data")]
    return activities, total if isinstance(total, int) and not isinstance(total, bool) else None


def _already_registered(user_id: str, stored: bool, exists: e.SnapTradeConflictError) -> e.SnapTradeConflictError:
    """The 1010 of a second ``registerUser``, with the fix that matches what the store holds."""
    if stored:
        message = f"User {user_id!r} is already registered with SnapTrade and its secret is stored here."
        hint = "Nothing is lost: use the user as it is, or call ensure_user(user_id) to get or register in one step."
    else:
        message = f"User {user_id!r} is already registered with SnapTrade, but no secret for it is stored here."
        hint = (
            "Its secret is lost to this service (another store, or an earlier answer that never arrived): "
            "delete_user(user_id, confirm=True), register it again and have the person reconnect their brokerage."
        )
    return e.SnapTradeConflictError(
        message,
        operation=exists.operation,
        status=exists.status,
        code=exists.code,
        request_id=exists.request_id,
        hint=hint,
    )


def _earliest(*deadlines: float | None) -> float | None:
    given = [d for d in deadlines if d is not None]
    return min(given) if given else None


@dataclass(slots=True)  # built on every call and never changed; a frozen dataclass is slower to build
class _Attempt:
    """What every attempt of one call sends and with which limits."""

    operation: Operation
    args: dict[str, Any] = field(repr=False)
    options: CallOptions
    timeouts: Timeouts
    telemetry: CallTelemetry
    trace: _Trace
    user_id: str | None
    account_id: str | None
    deadline: float | None


def _left(deadline: float | None, started: float) -> float | None:
    """Seconds left of the call's deadline, on tenacity's clock (``time.monotonic``)."""
    if deadline is None:
        return None
    return deadline - (time.monotonic() - started)


def _no_time(operation: Operation, deadline: float | None, waiting_for: str) -> e.SnapTradeDeadlineExceededError:
    return e.SnapTradeDeadlineExceededError(
        f"{operation.name}: the call's deadline of {deadline} s ran out while waiting for the {waiting_for}.",
        waiting_for=waiting_for,
        deadline=deadline,
        operation=operation.name,
    )


def _backoff_past(
    operation: Operation, error: e.SnapTradeError, deadline: float | None, wait: float
) -> e.SnapTradeDeadlineExceededError:
    """The next attempt would start past the deadline: say so, with the last failure as the cause."""
    throttled = isinstance(error, e.SnapTradeRateLimitError)
    return e.SnapTradeDeadlineExceededError(
        f"{operation.name}: not retried: the next attempt would start in {wait:.2f} s, past the call's "
        f"deadline of {deadline} s; the last attempt failed with {type(error).__name__}: {error.message}",
        waiting_for="retry backoff",
        deadline=deadline,
        retry_after=round(wait, 3),
        limit_scope=error.limit_scope if throttled else None,  # type: ignore[attr-defined]
        status=error.status,
        code=error.code,
        request_id=error.request_id,
        operation=operation.name,
    )


def _final(operation: Operation, error: e.SnapTradeError) -> e.SnapTradeError:
    """A write that may have taken effect becomes an unknown outcome, never a plain failure.

    That is a write whose request left without an answer coming back, or that SnapTrade answered
    with a 5xx (a server failure after the request arrived says nothing about what it changed).
    """
    if operation.idempotent:
        return error
    lost = isinstance(error, e.SnapTradeConnectionError) and error.request_sent
    failed = error.status is not None and error.status >= 500
    if not (lost or failed):
        return error
    what = "no answer came back" if lost else f"SnapTrade answered {error.status}"
    outcome = e.SnapTradeUnknownOutcomeError(
        f"{operation.name} was sent and {what} ({error.message}); it may have taken effect.",
        status=error.status,
        code=error.code,
        request_id=error.request_id,
        operation=operation.name,
        headers=error.headers,
    )
    outcome.__cause__ = error.__cause__
    return outcome


@dataclass(slots=True)
class _Trace:
    """What the audit record of one call needs from the road: when it started, requests sent."""

    started: float
    sent: int = 0


def _audited_id(value: object) -> str | None:
    """An id as the audit trail may hold it: a valid id, else ``None`` (a refusal of a malformed
    id is still recorded, without the id, rather than failing to record it)."""
    if not isinstance(value, str):
        return None
    try:
        return check_id(value)
    except e.SnapTradeValidationError:
        return None


def _consent_refusal(operation: str, user_id: str, decision: ConsentDecision) -> e.SnapTradeConsentRequiredError:
    when = decision.expires_at.isoformat() if decision.expires_at else None
    if decision.reason == "expired":
        why = f"it expired at {when}"
    elif decision.reason == "revoked" and decision.revoked_at is not None:
        why = f"it was revoked at {decision.revoked_at.isoformat()}"
    else:
        why = "none is on record"
    return e.SnapTradeConsentRequiredError(
        f"User {user_id!r} has no current {decision.scope!r} consent for {operation}: {why}.",
        operation=operation,
        scope=decision.scope,
        reason=decision.reason,
        expires_at=decision.expires_at,
        hint=f"Ask the person for {decision.scope!r} consent and record it (grant_consent); nothing was sent.",
    )
