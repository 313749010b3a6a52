"""The operation table: one row for every operation of the installed SnapTrade SDK.

Guardrails, the rate limiter, the retry policy and telemetry all read this table instead of
keeping their own lists. ``tests/test_operations.py`` checks it against the installed SDK, so an
SDK upgrade that adds, removes or moves an operation fails the build until the table follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from aims_snaptrade.errors import SnapTradeValidationError

__all__ = ["OPERATIONS", "ORDER_WRITES", "Operation", "get_operation"]


@dataclass(frozen=True, slots=True)
class Operation:
    """What the library needs to know about one SnapTrade operation.

    Attributes:
        name: The SDK method name (``list_all_user_accounts``); the async twin is ``a`` + name.
        tag: The SDK attribute holding the method (``account_information``).
        method: HTTP method.
        path: Path template below ``/api/v1``.
        idempotent: Safe to send twice with the same effect (reads, PUT, DELETE, read-only POSTs).
        user_scoped: Sends ``userId``.
        needs_user_secret: Sends ``userSecret`` (filled in from the secret store).
        account_scoped: Draws on SnapTrade's per-account rate-limit bucket.
        trading: Part of the trading surface; refused unless trading is enabled.
        destructive: Deletes or disables something; needs an explicit confirmation.
        idempotency_param: Name of the parameter that makes a non-idempotent write safe to resend.
        deprecated: The SDK marks the method deprecated.
        signed: Requests carry ``clientId``, ``timestamp`` and a ``Signature``.
    """

    name: str
    tag: str
    method: str
    path: str
    idempotent: bool = False
    user_scoped: bool = False
    needs_user_secret: bool = False
    account_scoped: bool = False
    trading: bool = False
    destructive: bool = False
    idempotency_param: str | None = None
    deprecated: bool = False
    signed: bool = True

    def __hash__(self) -> int:
        # Operations are keys of per-call caches; equal operations have equal names, and hashing
        # the name alone is a fraction of hashing all thirteen fields.
        return hash(self.name)

    @property
    def async_name(self) -> str:
        """Name of the SDK's async twin."""
        return "a" + self.name


_op = Operation

