"""Typed webhook events: one pydantic model per documented ``eventType``, discriminated on it.

Parsing is lenient, as SnapTrade's payloads vary (verification, in :mod:`.verify`, is strict):

* an ``eventType`` the library does not know parses into :class:`GenericWebhookEvent` instead of
  failing, so a new SnapTrade event never makes a receiver answer errors;
* fields the models do not name are kept (``event.model_extra``);
* the documented sample's misspelt ``webookId`` is read as ``webhookId``;
* both payload shapes parse: API-key payloads (``clientId``, ``brokerageAuthorizationId``) and OAuth
  payloads (``schemaVersion: "oauth_v1"``, ``oauthClientId``, ``connectionId``);
  :attr:`WebhookEventBase.authorization_id` reads the connection id of either;
* the deprecated ``webhookSecret`` body field is held as a ``SecretStr``, never shown.

``ACCOUNT_HOLDINGS_UPDATED`` is sent even when the sync failed: check
:attr:`AccountHoldingsUpdatedEvent.success` (``False`` then) before trusting fresh holdings.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
)

from aims_snaptrade.errors import SnapTradeWebhookMalformedError

__all__ = [
    "EVENT_TYPES",
    "AccountHoldingsUpdatedEvent",
    "AccountRemovedEvent",
    "AccountTransactionsInitialUpdateEvent",
    "AccountTransactionsUpdatedEvent",
    "ConnectionAddedEvent",
    "ConnectionAttemptedEvent",
    "ConnectionBrokenEvent",
    "ConnectionDeletedEvent",
    "ConnectionFailedEvent",
    "ConnectionFixedEvent",
    "ConnectionUpdatedEvent",
    "GenericWebhookEvent",
    "NewAccountAvailableEvent",
    "TradeDetectionEvent",
    "TradeUpdateEvent",
    "UserDeletedEvent",
    "UserRegisteredEvent",
    "WebhookEvent",
    "WebhookEventBase",
    "parse_event",
]


class WebhookEventBase(BaseModel):
    """Fields every webhook carries (API-key and OAuth shapes).

    Attributes:
        webhook_id: ``webhookId`` (or the sample's ``webookId``): the de-duplication key; a
            redelivery carries the same one.
        event_type: ``eventType``.
        event_timestamp: ``eventTimestamp``, timezone-aware.
        user_id: ``userId``.
        client_id: ``clientId`` (API-key payloads).
        schema_version: ``schemaVersion`` (``"oauth_v1"`` for OAuth payloads).
        oauth_client_id: ``oauthClientId`` (OAuth payloads).
        brokerage_authorization_id: ``brokerageAuthorizationId`` (API-key payloads).
        connection_id: ``connectionId`` (OAuth payloads).
        account_id: ``accountId``.
        brokerage_id: ``brokerageId``.
        details: ``details``, as sent.
    """

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    webhook_id: str = Field(validation_alias=AliasChoices("webhookId", "webookId", "webhook_id"), min_length=1)
    event_type: str = Field(alias="eventType", min_length=1)
    event_timestamp: datetime = Field(alias="eventTimestamp")
    user_id: str | None = Field(default=None, alias="userId")
    client_id: str | None = Field(default=None, alias="clientId")
    schema_version: str | None = Field(default=None, alias="schemaVersion")
    oauth_client_id: str | None = Field(default=None, alias="oauthClientId")
    brokerage_authorization_id: str | None = Field(default=None, alias="brokerageAuthorizationId")
    connection_id: str | None = Field(default=None, alias="connectionId")
    account_id: str | None = Field(default=None, alias="accountId")
    brokerage_id: str | None = Field(default=None, alias="brokerageId")
    details: dict[str, Any] | None = None
    webhook_secret: SecretStr | None = Field(default=None, alias="webhookSecret", repr=False)

    @property
    def is_oauth(self) -> bool:
        """True for the OAuth payload shape (``schemaVersion: "oauth_v1"``)."""
        return self.schema_version is not None

    @property
    def authorization_id(self) -> str | None:
        """The connection the event is about, in either shape (``brokerageAuthorizationId`` or ``connectionId``)."""
        return self.brokerage_authorization_id or self.connection_id


class UserRegisteredEvent(WebhookEventBase):
    """``USER_REGISTERED``: a user was registered (``registerSnapTradeUser``)."""

    event_type: Literal["USER_REGISTERED"] = Field(alias="eventType")


class UserDeletedEvent(WebhookEventBase):
    """``USER_DELETED``: a queued user deletion finished; the user and its data are gone."""

    event_type: Literal["USER_DELETED"] = Field(alias="eventType")


class ConnectionAttemptedEvent(WebhookEventBase):
    """``CONNECTION_ATTEMPTED``: a user tried to connect a brokerage; ``result`` says how it went.

    Attributes:
        connection_attempted_result: ``SUCCESS``, ``INVALID_CREDENTIALS``, ``INVALID_MFA_CODE``, ... (open-ended).
    """

    event_type: Literal["CONNECTION_ATTEMPTED"] = Field(alias="eventType")
    connection_attempted_result: str | None = Field(default=None, alias="connectionAttemptedResult")


class ConnectionAddedEvent(WebhookEventBase):
    """``CONNECTION_ADDED``: a new brokerage connection was made in the Connection Portal."""

    event_type: Literal["CONNECTION_ADDED"] = Field(alias="eventType")


class ConnectionDeletedEvent(WebhookEventBase):
    """``CONNECTION_DELETED``: a connection and its accounts were removed."""

    event_type: Literal["CONNECTION_DELETED"] = Field(alias="eventType")


class ConnectionBrokenEvent(WebhookEventBase):
    """``CONNECTION_BROKEN``: a connection stopped syncing; send the user through a reconnect link."""

    event_type: Literal["CONNECTION_BROKEN"] = Field(alias="eventType")


class ConnectionFixedEvent(WebhookEventBase):
    """``CONNECTION_FIXED``: a broken connection was repaired."""

    event_type: Literal["CONNECTION_FIXED"] = Field(alias="eventType")


class ConnectionUpdatedEvent(WebhookEventBase):
    """``CONNECTION_UPDATED``: a connection's details changed."""

    event_type: Literal["CONNECTION_UPDATED"] = Field(alias="eventType")


class ConnectionFailedEvent(WebhookEventBase):
    """``CONNECTION_FAILED``: a connection attempt failed."""

    event_type: Literal["CONNECTION_FAILED"] = Field(alias="eventType")


class NewAccountAvailableEvent(WebhookEventBase):
    """``NEW_ACCOUNT_AVAILABLE``: an account appeared under a connection."""

    event_type: Literal["NEW_ACCOUNT_AVAILABLE"] = Field(alias="eventType")


class AccountTransactionsInitialUpdateEvent(WebhookEventBase):
    """``ACCOUNT_TRANSACTIONS_INITIAL_UPDATE``: an account's first transaction sync finished."""

    event_type: Literal["ACCOUNT_TRANSACTIONS_INITIAL_UPDATE"] = Field(alias="eventType")


class AccountTransactionsUpdatedEvent(WebhookEventBase):
    """``ACCOUNT_TRANSACTIONS_UPDATED``: an account's transactions changed."""

    event_type: Literal["ACCOUNT_TRANSACTIONS_UPDATED"] = Field(alias="eventType")


class AccountRemovedEvent(WebhookEventBase):
    """``ACCOUNT_REMOVED``: an account was removed from a connection."""

    event_type: Literal["ACCOUNT_REMOVED"] = Field(alias="eventType")


class AccountHoldingsUpdatedEvent(WebhookEventBase):
    """``ACCOUNT_HOLDINGS_UPDATED``: a holdings sync of an account ended, successfully or not.

    SnapTrade sends it after failed syncs too, with ``success: false`` in ``details``.
    """

    event_type: Literal["ACCOUNT_HOLDINGS_UPDATED"] = Field(alias="eventType")

    @property
    def success(self) -> bool | None:
        """``details.success`` (or a top-level ``success``): ``False`` when the sync failed, ``None`` if absent."""
        value = (self.details or {}).get("success", (self.model_extra or {}).get("success"))
        return value if isinstance(value, bool) else None


class TradeDetectionEvent(WebhookEventBase):
    """``TRADE_DETECTION``: trade detection found new trades in a subscribed account."""

    event_type: Literal["TRADE_DETECTION"] = Field(alias="eventType")


class TradeUpdateEvent(WebhookEventBase):
    """``TRADE_UPDATE``: an order's state changed (placed, filled, cancelled, ...)."""

    event_type: Literal["TRADE_UPDATE"] = Field(alias="eventType")


class GenericWebhookEvent(WebhookEventBase):
    """Any ``eventType`` this library does not know yet: kept as data, not refused."""


_KNOWN: tuple[type[WebhookEventBase], ...] = (
    UserRegisteredEvent,
    UserDeletedEvent,
    ConnectionAttemptedEvent,
    ConnectionAddedEvent,
    ConnectionDeletedEvent,
    ConnectionBrokenEvent,
    ConnectionFixedEvent,
    ConnectionUpdatedEvent,
    ConnectionFailedEvent,
    NewAccountAvailableEvent,
    AccountTransactionsInitialUpdateEvent,
    AccountTransactionsUpdatedEvent,
    AccountRemovedEvent,
    AccountHoldingsUpdatedEvent,
    TradeDetectionEvent,
    TradeUpdateEvent,
)

EVENT_TYPES: Mapping[str, type[WebhookEventBase]] = {
    get_args(cls.model_fields["event_type"].annotation)[0]: cls for cls in _KNOWN
}
"""Every documented ``eventType`` and its model."""

_GENERIC = "__generic__"


def _tag(value: Any) -> str:
    kind = value.get("eventType") if isinstance(value, Mapping) else getattr(value, "event_type", None)
    return kind if isinstance(kind, str) and kind in EVENT_TYPES else _GENERIC


WebhookEvent = Annotated[
    Annotated[UserRegisteredEvent, Tag("USER_REGISTERED")]
    | Annotated[UserDeletedEvent, Tag("USER_DELETED")]
    | Annotated[ConnectionAttemptedEvent, Tag("CONNECTION_ATTEMPTED")]
    | Annotated[ConnectionAddedEvent, Tag("CONNECTION_ADDED")]
    | Annotated[ConnectionDeletedEvent, Tag("CONNECTION_DELETED")]
    | Annotated[ConnectionBrokenEvent, Tag("CONNECTION_BROKEN")]
    | Annotated[ConnectionFixedEvent, Tag("CONNECTION_FIXED")]
    | Annotated[ConnectionUpdatedEvent, Tag("CONNECTION_UPDATED")]
    | Annotated[ConnectionFailedEvent, Tag("CONNECTION_FAILED")]
    | Annotated[NewAccountAvailableEvent, Tag("NEW_ACCOUNT_AVAILABLE")]
    | Annotated[AccountTransactionsInitialUpdateEvent, Tag("ACCOUNT_TRANSACTIONS_INITIAL_UPDATE")]
    | Annotated[AccountTransactionsUpdatedEvent, Tag("ACCOUNT_TRANSACTIONS_UPDATED")]
    | Annotated[AccountRemovedEvent, Tag("ACCOUNT_REMOVED")]
    | Annotated[AccountHoldingsUpdatedEvent, Tag("ACCOUNT_HOLDINGS_UPDATED")]
    | Annotated[TradeDetectionEvent, Tag("TRADE_DETECTION")]
    | Annotated[TradeUpdateEvent, Tag("TRADE_UPDATE")]
    | Annotated[GenericWebhookEvent, Tag(_GENERIC)],
    Discriminator(_tag),
]
"""Any webhook event: the model named by ``eventType``, or :class:`GenericWebhookEvent`."""

_ADAPTER: TypeAdapter[WebhookEvent] = TypeAdapter(WebhookEvent)


def parse_event(payload: Mapping[str, Any]) -> WebhookEvent:
    """Parse a payload into its typed event (no verification: use :func:`verify_webhook` for deliveries).

    Raises:
        SnapTradeWebhookMalformedError: A required field (``webhookId``, ``eventType``,
            ``eventTimestamp``) is missing or of the wrong type. The message names fields, never values.
    """
    try:
        return _ADAPTER.validate_python(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'payload'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise SnapTradeWebhookMalformedError(f"The webhook payload is not a valid event: {problems}.") from None
