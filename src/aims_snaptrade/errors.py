"""The error taxonomy: every failure the library reports is one of these.

Each error carries the HTTP ``status`` (``None`` when no response arrived), SnapTrade's body
``code``, the ``request_id`` from ``X-Request-ID``, the ``operation`` name, whether it is
``retryable`` and a ``hint`` saying what the caller should do. ``str()`` reads as one log line;
``repr()`` is safe to log. Messages are passed through :mod:`aims_snaptrade.redaction` when the
error is built, so no credential can ride along in them.

Branch on the class, not on the text::

    try:
        client.get_positions(user_id, account_id)
    except SnapTradeConnectionDisabledError as exc:
        send_user_to(client.connection_portal_url(user_id, reconnect=exc.authorization_id))
    except SnapTradeRateLimitError as exc:
        schedule_retry(after=exc.retry_after)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aims_snaptrade._masking import redact

__all__ = [
    "SnapTradeAuditError",
    "SnapTradeAuthError",
    "SnapTradeBrokerageAuthError",
    "SnapTradeBrokerageError",
    "SnapTradeBrokerageUnavailableError",
    "SnapTradeBudgetExhaustedError",
    "SnapTradeConfigurationError",
    "SnapTradeConfirmationError",
    "SnapTradeConflictError",
    "SnapTradeConnectionDisabledError",
    "SnapTradeConnectionError",
    "SnapTradeConsentRequiredError",
    "SnapTradeDataNotReadyError",
    "SnapTradeDeadlineExceededError",
    "SnapTradeEndpointRetiredError",
    "SnapTradeError",
    "SnapTradeGuardrailError",
    "SnapTradeMalformedResponseError",
    "SnapTradeNotFoundError",
    "SnapTradeOrderIntentStoreError",
    "SnapTradeOrderLimitError",
    "SnapTradePermissionError",
    "SnapTradeRateLimitError",
    "SnapTradeRateLimiterUnavailableError",
    "SnapTradeRolloutError",
    "SnapTradeSchemaVersionError",
    "SnapTradeSecretDecryptionError",
    "SnapTradeSecretRotationError",
    "SnapTradeSecretStoreError",
    "SnapTradeServerError",
    "SnapTradeStoreError",
    "SnapTradeStoreNotCreatedError",
    "SnapTradeSyncInProgressError",
    "SnapTradeTimeoutError",
    "SnapTradeUnknownOutcomeError",
    "SnapTradeValidationError",
    "SnapTradeWebhookDedupeStoreError",
    "SnapTradeWebhookError",
    "SnapTradeWebhookMalformedError",
    "SnapTradeWebhookSignatureError",
    "SnapTradeWebhookStaleError",
    "UpstreamCause",
]


class SnapTradeError(Exception):
    """Base of every error raised by aims-snaptrade.

    Attributes:
        message: What went wrong, redacted.
        status: HTTP status of the response, ``None`` if no response was received.
        code: SnapTrade's error code from the response body (``"1076"``), if any.
        request_id: The ``X-Request-ID`` of the response: quote it to SnapTrade support.
        operation: The SDK operation name (``list_all_user_accounts``), if known.
        retryable: ``True`` when sending the same request again later may succeed.
        hint: What the caller should do about it.
        headers: The response headers, when a response arrived (rate-limit feedback).
    """

    default_hint: str = ""
    default_retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        operation: str | None = None,
        retryable: bool | None = None,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = redact(message)
        self.headers = dict(headers) if headers else None
        self.status = status
        self.code = code
        self.request_id = request_id
        self.operation = operation
        self.retryable = self.default_retryable if retryable is None else retryable
        self.hint = redact(hint) if hint is not None else self.default_hint
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [self.message]
        details = [
            f"{label}={value}"
            for label, value in (
                ("operation", self.operation),
                ("status", self.status),
                ("code", self.code),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        if details:
            parts.append(f"[{', '.join(details)}]")
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        return " ".join(parts)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("message", "status", "code", "request_id", "operation", "retryable")
        )
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (multiprocessing, job queues) with their attributes.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[SnapTradeError], message: str, state: dict[str, Any]) -> SnapTradeError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class UpstreamCause(Exception):
    """A redacted stand-in for a third-party exception (SDK, urllib3, aiohttp).

    Chained as ``__cause__`` of our errors instead of the original, whose text and attributes
    can hold the request URL with ``userSecret`` in it. It keeps the original's type name,
    redacted text and traceback frames.
    """


class SnapTradeConfigurationError(SnapTradeError):
    """The library is configured wrongly (settings, keys, stores); fix the configuration."""

    default_hint = "Fix the configuration named in the message; nothing was sent."


class SnapTradeStoreNotCreatedError(SnapTradeConfigurationError):
    """A store opened with ``create=False`` (as ``aims-snaptrade verify`` does) has no storage yet."""

    default_hint = "The first client to start creates it; check the URL names the storage you expect."


class SnapTradeSchemaVersionError(SnapTradeConfigurationError):
    """A store's tables are at a schema version this library cannot use as they are.

    Either a newer, incompatible release wrote them (upgrade this service), or they need a
    migration this open cannot make (a read-only open, or a role that may not alter tables): run
    ``aims-snaptrade migrate``. Nothing was changed. See ``docs/versioning.md``.

    Attributes:
        store: Which store (``"secrets"``, ``"consent"``, ``"audit"``, ``"order_intents"``,
            ``"webhook_claims"``, ``"sync_ledger"``).
        found: The schema version of the tables (0: not created yet).
        supported: The schema version this library writes.
    """

    default_hint = "Run `aims-snaptrade migrate` with the same settings, or upgrade aims-snaptrade."

    def __init__(self, message: str, *, store: str, found: int, supported: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.store = store
        self.found = found
        self.supported = supported


class SnapTradeGuardrailError(SnapTradeError):
    """A guardrail refused the call before any request was sent."""

    default_hint = "The call was refused locally and nothing was sent; see the message for the fix."


class SnapTradeConsentRequiredError(SnapTradeGuardrailError):
    """The end user has not given (or has withdrawn, or let expire) consent for this use.

    Attributes:
        scope: The consent scope the call needs (``"read"`` or ``"trade"``).
        reason: ``"missing"``, ``"expired"`` or ``"revoked"`` (``None`` when unknown).
        expires_at: When the consent expired (or would have), as an aware ``datetime``.
    """

    default_hint = "Record the user's consent before connecting or reading their brokerage data."

    def __init__(
        self,
        message: str,
        *,
        scope: str | None = None,
        reason: str | None = None,
        expires_at: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.scope = scope
        self.reason = reason
        self.expires_at = expires_at


class SnapTradeRolloutError(SnapTradeGuardrailError):
    """The user is outside the gradual rollout (``SNAPTRADE_ROLLOUT``); nothing was sent."""

    default_hint = "Add the user to the rollout's allow-list or raise its percentage once ready."


class SnapTradeConfirmationError(SnapTradeGuardrailError):
    """An order confirmation was refused: nothing was sent.

    Attributes:
        reason: ``"mismatch"`` (the token was issued for another preview, account, user or
            order terms), ``"expired"`` (the preview's trade expired: SnapTrade keeps it 5
            minutes) or ``"used"`` (this preview was already placed once).
    """

    default_hint = "Preview the order again (preview_order) and have the account owner confirm the new preview."

    def __init__(self, message: str, *, reason: str, **kwargs: Any) -> None:
        self.reason = reason
        super().__init__(message, **kwargs)


class SnapTradeOrderLimitError(SnapTradeGuardrailError):
    """An order's value exceeds the configured maximum notional per order: nothing was sent."""

    default_hint = "Split the order, or raise SNAPTRADE_MAX_ORDER_NOTIONAL if the limit is wrong."