_TABLE: tuple[Operation, ...] = (
    _op(
        "get_account_activities",
        "account_information",
        "GET",
        "/accounts/{accountId}/activities",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_account_balance_history",
        "account_information",
        "GET",
        "/accounts/{accountId}/balanceHistory",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_account_balances_v2",
        "account_information",
        "GET",
        "/accounts/{accountId}/balances/v2",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_account_details",
        "account_information",
        "GET",
        "/accounts/{accountId}/details",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_all_account_positions",
        "account_information",
        "GET",
        "/accounts/{accountId}/positions/all",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_balance",
        "account_information",
        "GET",
        "/accounts/{accountId}/balances",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_details",
        "account_information",
        "GET",
        "/accounts/{accountId}",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        deprecated=True,
    ),
    _op(
        "get_user_account_order_detail",
        "account_information",
        "POST",
        "/accounts/{accountId}/orders/details",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_orders",
        "account_information",
        "GET",
        "/accounts/{accountId}/orders",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_recent_orders",
        "account_information",
        "GET",
        "/accounts/{accountId}/recentOrders",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_return_rates",
        "account_information",
        "GET",
        "/accounts/{accountId}/returnRates",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_holdings",
        "account_information",
        "GET",
        "/accounts/{accountId}/holdings",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        deprecated=True,
    ),
    _op(
        "list_all_user_accounts",
        "account_information",
        "GET",
        "/accounts/all",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "list_user_accounts",
        "account_information",
        "GET",
        "/accounts",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        deprecated=True,
    ),
    _op(
        "update_user_account",
        "account_information",
        "PUT",
        "/accounts/{accountId}",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op("check", "api_status", "GET", "/", idempotent=True, signed=False),
    _op(
        "delete_snap_trade_user",
        "authentication",
        "DELETE",
        "/snapTrade/deleteUser",
        idempotent=True,
        user_scoped=True,
        destructive=True,
    ),
    _op("list_snap_trade_users", "authentication", "GET", "/snapTrade/listUsers", idempotent=True),
    _op(
        "login_snap_trade_user",
        "authentication",
        "POST",
        "/snapTrade/login",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op("register_snap_trade_user", "authentication", "POST", "/snapTrade/registerUser", user_scoped=True),
    _op(
        "reset_snap_trade_user_secret",
        "authentication",
        "POST",
        "/snapTrade/resetUserSecret",
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "delete_connection",
        "connections",
        "DELETE",
        "/connection/{connectionId}",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        destructive=True,
    ),
    _op(
        "detail_brokerage_authorization",
        "connections",
        "GET",
        "/authorizations/{authorizationId}",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "disable_brokerage_authorization",
        "connections",
        "POST",
        "/authorizations/{authorizationId}/disable",
        user_scoped=True,
        needs_user_secret=True,
        destructive=True,
    ),
    _op(
        "list_brokerage_authorization_accounts",
        "connections",
        "GET",
        "/authorizations/{authorizationId}/accounts",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "list_brokerage_authorizations",
        "connections",
        "GET",
        "/authorizations",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "list_connection_accounts",
        "connections",
        "GET",
        "/connections/{connectionId}/accounts",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "refresh_brokerage_authorization",
        "connections",
        "POST",
        "/authorizations/{authorizationId}/refresh",
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "return_rates",
        "connections",
        "GET",
        "/authorizations/{authorizationId}/returnRates",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "sync_brokerage_authorization_transactions",
        "connections",
        "POST",
        "/authorizations/{authorizationId}/transactions/sync",
        user_scoped=True,
        needs_user_secret=True,
    ),
    _op(
        "add_subscription",
        "experimental_endpoints",
        "POST",
        "/snapTrade/tradeDetection/subscriptions",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "cancel_subscription",
        "experimental_endpoints",
        "POST",
        "/snapTrade/tradeDetection/subscriptions/cancel",
        account_scoped=True,
    ),
    _op(
        "get_all_account_orders",
        "experimental_endpoints",
        "GET",
        "/accounts/{accountId}/orders/all",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_order_detail_v2",
        "experimental_endpoints",
        "GET",
        "/accounts/{accountId}/orders/details/v2/{brokerageOrderId}",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_orders_v2",
        "experimental_endpoints",
        "GET",
        "/accounts/{accountId}/orders/v2",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_user_account_recent_orders_v2",
        "experimental_endpoints",
        "GET",
        "/accounts/{accountId}/recentOrders/v2",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "list_subscriptions",
        "experimental_endpoints",
        "GET",
        "/snapTrade/tradeDetection/subscriptions",
        idempotent=True,
    ),
    _op(
        "place_simple_order",
        "experimental_endpoints",
        "POST",
        "/accounts/{accountId}/trading/simple",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
        idempotency_param="client_order_id",
    ),
    _op("get_stats", "management", "GET", "/management/stats", idempotent=True),
    _op("get_stats_legacy", "management", "GET", "/snapTrade/stats", idempotent=True, deprecated=True),
    _op("get_partner_info", "reference_data", "GET", "/snapTrade/partners", idempotent=True),
    _op("get_stock_exchanges", "reference_data", "GET", "/exchanges", idempotent=True),
    _op("get_symbols", "reference_data", "POST", "/symbols", idempotent=True),
    _op("get_symbols_by_ticker", "reference_data", "GET", "/symbols/{query}", idempotent=True),
    _op(
        "list_all_brokerage_authorization_type",
        "reference_data",
        "GET",
        "/brokerageAuthorizationTypes",
        idempotent=True,
    ),
    _op(
        "list_all_brokerage_instruments",
        "reference_data",
        "GET",
        "/brokerages/{slug}/instruments",
        idempotent=True,
    ),
    _op("list_all_brokerages", "reference_data", "GET", "/brokerages", idempotent=True),
    _op("list_institutions", "reference_data", "GET", "/institutions", idempotent=True, signed=False),
    _op(
        "symbol_search_user_account",
        "reference_data",
        "POST",
        "/accounts/{accountId}/symbols",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "cancel_order",
        "trading",
        "POST",
        "/accounts/{accountId}/trading/cancel",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
    ),
    _op(
        "get_cryptocurrency_pair_quote",
        "trading",
        "GET",
        "/accounts/{accountId}/trading/instruments/cryptocurrencyPairs/{instrumentSymbol}/quote",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "get_option_impact",
        "trading",
        "POST",
        "/accounts/{accountId}/trading/options/impact",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
    ),
    _op(
        "get_order_impact",
        "trading",
        "POST",
        "/trade/impact",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
    ),
    _op(
        "get_user_account_option_quotes",
        "trading",
        "GET",
        "/accounts/{accountId}/quotes/options",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        deprecated=True,
    ),
    _op(
        "get_user_account_quotes",
        "trading",
        "GET",
        "/accounts/{accountId}/quotes",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
    _op(
        "place_complex_order",
        "trading",
        "POST",
        "/accounts/{accountId}/trading/complex",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
        idempotency_param="client_order_id",
    ),
    _op(
        "place_crypto_order",
        "trading",
        "POST",
        "/accounts/{accountId}/trading/crypto",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
    ),
    _op(
        "place_force_order",
        "trading",
        "POST",
        "/trade/place",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
        idempotency_param="client_order_id",
    ),
    _op(
        "place_mleg_order",
        "trading",
        "POST",
        "/accounts/{accountId}/trading/options",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
    ),
    _op(
        "place_order",
        "trading",
        "POST",
        "/trade/{tradeId}",
        user_scoped=True,
        needs_user_secret=True,
        trading=True,
    ),
    _op(
        "preview_crypto_order",
        "trading",
        "POST",
        "/accounts/{accountId}/trading/crypto/preview",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
    ),
    _op(
        "replace_order",
        "trading",
        "POST",
        "/accounts/{accountId}/trading/replace",
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
        trading=True,
    ),
    _op(
        "search_cryptocurrency_pair_instruments",
        "trading",
        "GET",
        "/accounts/{accountId}/trading/instruments/cryptocurrencyPairs",
        idempotent=True,
        user_scoped=True,
        needs_user_secret=True,
        account_scoped=True,
    ),
)

OPERATIONS: Mapping[str, Operation] = MappingProxyType({op.name: op for op in _TABLE})
"""Every operation, by SDK method name."""


ORDER_WRITES: Mapping[str, str | None] = MappingProxyType(
    {
        "place_force_order": "client.place_order_now(user_id, account_id, ..., confirm=True)",
        "place_order": "client.preview_order(...) then client.place_order(preview, confirmation=...)",
        "replace_order": "client.replace_order(user_id, account_id, brokerage_order_id, ..., confirm=True)",
        "cancel_order": "client.cancel_order(user_id, account_id, brokerage_order_id)",
        "place_crypto_order": None,
        "place_mleg_order": None,
        "place_simple_order": None,
        "place_complex_order": None,
    }
)
"""Every operation that places, replaces or cancels an order, and the client method that sends it
with the order-intent journal and reconciliation (``None``: none does yet). ``call()`` refuses them
all: an order sent without its intent journaled cannot be reconciled when its answer is lost."""


def get_operation(name: str) -> Operation:
    """Return the table row for ``name`` or raise :class:`SnapTradeValidationError` naming close matches."""
    try:
        return OPERATIONS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, OPERATIONS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SnapTradeValidationError(
            f"Unknown SnapTrade operation {name!r}.{hint} Use the SDK's method name, e.g. 'list_all_user_accounts'.",
            operation=name,
        ) from None
