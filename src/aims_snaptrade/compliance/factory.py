"""Open the consent store and the audit trail from URLs, like the secret store.

* ``sqlite:///relative.db`` / ``sqlite:////absolute.db``: tables in that SQLite file;
* ``postgresql://user@host/db?schema=name`` (or ``postgres://``): tables in that schema;
* ``memory://``: a private in-memory SQLite database (tests; not persistent, refused in production);
* any other scheme: a factory registered under the entry point group
  ``aims_snaptrade.consent_stores`` / ``aims_snaptrade.audit_stores``, called as
  ``factory(url, settings)`` and returning a :class:`ConsentStore` / :class:`AuditTrail`.

Left unset, both URLs default to the secret store's database (``SNAPTRADE_SECRET_STORE_URL``):
one file (or one database) holds secrets, consents and the audit chain, in separate tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aims_snaptrade.compliance.audit import (
    AuditEvent,
    AuditKey,
    AuditTrail,
    OnRecord,
    PostgresAuditTrail,
    SQLiteAuditTrail,
)
from aims_snaptrade.compliance.consent import ConsentStore, PostgresConsentStore, SQLiteConsentStore
from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.store_registry import resolve_store_factory, url_scheme

if TYPE_CHECKING:
    from aims_snaptrade.settings import Settings

__all__ = [
    "append_audit_event",
    "audit_key_from_settings",
    "audit_store_url",
    "consent_store_url",
    "open_audit_trail",
    "open_consent_store",
]

CONSENT_GROUP = "aims_snaptrade.consent_stores"
AUDIT_GROUP = "aims_snaptrade.audit_stores"


def _derived(secret_url: str, variable: str) -> str:
    scheme = secret_url.partition("://")[0].lower()
    if scheme not in {"sqlite", "memory", "postgresql", "postgres"}:
        raise SnapTradeConfigurationError(
            f"{variable} is unset and the secret store's scheme {scheme!r} holds no compliance tables; "
            f"set {variable} to sqlite:///path or postgresql://..."
        )
    if scheme in {"postgresql", "postgres"}:
        # Same server and schema as the secrets; the table parameter names the secrets' table only.
        parts = urlsplit(secret_url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "table"]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return secret_url


def _secret_store_database(settings: Settings, variable: str) -> str:
    from aims_snaptrade.data_dir import prepare_store_locations

    # The secret store's default file is in the data directory: prepare it (or refuse, in production).
    prepare_store_locations(settings, ["secret_store_url"])
    return _derived(settings.secret_store_url, variable)


def consent_store_url(settings: Settings) -> str:
    """``SNAPTRADE_CONSENT_STORE_URL``, or the secret store's database when unset."""
    return settings.consent_store_url or _secret_store_database(settings, "SNAPTRADE_CONSENT_STORE_URL")


def audit_store_url(settings: Settings) -> str:
    """``SNAPTRADE_AUDIT_STORE_URL``, or the secret store's database when unset."""
    return settings.audit_store_url or _secret_store_database(settings, "SNAPTRADE_AUDIT_STORE_URL")


def audit_key_from_settings(settings: Settings) -> AuditKey | None:
    """The :class:`AuditKey` from ``SNAPTRADE_AUDIT_KEY`` (``None`` when unset)."""
    if settings.audit_key is None or not settings.audit_key.get_secret_value().strip():
        return None
    return AuditKey(settings.audit_key.get_secret_value())


def _location(url: str, variable: str) -> tuple[str, Mapping[str, str], str]:
    """``(scheme, options, target)`` of a built-in URL: target is a SQLite path or a libpq string."""
    scheme = url_scheme(url, setting=variable)
    rest = url.partition("://")[2]
    if scheme == "memory":
        return scheme, {}, ":memory:"
    if scheme == "sqlite":
        path = unquote(rest[1:]) if rest.startswith("/") and "?" not in rest else ""
        if not path:
            raise SnapTradeConfigurationError(
                f"{variable} {url!r} must be sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return scheme, {}, path
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k == "schema"}
    libpq = [(k, v) for k, v in query if k not in {"schema", "table"}]
    return "postgresql", ours, urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(libpq), ""))


def open_consent_store(url: str, settings: Settings) -> ConsentStore:
    """Open the consent store ``url`` names, with ``settings.consent_max_age_days``.

    A custom scheme's factory (entry point group ``aims_snaptrade.consent_stores``) is called as
    ``factory(url, settings)``.
    """
    variable = "SNAPTRADE_CONSENT_STORE_URL"
    days = settings.consent_max_age_days

    def sqlite(url: str, settings: Settings) -> ConsentStore:
        return SQLiteConsentStore(_location(url, variable)[2], max_age_days=days)

    def postgres(url: str, settings: Settings) -> ConsentStore:
        _, options, target = _location(url, variable)
        return PostgresConsentStore(target, schema=options.get("schema", "public"), max_age_days=days)

    builtins = {"memory": sqlite, "sqlite": sqlite, "postgresql": postgres, "postgres": postgres}
    factory = resolve_store_factory(CONSENT_GROUP, url_scheme(url, setting=variable), builtins)
    store: ConsentStore = factory(url, settings)
    return store


def open_audit_trail(url: str, settings: Settings, *, on_record: OnRecord | None = None) -> AuditTrail:
    """Open the audit trail ``url`` names, keyed by ``SNAPTRADE_AUDIT_KEY``.

    A custom scheme's factory (entry point group ``aims_snaptrade.audit_stores``) is called as
    ``factory(url, settings)``.
    """
    variable = "SNAPTRADE_AUDIT_STORE_URL"

    def key() -> AuditKey:
        found = audit_key_from_settings(settings)
        if found is None:
            raise SnapTradeConfigurationError(
                "the audit trail needs SNAPTRADE_AUDIT_KEY (at least 32 characters; "
                "`aims-snaptrade generate-key` prints one)"
            )
        return found

    def sqlite(url: str, settings: Settings) -> AuditTrail:
        return SQLiteAuditTrail(_location(url, variable)[2], key(), on_record=on_record)

    def postgres(url: str, settings: Settings) -> AuditTrail:
        _, options, target = _location(url, variable)
        return PostgresAuditTrail(target, key(), schema=options.get("schema", "public"), on_record=on_record)

    builtins = {"memory": sqlite, "sqlite": sqlite, "postgresql": postgres, "postgres": postgres}
    factory = resolve_store_factory(AUDIT_GROUP, url_scheme(url, setting=variable), builtins)
    trail: AuditTrail = factory(url, settings)
    return trail


def append_audit_event(settings: Settings, event: AuditEvent) -> bool:
    """Append one event to the audit trail ``settings`` name, for work done outside a client
    (``aims-snaptrade rotate-keys``); ``False`` when no audit key is configured."""
    if audit_key_from_settings(settings) is None:
        return False
    trail = open_audit_trail(audit_store_url(settings), settings)
    try:
        trail.append(event)
    finally:
        trail.close()
    return True