class SnapTradeValidationError(SnapTradeError):
    """The request is malformed: caught locally before sending, or answered 400/422 by SnapTrade."""

    default_hint = "Correct the arguments named in the message; resending the same request will fail again."


class SnapTradeAuthError(SnapTradeError):
    """SnapTrade rejected the credentials (401).

    Code 1076 means the signature or consumer key is wrong (check ``SNAPTRADE_CONSUMER_KEY`` for
    stray whitespace and the machine clock); 1083 means the ``userId``/``userSecret`` pair is wrong.
    """

    default_hint = (
        "Check SNAPTRADE_CLIENT_ID / SNAPTRADE_CONSUMER_KEY (no stray whitespace) and the system clock; "
        "for code 1083 the stored user secret does not match the user."
    )


class SnapTradePermissionError(SnapTradeError):
    """The key is valid but lacks permission for this feature (403, e.g. code 1141)."""

    default_hint = "Ask SnapTrade to enable this feature for your client id; retrying will not help."


class SnapTradeNotFoundError(SnapTradeError):
    """The user, account, connection or order does not exist (404, code 1011)."""

    default_hint = "Check the identifier; the resource may have been deleted."


class SnapTradeConflictError(SnapTradeError):
    """The resource already exists: code 1010 (SnapTrade answers 400) on a second ``registerUser``, or a 409.

    ``register_user`` replaces SnapTrade's text with one saying whether the user's secret is
    stored here (nothing is lost: use ``ensure_user``) or not (delete and register again).
    """

    default_hint = (
        "The user already exists. If its secret is stored, use it (ensure_user(user_id) gets or registers); "
        "if it is lost, delete the user and register it again (its brokerage connections must be reconnected)."
    )


