"""Settings: every knob of the library, read from ``SNAPTRADE_*`` environment variables.

``Settings.from_env()`` reads the environment once, validates everything and, when anything is
missing or malformed, raises one :class:`~aims_snaptrade.errors.SnapTradeConfigurationError`
naming every bad variable and how to fix it. Secrets are held as :class:`pydantic.SecretStr`, so
``repr``, ``str``, logging and validation errors never show them.

Settings are immutable: ``settings.model_copy(update={...})`` makes a changed copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from aims_snaptrade.data_dir import default_store_url
from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.redaction import register_secret

__all__ = ["ENV_PREFIX", "Environment", "KeyType", "Settings"]

ENV_PREFIX = "SNAPTRADE_"
DEFAULT_BASE_URL = "https://api.snaptrade.com/api/v1"

Environment = Literal["sandbox", "production"]
KeyType = Literal["commercial", "personal"]

_FILE_CAPABLE = frozenset(
    {"client_id", "consumer_key", "previous_consumer_key", "encryption_keys", "confirmation_key", "audit_key"}
)
"""Settings that may also be read from the file named by ``SNAPTRADE_<NAME>_FILE``."""

# The SDK's own rule for a host (snaptrade_client.configuration.DOMAIN_REGEX), checked here so a
# URL it would refuse is a configuration error naming the variable, not the SDK's exception.
_HOST = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9][a-z0-9-]{0,61}[a-z0-9](?::[0-9]{1,5})?"
    r"|(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]{1,5})?"
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Settings(BaseModel):
    """Validated configuration of a SnapTrade client.

    Every field is read from the environment variable ``SNAPTRADE_<FIELD NAME IN UPPER CASE>``
    (for example ``read_timeout`` from ``SNAPTRADE_READ_TIMEOUT``).
    """

    # No infinities or NaN anywhere: an infinite timeout or window is a hang, not a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True, allow_inf_nan=False)

    client_id: str = Field(min_length=1, description="SnapTrade client id (public identifier).")
    consumer_key: SecretStr = Field(description="SnapTrade consumer key (secret).")
    environment: Environment = Field(description="'sandbox' (test keys) or 'production' (real money). Never defaulted.")
    key_type: KeyType = Field(
        default="commercial",
        description="'commercial' (one SnapTrade user per end user) or 'personal' (no registerUser).",
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="API root, including /api/v1.")
    connect_timeout: float = Field(default=5.0, gt=0, le=300, description="Seconds to connect.")
    read_timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds to wait for a response.")
    trading_enabled: bool = Field(default=False, description="Allow order placement, cancellation, impact.")
    consent_required: bool = Field(
        default=True, description="Check recorded user consent before reading or connecting user data."
    )
    data_dir: str | None = Field(
        default=None,
        description="Directory of the embedded SQLite defaults (created 0700); unset: the platform's user data "
        "directory (~/.local/share/aims-snaptrade on Linux). Production uses it only when set.",
    )
    secret_store_url: str = Field(
        default_factory=lambda data: default_store_url(data.get("data_dir"), "secret_store_url"),
        description="Where user secrets live: sqlite:///path, postgresql://..., or memory:// (tests only); "
        "unset: secrets.db in the data directory.",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Keyring for secrets at rest: 'v2:<base64 32 bytes>,v1:<...>' (first one encrypts).",
    )
    webhook_dedupe_url: str = Field(
        default_factory=lambda data: default_store_url(data.get("data_dir"), "webhook_dedupe_url"),
        description="Webhook claims shared by replicas: sqlite:///path, redis://..., postgresql://... or memory://; "
        "unset: webhook-claims.db in the data directory.",
    )
    webhook_tolerance: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="Webhook replay window on eventTimestamp, seconds (default 6 h: SnapTrade's 3.5 h of "
        "redeliveries with margin).",
    )
    previous_consumer_key: SecretStr | None = Field(
        default=None,
        description="The consumer key being rotated out: webhooks signed with it are still accepted during the "
        "rotation overlap (docs/operations.md). Unset outside a rotation.",
    )
    rate_limit_storage_url: str = Field(
        default="memory://", description="limits storage URI: memory:// or redis://host:port/db."
    )
    rate_limit_strategy: Literal["moving-window", "sliding-window"] = Field(
        default="moving-window", description="limits strategy used for every budget."
    )
    rate_limit_plan: str = Field(
        default="none", description="AIMS budget preset: none, starter, growth, enterprise or custom."
    )
    rate_limit_per_minute: int | None = Field(default=None, ge=1, description="Custom plan: requests/minute.")
    rate_limit_per_hour: int | None = Field(default=None, ge=1, description="Custom plan: requests/hour.")
    rate_limit_per_day: int | None = Field(default=None, ge=1, description="Custom plan: requests/day.")
    customer_limit: int = Field(
        default=250, ge=1, le=1_000_000, description="SnapTrade's customer-level limit per window."
    )
    customer_limit_window: float = Field(default=60.0, gt=0, description="Customer-level window, seconds.")
    account_limit: int | None = Field(
        default=None, ge=1, description="SnapTrade's per-account limit (10 for Personal keys); unset: off."
    )
    account_limit_window: float = Field(default=60.0, gt=0, description="Per-account window, seconds.")
    user_limit_per_minute: int | None = Field(default=None, ge=1, description="Optional per-user budget.")
    rate_limit_mode: Literal["wait", "fail"] = Field(
        default="wait", description="On an exhausted budget: wait (bounded) or fail fast."
    )
    rate_limit_max_wait: float = Field(
        default=30.0, ge=0, description="Longest wait for a budget before failing, seconds."
    )
    sync_ledger_url: str = Field(
        default_factory=lambda data: default_store_url(data.get("data_dir"), "sync_ledger_url"),
        description="Where portfolio-sync progress lives: sqlite:///path, postgresql://..., or memory://; "
        "unset: sync-ledger.db in the data directory.",
    )
    sync_holdings_per_day: float = Field(
        default=4.0, gt=0, description="Background holdings refreshes per user per day (SnapTrade: at most 4)."
    )
    sync_activities_per_day: float = Field(
        default=1.0, gt=0, description="Background activities fetches per account per day (SnapTrade: 1)."
    )
    retry_policy: str = Field(default="standard", description="Retry preset: none, standard or patient.")
    clock_skew_tolerance: float = Field(
        default=30.0, ge=0, description="verify warns when the clock differs from SnapTrade's by more."
    )
    consent_max_age_days: int = Field(default=365, ge=1, description="Consent older than this has expired.")
    telemetry_include_user_ids: bool = Field(
        default=False,
        description="Put user and account ids on spans (snaptrade.user_id/account_id); they identify people.",
    )
    secret_cache_size: int = Field(
        default=10_000,
        ge=0,
        le=10_000_000,
        description="Decrypted user secrets kept in process memory (least recently used); 0 reads the store per call.",
    )
    order_intent_store_url: str = Field(
        default_factory=lambda data: default_store_url(data.get("data_dir"), "order_intent_store_url"),
        description="Order-intent journal (opened when trading is enabled): sqlite:///path, postgresql://..., "
        "memory:// (tests only), or a scheme registered under aims_snaptrade.order_intent_stores; "
        "unset: order-intents.db in the data directory.",
    )
    trade_limit_per_account: int | None = Field(
        default=1, ge=1, description="Order writes (place, cancel, replace) per account per trade window; unset: off."
    )
    trade_limit_window: float = Field(
        default=1.0, gt=0, description="Window of trade_limit_per_account, whole seconds (SnapTrade: 1 per second)."
    )
    max_order_notional: Decimal | None = Field(
        default=None, gt=0, description="Refuse any order worth more than this (account currency); unset: no cap."
    )
    order_preview_ttl: float = Field(
        default=300.0,
        gt=0,
        le=300,
        description="Seconds a preview can be confirmed; at most SnapTrade's 5-minute trade lifetime.",
    )
    order_settle_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long after sending an order a missing order may still appear; reconcile says "
        "'still unknown' before, 'not placed' after.",
    )
    confirmation_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for order confirmation tokens, shared by replicas; unset: a random key per client.",
    )
    # --- compliance (consent store, audit trail, rollout): see docs/compliance.md ---
    consent_store_url: str | None = Field(
        default=None,
        description="Where consents live: sqlite:///path, postgresql://...?schema=, memory://; "
        "unset: the secret store's database (production opens it by default).",
    )
    audit_key: SecretStr | None = Field(
        default=None, description="Key of the audit chain's HMACs (at least 32 characters); set: audit every call."
    )
    audit_store_url: str | None = Field(
        default=None, description="Where the audit chain lives (same forms); unset: the secret store's database."
    )
    rollout: str | None = Field(
        default=None, description="Who may use SnapTrade: 'allow=u1,u2;percent=10;salt=...'; unset: everyone."
    )

    @field_validator("client_id")
    @classmethod
    def _strip_client_id(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("has leading or trailing whitespace; remove it")
        return value

    @field_validator("consumer_key")
    @classmethod
    def _check_consumer_key(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw:
            raise ValueError("is empty")
        if raw != raw.strip():
            # SnapTrade answers 1076 for keys with stray whitespace: catch it before the first call.
            raise ValueError("has leading or trailing whitespace; remove it")
        register_secret(raw, kind="key")
        return value

    @field_validator("previous_consumer_key")
    @classmethod
    def _check_previous_consumer_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if value.get_secret_value() != value.get_secret_value().strip():
            raise ValueError("has leading or trailing whitespace; remove it")
        register_secret(value.get_secret_value(), kind="key")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _register_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for part in value.get_secret_value().split(","):
                register_secret(part.partition(":")[2].strip(), kind="key")
        return value

    @field_validator("confirmation_key")
    @classmethod
    def _check_confirmation_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            raw = value.get_secret_value()
            if len(raw.encode()) < 16:
                raise ValueError("must be at least 16 bytes (generate one with `aims-snaptrade generate-key`)")
            register_secret(raw)
        return value

    @field_validator("audit_key")
    @classmethod
    def _check_audit_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            register_secret(value.get_secret_value())
            if len(value.get_secret_value().strip()) < 32:
                raise ValueError("must be at least 32 characters (`aims-snaptrade generate-key` prints one)")
        return value

    @field_validator("rollout")
    @classmethod
    def _check_rollout(cls, value: str | None) -> str | None:
        from aims_snaptrade.compliance.rollout import Rollout

        if value is not None and value.strip():
            try:
                Rollout.parse(value)  # a malformed rollout is a start-up error, not a per-call surprise
            except SnapTradeConfigurationError as exc:
                raise ValueError(exc.message.removeprefix("SNAPTRADE_ROLLOUT ")) from None
        return value

    @field_validator("data_dir")
    @classmethod
    def _check_data_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip() or "\0" in value:
            raise ValueError("must be a directory path (no NUL characters), or unset for the user data directory")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for a local emulator)")
        try:
            parts = urlsplit(value)
            host, _port = parts.hostname, parts.port
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if not host or not _HOST.fullmatch(parts.netloc) or parts.query or parts.fragment:
            raise ValueError(
                "must be https://<host>[:port]/api/v1 with a lower-case dotted host name or an IPv4 address"
            )
        return value

    @field_validator("rate_limit_plan")
    @classmethod
    def _check_plan(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in {"none", "starter", "growth", "enterprise", "custom"}:
            raise ValueError("must be one of none, starter, growth, enterprise, custom")
        return value

    @property
    def is_production(self) -> bool:
        """``True`` when the environment is ``production``."""
        return self.environment == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SNAPTRADE_*`` variables (``os.environ`` by default).

        ``SNAPTRADE_CLIENT_ID``, ``SNAPTRADE_CONSUMER_KEY`` and ``SNAPTRADE_ENCRYPTION_KEYS`` may
        instead name a file with ``SNAPTRADE_<NAME>_FILE`` (mounted secrets; one trailing line
        break is dropped). Keyword ``overrides`` win over the environment. Raises
        :class:`SnapTradeConfigurationError` listing every missing or malformed variable.
        """
        # Credentials may come from files (Docker/Kubernetes secrets): SNAPTRADE_CONSUMER_KEY_FILE.
        from aims_snaptrade.secrets.env import read_env_or_file

        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            variable = ENV_PREFIX + name.upper()
            try:
                raw = read_env_or_file(variable, env) if name in _FILE_CAPABLE else env.get(variable)
            except ValueError:  # a NUL in a *_FILE path
                raise SnapTradeConfigurationError(
                    f"{variable}_FILE is not a usable file path; set it to the path of the mounted secret file."
                ) from None
            if raw is not None:
                values[name] = _coerce(cls.model_fields[name].annotation, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(values, source="environment")

    @classmethod
    def build(cls, values: Mapping[str, Any], *, source: str = "arguments") -> Settings:
        """Validate ``values`` into settings, raising one configuration error naming every problem."""
        if not isinstance(values, Mapping):
            kind = type(values).__name__
            raise SnapTradeConfigurationError(f"Settings need a mapping of names to values, got {kind}.")
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise SnapTradeConfigurationError(_describe(exc, source)) from None


def _coerce(annotation: Any, raw: str) -> Any:
    # Empty strings mean "unset" for optional values, so `SNAPTRADE_ACCOUNT_LIMIT=` switches it off.
    text = raw.strip() if annotation is not SecretStr else raw
    if annotation is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return text
    if text == "" and "None" in str(annotation):
        return None
    return text


_FIX = {
    "client_id": "set SNAPTRADE_CLIENT_ID to the client id from the SnapTrade dashboard",
    "consumer_key": "set SNAPTRADE_CONSUMER_KEY to the consumer key from the SnapTrade dashboard",
    "environment": "set SNAPTRADE_ENVIRONMENT to 'sandbox' or 'production' (it is never defaulted)",
    "key_type": "set SNAPTRADE_KEY_TYPE to 'commercial' or 'personal'",
}


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        if error["type"] == "default_factory_not_called":
            # A default built from other settings (the data directory's stores) is skipped when
            # another setting failed: a consequence of the problems listed, not one of its own.
            continue
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = ENV_PREFIX + field.upper() if source == "environment" else field
        reason = "is missing" if error["type"] == "missing" else error["msg"].removeprefix("Value error, ")
        fix = _FIX.get(field)
        problems.append(f"{variable} {reason}" + (f" ({fix})" if fix else ""))
    listed = "; ".join(problems)
    return f"Invalid SnapTrade settings from {source}: {listed}."
