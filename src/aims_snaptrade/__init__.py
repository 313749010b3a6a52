"""aims-snaptrade: a safe, typed SnapTrade client for AIMS services.

The public surface is listed in ``__all__``; everything else is internal. Names are loaded on
first use, so ``import aims_snaptrade`` (and the pytest plugin under it) does not import the SDK,
aiohttp or pydantic models until a client or model is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aims_snaptrade import _moved

if TYPE_CHECKING:
    from aims_snaptrade._transport import Response
    from aims_snaptrade.client import AsyncSafeSnapTradeClient, SafeSnapTradeClient
    from aims_snaptrade.errors import (
        SnapTradeAuditError,
        SnapTradeAuthError,
        SnapTradeBrokerageAuthError,
        SnapTradeBrokerageError,
        SnapTradeBrokerageUnavailableError,
        SnapTradeBudgetExhaustedError,
        SnapTradeConfigurationError,
        SnapTradeConfirmationError,
        SnapTradeConflictError,
        SnapTradeConnectionDisabledError,
        SnapTradeConnectionError,
        SnapTradeConsentRequiredError,
        SnapTradeDataNotReadyError,
        SnapTradeDeadlineExceededError,
        SnapTradeEndpointRetiredError,
        SnapTradeError,
        SnapTradeGuardrailError,
        SnapTradeMalformedResponseError,
        SnapTradeNotFoundError,
        SnapTradeOrderIntentStoreError,
        SnapTradeOrderLimitError,
        SnapTradePermissionError,
        SnapTradeRateLimitError,
        SnapTradeRateLimiterUnavailableError,
        SnapTradeRolloutError,
        SnapTradeSchemaVersionError,
        SnapTradeSecretDecryptionError,
        SnapTradeSecretRotationError,
        SnapTradeSecretStoreError,
        SnapTradeServerError,
        SnapTradeStoreError,
        SnapTradeStoreNotCreatedError,
        SnapTradeSyncInProgressError,
        SnapTradeTimeoutError,
        SnapTradeUnknownOutcomeError,
        SnapTradeValidationError,
        SnapTradeWebhookDedupeStoreError,
        SnapTradeWebhookError,
        SnapTradeWebhookMalformedError,
        SnapTradeWebhookSignatureError,
        SnapTradeWebhookStaleError,
        UpstreamCause,
    )
    from aims_snaptrade.guardrails import ConsentChecker
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
    from aims_snaptrade.observability.health import HealthMonitor
    from aims_snaptrade.operations import OPERATIONS, Operation
    from aims_snaptrade.pipeline import CallOptions
    from aims_snaptrade.portal import PortalResult, PortalStatus
    from aims_snaptrade.retry import RetryPolicy
    from aims_snaptrade.secrets import SecretStore
    from aims_snaptrade.settings import Settings
    from aims_snaptrade.trading import (
        Order,
        OrderIntent,
        OrderIntentStore,
        OrderPreview,
        OrderStatus,
        Reconciliation,
    )
    from aims_snaptrade.webhooks import WebhookASGIApp, WebhookReceiver, verify_webhook

from aims_snaptrade._version import __version__

_moved.install()  # the module paths of 0.1 that moved keep importing, with a warning

__all__ = [
    "OPERATIONS",
    "Account",
    "Activity",
    "ApiStatus",
    "AsyncSafeSnapTradeClient",
    "Balance",
    "CallOptions",
    "ConnectionPortalLink",
    "ConsentChecker",
    "DeletedUser",
    "HealthMonitor",
    "Operation",
    "Order",
    "OrderIntent",
    "OrderIntentStore",
    "OrderPreview",
    "OrderStatus",
    "PortalResult",
    "PortalStatus",
    "Position",
    "Reconciliation",
    "RegisteredUser",
    "Response",
    "RetryPolicy",
    "SafeSnapTradeClient",
    "SecretStore",
    "Settings",
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
    "WebhookASGIApp",
    "WebhookReceiver",
    "__version__",
    "verify_webhook",
]

_WHERE: dict[str, str] = {
    "Account": "aims_snaptrade.models",
    "Activity": "aims_snaptrade.models",
    "ApiStatus": "aims_snaptrade.models",
    "AsyncSafeSnapTradeClient": "aims_snaptrade.client",
    "Balance": "aims_snaptrade.models",
    "CallOptions": "aims_snaptrade.pipeline",
    "ConnectionPortalLink": "aims_snaptrade.models",
    "ConsentChecker": "aims_snaptrade.guardrails",
    "DeletedUser": "aims_snaptrade.models",
    "HealthMonitor": "aims_snaptrade.observability.health",
    "OPERATIONS": "aims_snaptrade.operations",
    "Operation": "aims_snaptrade.operations",
    "Position": "aims_snaptrade.models",
    "PortalResult": "aims_snaptrade.portal",
    "PortalStatus": "aims_snaptrade.portal",
    "Order": "aims_snaptrade.trading",
    "OrderIntent": "aims_snaptrade.trading",
    "OrderIntentStore": "aims_snaptrade.trading",
    "OrderPreview": "aims_snaptrade.trading",
    "OrderStatus": "aims_snaptrade.trading",
    "Reconciliation": "aims_snaptrade.trading",
    "SnapTradeConfirmationError": "aims_snaptrade.errors",
    "SnapTradeOrderIntentStoreError": "aims_snaptrade.errors",
    "SnapTradeOrderLimitError": "aims_snaptrade.errors",
    "RegisteredUser": "aims_snaptrade.models",
    "Response": "aims_snaptrade._transport",
    "RetryPolicy": "aims_snaptrade.retry",
    "SafeSnapTradeClient": "aims_snaptrade.client",
    "SecretStore": "aims_snaptrade.secrets",
    "Settings": "aims_snaptrade.settings",
    "SnapTradeAuditError": "aims_snaptrade.errors",
    "SnapTradeSyncInProgressError": "aims_snaptrade.errors",
    "UpstreamCause": "aims_snaptrade.errors",
    "SnapTradeAuthError": "aims_snaptrade.errors",
    "SnapTradeRolloutError": "aims_snaptrade.errors",
    "SnapTradeSchemaVersionError": "aims_snaptrade.errors",
    "SnapTradeRateLimiterUnavailableError": "aims_snaptrade.errors",
    "SnapTradeBudgetExhaustedError": "aims_snaptrade.errors",
    "SnapTradeBrokerageAuthError": "aims_snaptrade.errors",
    "SnapTradeBrokerageError": "aims_snaptrade.errors",
    "SnapTradeBrokerageUnavailableError": "aims_snaptrade.errors",
    "SnapTradeConfigurationError": "aims_snaptrade.errors",
    "SnapTradeConflictError": "aims_snaptrade.errors",
    "SnapTradeConnectionDisabledError": "aims_snaptrade.errors",
    "SnapTradeConnectionError": "aims_snaptrade.errors",
    "SnapTradeConsentRequiredError": "aims_snaptrade.errors",
    "SnapTradeDataNotReadyError": "aims_snaptrade.errors",
    "SnapTradeDeadlineExceededError": "aims_snaptrade.errors",
    "SnapTradeEndpointRetiredError": "aims_snaptrade.errors",
    "SnapTradeError": "aims_snaptrade.errors",
    "SnapTradeGuardrailError": "aims_snaptrade.errors",
    "SnapTradeMalformedResponseError": "aims_snaptrade.errors",
    "SnapTradeNotFoundError": "aims_snaptrade.errors",
    "SnapTradePermissionError": "aims_snaptrade.errors",
    "SnapTradeRateLimitError": "aims_snaptrade.errors",
    "SnapTradeSecretDecryptionError": "aims_snaptrade.errors",
    "SnapTradeSecretRotationError": "aims_snaptrade.errors",
    "SnapTradeSecretStoreError": "aims_snaptrade.errors",
    "SnapTradeStoreError": "aims_snaptrade.errors",
    "SnapTradeWebhookDedupeStoreError": "aims_snaptrade.errors",
    "SnapTradeWebhookError": "aims_snaptrade.errors",
    "SnapTradeWebhookMalformedError": "aims_snaptrade.errors",
    "SnapTradeWebhookSignatureError": "aims_snaptrade.errors",
    "SnapTradeWebhookStaleError": "aims_snaptrade.errors",
    "WebhookASGIApp": "aims_snaptrade.webhooks",
    "WebhookReceiver": "aims_snaptrade.webhooks",
    "verify_webhook": "aims_snaptrade.webhooks",
    "SnapTradeStoreNotCreatedError": "aims_snaptrade.errors",
    "SnapTradeServerError": "aims_snaptrade.errors",
    "SnapTradeTimeoutError": "aims_snaptrade.errors",
    "SnapTradeUnknownOutcomeError": "aims_snaptrade.errors",
    "SnapTradeValidationError": "aims_snaptrade.errors",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'aims_snaptrade' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
