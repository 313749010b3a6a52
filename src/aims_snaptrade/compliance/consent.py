"""The consent store: who consented to what scope, when, until when, under which disclosure.

The road asks it before any request that reads, connects or trades a user's brokerage data
(``StoreCall("decide", (user_id, scope), store="consent")``), every time: nothing is cached, so a
revocation written by any replica is seen by the next call of every other one.

A consent is current when its latest grant for the scope is not revoked and not expired. It
expires at the earlier of the ``expires_at`` recorded at grant time and ``granted_at`` plus the
store's ``max_age`` (``SNAPTRADE_CONSENT_MAX_AGE_DAYS``, 365 by default), so shortening the
setting also shortens consents already on record.

Grants are kept as history (one row per grant, revocation stamped on the row) so an export shows
every consent a person gave; :meth:`ConsentStore.erase` removes them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from aims_snaptrade._ids import check_id, check_text
from aims_snaptrade._sql.database import Database, PostgresDatabase, SQLiteDatabase
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.guardrails import ConsentChecker

__all__ = [
    "SCOPES",
    "ConsentDecision",
    "ConsentLookup",
    "ConsentRecord",
    "ConsentStore",
    "PostgresConsentStore",
    "SQLConsentStore",
    "SQLiteConsentStore",
    "as_consent_lookup",
]

SCOPES = ("read", "trade")
"""Consent scopes: ``read`` covers reading and connecting brokerage data, ``trade`` placing orders."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC (the default clock of the stores)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ConsentRecord:
    """One grant of consent, with its revocation if any.

    Attributes:
        user_id: The end user.
        scope: ``"read"`` or ``"trade"``.
        granted_at: When the person consented.
        expires_at: When this grant expires (at most ``granted_at`` + the maximum age).
        disclosure_version: Which disclosure text the person saw and accepted.
        source: Where the consent was taken (``"web-onboarding"``, ``"cli:ops"``...).
        revoked_at: When it was revoked, ``None`` while in force.
        revoked_source: Who or what revoked it.
    """

    user_id: str
    scope: str
    granted_at: datetime
    expires_at: datetime
    disclosure_version: str
    source: str
    revoked_at: datetime | None = None
    revoked_source: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings)."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ConsentDecision:
    """Whether a call may go ahead, and why not.

    Attributes:
        allowed: ``True`` when a current consent is on record.
        scope: The scope asked about.
        reason: ``"granted"``, ``"missing"``, ``"expired"`` or ``"revoked"``.
        expires_at: When the consent expires or expired (``None`` when none was ever given).
        revoked_at: When it was revoked, if it was.
    """

    allowed: bool
    scope: str
    reason: Literal["granted", "missing", "expired", "revoked"]
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


def decide(record: ConsentRecord | None, scope: str, now: datetime, max_age: timedelta) -> ConsentDecision:
    """The decision for the latest grant ``record`` at ``now`` (pure; shared by every store)."""
    if record is None:
        return ConsentDecision(False, scope, "missing")
    expires = min(record.expires_at, record.granted_at + max_age)
    if record.revoked_at is not None:
        return ConsentDecision(False, scope, "revoked", expires, record.revoked_at)
    if now >= expires:
        return ConsentDecision(False, scope, "expired", expires)
    return ConsentDecision(True, scope, "granted", expires)


def check_scope(scope: object) -> str:
    """Validate a consent scope."""
    if scope not in SCOPES:
        raise SnapTradeValidationError(f"consent scope must be one of {', '.join(SCOPES)}, got {scope!r}.")
    return str(scope)


def check_user(user_id: object) -> str:
    """Validate a user id (the library's one rule: :func:`aims_snaptrade._ids.check_id`)."""
    return check_id(user_id, "user_id")


def check_time(value: object, name: str) -> datetime:
    """A timezone-aware :class:`datetime` (a naive one is refused: it names no instant)."""
    if not isinstance(value, datetime):
        raise SnapTradeValidationError(f"{name} must be a datetime, got {type(value).__name__}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise SnapTradeValidationError(
            f"{name} must be timezone-aware (e.g. datetime.now(UTC)); a naive datetime names no instant."
        )
    return value


@runtime_checkable
class ConsentLookup(Protocol):  # pragma: no mutate block (docs/testing.md: Protocols)
    """What the road asks: a decision naming the reason and expiry (see :class:`ConsentDecision`)."""

    def decide(self, user_id: str, scope: str) -> ConsentDecision:
        """The decision for ``user_id`` and ``scope`` now."""
        ...


