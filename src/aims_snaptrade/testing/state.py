"""The emulator's in-memory world: users, portal sessions, connections, accounts and orders.

Every method takes the state's re-entrant lock, so HTTP handlers (on the server's event loop) and
test helpers (on test threads) can change it concurrently. Callers that read several records and
render them (``routes``) hold ``state.lock`` around the whole read so they never see half an update.

Errors are raised as :class:`~aims_snaptrade.testing.problems.ApiProblem` carrying SnapTrade's
codes, and portal failures as :class:`~aims_snaptrade.testing.seed.ConnectionPortalError`.
"""

from __future__ import annotations

import hmac
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from aims_snaptrade.testing.config import ClientCredentials, EmulatorConfig
from aims_snaptrade.testing.problems import ApiProblem
from aims_snaptrade.testing.records import (
    Account,
    Authorization,
    CheckedTrade,
    Order,
    PortalSession,
    Position,
    Security,
    User,
)
from aims_snaptrade.testing.seed import (
    SECURITIES,
    ConnectionPortalError,
    Scenario,
    brokerage_for,
    build_accounts,
    security_by_id,
)

__all__ = ["EmulatorState"]

_NS = uuid.UUID("0b8e7c1e-51a6-4c39-8a8a-3f5d0f6f1c55")
_CONNECTION_TYPES = ("read", "trade", "trade-if-available")
_PORTAL_VERSIONS = ("v4", "v3", "v2")  # the enum; every one of them renders v4
_PORTAL_LANGUAGES = {"en": "en", "pt-br": "pt-BR"}  # the languages SnapTrade ships, by folded tag
_OPEN_STATUSES = frozenset({"PENDING", "ACCEPTED", "PARTIAL", "CANCEL_PENDING", "REPLACE_PENDING"})
_ORDER_TYPES = frozenset({"Market", "Limit", "Stop", "StopLimit"})
_UNITS = Decimal("0.0001")
_RECENT_ORDERS_PAGE = 100  # recentOrders: "the default page size is 100"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _portal_locale(value: object) -> str:
    """The portal language for a ``locale`` (default ``en``); 400 for a language not shipped.

    Matching ignores case and ``_`` versus ``-``; a regional tag falls back to its language
    (``en-US`` is ``en``), but ``pt-BR`` is only ``pt-BR``: plain ``pt`` or ``pt-PT`` is not shipped.
    """
    if value is None or value == "":
        return "en"
    if not isinstance(value, str):
        raise ApiProblem.invalid("locale must be a string")
    tag = value.strip().replace("_", "-").lower()
    found = _PORTAL_LANGUAGES.get(tag) or _PORTAL_LANGUAGES.get(tag.split("-", 1)[0])
    if found is None:
        raise ApiProblem.invalid(f"Unsupported locale {value!r}: use en or pt-BR")
    return found


def _required_text(value: object, name: str) -> str:
    """A required string field of a request body (400 code 1012 when missing, empty or not text)."""
    if not isinstance(value, str) or not value:
        raise ApiProblem.invalid(f"{name} is required")
    return value


def _decimal(body: Mapping[str, Any], key: str) -> Decimal | None:
    value = body.get(key)
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ApiProblem.invalid(f"{key} must be a number") from None
    if not number.is_finite():
        raise ApiProblem.invalid(f"{key} must be a finite number")
    return number


