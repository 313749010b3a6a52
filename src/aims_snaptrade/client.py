"""``SafeSnapTradeClient`` and ``AsyncSafeSnapTradeClient``: two thin shells over one core.

Both run the same flows from :mod:`aims_snaptrade.pipeline`; they differ only in how an effect
is performed: blocking calls here, awaited calls (and ``asyncio.to_thread`` for the secret
store) in the async client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from aims_snaptrade import errors as e
from aims_snaptrade._transport import AsyncTransport, Response, SyncTransport
from aims_snaptrade.compliance.audit import AuditTrail
from aims_snaptrade.compliance.consent import ConsentRecord, as_consent_lookup
from aims_snaptrade.compliance.data_rights import PERSONAL_DATA, ErasureReceipt, erase_user, export_user
from aims_snaptrade.compliance.factory import audit_store_url, consent_store_url, open_audit_trail, open_consent_store
from aims_snaptrade.compliance.personal_data import (
    AUDIT,
    AuditTrailData,
    ConsentStoreData,
    PersonalDataRegistry,
    PersonalDataStore,
    RateLimitKeysData,
    SecretStoreData,
    SyncLedgerData,
    WebhookClaimsData,
)
from aims_snaptrade.data_dir import prepare_store_locations
from aims_snaptrade.error_mapping import map_exception, with_upstream_cause
from aims_snaptrade.guardrails import ConsentChecker, check_startup
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
from aims_snaptrade.observability.telemetry import CallObserver, watch_budgets
from aims_snaptrade.pipeline import Acquire, CallOptions, Core, Effect, Flow, Observe, Send, Sleep, StoreCall
from aims_snaptrade.ratelimit.limiter import AsyncRateLimiter, BudgetUsage, RateLimiter, RateLimitPolicy
from aims_snaptrade.redaction import install_log_redaction
from aims_snaptrade.retry import RetryPolicy, RetryStats
from aims_snaptrade.secrets import SecretStore, open_secret_store_from_settings
from aims_snaptrade.settings import Settings
from aims_snaptrade.trading.confirmation import ConfirmationSigner
from aims_snaptrade.trading.factory import open_order_intent_store
from aims_snaptrade.trading.flows import INTENTS, TradingFlows
from aims_snaptrade.trading.intents import OrderIntentStore
from aims_snaptrade.trading.models import Order, OrderIntent, OrderPreview, Reconciliation
from aims_snaptrade.trading.reconcile import Reconciler

if TYPE_CHECKING:
    from aims_snaptrade.sync import (
        BatchSummary,
        LedgerMark,
        PortfolioSnapshot,
        ProgressCallback,
        Sink,
        SyncLedger,
        SyncPolicy,
        UserSyncResult,
    )
    from aims_snaptrade.webhooks.receiver import WebhookHandler, WebhookReceiver

__all__ = ["AsyncSafeSnapTradeClient", "SafeSnapTradeClient"]

log = logging.getLogger("aims_snaptrade.client")

T = TypeVar("T")
ConnectionType = Literal["read", "trade", "trade-if-available"]


_STORE_ERRORS: dict[str, type[e.SnapTradeStoreError]] = {
    "secrets": e.SnapTradeSecretStoreError,
    INTENTS: e.SnapTradeOrderIntentStoreError,
}


def _terms(**terms: Any) -> dict[str, Any]:
    """Order terms as keywords for the trading flows (which validate them)."""
    return terms


def _failure(effect: Effect, exc: Exception) -> e.SnapTradeError:
    """The library error for ``exc`` raised while performing ``effect`` (the one mapping boundary)."""
    if isinstance(exc, e.SnapTradeError):
        return exc
    if isinstance(effect, Send):
        return with_upstream_cause(map_exception(effect.operation, exc, effect.arguments), exc)
    if isinstance(effect, StoreCall):
        kind = _STORE_ERRORS.get(effect.store, e.SnapTradeStoreError)
        return with_upstream_cause(
            kind(f"The {effect.store} store failed during {effect.method} ({type(exc).__name__})."),
            exc,
        )
    return with_upstream_cause(e.SnapTradeError(f"Unexpected failure ({type(exc).__name__})."), exc)


def _opened(variable: str, opener: Callable[[Any], T], argument: Any) -> T:
    """Run ``opener``; an OS or parsing failure becomes a configuration error naming ``variable``."""
    try:
        return opener(argument)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise e.SnapTradeConfigurationError(
            f"{variable} cannot be opened ({reason}).",
            hint=f"Fix {variable}: a path this process can create and write, or a well-formed URL.",
        ) from None


_PROBE_ID = "aims-snaptrade-readiness-probe"
# name in _stores -> a read that touches the store's backend and changes nothing
_STORE_READS: dict[str, Callable[[Any], object]] = {
    "secrets": lambda store: store.pending_rotations(),
    "consent": lambda store: store.decide(_PROBE_ID, "read"),
    "audit": lambda store: store.tail(1),
    INTENTS: lambda store: store.get(_PROBE_ID),
    "ledger": lambda store: store.load_user(_PROBE_ID),
}


def _id_secret(settings: Settings) -> str:
    """The secret ids in shared infrastructure's keys are hashed under: the audit key (never
    rotated, so keys survive a consumer-key rotation) when set, else the consumer key."""
    key = settings.audit_key or settings.consumer_key
    return key.get_secret_value()


# What to configure when a flow names a store this client did not open.
_MISSING_STORE_HINTS = {
    INTENTS: "Order intents are journaled only when trading is enabled (SNAPTRADE_TRADING_ENABLED=true) "
    "or an order_intent_store is passed to the client.",
    "ledger": "Portfolio sync keeps its ledger in SNAPTRADE_SYNC_LEDGER_URL (or a sync_ledger passed to the client).",
    "consent": "Consent is decided from SNAPTRADE_CONSENT_STORE_URL (or a consent store passed to the client).",
    "audit": "Set SNAPTRADE_AUDIT_KEY (and SNAPTRADE_AUDIT_STORE_URL) or pass an audit trail to the client.",
}


class _Base:
    """Construction shared by both clients: settings, guardrails, store, policies. No network IO."""

    _transport: SyncTransport | AsyncTransport
    _limiter: RateLimiter | AsyncRateLimiter
    _sleep: Callable[[float], Any]

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        secret_store: SecretStore | None = None,
        consent: ConsentChecker | None = None,
        audit: AuditTrail | None = None,
        retry: RetryPolicy | str | None = None,
        order_intent_store: OrderIntentStore | None = None,
        sync_ledger: SyncLedger | None = None,
        sync_policy: SyncPolicy | None = None,
        **overrides: Any,
    ) -> None:
        install_log_redaction()
        if settings is None:
            settings = Settings.build(overrides)
        elif overrides:
            settings = Settings.build({**settings.model_dump(), **overrides})
        self.settings = settings
        # Every default location this client opens now, checked together so production names them all.
        prepare_store_locations(
            settings,
            [
                *(["secret_store_url"] if secret_store is None else []),
                *(["order_intent_store_url"] if settings.trading_enabled and order_intent_store is None else []),
            ],
        )
        self.secret_store: SecretStore = (
            _opened("SNAPTRADE_SECRET_STORE_URL", open_secret_store_from_settings, settings)
            if secret_store is None
            else secret_store
        )
        # Every store a StoreCall effect may name; features add theirs (consent, audit, ...).
        self._stores: dict[str, Any] = {"secrets": self.secret_store}
        # The stores this client opened, closed with it (a store passed in belongs to the caller).
        self._owned_stores: list[Any] = [self.secret_store] if secret_store is None else []
        # The sync ledger is opened on first use: services that never sync never create its file.
        self._sync_ledger = sync_ledger
        self._sync_policy = sync_policy
        self._ledger_lock = threading.Lock()
        try:
            consent, audit = self._open_compliance(settings, consent, audit)
            check_startup(settings, store=self.secret_store, consent=consent, audit=audit)
            policy = retry if isinstance(retry, RetryPolicy) else RetryPolicy.preset(retry or settings.retry_policy)
            self._core = Core(settings, retry=policy, consent=consent, audit=audit is not None)
            self._open_order_intents(order_intent_store)
            _opened("SNAPTRADE_RATE_LIMIT_STORAGE_URL", self._open_io, RateLimitPolicy.from_settings(settings))
            self._register_personal_data(consent, audit)
        except BaseException:
            self._close_stores()  # nothing half-built stays open when construction fails
            raise
        pending = self.secret_store.pending_rotations()
        if pending:
            log.error(
                "%d user-secret rotation(s) were interrupted (users: %s): the new secrets may be lost. "
                "For each: call resolve_secret_rotation(user_id); if SnapTrade rejects the stored secret, "
                "delete the user, register it again and have the person reconnect their brokerage.",
                len(pending),
                ", ".join(sorted(pending)),
            )

    def _open_compliance(
        self, settings: Settings, consent: ConsentChecker | None, audit: AuditTrail | None
    ) -> tuple[ConsentChecker | None, AuditTrail | None]:
        """Open the consent store and audit trail the settings name (unless given) and register both."""
        if consent is None and settings.consent_store_url:
            consent = open_consent_store(consent_store_url(settings), settings)
            self._owned_stores.append(consent)
        if audit is None and settings.audit_key is not None:
            audit = open_audit_trail(audit_store_url(settings), settings)
            self._owned_stores.append(audit)
        self.consent_store = consent
        self.audit_trail = audit
        if consent is not None:
            self._stores["consent"] = as_consent_lookup(consent)
        if audit is not None:
            self._stores["audit"] = audit
        return consent, audit

    def _open_io(self, limits: RateLimitPolicy) -> None:
        """Create the shell's transport and rate limiter."""
        raise NotImplementedError

    def _register_personal_data(self, consent: ConsentChecker | None, audit: AuditTrail | None) -> None:
        """Every store of this client holding personal data joins the registry export and erasure walk."""
        registry = self.personal_data = PersonalDataRegistry()
        secrets = self.secret_store
        registry.register(
            "secret",
            secrets if isinstance(secrets, PersonalDataStore) else SecretStoreData(secrets, self._core.secrets),
            holds="SnapTrade user secrets (encrypted) and rotation markers",
            receipt="secret_removed",
        )
        if consent is not None:
            if isinstance(consent, PersonalDataStore):
                registry.register("consents", consent, holds="consent grants", receipt="consents_removed")
            elif (hasattr(consent, "records") and hasattr(consent, "erase")) or consent in self._owned_stores:
                # A store opened by URL (a plug-in included) must say how it forgets: the
                # registry refuses one that cannot, rather than leave its rows behind.
                declared = ConsentStoreData(consent) if hasattr(consent, "erase") else consent
                registry.register("consents", declared, holds="consent grants", receipt="consents_removed")
            # else: a bare ConsentChecker of the application's own, which keeps its own data
        intents = self._stores.get(INTENTS)
        if intents is not None:
            registry.register("order_intents", intents, holds="the order-intent journal")
        registry.register(
            "sync",
            self._sync_ledger
            if isinstance(self._sync_ledger, PersonalDataStore)
            else SyncLedgerData(self._open_ledger),
            holds="portfolio-sync progress per user and account",
            receipt="sync_rows_removed",
        )
        registry.register(
            "rate_limits",
            RateLimitKeysData(self._limiter),
            holds="rate-limit budget keys (keyed hashes of ids on Redis)",
        )
        registry.register(
            "webhook_claims", WebhookClaimsData(), holds="webhook claims (keyed hashes of webhook ids, no user id)"
        )
        if audit is not None:
            registry.register(
                AUDIT,
                audit if isinstance(audit, PersonalDataStore) else AuditTrailData(audit),
                holds="the audit trail (pseudonymised on erasure)",
                receipt="audit_records_pseudonymised",
            )
        self._stores[PERSONAL_DATA] = registry

    def add_call_observer(self, observer: CallObserver) -> Callable[[], None]:
        """Call ``observer`` with every finished attempt and call of this client; returns the undo.

        Observers run on the calling thread (the event loop for the async client): keep them quick.
        """
        self._core.observers.append(observer)
        return lambda: self._core.observers.remove(observer) if observer in self._core.observers else None

    def _open_order_intents(self, store: OrderIntentStore | None) -> None:
        """The trading flows, and the order-intent journal when trading is enabled (or one is given)."""
        key = self.settings.confirmation_key
        signer = ConfirmationSigner.from_text(key.get_secret_value() if key is not None else None)
        self._trading = TradingFlows(self._core, signer)
        self._reconciler = Reconciler(self._trading)
        if store is None and self.settings.trading_enabled:
            store = open_order_intent_store(self.settings.order_intent_store_url)
            self._owned_stores.append(store)
        if store is None:
            return
        self._stores[INTENTS] = store
        if self.settings.is_production and not store.persistent:
            raise e.SnapTradeGuardrailError(
                "Refusing an unsafe production set-up: the order-intent journal is in memory, so an order's "
                "unknown outcome would be forgotten on restart.",
                hint="Set SNAPTRADE_ORDER_INTENT_STORE_URL to sqlite:///path or postgresql://...",
            )
        pending = store.pending()
        if pending:
            log.error(
                "%d order intent(s) have an unknown outcome (client_order_ids: %s): the orders may or may not "
                "exist. Call reconcile_pending() (or reconcile_order(id) for each) before placing new orders.",
                len(pending),
                ", ".join(i.client_order_id for i in pending),
            )

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """Build from ``SNAPTRADE_*`` environment variables; ``kwargs`` as for the constructor.

        The consent store is opened even without ``SNAPTRADE_CONSENT_STORE_URL`` (in the secret
        store's database, as the README documents), in sandbox as in production: consent is
        decided the same way in both, so what a sandbox run allows a production run allows.
        """
        names = ("secret_store", "consent", "audit", "retry", "order_intent_store", "sync_ledger", "sync_policy")
        passthrough = {k: kwargs.pop(k) for k in names if k in kwargs}
        settings = Settings.from_env(**kwargs)
        if settings.consent_required and "consent" not in passthrough:
            settings = settings.model_copy(update={"consent_store_url": consent_store_url(settings)})
        return cls(settings, **passthrough)

    def _target(self, effect: Effect) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """What performs ``effect`` in this shell: the same for both, only awaiting differs."""
        if isinstance(effect, Send):
            return self._transport.send, (effect.operation, effect.arguments, effect.timeouts), {}
        if isinstance(effect, Acquire):
            return (
                self._limiter.acquire,
                (effect.operation,),
                {
                    "user_id": effect.user_id,
                    "account_id": effect.account_id,
                    "mode": effect.mode,
                    "max_wait": effect.max_wait,
                    "deadline": effect.deadline,
                },
            )
        if isinstance(effect, Observe):
            return (
                self._limiter.observe,
                (effect.operation,),
                {
                    "account_id": effect.account_id,
                    "status": effect.status,
                    "headers": effect.headers,
                    "sent_at": effect.sent_at,
                    "user_id": effect.user_id,
                },
            )
        if isinstance(effect, Sleep):
            return self._sleep, (effect.seconds,), {}
        store = self._stores.get(effect.store)
        if store is None:
            raise e.SnapTradeConfigurationError(
                f"This client has no {effect.store} store.", hint=_MISSING_STORE_HINTS.get(effect.store)
            )
        return getattr(store, effect.method), effect.args, {}

    @property
    def sync_policy(self) -> SyncPolicy:
        """The polling policy of :meth:`sync_portfolio` (from settings unless one was passed)."""
        if self._sync_policy is None:
            from aims_snaptrade.sync import SyncPolicy

            self._sync_policy = SyncPolicy.from_settings(self.settings)
        return self._sync_policy

    @property
    def sync_ledger(self) -> SyncLedger:
        """The sync ledger (opened from ``settings.sync_ledger_url`` on first use unless one was passed)."""
        return self._open_ledger()

    def _open_ledger(self) -> SyncLedger:
        with self._ledger_lock:
            ledger = self._stores.get("ledger")
            if ledger is None:
                from aims_snaptrade.sync import open_sync_ledger

                ledger = self._sync_ledger
                if ledger is None:
                    prepare_store_locations(self.settings, ["sync_ledger_url"])
                    ledger = open_sync_ledger(self.settings.sync_ledger_url)
                    self._owned_stores.append(ledger)
                self._stores["ledger"] = ledger
            return ledger

    def _sync_flow(self, user_id: str, force: bool, options: CallOptions | None) -> Flow[PortfolioSnapshot]:
        from aims_snaptrade.sync.flow import sync_portfolio

        self._open_ledger()
        return sync_portfolio(self._core, user_id, policy=self.sync_policy, force=force, options=options)

    def _mark_flow(self, event: Any) -> Flow[list[LedgerMark]]:
        from aims_snaptrade.sync.webhooks import mark_ledger

        self._open_ledger()
        return mark_ledger(event)

    @property
    def retry_stats(self) -> RetryStats:
        """Attempts and retries counted under this client's retry budget."""
        return self._core.retry.stats

    @property
    def pending_secret_rotations(self) -> list[str]:
        """Users whose secret rotation was interrupted (see :meth:`rotate_user_secret`)."""
        return list(self.secret_store.pending_rotations())

    @property
    def pending_order_intents(self) -> list[OrderIntent]:
        """Orders whose outcome is unknown (lost answers, crashes), oldest first: settle them with
        :meth:`SafeSnapTradeClient.reconcile_pending`."""
        store = self._stores.get(INTENTS)
        return list(store.pending()) if store is not None else []

    def webhook_receiver(self, handler: WebhookHandler, **options: Any) -> WebhookReceiver:
        """A :class:`~aims_snaptrade.webhooks.WebhookReceiver` for this client's deliveries.

        It takes the client's settings (consumer key, and the previous one during a rotation,
        ``SNAPTRADE_WEBHOOK_DEDUPE_URL``, ``SNAPTRADE_WEBHOOK_TOLERANCE``) and, when the client
        audits, records every verified webhook in the client's own audit trail (the
        ``on_verified=audit_webhooks(trail)`` hook, wired without touching the optional
        :attr:`audit_trail`). ``options`` are :class:`~aims_snaptrade.webhooks.WebhookReceiver`'s
        and override the rest. Close the receiver before the client.
        """
        from aims_snaptrade.compliance.audit import audit_webhooks
        from aims_snaptrade.webhooks.receiver import WebhookReceiver

        if self.audit_trail is not None:  # an unknown option is refused by from_settings, typed
            options.setdefault("on_verified", audit_webhooks(self.audit_trail))
        return WebhookReceiver.from_settings(handler, self.settings, **options)

    @property
    def closed(self) -> bool:
        """Whether :meth:`SafeSnapTradeClient.close` (or ``aclose``) has run: a closed client serves nothing."""
        return getattr(self, "_closed", False)

    def _store_probes(self) -> dict[str, Callable[[], object]]:
        """One cheap read per store this client uses, for readiness (a raise means unreachable).

        The reads look up a user id no one has, so they find nothing and change nothing.
        """
        probes: dict[str, Callable[[], object]] = {}
        for name, store in list(self._stores.items()):
            read = _STORE_READS.get(name)
            if read is not None:
                probes[name] = functools.partial(read, store)
        return probes

    def _close_stores(self) -> None:
        self._closed = True
        while self._owned_stores:
            self._owned_stores.pop().close()

    def __repr__(self) -> str:
        s = self.settings
        name = type(self).__name__
        return f"{name}(client_id={s.client_id!r}, environment={s.environment!r}, base_url={s.base_url!r})"