class SnapTradeSyncInProgressError(SnapTradeConflictError):
    """Another worker holds this user's portfolio-sync lease; this sync sent nothing."""

    default_hint = (
        "Nothing to do: leave the marks in the ledger. The worker holding the user reads its marks again before it "
        "releases the lease and syncs what was marked meanwhile; if it died, its lease expires after "
        "SyncPolicy.lease_seconds and the next sync_due picks the marks up."
    )
    default_retryable = True


class SnapTradeRateLimitError(SnapTradeError):
    """A rate limit was hit: SnapTrade's (429) or the local budget.

    Attributes:
        retry_after: Seconds to wait before trying again, if known.
        limit_scope: Which limit: ``"customer"``, ``"account"``, ``"user"``, ``"refresh"``,
            ``"plan"`` (the local budget) or ``"unknown"``.
    """

    default_retryable = True
    default_hint = "Wait retry_after seconds before sending again."

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        limit_scope: str = "unknown",
        **kwargs: Any,
    ) -> None:
        self.retry_after = retry_after
        self.limit_scope = limit_scope
        super().__init__(message, **kwargs)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, retry_after={self.retry_after!r}, limit_scope={self.limit_scope!r})"


class SnapTradeServerError(SnapTradeError):
    """SnapTrade failed (5xx, code 1000); usually transient."""

    default_retryable = True
    default_hint = "A transient SnapTrade failure; retry later with backoff."


class SnapTradeConnectionError(SnapTradeError):
    """No usable response arrived: connection refused, reset, DNS or TLS failure, malformed response.

    Attributes:
        request_sent: ``False`` only when the request provably never left (connection refused,
            DNS failure): then even a write is safe to send again.
    """

    default_retryable = True
    default_hint = "Check network access to SNAPTRADE_BASE_URL; retry later."

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kwargs)


class SnapTradeTimeoutError(SnapTradeConnectionError):
    """The connect or read timeout expired."""

    default_hint = (
        "SnapTrade did not answer in time; retry later or raise SNAPTRADE_READ_TIMEOUT / SNAPTRADE_CONNECT_TIMEOUT."
    )


class SnapTradeMalformedResponseError(SnapTradeError):
    """SnapTrade answered 2xx with a body of a shape the library cannot read (not JSON of the documented form).

    The message names the operation and what was wrong (the field's place, never its value);
    ``request_id`` identifies the answer for SnapTrade support. The raw body is not kept.
    """

    default_hint = (
        "Report the request id to SnapTrade; for a write, check whether it took effect before sending it again."
    )


class SnapTradeUnknownOutcomeError(SnapTradeError):
    """A write may or may not have taken effect: the request left but no answer came back.

    It is never resent automatically. Reconcile first: for orders, look the order up by its
    ``client_order_id`` in recent orders; for ``register_user``, the user may exist with a
    secret nobody holds: delete it and register again.
    """

    default_retryable = False
    default_hint = "Do not resend blindly: check whether the write took effect first."

    def __init__(self, message: str, *, intent: Any = None, **kwargs: Any) -> None:
        #: The :class:`~aims_snaptrade.trading.OrderIntent` of an order whose answer was lost:
        #: pass it to ``reconcile_order`` (``None`` for writes that are not orders).
        self.intent = intent
        super().__init__(message, **kwargs)