class EmulatorState:
    """All mutable data of one emulator. See the module documentation for the locking rules."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.lock = threading.RLock()
        self._clock = clock
        self._clients: dict[str, ClientCredentials] = {c.client_id: c for c in config.clients}
        self._ns = uuid.uuid5(_NS, f"seed:{config.seed}")
        self._counter = itertools.count(1)
        self._users: dict[tuple[str, str], User] = {}
        self._sessions: dict[str, PortalSession] = {}
        self._authorizations: dict[str, Authorization] = {}
        self._accounts: dict[str, Account] = {}
        self._trades: dict[str, CheckedTrade] = {}
        self._client_order_ids: dict[tuple[str, str], Order] = {}
        # Trade-detection subscriptions: (client_id, account_id) -> check interval, seconds.
        self._subscriptions: dict[tuple[str, str], int] = {}
        # Told of every change a webhook reports: (client_id, eventType, userId, **payload fields).
        self.on_event: Callable[..., object] | None = None

    def _emit(self, client_id: str, event_type: str, user_id: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(client_id, event_type, user_id, **fields)

    def _emit_for_accounts(self, auth: Authorization, accounts: list[Account], *event_types: str) -> None:
        for account in accounts:
            for event_type in event_types:
                details = {"success": True} if event_type == "ACCOUNT_HOLDINGS_UPDATED" else None
                self._emit(
                    auth.client_id,
                    event_type,
                    auth.user_id,
                    accountId=account.id,
                    brokerageAuthorizationId=auth.id,
                    brokerageId=auth.brokerage.id,
                    details=details,
                )

    # --- ids and clients ------------------------------------------------------------------------

    def new_id(self, kind: str) -> str:
        """A deterministic UUID: the n-th id made by this state under its seed."""
        with self.lock:
            return str(uuid.uuid5(self._ns, f"{kind}:{next(self._counter)}"))

    def client(self, client_id: str | None) -> ClientCredentials | None:
        """The accepted key with this client id."""
        return self._clients.get(client_id) if client_id else None

    def now(self) -> float:
        """The state's monotonic clock (expiries, populating windows)."""
        return self._clock()

    def reset(self) -> None:
        """Forget every user, connection, account, order and session."""
        with self.lock:
            self._users.clear()
            self._sessions.clear()
            self._authorizations.clear()
            self._accounts.clear()
            self._trades.clear()
            self._client_order_ids.clear()
            self._subscriptions.clear()

    # --- users ----------------------------------------------------------------------------------

    def _personal_user(self, client: ClientCredentials) -> User:
        key = (client.client_id, client.client_id)
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = User(client.client_id, client.client_id, "", _utcnow())
        return user

    def authenticate_user(self, client: ClientCredentials, user_id: str | None, secret: str | None) -> User:
        """The user a user-scoped request acts for (401 code 1083 on a wrong id or secret).

        Personal keys own a single implicit user and send neither id nor secret.
        """
        with self.lock:
            if client.personal:
                return self._personal_user(client)
            user = self._users.get((client.client_id, user_id)) if user_id else None
            if user is None or not secret or not hmac.compare_digest(user.secret.encode(), secret.encode()):
                raise ApiProblem.bad_user()
            return user

    def find_user(self, client_id: str, user_id: str) -> User | None:
        """The user, if registered (test helper)."""
        with self.lock:
            return self._users.get((client_id, user_id))

    def register_user(self, client: ClientCredentials, user_id: object) -> User:
        """Register a user; 400 code 1010 when the id is taken (as SnapTrade answers)."""
        if client.personal:
            raise ApiProblem(
                403, "1141", "Personal API keys cannot register users: a personal key owns exactly one user."
            )
        if not isinstance(user_id, str) or not user_id.strip():
            raise ApiProblem.invalid("userId is required")
        with self.lock:
            if (client.client_id, user_id) in self._users:
                raise ApiProblem(400, "1010", "User already exist")
            user = User(client.client_id, user_id, self.new_id("user-secret"), _utcnow())
            self._users[(client.client_id, user_id)] = user
            self._emit(client.client_id, "USER_REGISTERED", user_id)
            return user

    def list_users(self, client: ClientCredentials) -> list[str]:
        """User ids of one key, in registration order."""
        with self.lock:
            return [u.user_id for (cid, _), u in self._users.items() if cid == client.client_id]

    def delete_user(self, client: ClientCredentials, user_id: str | None) -> None:
        """Delete a user and everything it owns (SnapTrade queues this; the emulator does it now)."""
        with self.lock:
            user = self._users.get((client.client_id, user_id)) if user_id else None
            if user is None:
                raise ApiProblem.not_found("User")
            for auth in [
                a for a in self._authorizations.values() if a.user_id == user.user_id and a.client_id == user.client_id
            ]:
                self._drop_authorization(auth)
            self._sessions = {
                k: s for k, s in self._sessions.items() if (s.client_id, s.user_id) != (user.client_id, user.user_id)
            }
            del self._users[(client.client_id, user.user_id)]
            self._emit(client.client_id, "USER_DELETED", user.user_id)

    def reset_secret(self, client: ClientCredentials, user_id: object, secret: object) -> User:
        """Rotate a user's secret.

        Both travel in the body: 400 (code 1012) when either is missing or not a string, 401
        (code 1083) when they do not match a user, 403 (code 1141) for personal keys.
        """
        if client.personal:
            raise ApiProblem(403, "1141", "Personal API keys have no user secret to reset.")
        user_id, secret = _required_text(user_id, "userId"), _required_text(secret, "userSecret")
        with self.lock:
            user = self.authenticate_user(client, user_id, secret)
            user.secret = self.new_id("user-secret")
            return user

    # --- connection portal ----------------------------------------------------------------------

    def create_session(self, user: User, body: Mapping[str, Any]) -> PortalSession:
        """A Connection Portal session for ``loginSnapTradeUser``; 400 (code 1012) on a bad field.

        Every body field is optional. ``connectionType`` defaults to ``read``; deprecated
        ``connectionPortalVersion`` values are accepted and served as ``v4``; ``locale`` must name
        a shipped language (``en``, ``pt-BR``) in any case or separator, or a regional tag of one.
        """
        connection_type = body.get("connectionType") or "read"
        if connection_type not in _CONNECTION_TYPES:
            raise ApiProblem.invalid("connectionType must be one of read, trade, trade-if-available")
        reconnect = body.get("reconnect") or None
        broker = body.get("broker") or None
        custom_redirect = body.get("customRedirect") or None
        for name, value in (("reconnect", reconnect), ("broker", broker), ("customRedirect", custom_redirect)):
            if value is not None and not isinstance(value, str):
                raise ApiProblem.invalid(f"{name} must be a string")
        for flag in ("immediateRedirect", "showCloseButton", "darkMode"):
            if body.get(flag) is not None and not isinstance(body[flag], bool):
                raise ApiProblem.invalid(f"{flag} must be a boolean")
        version = body.get("connectionPortalVersion")
        if version is not None and version not in _PORTAL_VERSIONS:
            raise ApiProblem.invalid("connectionPortalVersion must be one of v4, v3, v2")
        locale = _portal_locale(body.get("locale"))
        with self.lock:
            if reconnect is not None:
                self.authorization(user, reconnect)  # 404 unless the user owns it
            session = PortalSession(
                session_id=self.new_id("session"),
                client_id=user.client_id,
                user_id=user.user_id,
                created_at=_utcnow(),
                expires_at=self.now() + self.config.portal_link_ttl_seconds,
                connection_type=connection_type,
                broker=broker,
                custom_redirect=custom_redirect,
                reconnect=reconnect,
                locale=locale,
                immediate_redirect=body.get("immediateRedirect") is True,
            )
            self._sessions[session.session_id] = session
            return session

    def session(self, session_id: str) -> PortalSession | None:
        """A portal session by id."""
        with self.lock:
            return self._sessions.get(session_id)

    def complete_connection(
        self,
        session_id: str,
        *,
        brokerage: str | None = None,
        scenario: Scenario | str = Scenario.SELF_DIRECTED,
        populating_seconds: float | None = None,
    ) -> Authorization:
        """Do what a user does in the portal: pick a brokerage and a scenario, connect.

        A ``reconnect`` session repairs (re-enables) its connection and keeps its accounts.

        Raises:
            ConnectionPortalError: Unknown, used or expired session, or a failing scenario.
        """
        scenario = Scenario(scenario)
        with self.lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise ConnectionPortalError("unknown_session", "This connection link is not valid.")
            if session.used:
                raise ConnectionPortalError("session_used", "This connection link was already used.")
            if self.now() > session.expires_at:
                raise ConnectionPortalError("session_expired", "This connection link has expired (code 1006).")
            if scenario.fails:
                raise ConnectionPortalError.for_scenario(scenario)
            now = _utcnow()
            if session.reconnect is not None:
                auth = self._authorizations.get(session.reconnect)
                if auth is None:
                    raise ConnectionPortalError("unknown_connection", "The connection to repair no longer exists.")
                if brokerage is not None and brokerage_for(brokerage).slug != auth.brokerage.slug:
                    raise ConnectionPortalError(
                        "reconnect_mismatch", "Reconnect to the same brokerage account (code 1023)."
                    )
                auth.disabled = False
                auth.disabled_at = None
                auth.updated_at = now
                session.used = True
                self._emit(auth.client_id, "CONNECTION_FIXED", auth.user_id, brokerageAuthorizationId=auth.id)
                return auth
            broker = brokerage_for(brokerage or session.broker or "SANDBOX")
            connection_type = session.connection_type
            if connection_type == "trade-if-available" or not broker.allows_trading:
                connection_type = "trade" if broker.allows_trading and connection_type != "read" else "read"
            delay = self.config.populating_seconds if populating_seconds is None else populating_seconds
            auth = Authorization(
                id=self.new_id("authorization"),
                client_id=session.client_id,
                user_id=session.user_id,
                brokerage=broker,
                connection_type=connection_type,
                scenario=scenario.value,
                created_at=now,
                updated_at=now,
                ready_at=self.now() + delay,
            )
            accounts = build_accounts(scenario, seed=self.config.seed, authorization=auth, now=now, new_id=self.new_id)
            self._authorizations[auth.id] = auth
            for account in accounts:
                self._accounts[account.id] = account
            session.used = True
            fields = {"brokerageAuthorizationId": auth.id, "brokerageId": broker.id}
            self._emit(auth.client_id, "CONNECTION_ADDED", auth.user_id, **fields)
            self._emit_for_accounts(
                auth,
                accounts,
                "NEW_ACCOUNT_AVAILABLE",
                "ACCOUNT_TRANSACTIONS_INITIAL_UPDATE",
                "ACCOUNT_HOLDINGS_UPDATED",
            )
            return auth

    # --- connections ----------------------------------------------------------------------------

    def authorizations(self, user: User) -> list[Authorization]:
        """The user's connections, oldest first."""
        with self.lock:
            return [
                a for a in self._authorizations.values() if (a.client_id, a.user_id) == (user.client_id, user.user_id)
            ]

    def all_authorizations(self) -> list[Authorization]:
        """Every connection of every user (test helpers)."""
        with self.lock:
            return list(self._authorizations.values())

    def authorization(self, user: User, authorization_id: str) -> Authorization:
        """One of the user's connections (404 code 1011 otherwise)."""
        with self.lock:
            auth = self._authorizations.get(authorization_id)
            if auth is None or (auth.client_id, auth.user_id) != (user.client_id, user.user_id):
                raise ApiProblem.not_found("Connection")
            return auth

    def get_authorization(self, authorization_id: str) -> Authorization:
        """A connection by id, whoever owns it (test helper; 404 if unknown)."""
        with self.lock:
            auth = self._authorizations.get(authorization_id)
            if auth is None:
                raise ApiProblem.not_found("Connection")
            return auth

    def _drop_authorization(self, auth: Authorization) -> None:
        for account_id in [a.id for a in self._accounts.values() if a.authorization_id == auth.id]:
            account = self._accounts.pop(account_id)
            for order in account.orders:
                if order.client_order_id:
                    self._client_order_ids.pop((account_id, order.client_order_id), None)
        self._authorizations.pop(auth.id, None)

    def delete_authorization(self, user: User, authorization_id: str) -> None:
        """Delete a connection and its accounts."""
        with self.lock:
            auth = self.authorization(user, authorization_id)
            accounts = [a for a in self._accounts.values() if a.authorization_id == auth.id]
            self._drop_authorization(auth)
            self._emit_for_accounts(auth, accounts, "ACCOUNT_REMOVED")
            self._emit(auth.client_id, "CONNECTION_DELETED", auth.user_id, brokerageAuthorizationId=auth.id)

    def disable_authorization(self, authorization: Authorization) -> None:
        """Break a connection; 402 code 3011 when it is already disabled."""
        with self.lock:
            if authorization.disabled:
                raise ApiProblem(402, "3011", "This connection is already disabled.")
            now = _utcnow()
            authorization.disabled = True
            authorization.disabled_at = now
            authorization.updated_at = now
            fields = {"brokerageAuthorizationId": authorization.id, "brokerageId": authorization.brokerage.id}
            self._emit(authorization.client_id, "CONNECTION_BROKEN", authorization.user_id, **fields)

    def refresh_authorization(self, authorization: Authorization) -> None:
        """A manual refresh: 402 (3003) when disabled, 429 ``throttled`` when too frequent."""
        with self.lock:
            if authorization.disabled:
                raise ApiProblem.connection_disabled()
            now = self.now()
            spacing = self.config.refresh_min_interval_seconds
            if spacing and authorization.last_refresh is not None and now - authorization.last_refresh < spacing:
                wait = max(1, int(spacing - (now - authorization.last_refresh) + 0.999))
                raise ApiProblem(
                    429,
                    "throttled",
                    "Connection refreshed too recently. Please try again later.",
                    headers={"Retry-After": str(wait)},
                )
            authorization.last_refresh = now
            authorization.updated_at = _utcnow()
            accounts = [a for a in self._accounts.values() if a.authorization_id == authorization.id]
            self._emit_for_accounts(authorization, accounts, "ACCOUNT_HOLDINGS_UPDATED", "ACCOUNT_TRANSACTIONS_UPDATED")

    def set_ready_at(self, authorization: Authorization, seconds_from_now: float) -> None:
        """Make a connection answer 425 for ``seconds_from_now`` seconds (0: ready now)."""
        with self.lock:
            authorization.ready_at = self.now() + seconds_from_now

    def is_ready(self, authorization: Authorization) -> bool:
        """True once a connection's first sync has finished."""
        return self.now() >= authorization.ready_at

    # --- accounts -------------------------------------------------------------------------------

    def accounts(self, user: User, authorization_id: str | None = None) -> list[Account]:
        """The user's accounts (optionally of one connection), in creation order."""
        with self.lock:
            return [
                a
                for a in self._accounts.values()
                if (a.client_id, a.user_id) == (user.client_id, user.user_id)
                and (authorization_id is None or a.authorization_id == authorization_id)
            ]

    def account(self, user: User, account_id: str) -> Account:
        """One of the user's accounts (404 code 1011 otherwise)."""
        with self.lock:
            account = self._accounts.get(account_id)
            if account is None or (account.client_id, account.user_id) != (user.client_id, user.user_id):
                raise ApiProblem.not_found("Account")
            return account

    def get_account(self, account_id: str) -> Account:
        """An account by id, whoever owns it (test helper; 404 if unknown)."""
        with self.lock:
            account = self._accounts.get(account_id)
            if account is None:
                raise ApiProblem.not_found("Account")
            return account

    def account_authorization(self, account: Account) -> Authorization:
        """The connection an account belongs to."""
        with self.lock:
            return self._authorizations[account.authorization_id]

    def require_ready(self, account: Account) -> Authorization:
        """The account's connection; 425 (code 3012) while its first sync is still running."""
        auth = self.account_authorization(account)
        if not self.is_ready(auth):
            raise ApiProblem.populating()
        return auth

    # --- orders ---------------------------------------------------------------------------------

    def orders(self, account: Account, state: str = "all", days: int = 30) -> list[Order]:
        """Orders placed in the last ``days`` days, newest first, filtered by ``state``."""
        if state not in ("all", "open", "executed"):
            raise ApiProblem.invalid("state must be all, open or executed")
        horizon = _utcnow() - timedelta(days=days)
        with self.lock:
            found = [o for o in account.orders if o.time_placed >= horizon]
        if state == "open":
            found = [o for o in found if o.status in _OPEN_STATUSES]
        elif state == "executed":
            found = [o for o in found if o.status == "EXECUTED"]
        return sorted(found, key=lambda o: o.time_placed, reverse=True)

    def recent_orders(self, account: Account, only_executed: bool = True) -> list[Order]:
        """The latest page (100) of orders placed in the last 24 hours, newest first.

        ``only_executed`` keeps what ``state=executed`` keeps on ``/orders`` (status ``EXECUTED``),
        so a partly filled order that is still working shows only with ``only_executed=false``.
        """
        horizon = _utcnow() - timedelta(hours=24)
        with self.lock:
            found = [o for o in account.orders if o.time_placed >= horizon]
        if only_executed:
            found = [o for o in found if o.status == "EXECUTED"]
        return sorted(found, key=lambda o: o.time_placed, reverse=True)[:_RECENT_ORDERS_PAGE]

    def order(self, account: Account, brokerage_order_id: object) -> Order:
        """One order of the account (404 code 1011 otherwise)."""
        if not isinstance(brokerage_order_id, str) or not brokerage_order_id:
            raise ApiProblem.invalid("brokerage_order_id is required")
        with self.lock:
            for order in account.orders:
                if order.brokerage_order_id == brokerage_order_id:
                    return order
        raise ApiProblem.not_found("Order")

    def _trading_account(self, user: User, account_id: object) -> Account:
        if not isinstance(account_id, str) or not account_id:
            raise ApiProblem.invalid("account_id is required")
        account = self.account(user, account_id)
        auth = self.account_authorization(account)
        if auth.disabled:
            raise ApiProblem.connection_disabled()
        if self.config.enforce_trade_permission and (
            auth.connection_type != "trade" or not auth.brokerage.allows_trading
        ):
            raise ApiProblem(403, "1141", "Trading is not enabled for this connection.")
        return account

    @staticmethod
    def _security(body: Mapping[str, Any]) -> Security:
        symbol_id = body.get("universal_symbol_id")
        if isinstance(symbol_id, str) and symbol_id:
            found = security_by_id(symbol_id)
            if found is None:
                raise ApiProblem.invalid(f"Unknown universal_symbol_id {symbol_id}")
            return found
        ticker = body.get("symbol")
        if isinstance(ticker, str) and ticker:
            found = SECURITIES.get(ticker.upper())
            if found is None:
                raise ApiProblem.invalid(f"Unknown symbol {ticker}")
            return found
        raise ApiProblem.invalid("universal_symbol_id or symbol is required")

    @staticmethod
    def _order_terms(
        body: Mapping[str, Any], security: Security
    ) -> tuple[str, str, str, Decimal, Decimal | None, Decimal | None]:
        action = body.get("action")
        if action not in ("BUY", "SELL"):
            raise ApiProblem.invalid("action must be BUY or SELL (option actions are not emulated)")
        order_type = body.get("order_type")
        if order_type not in _ORDER_TYPES:
            raise ApiProblem.invalid("order_type must be Market, Limit, Stop or StopLimit")
        time_in_force = body.get("time_in_force")
        if not isinstance(time_in_force, str) or not time_in_force:
            raise ApiProblem.invalid("time_in_force is required")
        price, stop = _decimal(body, "price"), _decimal(body, "stop")
        if order_type in ("Limit", "StopLimit") and price is None:
            raise ApiProblem.invalid(f"price is required for {order_type} orders")
        if order_type in ("Stop", "StopLimit") and stop is None:
            raise ApiProblem.invalid(f"stop is required for {order_type} orders")
        units, notional = _decimal(body, "units"), _decimal(body, "notional_value")
        if units is None and notional is not None:
            units = (notional / security.price).quantize(_UNITS, rounding=ROUND_DOWN)
        if units is None or units <= 0:
            raise ApiProblem.invalid("units (or notional_value) must be positive")
        return action, order_type, time_in_force, units, price, stop

    def _fill(self, account: Account, order: Order) -> None:
        """Execute an order at the security's price if it is marketable; adjust holdings and cash."""
        price = order.security.price
        marketable = order.order_type == "Market" or (
            order.order_type == "Limit"
            and order.limit_price is not None
            and (price <= order.limit_price if order.action == "BUY" else price >= order.limit_price)
        )
        if not marketable:
            order.status = "ACCEPTED"
            return
        now = _utcnow()
        order.status = "EXECUTED"
        order.filled_quantity = order.total_quantity
        order.execution_price = price
        order.time_executed = order.time_updated = now
        ticker = order.security.ticker
        position = account.positions.get(ticker)
        signed = order.total_quantity if order.action == "BUY" else -order.total_quantity
        if position is None:
            position = account.positions[ticker] = Position(order.security, Decimal(0), price)
        if signed > 0:
            cost = position.units * position.average_cost + signed * price
            position.units += signed
            position.average_cost = (cost / position.units).quantize(_UNITS)
        else:
            position.units += signed
        if position.units == 0:
            del account.positions[ticker]
        cash = (signed * price).quantize(Decimal("0.01"))
        account.cash -= cash
        account.buying_power -= cash

    @staticmethod
    def _check_funds(account: Account, security: Security, action: str, units: Decimal, price: Decimal | None) -> None:
        """400 when a buy costs more than the buying power or a sell exceeds the units held."""
        if action == "BUY":
            cost = units * (price if price is not None else security.price)
            if cost > account.buying_power:
                raise ApiProblem.invalid(f"Insufficient buying power: the order costs {cost:.2f}.")
        else:
            position = account.positions.get(security.ticker)
            held = position.units if position is not None else Decimal(0)
            if units > held:
                raise ApiProblem.invalid(f"Insufficient holdings: {held} {security.ticker} held, {units} to sell.")

    def _new_order(
        self,
        account: Account,
        security: Security,
        terms: tuple[str, str, str, Decimal, Decimal | None, Decimal | None],
        client_order_id: str | None,
        *,
        trade_id: str | None = None,
        replaces: str | None = None,
    ) -> Order:
        action, order_type, time_in_force, units, price, stop = terms
        self._check_funds(account, security, action, units, price)
        now = _utcnow()
        order = Order(
            brokerage_order_id=self.new_id("order"),
            account_id=account.id,
            security=security,
            action=action,
            order_type=order_type,
            time_in_force=time_in_force,
            status="PENDING",
            total_quantity=units,
            filled_quantity=Decimal(0),
            canceled_quantity=Decimal(0),
            limit_price=price if order_type in ("Limit", "StopLimit") else None,
            stop_price=stop if order_type in ("Stop", "StopLimit") else None,
            execution_price=None,
            time_placed=now,
            time_updated=now,
            client_order_id=client_order_id,
            trade_id=trade_id,
            replaces=replaces,
        )
        self._fill(account, order)
        account.orders.append(order)
        if client_order_id:
            self._client_order_ids[(account.id, client_order_id)] = order
        self._emit_trade(account, order)
        return order

    def _emit_trade(self, account: Account, order: Order) -> None:
        details = {"brokerage_order_id": order.brokerage_order_id, "status": order.status}
        fields = {"accountId": account.id, "brokerageAuthorizationId": account.authorization_id, "details": details}
        self._emit(account.client_id, "TRADE_UPDATE", account.user_id, **fields)

    def place_order(self, user: User, body: Mapping[str, Any]) -> Order:
        """``/trade/place``: place an order without a prior impact check.

        A ``client_order_id`` already used on the account returns the first order (nothing new is
        created) or 409, as configured by ``duplicate_client_order_id``.
        """
        with self.lock:
            account = self._trading_account(user, body.get("account_id"))
            client_order_id = body.get("client_order_id") or None
            if client_order_id is not None:
                if not isinstance(client_order_id, str):
                    raise ApiProblem.invalid("client_order_id must be a string")
                existing = self._client_order_ids.get((account.id, client_order_id))
                if existing is not None:
                    if self.config.duplicate_client_order_id == "reject":
                        raise ApiProblem(
                            409, "1012", f"An order with client_order_id {client_order_id} already exists."
                        )
                    return existing
            security = self._security(body)
            return self._new_order(account, security, self._order_terms(body, security), client_order_id)

    def check_trade(self, user: User, body: Mapping[str, Any]) -> tuple[CheckedTrade, Account, Decimal]:
        """``/trade/impact``: validate an order and keep it as a trade to place later."""
        with self.lock:
            account = self._trading_account(user, body.get("account_id"))
            # Unlike /trade/place, the impact form has no ``symbol``: universal_symbol_id is required.
            _required_text(body.get("universal_symbol_id"), "universal_symbol_id")
            security = self._security(body)
            action, order_type, time_in_force, units, price, stop = self._order_terms(body, security)
            trade = CheckedTrade(
                id=self.new_id("trade"),
                client_id=user.client_id,
                user_id=user.user_id,
                account_id=account.id,
                security=security,
                action=action,
                order_type=order_type,
                time_in_force=time_in_force,
                units=units,
                price=price,
                stop=stop,
                expires_at=self.now() + self.config.trade_ttl_seconds,
            )
            self._trades[trade.id] = trade
            unit_price = price if price is not None else security.price
            delta = (units * unit_price).quantize(Decimal("0.01"))
            remaining = account.cash - delta if action == "BUY" else account.cash + delta
            return trade, account, remaining

    def place_checked_trade(self, user: User, trade_id: str) -> Order:
        """``/trade/{tradeId}``: place a checked trade, once (404 unknown or expired, 400 reused)."""
        with self.lock:
            trade = self._trades.get(trade_id)
            if trade is None or (trade.client_id, trade.user_id) != (user.client_id, user.user_id):
                raise ApiProblem.not_found("Trade")
            if self.now() > trade.expires_at:
                raise ApiProblem.not_found("Trade (expired)")
            if trade.used:
                raise ApiProblem.invalid(f"Trade {trade_id} has already been placed.")
            account = self._trading_account(user, trade.account_id)
            terms = (trade.action, trade.order_type, trade.time_in_force, trade.units, trade.price, trade.stop)
            order = self._new_order(account, trade.security, terms, None, trade_id=trade.id)
            trade.used = True
            return order

    def cancel_order(self, user: User, account: Account, brokerage_order_id: object) -> Order:
        """Cancel an open order (400 when it is no longer open)."""
        with self.lock:
            self._trading_account(user, account.id)
            order = self.order(account, brokerage_order_id)
            if order.status not in _OPEN_STATUSES:
                raise ApiProblem.invalid(f"Order {order.brokerage_order_id} cannot be canceled: it is {order.status}.")
            order.canceled_quantity = order.open_quantity
            order.status = "CANCELED" if order.filled_quantity == 0 else "PARTIAL_CANCELED"
            order.time_updated = _utcnow()
            self._emit_trade(account, order)
            return order

    def replace_order(self, user: User, account: Account, body: Mapping[str, Any]) -> Order:
        """Replace an open order with new terms: the old one becomes ``REPLACED``."""
        with self.lock:
            self._trading_account(user, account.id)
            old = self.order(account, body.get("brokerage_order_id"))
            if old.status not in _OPEN_STATUSES:
                raise ApiProblem.invalid(f"Order {old.brokerage_order_id} cannot be replaced: it is {old.status}.")
            security = self._security({"symbol": body.get("symbol")}) if body.get("symbol") else old.security
            terms = self._order_terms(body, security)
            order = self._new_order(account, security, terms, None, replaces=old.brokerage_order_id)
            old.status = "REPLACED"
            old.canceled_quantity = old.open_quantity
            old.time_updated = _utcnow()
            return order

    # --- trade-detection subscriptions and partner statistics ----------------------------------

    def subscribe(self, user: User, account_id: object, check_interval_seconds: object) -> tuple[Account, int]:
        """Subscribe one of the user's accounts to trade detection (again: the interval is replaced)."""
        with self.lock:
            account = self._trading_account(user, account_id)
            interval = check_interval_seconds if check_interval_seconds is not None else 300
            if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
                raise ApiProblem.invalid("check_interval_seconds must be a positive whole number of seconds")
            self._subscriptions[(user.client_id, account.id)] = interval
            return account, interval

    def unsubscribe(self, client: ClientCredentials, account_id: object) -> bool:
        """Cancel an account's subscription; ``False`` when there was none."""
        with self.lock:
            if not isinstance(account_id, str) or not account_id:
                raise ApiProblem.invalid("account_id is required")
            return self._subscriptions.pop((client.client_id, account_id), None) is not None

    def subscriptions(self, client: ClientCredentials) -> list[tuple[str, int]]:
        """The key's subscriptions: (account id, interval), in subscription order."""
        with self.lock:
            return [
                (account, every) for (owner, account), every in self._subscriptions.items() if owner == client.client_id
            ]

    def partner_stats(self, client: ClientCredentials) -> dict[str, Any]:
        """Users, connected users, active and disabled connections, and the value of connected accounts."""
        with self.lock:
            users = [u for (owner, _), u in self._users.items() if owner == client.client_id]
            auths = [a for a in self._authorizations.values() if a.client_id == client.client_id]
            connected = {a.user_id for a in auths}
            value = {False: Decimal(0), True: Decimal(0)}
            for account in self._accounts.values():
                auth = self._authorizations.get(account.authorization_id)
                if auth is not None and auth.client_id == client.client_id:
                    worth = account.cash + sum(
                        (p.units * p.security.price for p in account.positions.values()), Decimal(0)
                    )
                    value[auth.disabled] += worth
            return {
                "users": len(users),
                "connected_users": len(connected),
                "active": sum(1 for a in auths if not a.disabled),
                "disabled": sum(1 for a in auths if a.disabled),
                "value": value[False],
                "disabled_value": value[True],
            }