@runtime_checkable
class ConsentStore(ConsentChecker, ConsentLookup, Protocol):  # pragma: no mutate block (docs/testing.md: Protocols)
    """Durable consent records; implements :class:`~aims_snaptrade.guardrails.ConsentChecker`.

    Contract (checked by :class:`aims_snaptrade.testing.consent_store_conformance.ConsentStoreConformance`):
    ``grant``/``revoke``/``erase`` are durable when they return; ``decide`` reads the store every
    time (a revocation by another process is seen at once); every method is thread-safe.
    Stores declare ``kind`` and ``persistent`` like secret stores.
    """

    def grant(
        self,
        user_id: str,
        scope: str,
        disclosure_version: str,
        source: str,
        granted_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> ConsentRecord:
        """Record a consent; it expires at ``expires_at`` or after the maximum age, whichever is first."""
        ...

    def revoke(self, user_id: str, scope: str | None = None, source: str = "api") -> int:
        """Revoke the user's consents in force for ``scope`` (all scopes when ``None``); returns how many."""
        ...

    def latest(self, user_id: str, scope: str) -> ConsentRecord | None:
        """The latest grant for the scope (revoked or expired ones included), or ``None``."""
        ...

    def records(self, user_id: str) -> list[ConsentRecord]:
        """Every grant of the user, oldest first (for export)."""
        ...

    def erase(self, user_id: str) -> int:
        """Delete every consent record of the user; returns how many rows were removed."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


class _CheckerLookup:
    """Wraps a plain :class:`ConsentChecker` (``has_consent`` only) so the road can ask it."""

    def __init__(self, checker: ConsentChecker) -> None:
        self.checker = checker

    def decide(self, user_id: str, scope: str) -> ConsentDecision:
        if self.checker.has_consent(user_id, scope):
            return ConsentDecision(True, scope, "granted")
        return ConsentDecision(False, scope, "missing")

    def close(self) -> None:
        """Nothing to release: the checker belongs to the caller."""


def as_consent_lookup(checker: ConsentChecker) -> ConsentLookup:
    """What the shells register as their ``"consent"`` store: the checker itself when it can
    explain its decisions (a :class:`ConsentStore`), else a wrapper over ``has_consent``."""
    return checker if isinstance(checker, ConsentLookup) else _CheckerLookup(checker)


# --- the SQL store ---------------------------------------------------------------------------

_TABLE = "aims_snaptrade_consents"
_SCHEMA = StoreSchema(
    store="consent",
    table=_TABLE,
    version=1,
    create=(
        f"""CREATE TABLE IF NOT EXISTS {{t:{_TABLE}}} (
        id {{id}},
        user_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        granted_at {{real}} NOT NULL,
        expires_at {{real}} NOT NULL,
        disclosure_version TEXT NOT NULL,
        source TEXT NOT NULL,
        revoked_at {{real}},
        revoked_source TEXT
    )""",
        f"CREATE INDEX IF NOT EXISTS {_TABLE}_user ON {{t:{_TABLE}}} (user_id, scope, id)",
    ),
)
_COLUMNS = "user_id, scope, granted_at, expires_at, disclosure_version, source, revoked_at, revoked_source"


def _ts(value: datetime) -> float:
    if value.tzinfo is None:
        raise SnapTradeValidationError("consent times must be timezone-aware (e.g. datetime.now(UTC)).")
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _record(row: tuple[Any, ...]) -> ConsentRecord:
    granted, expires = _dt(row[2]), _dt(row[3])
    assert granted is not None
    assert expires is not None
    return ConsentRecord(row[0], row[1], granted, expires, row[4], row[5], _dt(row[6]), row[7])


class SQLConsentStore:
    """Consent records in one table of a SQLite or PostgreSQL database.

    Args:
        db: The database (see :class:`SQLiteConsentStore`, :class:`PostgresConsentStore`).
        max_age_days: Consent older than this has expired (``SNAPTRADE_CONSENT_MAX_AGE_DAYS``).
        clock: Returns the current UTC time; tests pass a simulated one.
    """

    def __init__(self, db: Database, *, max_age_days: int = 365, clock: Clock = utc_now) -> None:
        if not isinstance(max_age_days, int) or isinstance(max_age_days, bool) or max_age_days < 1:
            raise SnapTradeValidationError(f"max_age_days must be a whole number of days >= 1, got {max_age_days!r}.")
        self.db = db
        self.kind = db.kind
        self.persistent = db.persistent
        self.max_age = timedelta(days=max_age_days)
        self.clock = clock
        t = db.table(_TABLE)
        self._insert = f"INSERT INTO {t} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)"
        self._latest = f"SELECT {_COLUMNS} FROM {t} WHERE user_id = ? AND scope = ? ORDER BY id DESC LIMIT 1"
        self._all = f"SELECT {_COLUMNS} FROM {t} WHERE user_id = ? ORDER BY id"
        self._revoke = (
            f"UPDATE {t} SET revoked_at = ?, revoked_source = ? "
            "WHERE user_id = ? AND scope = ? AND revoked_at IS NULL AND expires_at > ?"
        )
        self._erase = f"DELETE FROM {t} WHERE user_id = ?"
        self._sweep = f"DELETE FROM {t} WHERE revoked_at < ? OR expires_at < ? OR granted_at < ?"
        try:
            db.setup(_SCHEMA)
        except BaseException:
            db.close()  # nothing half-opened stays behind
            raise

    def grant(
        self,
        user_id: str,
        scope: str,
        disclosure_version: str,
        source: str,
        granted_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> ConsentRecord:
        """See :meth:`ConsentStore.grant`."""
        check_user(user_id)
        check_scope(scope)
        check_text(disclosure_version, "disclosure_version")
        check_text(source, "source")
        granted = check_time(self.clock() if granted_at is None else granted_at, "granted_at")
        if expires_at is not None:
            check_time(expires_at, "expires_at")
        latest_allowed = granted + self.max_age
        expires = min(expires_at, latest_allowed) if expires_at is not None else latest_allowed
        if expires <= granted:
            raise SnapTradeValidationError("expires_at must be after granted_at.")
        # One canonical form: the record returned is exactly what a later read gives back (UTC).
        granted_ts, expires_ts = _ts(granted), _ts(expires)
        with self.db.transaction(durable=True) as cur:
            cur.execute(self._insert, (user_id, scope, granted_ts, expires_ts, disclosure_version, source))
        return _record((user_id, scope, granted_ts, expires_ts, disclosure_version, source, None, None))

    def revoke(self, user_id: str, scope: str | None = None, source: str = "api") -> int:
        """See :meth:`ConsentStore.revoke`."""
        check_user(user_id)
        check_text(source, "source")
        scopes = SCOPES if scope is None else (check_scope(scope),)
        now = _ts(self.clock())
        revoked = 0
        with self.db.transaction(durable=True) as cur:
            for each in scopes:
                revoked += cur.execute(self._revoke, (now, source, user_id, each, now)).rowcount
        return revoked

    def latest(self, user_id: str, scope: str) -> ConsentRecord | None:
        """See :meth:`ConsentStore.latest`."""
        rows = self.db.query(self._latest, (check_user(user_id), check_scope(scope)))
        return _record(rows[0]) if rows else None

    def decide(self, user_id: str, scope: str) -> ConsentDecision:
        """See :meth:`ConsentLookup.decide`: one indexed read, no cache."""
        return decide(self.latest(user_id, scope), scope, self.clock(), self.max_age)

    def has_consent(self, user_id: str, scope: str) -> bool:
        """See :meth:`~aims_snaptrade.guardrails.ConsentChecker.has_consent`."""
        return self.decide(user_id, scope).allowed

    def records(self, user_id: str) -> list[ConsentRecord]:
        """See :meth:`ConsentStore.records`."""
        return [_record(r) for r in self.db.query(self._all, (check_user(user_id),))]

    def erase(self, user_id: str) -> int:
        """See :meth:`ConsentStore.erase`."""
        check_user(user_id)
        with self.db.transaction(durable=True) as cur:
            removed = int(cur.execute(self._erase, (user_id,)).rowcount)
        if removed:
            self.db.checkpoint()
        return removed

    def sweep(self, before: datetime) -> int:
        """Delete the grants that lapsed before ``before``: revoked then, or expired then (by the
        earlier of their ``expires_at`` and the maximum age). Grants in force stay. Returns how
        many rows were removed (the consent-expiry sweep of docs/compliance.md, "Retention")."""
        cutoff = _ts(check_time(before, "before"))
        oldest = cutoff - self.max_age.total_seconds()
        with self.db.transaction(durable=True) as cur:
            removed = int(cur.execute(self._sweep, (cutoff, cutoff, oldest)).rowcount)
        if removed:
            self.db.checkpoint()
        return removed

    def close(self) -> None:
        """See :meth:`ConsentStore.close`."""
        self.db.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.description!r}, max_age_days={self.max_age.days})"


class SQLiteConsentStore(SQLConsentStore):
    """The embedded default: a table in a SQLite file (by default the secret store's file)."""

    def __init__(self, path: str | os.PathLike[str], *, max_age_days: int = 365, clock: Clock = utc_now) -> None:
        """Open (creating if needed) the consent table in the SQLite file at ``path``."""
        super().__init__(SQLiteDatabase(path, what="consent store"), max_age_days=max_age_days, clock=clock)


class PostgresConsentStore(SQLConsentStore):
    """Consent records in PostgreSQL for fleets (``pip install 'aims-snaptrade[postgres]'``)."""

    def __init__(
        self, conninfo: str, *, schema: str = "public", max_age_days: int = 365, clock: Clock = utc_now
    ) -> None:
        """Connect and create ``<schema>.aims_snaptrade_consents`` if absent."""
        db = PostgresDatabase(conninfo, what="consent store", schema=schema)
        super().__init__(db, max_age_days=max_age_days, clock=clock)