class SnapTradeEndpointRetiredError(SnapTradeError):
    """SnapTrade retired this endpoint for your client id (410)."""

    default_hint = (
        "Use the replacement operation (e.g. get_all_account_positions instead of get_user_holdings); "
        "an empty result here would have been wrong, not empty."
    )


class SnapTradeBrokerageError(SnapTradeError):
    """The brokerage side failed (the connection, the institution or its credentials)."""


class SnapTradeBrokerageAuthError(SnapTradeBrokerageError):
    """The brokerage rejected the user's credentials (403, code 1066)."""

    default_hint = "Ask the user to re-enter their brokerage credentials through a reconnect portal link."


class SnapTradeConnectionDisabledError(SnapTradeBrokerageError):
    """The brokerage connection is disabled or broken (402, codes 3003/3011).

    Reads may keep serving stale cached data. Send the user through a portal link with
    ``reconnect=authorization_id`` to repair it.

    Attributes:
        authorization_id: The connection (brokerage authorization) to reconnect, if known.
    """

    default_hint = "Send the user to connection_portal_url(user_id, reconnect=<authorization id>)."

    def __init__(self, message: str, *, authorization_id: str | None = None, **kwargs: Any) -> None:
        self.authorization_id = authorization_id
        super().__init__(message, **kwargs)


class SnapTradeBrokerageUnavailableError(SnapTradeBrokerageError):
    """The brokerage's API failed or is unreachable (503, code 3002)."""

    default_retryable = True
    default_hint = "The brokerage is failing; back off and retry later."


class SnapTradeDataNotReadyError(SnapTradeBrokerageError):
    """Data for a new connection is still being populated (425, code 3012)."""

    default_retryable = True
    default_hint = "The connection is still syncing; retry in a few seconds or wait for the webhook."


class SnapTradeStoreError(SnapTradeError):
    """A local store failed (secrets, consent, audit, order intents, sync ledger, webhook dedupe)."""

    default_hint = "Check the store's configuration and health."


class SnapTradeAuditError(SnapTradeStoreError):
    """The audit trail could not record an event, or refused an operation on a broken chain.

    When raised for a call, the call itself was made: ``request_id`` names it and the message says
    its outcome, so do not resend a write because of this error.
    """

    default_hint = (
        "Check the audit store (SNAPTRADE_AUDIT_STORE_URL) is reachable; run `aims-snaptrade audit verify` "
        "and see docs/compliance.md for recovery."
    )


class SnapTradeSecretStoreError(SnapTradeStoreError):
    """The secret store failed (unreachable, corrupt, or the secret is missing)."""

    default_hint = "Check the secret store's configuration and health."


class SnapTradeOrderIntentStoreError(SnapTradeStoreError):
    """The order-intent journal failed; an order is never sent unless its intent was recorded."""

    default_hint = "Check SNAPTRADE_ORDER_INTENT_STORE_URL and the store's health; nothing unrecorded was sent."


class SnapTradeSecretDecryptionError(SnapTradeSecretStoreError):
    """A stored secret could not be decrypted: wrong or missing key, or a tampered/moved ciphertext."""

    default_hint = (
        "Check SNAPTRADE_ENCRYPTION_KEYS holds the key version the secret was written with; "
        "a ciphertext copied from another user's row never decrypts."
    )


class SnapTradeSecretRotationError(SnapTradeSecretStoreError):
    """A user-secret rotation was interrupted and the new secret may be lost.

    Recovery: delete the SnapTrade user, register it again, and ask the person to reconnect
    their brokerage.
    """

    default_hint = (
        "The rotation's outcome is unknown: try the stored secret; if SnapTrade answers 1083, delete the user, "
        "register it again and have the person reconnect their brokerage."
    )


class SnapTradeBudgetExhaustedError(SnapTradeRateLimitError):
    """The local rate limiter refused the call before sending it: nothing reached SnapTrade.

    Raised when a budget (``limit_scope``: ``"plan"``, ``"customer"``, ``"account"``, ``"user"``)
    has no free slot within the allowed wait, or while SnapTrade's own pause (after a 429) lasts.
    The retry policy does not retry it: the limiter already waited as long as it was allowed to.
    """

    default_hint = (
        "Nothing was sent. Try again after retry_after seconds, or allow a longer wait "
        "(SNAPTRADE_RATE_LIMIT_MAX_WAIT, or max_wait per call)."
    )