class SafeSnapTradeClient(_Base):
    """The blocking client. Use as a context manager, or call :meth:`close`.

    Example::

        with SafeSnapTradeClient.from_env() as client:
            client.register_user("user-42")
            link = client.connection_portal_url("user-42")
            accounts = client.list_accounts("user-42")

    Args:
        settings: Validated settings; when omitted, built from the keyword ``overrides``
            (``client_id=``, ``consumer_key=``, ``environment=``, ``base_url=``, ...).
        secret_store: Where user secrets live; default: opened from ``settings.secret_store_url``.
        consent: A :class:`~aims_snaptrade.guardrails.ConsentChecker` (required in production);
            default: opened from ``settings.consent_store_url`` when set.
        audit: An :class:`~aims_snaptrade.compliance.AuditTrail` (required in production);
            default: opened from ``settings.audit_store_url`` when ``settings.audit_key`` is set.
        retry: A :class:`~aims_snaptrade.retry.RetryPolicy` or preset name.
    """

    _transport: SyncTransport
    _limiter: RateLimiter

    def _open_io(self, limits: RateLimitPolicy) -> None:
        self._transport = SyncTransport(self.settings)
        self._limiter = RateLimiter(limits, self.settings.rate_limit_storage_url, id_secret=_id_secret(self.settings))
        self._unwatch_budgets = watch_budgets(self._limiter.usage)

    # --- IO: performing effects --------------------------------------------------------------------

    _sleep = staticmethod(time.sleep)

    def _perform(self, effect: Effect) -> Any:
        function, args, kwargs = self._target(effect)
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            failure = _failure(effect, exc)
        raise failure

    def _run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = self._perform(effect)
            except e.SnapTradeError as exc:
                error = exc

    # --- public API ------------------------------------------------------------------------------

    def call(
        self,
        operation: str,
        /,
        *,
        confirm: bool = False,
        options: CallOptions | None = None,
        **arguments: Any,
    ) -> Response:
        """Call any SDK operation by its SDK name, on the safe road (user secret filled in).

        ``client.call("get_user_account_orders", user_id="u1", account_id=acc, state="open")``

        Order writes (placing, replacing, cancelling orders) are refused with
        :class:`~aims_snaptrade.errors.SnapTradeGuardrailError` naming the method that sends them
        with the order-intent journal (see ``ORDER_WRITES`` in :mod:`aims_snaptrade.operations`).
        """
        return self._run(self._core.call_any(operation, arguments, confirm=confirm, options=options))

    def api_status(self, *, options: CallOptions | None = None) -> ApiStatus:
        """SnapTrade's status and this machine's clock skew against it."""
        return self._run(self._core.api_status(options))

    def register_user(self, user_id: str, *, options: CallOptions | None = None) -> RegisteredUser:
        """Register a user and store its secret; never resent after an unknown outcome."""
        return self._run(self._core.register_user(user_id, options))

    def ensure_user(self, user_id: str, *, options: CallOptions | None = None) -> RegisteredUser:
        """Get or register: the stored user (nothing sent, ``created=False``), else :meth:`register_user`."""
        return self._run(self._core.ensure_user(user_id, options))

    def rotate_user_secret(self, user_id: str, *, options: CallOptions | None = None) -> RegisteredUser:
        """Rotate the user's secret with SnapTrade, storing the new one before dropping the old."""
        return self._run(self._core.rotate_user_secret(user_id, options))

    def resolve_secret_rotation(self, user_id: str, *, options: CallOptions | None = None) -> bool:
        """Settle an interrupted secret rotation; ``True`` if the stored secret still works (marker cleared)."""
        return self._run(self._core.resolve_secret_rotation(user_id, options))

    def delete_user(self, user_id: str, *, confirm: bool = False, options: CallOptions | None = None) -> DeletedUser:
        """Delete the user at SnapTrade (needs ``confirm=True``) and purge its local secret."""
        return self._run(self._core.delete_user(user_id, confirm=confirm, options=options))

    def connection_portal_url(
        self,
        user_id: str,
        *,
        broker: str | None = None,
        connection_type: ConnectionType = "read",
        custom_redirect: str | None = None,
        reconnect: str | None = None,
        immediate_redirect: bool | None = None,
        options: CallOptions | None = None,
    ) -> ConnectionPortalLink:
        """A Connection Portal link (valid 5 minutes); ``reconnect=<authorization id>`` repairs a connection."""
        return self._run(
            self._core.connection_portal_url(
                user_id,
                broker=broker,
                connection_type=connection_type,
                custom_redirect=custom_redirect,
                reconnect=reconnect,
                immediate_redirect=immediate_redirect,
                options=options,
            )
        )

    def list_accounts(self, user_id: str, *, options: CallOptions | None = None) -> list[Account]:
        """Every account of the user."""
        return self._run(self._core.list_accounts(user_id, options))

    def get_balances(self, user_id: str, account_id: str, *, options: CallOptions | None = None) -> list[Balance]:
        """Balances of one account, per currency."""
        return self._run(self._core.get_balances(user_id, account_id, options))

    def get_positions(self, user_id: str, account_id: str, *, options: CallOptions | None = None) -> list[Position]:
        """Positions of one account."""
        return self._run(self._core.get_positions(user_id, account_id, options))

    def get_activities(
        self,
        user_id: str,
        account_id: str,
        *,
        start_date: Any = None,
        end_date: Any = None,
        type: str | None = None,
        options: CallOptions | None = None,
    ) -> list[Activity]:
        """All activities of one account (every page)."""
        return self._run(
            self._core.get_activities(
                user_id, account_id, start_date=start_date, end_date=end_date, type=type, options=options
            )
        )

    # --- trading (docs/trading.md) ---------------------------------------------------------------

    def preview_order(
        self,
        user_id: str,
        account_id: str,
        *,
        action: str,
        symbol: str | None = None,
        universal_symbol_id: str | None = None,
        order_type: str = "Market",
        time_in_force: str = "Day",
        units: Decimal | int | str | None = None,
        notional_value: Decimal | int | str | None = None,
        price: Decimal | int | str | None = None,
        stop: Decimal | int | str | None = None,
        options: CallOptions | None = None,
    ) -> OrderPreview:
        """Check an order with SnapTrade (cost, fees, buying power after) without placing it.

        Quantities and prices are Decimals (or ints / decimal strings); exactly one of ``units``
        and ``notional_value``. Show the preview to the account owner, then call
        :meth:`place_order` with it and its ``confirmation`` within ``expires_at``.
        """
        terms = _terms(
            action=action,
            symbol=symbol,
            universal_symbol_id=universal_symbol_id,
            order_type=order_type,
            time_in_force=time_in_force,
            units=units,
            notional_value=notional_value,
            price=price,
            stop=stop,
        )
        return self._run(self._trading.preview_order(user_id, account_id, terms, options))

    def place_order(self, preview: OrderPreview, *, confirmation: str, options: CallOptions | None = None) -> Order:
        """Place a previewed order once, given the preview's confirmation token.

        Refused with :class:`~aims_snaptrade.errors.SnapTradeConfirmationError` (nothing sent) for a
        token of another preview or a changed preview, after expiry, and after one use. A lost
        answer raises :class:`~aims_snaptrade.errors.SnapTradeUnknownOutcomeError` whose ``intent``
        goes to :meth:`reconcile_order`.
        """
        return self._run(self._trading.place_order(preview, confirmation, options))

    def place_order_now(
        self,
        user_id: str,
        account_id: str,
        *,
        action: str,
        confirm: bool = False,
        symbol: str | None = None,
        universal_symbol_id: str | None = None,
        order_type: str = "Market",
        time_in_force: str = "Day",
        units: Decimal | int | str | None = None,
        notional_value: Decimal | int | str | None = None,
        price: Decimal | int | str | None = None,
        stop: Decimal | int | str | None = None,
        client_order_id: str | None = None,
        options: CallOptions | None = None,
    ) -> Order:
        """Place an order without a preview (needs ``confirm=True``); journaled and sent once."""
        terms = _terms(
            action=action,
            symbol=symbol,
            universal_symbol_id=universal_symbol_id,
            order_type=order_type,
            time_in_force=time_in_force,
            units=units,
            notional_value=notional_value,
            price=price,
            stop=stop,
        )
        flow = self._trading.place_order_now(
            user_id, account_id, terms, confirm=confirm, client_order_id=client_order_id, options=options
        )
        return self._run(flow)

    def cancel_order(
        self, user_id: str, account_id: str, brokerage_order_id: str, *, options: CallOptions | None = None
    ) -> Order:
        """Cancel an open order; returns the order as the brokerage reports it afterwards."""
        return self._run(self._trading.cancel_order(user_id, account_id, brokerage_order_id, options))

    def replace_order(
        self,
        user_id: str,
        account_id: str,
        brokerage_order_id: str,
        *,
        action: str,
        units: Decimal | int | str,
        confirm: bool = False,
        order_type: str = "Market",
        time_in_force: str = "Day",
        price: Decimal | int | str | None = None,
        stop: Decimal | int | str | None = None,
        options: CallOptions | None = None,
    ) -> Order:
        """Replace an open order with new terms (needs ``confirm=True``); journaled like a placement."""
        terms = _terms(
            action=action, order_type=order_type, time_in_force=time_in_force, units=units, price=price, stop=stop
        )
        flow = self._trading.replace_order(
            user_id, account_id, brokerage_order_id, terms, confirm=confirm, options=options
        )
        return self._run(flow)

    def get_order(
        self, user_id: str, account_id: str, brokerage_order_id: str, *, options: CallOptions | None = None
    ) -> Order:
        """One order, live from the brokerage."""
        return self._run(self._trading.order_detail(user_id, account_id, brokerage_order_id, options))

    def reconcile_order(
        self, intent: OrderIntent | str, *, resend: bool = False, options: CallOptions | None = None
    ) -> Reconciliation:
        """Settle an order whose outcome is unknown: ``placed`` (with the order), ``not_placed``, or
        ``unknown`` (look again at ``retry_at``). ``resend=True`` sends it again, only once it is
        established that the order does not exist."""
        return self._run(self._reconciler.reconcile(intent, resend=resend, options=options))

    def reconcile_pending(self, *, options: CallOptions | None = None) -> list[Reconciliation]:
        """Reconcile every pending intent (see :attr:`pending_order_intents`); never resends."""
        return self._run(self._reconciler.reconcile_pending(options))

    def sync_portfolio(
        self, user_id: str, *, force: bool = False, options: CallOptions | None = None
    ) -> PortfolioSnapshot:
        """Fetch what is due of the user's portfolio (everything with ``force``); see docs/portfolio-sync.md.

        Raises :class:`~aims_snaptrade.sync.SnapTradeSyncInProgressError` when another worker
        holds the user; per-account failures are states in the snapshot, not exceptions.
        """
        return self._run(self._sync_flow(user_id, force, options))

    def mark_from_webhook(self, event: Any) -> list[LedgerMark]:
        """Mark the sync ledger from a verified webhook event (payload mapping or typed event)."""
        return self._run(self._mark_flow(event))

    def rate_limit_usage(self) -> list[BudgetUsage]:
        """How full each rate-limit budget is (alert when ``fraction`` reaches 0.8)."""
        return self._limiter.usage()

    def grant_consent(
        self, user_id: str, scope: str, *, disclosure_version: str, source: str, expires_at: datetime | None = None
    ) -> ConsentRecord:
        """Record the user's consent (``"read"`` or ``"trade"``) and audit it; see docs/compliance.md."""
        flow = self._core.grant_consent(
            user_id, scope, disclosure_version=disclosure_version, source=source, expires_at=expires_at
        )
        return self._run(flow)

    def revoke_consent(self, user_id: str, scope: str | None = None, *, source: str) -> int:
        """Revoke the user's consent for ``scope`` (all scopes when ``None``) and audit it; returns how many."""
        return self._run(self._core.revoke_consent(user_id, scope, source=source))

    def export_user(self, user_id: str, *, options: CallOptions | None = None) -> dict[str, Any]:
        """Everything held about the user, locally and at SnapTrade, as one JSON-ready document."""
        return self._run(export_user(self._core, user_id, options))

    def erase_user(self, user_id: str, *, confirm: bool = False, options: CallOptions | None = None) -> ErasureReceipt:
        """Erase the user at SnapTrade and locally (needs ``confirm=True``); returns the receipt."""
        return self._run(erase_user(self._core, user_id, confirm=confirm, options=options))

    def close(self) -> None:
        """Release connections, the rate limiter and (if the client opened it) the secret store."""
        self._unwatch_budgets()
        self._transport.close()
        self._limiter.close()
        self._close_stores()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncSafeSnapTradeClient(_Base):
    """The asyncio client: same constructor and methods as :class:`SafeSnapTradeClient`, awaited.

    One pooled aiohttp session serves every call (the SDK alone opens one per call). Use
    ``async with``, or ``await client.aclose()``. A client belongs to the event loop it first
    runs in: use from another loop raises :class:`~aims_snaptrade.errors.SnapTradeConfigurationError`.
    """

    _transport: AsyncTransport
    _limiter: AsyncRateLimiter

    def _open_io(self, limits: RateLimitPolicy) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport = AsyncTransport(self.settings)
        self._limiter = AsyncRateLimiter(
            limits, self.settings.rate_limit_storage_url, id_secret=_id_secret(self.settings)
        )
        # The gauge is read from the exporter's thread and cannot await: it shows the usage last
        # read by rate_limit_usage() (HealthMonitor.acheck() reads it on every poll).
        self._last_usage: list[BudgetUsage] = []
        self._unwatch_budgets = watch_budgets(self._sampled_usage)

    def _sampled_usage(self) -> list[BudgetUsage]:
        return self._last_usage

    _sleep = staticmethod(asyncio.sleep)

    async def _perform(self, effect: Effect) -> Any:
        function, args, kwargs = self._target(effect)
        try:
            if isinstance(effect, StoreCall):
                if getattr(self._stores[effect.store], "blocking", True):
                    # Stores are blocking (sqlite3, psycopg): keep them off the event loop.
                    return await asyncio.to_thread(function, *args, **kwargs)
                return function(*args, **kwargs)  # in memory: a thread hop would cost more than the call
            return await function(*args, **kwargs)
        except Exception as exc:
            failure = _failure(effect, exc)
        raise failure

    async def _run(self, flow: Flow[T]) -> T:
        self._check_loop()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = await self._perform(effect)
            except e.SnapTradeError as exc:
                error = exc

    async def call(
        self,
        operation: str,
        /,
        *,
        confirm: bool = False,
        options: CallOptions | None = None,
        **arguments: Any,
    ) -> Response:
        """Call any SDK operation by its SDK name, on the safe road (see :meth:`SafeSnapTradeClient.call`)."""
        return await self._run(self._core.call_any(operation, arguments, confirm=confirm, options=options))

    async def api_status(self, *, options: CallOptions | None = None) -> ApiStatus:
        """SnapTrade's status and this machine's clock skew against it."""
        return await self._run(self._core.api_status(options))

    async def register_user(self, user_id: str, *, options: CallOptions | None = None) -> RegisteredUser:
        """Register a user and store its secret; never resent after an unknown outcome."""
        return await self._run(self._core.register_user(user_id, options))

    async def ensure_user(self, user_id: str, *, options: CallOptions | None = None) -> RegisteredUser:
        """Get or register: the stored user (nothing sent, ``created=False``), else :meth:`register_user`."""
        return await self._run(self._core.ensure_user(user_id, options))

    async def rotate_user_secret(self, user_id: str, *, options: CallOptions | None = None) -> RegisteredUser:
        """Rotate the user's secret with SnapTrade, storing the new one before dropping the old."""
        return await self._run(self._core.rotate_user_secret(user_id, options))

    async def resolve_secret_rotation(self, user_id: str, *, options: CallOptions | None = None) -> bool:
        """Settle an interrupted secret rotation; ``True`` if the stored secret still works (marker cleared)."""
        return await self._run(self._core.resolve_secret_rotation(user_id, options))

    async def delete_user(
        self, user_id: str, *, confirm: bool = False, options: CallOptions | None = None
    ) -> DeletedUser:
        """Delete the user at SnapTrade (needs ``confirm=True``) and purge its local secret."""
        return await self._run(self._core.delete_user(user_id, confirm=confirm, options=options))

    async def connection_portal_url(
        self,
        user_id: str,
        *,
        broker: str | None = None,
        connection_type: ConnectionType = "read",
        custom_redirect: str | None = None,
        reconnect: str | None = None,
        immediate_redirect: bool | None = None,
        options: CallOptions | None = None,
    ) -> ConnectionPortalLink:
        """A Connection Portal link (valid 5 minutes); ``reconnect=<authorization id>`` repairs a connection."""
        return await self._run(
            self._core.connection_portal_url(
                user_id,
                broker=broker,
                connection_type=connection_type,
                custom_redirect=custom_redirect,
                reconnect=reconnect,
                immediate_redirect=immediate_redirect,
                options=options,
            )
        )

    async def list_accounts(self, user_id: str, *, options: CallOptions | None = None) -> list[Account]:
        """Every account of the user."""
        return await self._run(self._core.list_accounts(user_id, options))

    async def get_balances(self, user_id: str, account_id: str, *, options: CallOptions | None = None) -> list[Balance]:
        """Balances of one account, per currency."""
        return await self._run(self._core.get_balances(user_id, account_id, options))

    async def get_positions(
        self, user_id: str, account_id: str, *, options: CallOptions | None = None
    ) -> list[Position]:
        """Positions of one account."""
        return await self._run(self._core.get_positions(user_id, account_id, options))

    async def get_activities(
        self,
        user_id: str,
        account_id: str,
        *,
        start_date: Any = None,
        end_date: Any = None,
        type: str | None = None,
        options: CallOptions | None = None,
    ) -> list[Activity]:
        """All activities of one account (every page)."""
        return await self._run(
            self._core.get_activities(
                user_id, account_id, start_date=start_date, end_date=end_date, type=type, options=options
            )
        )

    # --- trading (docs/trading.md) ---------------------------------------------------------------

    async def preview_order(
        self,
        user_id: str,
        account_id: str,
        *,
        action: str,
        symbol: str | None = None,
        universal_symbol_id: str | None = None,
        order_type: str = "Market",
        time_in_force: str = "Day",
        units: Decimal | int | str | None = None,
        notional_value: Decimal | int | str | None = None,
        price: Decimal | int | str | None = None,
        stop: Decimal | int | str | None = None,
        options: CallOptions | None = None,
    ) -> OrderPreview:
        """Check an order with SnapTrade without placing it (see :meth:`SafeSnapTradeClient.preview_order`).

        Quantities and prices are Decimals (or ints / decimal strings); exactly one of ``units``
        and ``notional_value``. Show the preview to the account owner, then call
        :meth:`place_order` with it and its ``confirmation`` within ``expires_at``.
        """
        terms = _terms(
            action=action,
            symbol=symbol,
            universal_symbol_id=universal_symbol_id,
            order_type=order_type,
            time_in_force=time_in_force,
            units=units,
            notional_value=notional_value,
            price=price,
            stop=stop,
        )
        return await self._run(self._trading.preview_order(user_id, account_id, terms, options))

    async def place_order(
        self, preview: OrderPreview, *, confirmation: str, options: CallOptions | None = None
    ) -> Order:
        """Place a previewed order once, given the preview's confirmation token.

        Refused with :class:`~aims_snaptrade.errors.SnapTradeConfirmationError` (nothing sent) for a
        token of another preview or a changed preview, after expiry, and after one use. A lost
        answer raises :class:`~aims_snaptrade.errors.SnapTradeUnknownOutcomeError` whose ``intent``
        goes to :meth:`reconcile_order`.
        """
        return await self._run(self._trading.place_order(preview, confirmation, options))

    async def place_order_now(
        self,
        user_id: str,
        account_id: str,
        *,
        action: str,
        confirm: bool = False,
        symbol: str | None = None,
        universal_symbol_id: str | None = None,
        order_type: str = "Market",
        time_in_force: str = "Day",
        units: Decimal | int | str | None = None,
        notional_value: Decimal | int | str | None = None,
        price: Decimal | int | str | None = None,
        stop: Decimal | int | str | None = None,
        client_order_id: str | None = None,
        options: CallOptions | None = None,
    ) -> Order:
        """Place an order without a preview (needs ``confirm=True``); journaled and sent once."""
        terms = _terms(
            action=action,
            symbol=symbol,
            universal_symbol_id=universal_symbol_id,
            order_type=order_type,
            time_in_force=time_in_force,
            units=units,
            notional_value=notional_value,
            price=price,
            stop=stop,
        )
        flow = self._trading.place_order_now(
            user_id, account_id, terms, confirm=confirm, client_order_id=client_order_id, options=options
        )
        return await self._run(flow)

    async def cancel_order(
        self, user_id: str, account_id: str, brokerage_order_id: str, *, options: CallOptions | None = None
    ) -> Order:
        """Cancel an open order; returns the order as the brokerage reports it afterwards."""
        return await self._run(self._trading.cancel_order(user_id, account_id, brokerage_order_id, options))

    async def replace_order(
        self,
        user_id: str,
        account_id: str,
        brokerage_order_id: str,
        *,
        action: str,
        units: Decimal | int | str,
        confirm: bool = False,
        order_type: str = "Market",
        time_in_force: str = "Day",
        price: Decimal | int | str | None = None,
        stop: Decimal | int | str | None = None,
        options: CallOptions | None = None,
    ) -> Order:
        """Replace an open order with new terms (needs ``confirm=True``); journaled like a placement."""
        terms = _terms(
            action=action, order_type=order_type, time_in_force=time_in_force, units=units, price=price, stop=stop
        )
        flow = self._trading.replace_order(
            user_id, account_id, brokerage_order_id, terms, confirm=confirm, options=options
        )
        return await self._run(flow)

    async def get_order(
        self, user_id: str, account_id: str, brokerage_order_id: str, *, options: CallOptions | None = None
    ) -> Order:
        """One order, live from the brokerage."""
        return await self._run(self._trading.order_detail(user_id, account_id, brokerage_order_id, options))

    async def reconcile_order(
        self, intent: OrderIntent | str, *, resend: bool = False, options: CallOptions | None = None
    ) -> Reconciliation:
        """Settle an order whose outcome is unknown: ``placed`` (with the order), ``not_placed``, or
        ``unknown`` (look again at ``retry_at``). ``resend=True`` sends it again, only once it is
        established that the order does not exist."""
        return await self._run(self._reconciler.reconcile(intent, resend=resend, options=options))

    async def reconcile_pending(self, *, options: CallOptions | None = None) -> list[Reconciliation]:
        """Reconcile every pending intent (see :attr:`pending_order_intents`); never resends."""
        return await self._run(self._reconciler.reconcile_pending(options))

    async def sync_portfolio(
        self, user_id: str, *, force: bool = False, options: CallOptions | None = None
    ) -> PortfolioSnapshot:
        """Fetch what is due of the user's portfolio (see :meth:`SafeSnapTradeClient.sync_portfolio`)."""
        return await self._run(self._sync_flow(user_id, force, options))

    async def mark_from_webhook(self, event: Any) -> list[LedgerMark]:
        """Mark the sync ledger from a verified webhook event (payload mapping or typed event)."""
        return await self._run(self._mark_flow(event))

    def stream_sync(
        self,
        user_ids: Iterable[str] | AsyncIterable[str],
        *,
        concurrency: int = 16,
        batch_id: str | None = None,
        force: bool = False,
        total: int | None = None,
        on_progress: ProgressCallback | None = None,
        cold_start_wait: float | None = None,
    ) -> AsyncIterator[UserSyncResult]:
        """Sync many users, yielding each user's result as it is ready (see :func:`aims_snaptrade.sync.stream_sync`)."""
        from aims_snaptrade.sync.batch import stream_sync

        return stream_sync(
            self,
            user_ids,
            concurrency=concurrency,
            batch_id=batch_id,
            force=force,
            total=total,
            on_progress=on_progress,
            cold_start_wait=cold_start_wait,
        )

    async def sync_users(
        self,
        user_ids: Iterable[str] | AsyncIterable[str],
        *,
        concurrency: int = 16,
        batch_id: str | None = None,
        force: bool = False,
        total: int | None = None,
        on_result: Sink | None = None,
        on_progress: ProgressCallback | None = None,
        cold_start_wait: float | None = None,
    ) -> BatchSummary:
        """Sync many users within the budget; per-user results go to ``on_result``; resumable with ``batch_id``.

        A resumable batch on a budget in process memory first waits one customer window
        (``cold_start_wait``, see :func:`aims_snaptrade.sync.stream_sync`).
        """
        from aims_snaptrade.sync.batch import sync_users

        return await sync_users(
            self,
            user_ids,
            concurrency=concurrency,
            batch_id=batch_id,
            force=force,
            total=total,
            on_result=on_result,
            on_progress=on_progress,
            cold_start_wait=cold_start_wait,
        )

    async def sync_due(
        self,
        *,
        concurrency: int = 16,
        batch_id: str | None = None,
        on_result: Sink | None = None,
        on_progress: ProgressCallback | None = None,
        settle_seconds: float | None = None,
    ) -> BatchSummary:
        """Sync every user the ledger has something due or webhook-marked for (and only what is due).

        With ``settle_seconds``, users marked less than that ago wait for the next pass, so that one
        sync covers a whole burst of webhooks (the worker paths, :class:`~aims_snaptrade.sync.SyncWorker`
        and the Celery beat schedule, wait :data:`~aims_snaptrade.sync.batch.DEFAULT_SETTLE_SECONDS`);
        by default every marked user is synced now.
        """
        from aims_snaptrade.sync.batch import due_user_ids, sync_users

        settle = 0.0 if settle_seconds is None else settle_seconds
        if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle < float("inf"):
            raise e.SnapTradeValidationError(f"settle_seconds must be a number >= 0, got {settle_seconds!r}.")
        self._open_ledger()
        return await sync_users(
            self,
            due_user_ids(self, settle_seconds=settle),
            concurrency=concurrency,
            batch_id=batch_id,
            on_result=on_result,
            on_progress=on_progress,
        )

    async def rate_limit_usage(self) -> list[BudgetUsage]:
        """How full each rate-limit budget is (alert when ``fraction`` reaches 0.8)."""
        self._last_usage = await self._limiter.usage()
        return self._last_usage

    async def grant_consent(
        self, user_id: str, scope: str, *, disclosure_version: str, source: str, expires_at: datetime | None = None
    ) -> ConsentRecord:
        """Record the user's consent (``"read"`` or ``"trade"``) and audit it; see docs/compliance.md."""
        flow = self._core.grant_consent(
            user_id, scope, disclosure_version=disclosure_version, source=source, expires_at=expires_at
        )
        return await self._run(flow)

    async def revoke_consent(self, user_id: str, scope: str | None = None, *, source: str) -> int:
        """Revoke the user's consent for ``scope`` (all scopes when ``None``) and audit it; returns how many."""
        return await self._run(self._core.revoke_consent(user_id, scope, source=source))

    async def export_user(self, user_id: str, *, options: CallOptions | None = None) -> dict[str, Any]:
        """Everything held about the user, locally and at SnapTrade, as one JSON-ready document."""
        return await self._run(export_user(self._core, user_id, options))

    async def erase_user(
        self, user_id: str, *, confirm: bool = False, options: CallOptions | None = None
    ) -> ErasureReceipt:
        """Erase the user at SnapTrade and locally (needs ``confirm=True``); returns the receipt."""
        return await self._run(erase_user(self._core, user_id, confirm=confirm, options=options))

    def _check_loop(self) -> None:
        # The pooled session and the async Redis client belong to the event loop they were made
        # in; used from another loop they fail in obscure ways, so say so plainly instead.
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise e.SnapTradeConfigurationError(
                "This AsyncSafeSnapTradeClient is bound to the event loop it first ran in and was used from another.",
                hint="Create one client per event loop, e.g. `async with AsyncSafeSnapTradeClient(...)` inside the "
                "coroutine that asyncio.run() runs.",
            )

    async def aclose(self) -> None:
        """Release the pooled session, the rate limiter and (if the client opened it) the secret store."""
        self._unwatch_budgets()
        if self._loop in (None, asyncio.get_running_loop()):
            await self._transport.aclose()
            await self._limiter.close()
        self._close_stores()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
