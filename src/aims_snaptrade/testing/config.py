"""Configuration of the SnapTrade emulator: accepted keys, limits, timings and seed.

Everything here is an immutable value so one configuration can be shared by many emulators (and
by pytest fixtures) without surprises; derive variants with :func:`dataclasses.replace` or the
keyword overrides of :class:`~aims_snaptrade.testing.SnapTradeEmulator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from aims_snaptrade.webhooks.verify import SNAPTRADE_RETRY_DELAYS

__all__ = [
    "API_PREFIX",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CONSUMER_KEY",
    "DEFAULT_PERSONAL_CLIENT_ID",
    "DEFAULT_PERSONAL_CONSUMER_KEY",
    "HOLDINGS_SUNSET_OPERATIONS",
    "SNAPTRADE_ACCOUNT_RATE_LIMIT",
    "SNAPTRADE_CUSTOMER_RATE_LIMIT",
    "ClientCredentials",
    "EmulatorConfig",
    "RateLimit",
]

API_PREFIX = "/api/v1"
"""Path prefix of SnapTrade's API; the emulator also answers the same paths without it."""

DEFAULT_CLIENT_ID = "AIMS-EMULATOR"
"""Client id of the commercial key every emulator accepts unless configured otherwise."""

DEFAULT_CONSUMER_KEY = "aims-emulator-consumer-key-0000000000000000"
"""Consumer key paired with :data:`DEFAULT_CLIENT_ID`. Not a secret: it only opens the emulator."""

DEFAULT_PERSONAL_CLIENT_ID = "AIMS-EMULATOR-PERSONAL"
"""Client id of the personal key every emulator accepts unless configured otherwise."""

DEFAULT_PERSONAL_CONSUMER_KEY = "aims-emulator-personal-key-0000000000000000"
"""Consumer key paired with :data:`DEFAULT_PERSONAL_CLIENT_ID`."""

HOLDINGS_SUNSET_OPERATIONS: frozenset[str] = frozenset({"get_user_holdings"})
"""Operations SnapTrade answers with 410 Gone for apps registered after 2026-05-11.

The other endpoints of that sunset (account positions, option holdings, all holdings) are no longer
in the SDK, so only ``get_user_holdings`` is left to retire.
"""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """One API key the emulator accepts.

    Attributes:
        client_id: Sent by clients in the ``clientId`` query parameter.
        consumer_key: The HMAC key requests are signed with (kept out of ``repr``).
        personal: A Personal key: no ``registerUser``, no user secrets; the key owns one implicit user.
    """

    client_id: str
    consumer_key: str = field(repr=False)
    personal: bool = False

    def __post_init__(self) -> None:
        if not self.client_id or not self.consumer_key:
            raise ValueError("client_id and consumer_key must be non-empty")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A rolling-window limit: at most ``limit`` requests in any ``window_seconds`` span.

    SnapTrade's windows are a minute long; tests shrink them (``RateLimit(60, 2.0)``) so that a window
    fills and drains within seconds.
    """

    limit: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")


SNAPTRADE_CUSTOMER_RATE_LIMIT = RateLimit(250, 60.0)
"""SnapTrade's default customer-level limit: 250 requests per rolling minute per client id."""

SNAPTRADE_ACCOUNT_RATE_LIMIT = RateLimit(10, 60.0)
"""SnapTrade's account-level limit: 10 requests per minute per (client id, account)."""

DEFAULT_CLIENTS: tuple[ClientCredentials, ...] = (
    ClientCredentials(DEFAULT_CLIENT_ID, DEFAULT_CONSUMER_KEY),
    ClientCredentials(DEFAULT_PERSONAL_CLIENT_ID, DEFAULT_PERSONAL_CONSUMER_KEY, personal=True),
)