class SnapTradeDeadlineExceededError(SnapTradeError):
    """The call's deadline (``CallOptions(deadline=...)`` or the retry policy's) ran out.

    Raised instead of waiting past the deadline, and as soon as it is known that a wait cannot
    end in time (not after waiting). ``waiting_for`` says what the call was waiting for:

    * ``"rate-limit budget"``: a local budget had no slot in time (``limit_scope``, ``retry_after``
      say which and when); nothing was sent on that attempt;
    * ``"rate-limit pause"``: SnapTrade asked to pause the scope (a 429) beyond the deadline;
    * ``"retry backoff"``: the next attempt's backoff (or a 429's ``Retry-After``) would end past
      it; the last attempt's error is the ``__cause__``;
    * ``"response"``: the read timeout, shortened to what was left, expired.

    Not retried. A write whose request may have arrived is reported as
    :class:`SnapTradeUnknownOutcomeError` instead, whatever the deadline.

    Attributes:
        waiting_for: What the call was waiting for (see above).
        deadline: The call's deadline, seconds from its start.
        retry_after: Seconds until the awaited slot, pause or attempt, when known.
        limit_scope: The budget or paused scope, for the rate-limit cases.
    """

    default_retryable = False
    default_hint = "Allow a longer deadline (CallOptions(deadline=...)) or try again later."

    def __init__(
        self,
        message: str,
        *,
        waiting_for: str,
        deadline: float | None = None,
        retry_after: float | None = None,
        limit_scope: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.waiting_for = waiting_for
        self.deadline = deadline
        self.retry_after = retry_after
        self.limit_scope = limit_scope
        super().__init__(message, **kwargs)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, waiting_for={self.waiting_for!r}, deadline={self.deadline!r})"


class SnapTradeRateLimiterUnavailableError(SnapTradeConfigurationError):
    """The shared rate-limit storage (Redis) cannot be reached, so the call was refused unsent.

    The limiter never falls back to sending without limits: replicas would exceed the shared
    budget together. The storage client reconnects by itself once the storage is back.
    """

    default_hint = (
        "Check that the storage in SNAPTRADE_RATE_LIMIT_STORAGE_URL is running and reachable; "
        "calls resume once it answers again."
    )


class SnapTradeWebhookDedupeStoreError(SnapTradeStoreError):
    """The webhook de-duplication store failed (unreachable, or its table could not be created)."""

    default_hint = "Check the webhook dedupe store URL names a reachable store; SnapTrade redelivers meanwhile."


class SnapTradeWebhookError(SnapTradeError):
    """A received webhook was refused. Its text never contains the consumer key or the signature.

    Attributes:
        http_status: What a receiver answers SnapTrade (401 or 400).
    """

    http_status: int = 400


class SnapTradeWebhookSignatureError(SnapTradeWebhookError):
    """The ``Signature`` header is missing or does not match the payload: forged, altered or another key."""

    http_status = 401
    default_hint = (
        "Verify with the consumer key of the client id SnapTrade sends this webhook for; "
        "a body changed in transit (a proxy re-encoding JSON) also fails."
    )


class SnapTradeWebhookStaleError(SnapTradeWebhookError):
    """The payload's ``eventTimestamp`` is outside the replay window (too old, or too far ahead).

    Attributes:
        age_seconds: How old the event is (negative when it is ahead of the local clock).
    """

    http_status = 401
    default_hint = "A replayed or long-delayed delivery; check the receiver's clock (NTP) or widen tolerance."

    def __init__(self, message: str, *, age_seconds: float, **kwargs: Any) -> None:
        self.age_seconds = age_seconds
        super().__init__(message, **kwargs)


class SnapTradeWebhookMalformedError(SnapTradeWebhookError):
    """The body is not a webhook payload: not UTF-8 JSON, not an object, or a required field is missing or invalid."""

    http_status = 400
    default_hint = "Only SnapTrade's webhook payloads are accepted; the message names the field that is wrong."
