"""aims-snaptrade: a safe, typed SnapTrade client for AIMS services.

The public surface is listed in ``__all__``; everything else is internal.
"""

from aims_snaptrade._transport import Response
from aims_snaptrade.client import AsyncSafeSnapTradeClient, SafeSnapTradeClient
from aims_snaptrade.errors import (
    SnapTradeAuthError,
    SnapTradeBrokerageAuthError,
    SnapTradeBrokerageError,
    SnapTradeBrokerageUnavailableError,
    SnapTradeConfigurationError,
    SnapTradeConflictError,
    SnapTradeConnectionDisabledError,
    SnapTradeConnectionError,
    SnapTradeConsentRequiredError,
    SnapTradeDataNotReadyError,
    SnapTradeEndpointRetiredError,
    SnapTradeError,
    SnapTradeGuardrailError,
    SnapTradeNotFoundError,
    SnapTradePermissionError,
    SnapTradeRateLimitError,
    SnapTradeSecretDecryptionError,
    SnapTradeSecretRotationError,
    SnapTradeSecretStoreError,
    SnapTradeServerError,
    SnapTradeTimeoutError,
    SnapTradeUnknownOutcomeError,
    SnapTradeValidationError,
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
from aims_snaptrade.operations import OPERATIONS, Operation
from aims_snaptrade.pipeline import CallOptions
from aims_snaptrade.retry import RetryPolicy
from aims_snaptrade.secrets import SecretStore
from aims_snaptrade.settings import Settings

__version__ = "0.1.0"

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
    "Operation",
    "Position",
    "RegisteredUser",
    "Response",
    "RetryPolicy",
    "SafeSnapTradeClient",
    "SecretStore",
    "Settings",
    "SnapTradeAuthError",
    "SnapTradeBrokerageAuthError",
    "SnapTradeBrokerageError",
    "SnapTradeBrokerageUnavailableError",
    "SnapTradeConfigurationError",
    "SnapTradeConflictError",
    "SnapTradeConnectionDisabledError",
    "SnapTradeConnectionError",
    "SnapTradeConsentRequiredError",
    "SnapTradeDataNotReadyError",
    "SnapTradeEndpointRetiredError",
    "SnapTradeError",
    "SnapTradeGuardrailError",
    "SnapTradeNotFoundError",
    "SnapTradePermissionError",
    "SnapTradeRateLimitError",
    "SnapTradeSecretDecryptionError",
    "SnapTradeSecretRotationError",
    "SnapTradeSecretStoreError",
    "SnapTradeServerError",
    "SnapTradeTimeoutError",
    "SnapTradeUnknownOutcomeError",
    "SnapTradeValidationError",
    "__version__",
]