@dataclass(frozen=True)
class EmulatorConfig:
    """How an emulator behaves. Every field has a default matching SnapTrade's documented behaviour.

    Attributes:
        clients: API keys accepted. The first commercial one is the emulator's default key.
        clock_skew_seconds: Largest accepted distance between a request's ``timestamp`` and the
            server clock, either way; beyond it requests get 401 (code 1076).
        customer_rate_limit: Limit per ``clientId`` over all endpoints (SnapTrade: 250/min).
            ``None`` switches it off (and drops the ``X-RateLimit-*`` headers).
        account_rate_limit: Limit per (``clientId``, account) over account-data endpoints, with
            the ``X-RateLimit-Account-*`` headers. Off (``None``) by default because SnapTrade
            enforces it only for some Personal integrations; pass
            :data:`SNAPTRADE_ACCOUNT_RATE_LIMIT` (10/min) or a shrunk window to switch it on.
        account_rate_limit_scope: Which keys the account limit applies to once on: ``"all"``
            (default) or ``"personal"`` (as SnapTrade rolls it out).
        seed: Seed of the deterministic portfolios and ids. Same seed and same calls, same data.
        populating_seconds: How long a new connection answers 425 (code 3012) on account-data
            endpoints while its first sync "runs". 0 means data is ready at once.
        portal_link_ttl_seconds: Lifetime of Connection Portal links (SnapTrade: 5 minutes).
        trade_ttl_seconds: Lifetime of a checked trade (``/trade/impact``) before ``/trade/{id}``.
        refresh_min_interval_seconds: Minimum spacing of manual refreshes of one connection;
            faster refreshes get SnapTrade's ``throttled`` 429. 0 disables the check.
        retired_operations: SDK operation names answered with 410 Gone, as for apps registered
            after an endpoint's sunset.
        legacy_holdings_retired: Shortcut adding :data:`HOLDINGS_SUNSET_OPERATIONS` to the retired
            set: behave like an app registered after 2026-05-11. Off by default so that the holdings
            endpoint stays testable; switch it on to test the 410 path.
        enforce_trade_permission: Refuse trading on read-only connections (403), as brokerages do.
            Off by default so that trading flows work whatever ``connectionType`` a test asked for.
        duplicate_client_order_id: What a second order with an already used ``client_order_id`` on
            the same account gets: ``"return_existing"`` (the brokerage deduplicates; the first
            order is returned and nothing new is created) or ``"reject"`` (409).
        journal_size: Entries kept by the request journal (oldest dropped first).
        webhook_urls: Where the emulator delivers its webhooks (round-robin when several); empty:
            none are sent (``emu.webhooks.urls`` can be set once the receiver is up).
        webhook_retry_delays: Seconds before each redelivery of an undelivered webhook
            (SnapTrade: 3 retries, backoff from 30 minutes). Shrink them for tests.
        webhook_timeout: Seconds a delivery attempt may take before it counts as undelivered.
        api_version: The ``version`` reported by the status endpoint.
    """

    clients: tuple[ClientCredentials, ...] = DEFAULT_CLIENTS
    clock_skew_seconds: float = 300.0
    customer_rate_limit: RateLimit | None = SNAPTRADE_CUSTOMER_RATE_LIMIT
    account_rate_limit: RateLimit | None = None
    account_rate_limit_scope: Literal["all", "personal"] = "all"
    seed: int = 0
    populating_seconds: float = 0.0
    portal_link_ttl_seconds: float = 300.0
    trade_ttl_seconds: float = 300.0
    refresh_min_interval_seconds: float = 0.0
    retired_operations: frozenset[str] = frozenset()
    legacy_holdings_retired: bool = False
    enforce_trade_permission: bool = False
    duplicate_client_order_id: Literal["return_existing", "reject"] = "return_existing"
    journal_size: int = 100_000
    webhook_urls: tuple[str, ...] = ()
    webhook_retry_delays: tuple[float, ...] = SNAPTRADE_RETRY_DELAYS
    webhook_timeout: float = 10.0
    api_version: int = 151

    def __post_init__(self) -> None:
        if not self.clients:
            raise ValueError("at least one client must be accepted")
        ids = [c.client_id for c in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError("client ids must be unique")
        if self.clock_skew_seconds < 0:
            raise ValueError("clock_skew_seconds must not be negative")
        if self.account_rate_limit_scope not in ("personal", "all"):
            raise ValueError("account_rate_limit_scope must be 'personal' or 'all'")
        if self.duplicate_client_order_id not in ("return_existing", "reject"):
            raise ValueError("duplicate_client_order_id must be 'return_existing' or 'reject'")
        if self.journal_size < 1:
            raise ValueError("journal_size must be at least 1")
        if any(delay < 0 for delay in self.webhook_retry_delays) or self.webhook_timeout <= 0:
            raise ValueError("webhook_retry_delays must not be negative and webhook_timeout must be positive")

    @property
    def default_client(self) -> ClientCredentials:
        """The first commercial key (or the first key when all are personal)."""
        for client in self.clients:
            if not client.personal:
                return client
        return self.clients[0]

    @property
    def personal_client(self) -> ClientCredentials | None:
        """The first personal key, if any."""
        for client in self.clients:
            if client.personal:
                return client
        return None

    @property
    def effective_retired_operations(self) -> frozenset[str]:
        """``retired_operations`` plus the holdings sunset when ``legacy_holdings_retired``."""
        if self.legacy_holdings_retired:
            return self.retired_operations | HOLDINGS_SUNSET_OPERATIONS
        return self.retired_operations
