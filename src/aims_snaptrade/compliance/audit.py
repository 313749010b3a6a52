"""The audit trail: an append-only, tamper-evident record of every call and every sensitive change.

Each record is chained to the one before it by a keyed hash: ``mac = HMAC(K, prev_mac + record)``
with ``K`` derived from ``SNAPTRADE_AUDIT_KEY``. Someone who can write the table but lacks the key
cannot forge a record, so :meth:`SQLAuditTrail.verify` finds the first record that was altered,
deleted, inserted or moved. A head row holds the last sequence number and MAC (so a truncated
tail shows) and the *anchor*: a signed checkpoint where verification starts after a retention
purge removed older records.

User and account ids are covered by the chain through their pseudonyms (``HMAC(K', id)``); the
clear ids sit beside them and are checked against the pseudonyms. Erasure blanks the clear ids
and the chain still verifies.

Several processes append to one chain without forking it: each append reads the head, inserts
the record and moves the head in one transaction that holds the write lock (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE`` on the head row, see
docs/compliance.md for why that lock and not an advisory lock).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from aims_snaptrade._schema import StoreSchema
from aims_snaptrade.compliance._db import Database, PostgresDatabase, SQLiteDatabase
from aims_snaptrade.errors import SnapTradeAuditError, SnapTradeConfigurationError
from aims_snaptrade.redaction import register_secret

__all__ = [
    "AuditEvent",
    "AuditKey",
    "AuditRecord",
    "AuditTrail",
    "PostgresAuditTrail",
    "PurgeReport",
    "SQLAuditTrail",
    "SQLiteAuditTrail",
    "VerifyReport",
    "audit_webhooks",
]

log = logging.getLogger("aims_snaptrade.audit")

GENESIS = "0" * 64
MIN_KEY_LENGTH = 32
Scalar = str | int | float | bool | None


class AuditKey:
    """The audit key (``SNAPTRADE_AUDIT_KEY``) and the two keys derived from it.

    One derived key MACs the chain, the other pseudonymises ids, so a pseudonym never reveals a
    chain MAC or the other way round. ``repr`` never shows key material.
    """

    __slots__ = ("_chain", "_pseudonym")

    def __init__(self, secret: str) -> None:
        """Accept a secret of at least 32 characters (``aims-snaptrade generate-key`` prints one)."""
        if not isinstance(secret, str) or len(secret.strip()) < MIN_KEY_LENGTH:
            raise SnapTradeConfigurationError(
                f"SNAPTRADE_AUDIT_KEY must be at least {MIN_KEY_LENGTH} characters; "
                "generate one with `aims-snaptrade generate-key`"
            )
        register_secret(secret)
        root = secret.strip().encode()
        self._chain = hmac.new(root, b"aims-snaptrade audit chain v1", hashlib.sha256).digest()
        self._pseudonym = hmac.new(root, b"aims-snaptrade audit pseudonym v1", hashlib.sha256).digest()

    def mac(self, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` under the chain key, hex."""
        return hmac.new(self._chain, message, hashlib.sha256).hexdigest()

    def pseudonym(self, value: str) -> str:
        """A stable pseudonym of an id: ``"p-"`` and 32 hex digits of a keyed hash."""
        return "p-" + hmac.new(self._pseudonym, value.encode(), hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:
        return "AuditKey(<hidden>)"


@dataclass(frozen=True)
class AuditEvent:
    """What a flow asks the trail to record (the trail adds sequence, time and MACs).

    Attributes:
        kind: ``"call"`` (a request went out), ``"refused"`` (stopped locally: guardrail,
            consent, rollout, budget), ``"secret"``, ``"consent"``, ``"key"``, ``"webhook"``,
            ``"data_rights"`` or ``"audit"``.
        action: The SDK operation or the event (``"secret.put"``, ``"consent.revoke"``...).
        user_id: The end user concerned, if any.
        account_id: The brokerage account concerned, if any.
        outcome: ``"ok"`` or the error class name.
        status: HTTP status of the last answer, if one came.
        request_id: SnapTrade's ``X-Request-ID``.
        attempts: Requests sent (0 for a refused call).
        duration_ms: Wall time of the whole call.
        detail: A few scalar facts (scope, counts); never a secret, never free text from errors.
        durable: Flushed to disk before the call returns (writes to SnapTrade and every secret,
            consent, key and data-rights event are).
        pseudonymous: Store only the pseudonym of ``user_id`` (used once a user is erased).
    """

    kind: str
    action: str
    user_id: str | None = None
    account_id: str | None = None
    outcome: str = "ok"
    status: int | None = None
    request_id: str | None = None
    attempts: int = 0
    duration_ms: float | None = None
    detail: Mapping[str, Scalar] = field(default_factory=dict)
    durable: bool = True
    pseudonymous: bool = False


@dataclass(frozen=True)
class AuditRecord:
    """One stored record of the chain (what :meth:`AuditTrail.tail` and the ``on_record`` hook see)."""

    seq: int
    ts: float
    kind: str
    action: str
    user_ref: str | None
    user_id: str | None
    account_ref: str | None
    account_id: str | None
    outcome: str
    status: int | None
    request_id: str | None
    attempts: int
    duration_ms: float | None
    detail: str
    prev_mac: str
    mac: str

    def canonical(self) -> bytes:
        """The bytes the MAC covers (everything but the sequence number, the clear ids and the MAC)."""
        covered = [
            self.ts,
            self.kind,
            self.action,
            self.user_ref,
            self.account_ref,
            self.outcome,
            self.status,
            self.request_id,
            self.attempts,
            self.duration_ms,
            self.detail,
        ]
        return (self.prev_mac + "\n" + json.dumps(covered, separators=(",", ":"))).encode()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``time`` as ISO 8601, ``detail`` parsed)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["time"] = datetime.fromtimestamp(self.ts, UTC).isoformat()
        out["detail"] = json.loads(self.detail)
        return out


Problem = Literal["altered", "deleted", "inserted", "reordered", "checkpoint"]


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`AuditTrail.verify`.

    Attributes:
        ok: ``True`` when every record from the anchor to the head chains correctly.
        checked: Records checked.
        anchor_seq: Where verification started (0, or the last purge's checkpoint).
        head_seq: The head's sequence number.
        problem: ``"altered"``, ``"deleted"``, ``"inserted"``, ``"reordered"`` or ``"checkpoint"``.
        position: The sequence number of the first bad record (for ``"deleted"``: of the first
            missing one).
        message: One line saying what was found.
    """

    ok: bool
    checked: int
    anchor_seq: int
    head_seq: int
    problem: Problem | None = None
    position: int | None = None
    message: str = "the chain verifies"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class PurgeReport:
    """What :meth:`AuditTrail.purge` removed: ``removed`` records, up to and including ``anchor_seq``."""

    removed: int
    anchor_seq: int


@dataclass(frozen=True)
class Head:
    """The head row: last record and the signed anchor where verification starts."""

    seq: int
    mac: str
    anchor_seq: int
    anchor_mac: str
    anchor_sig: str


def anchor_signature(key: AuditKey, seq: int, mac: str) -> str:
    """The signature of a checkpoint (an anchor)."""
    return key.mac(f"anchor\n{seq}\n{mac}".encode())


def build_record(key: AuditKey, event: AuditEvent, seq: int, prev_mac: str, ts: float) -> AuditRecord:
    """The record for ``event`` at ``seq`` after ``prev_mac`` (pure)."""
    detail = json.dumps(dict(event.detail), separators=(",", ":"), sort_keys=True)
    user_ref = key.pseudonym(event.user_id) if event.user_id is not None else None
    account_ref = key.pseudonym(event.account_id) if event.account_id is not None else None
    draft = AuditRecord(
        seq=seq,
        ts=round(ts, 6),
        kind=event.kind,
        action=event.action,
        user_ref=user_ref,
        user_id=None if event.pseudonymous else event.user_id,
        account_ref=account_ref,
        account_id=None if event.pseudonymous else event.account_id,
        outcome=event.outcome,
        status=event.status,
        request_id=event.request_id,
        attempts=event.attempts,
        duration_ms=None if event.duration_ms is None else round(event.duration_ms, 3),
        detail=detail,
        prev_mac=prev_mac,
        mac="",
    )
    return AuditRecord(**{**draft.__dict__, "mac": key.mac(draft.canonical())})


def _self_consistent(key: AuditKey, r: AuditRecord) -> bool:
    if not hmac.compare_digest(r.mac, key.mac(r.canonical())):
        return False
    # Clear ids must match the pseudonyms the MAC covers (blanked ids are fine: erasure).
    for clear, ref in ((r.user_id, r.user_ref), (r.account_id, r.account_ref)):
        if clear is not None and (ref is None or key.pseudonym(clear) != ref):
            return False
    return True


def verify_chain(key: AuditKey, head: Head, records: Sequence[AuditRecord]) -> VerifyReport:
    """Check ``records`` (in sequence order) from the head's anchor to the head itself (pure)."""

    def bad(problem: Problem, position: int, message: str, checked: int) -> VerifyReport:
        return VerifyReport(False, checked, head.anchor_seq, head.seq, problem, position, message)

    if not hmac.compare_digest(head.anchor_sig, anchor_signature(key, head.anchor_seq, head.anchor_mac)):
        return bad(
            "checkpoint",
            head.anchor_seq,
            f"the checkpoint at seq {head.anchor_seq} is not signed by this key (a wrong SNAPTRADE_AUDIT_KEY, "
            "or a forged purge)",
            0,
        )
    first_index: dict[str, int] = {}
    for i, r in enumerate(records):
        first_index.setdefault(r.mac, i)
    prev_mac, prev_seq = head.anchor_mac, head.anchor_seq
    for i, r in enumerate(records):
        if r.seq <= head.anchor_seq:
            return bad("inserted", r.seq, f"record {r.seq} sits before the checkpoint at {head.anchor_seq}", i)
        if not _self_consistent(key, r):
            # What the next record (or the head) says came before: if that skips r, r was inserted.
            last = head.mac if head.seq >= r.seq else prev_mac
            following = records[i + 1].prev_mac if i + 1 < len(records) else last
            if following == prev_mac:
                return bad("inserted", r.seq, f"record {r.seq} was inserted (its neighbours chain past it)", i)
            return bad("altered", r.seq, f"record {r.seq} was altered (its MAC does not match its content)", i)
        if r.prev_mac != prev_mac:
            if first_index[r.mac] < i:
                return bad("inserted", r.seq, f"record {r.seq} is a copy of an earlier record", i)
            later = [j for j in range(i + 1, len(records)) if records[j].mac == r.prev_mac]
            if later:
                return bad("reordered", r.seq, f"record {r.seq} is out of order (its predecessor comes later)", i)
            return bad("deleted", prev_seq + 1, f"records after {prev_seq} are missing (before {r.seq})", i)
        if r.seq != prev_seq + 1:
            return bad("altered", r.seq, f"record {r.seq} was renumbered (expected seq {prev_seq + 1})", i)
        prev_mac, prev_seq = r.mac, r.seq
    # Records past the head were appended while we read; the head itself must be in the chain.
    empty = head.anchor_mac if head.seq == head.anchor_seq else None
    at_head = next((r.mac for r in records if r.seq == head.seq), empty)
    if at_head != head.mac:
        return bad(
            "deleted", prev_seq + 1, f"the last records after {prev_seq} are missing (head is {head.seq})", len(records)
        )
    return VerifyReport(True, len(records), head.anchor_seq, head.seq)


@runtime_checkable
class AuditTrail(Protocol):
    """Where audit records go. Built-ins: :class:`SQLiteAuditTrail`, :class:`PostgresAuditTrail`.

    Contract: ``append`` returns once the record is committed (flushed to disk when
    ``event.durable``); appends from many threads and processes form one chain; every method is
    thread-safe. A custom sink (entry point group ``aims_snaptrade.audit_stores``) may forward
    records elsewhere but must keep these guarantees to be verifiable.
    """

    def append(self, event: AuditEvent) -> AuditRecord:
        """Add a record to the chain."""
        ...

    def verify(self) -> VerifyReport:
        """Check the whole chain from the anchor to the head."""
        ...

    def tail(self, limit: int = 20) -> list[AuditRecord]:
        """The last ``limit`` records, oldest first."""
        ...

    def records_for_user(self, user_id: str) -> list[AuditRecord]:
        """Every record about the user (found by pseudonym, so also after erasure)."""
        ...

    def pseudonymise(self, user_id: str) -> int:
        """Blank the user's clear ids in every record (the pseudonyms stay); returns how many."""
        ...

    def pseudonym(self, user_id: str) -> str:
        """The user's pseudonym in this trail."""
        ...

    def purge(self, before: datetime) -> PurgeReport:
        """Remove records older than ``before``, moving the signed anchor past them."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


def audit_webhooks(trail: AuditTrail) -> Callable[[Any], None]:
    """An ``on_verified`` hook for :class:`~aims_snaptrade.webhooks.WebhookReceiver` that records
    every verified webhook (duplicates included) durably before it is processed::

        WebhookReceiver(handler, consumer_key=key, on_verified=audit_webhooks(client.audit_trail))
    """

    def on_verified(event: Any) -> None:
        detail: dict[str, Scalar] = {"webhook_id": getattr(event, "webhook_id", None)}
        authorization = getattr(event, "authorization_id", None)
        if isinstance(authorization, str):
            detail["authorization_id"] = authorization
        trail.append(
            AuditEvent(
                "webhook",
                f"webhook.{getattr(event, 'event_type', 'unknown')}",
                user_id=getattr(event, "user_id", None),
                account_id=getattr(event, "account_id", None),
                detail=detail,
            )
        )

    return on_verified


# --- the SQL trail ---------------------------------------------------------------------------

_RECORDS = "aims_snaptrade_audit"
_HEAD = "aims_snaptrade_audit_head"
_FIELDS = (
    "seq, ts, kind, action, user_ref, user_id, account_ref, account_id, outcome, status, request_id, "
    "attempts, duration_ms, detail, prev_mac, mac"
)
_SCHEMA = StoreSchema(
    store="audit",
    table=_RECORDS,
    version=1,
    create=(
        f"""CREATE TABLE IF NOT EXISTS {{t:{_RECORDS}}} (
        seq BIGINT PRIMARY KEY, ts {{real}} NOT NULL, kind TEXT NOT NULL, action TEXT NOT NULL,
        user_ref TEXT, user_id TEXT, account_ref TEXT, account_id TEXT, outcome TEXT NOT NULL,
        status INTEGER, request_id TEXT, attempts INTEGER NOT NULL, duration_ms {{real}},
        detail TEXT NOT NULL, prev_mac TEXT NOT NULL, mac TEXT NOT NULL
    )""",
        f"CREATE INDEX IF NOT EXISTS {_RECORDS}_user ON {{t:{_RECORDS}}} (user_ref)",
        f"""CREATE TABLE IF NOT EXISTS {{t:{_HEAD}}} (
        id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, mac TEXT NOT NULL,
        anchor_seq BIGINT NOT NULL, anchor_mac TEXT NOT NULL, anchor_sig TEXT NOT NULL
    )""",
    ),
)

OnRecord = Callable[[AuditRecord], None]


class SQLAuditTrail:
    """The audit chain in two tables of a SQLite or PostgreSQL database.

    Args:
        db: The database.
        key: The audit key.
        on_record: Called with each record after it is committed (forward it to your own log
            pipeline); its exceptions are logged, never raised into the call.
        clock: Seconds since the epoch (``time.time``); tests may pass a simulated one.
    """

    def __init__(
        self, db: Database, key: AuditKey, *, on_record: OnRecord | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.key = key
        self.kind = db.kind
        self.persistent = db.persistent
        self.on_record = on_record
        self.clock = clock
        records, head = db.table(_RECORDS), db.table(_HEAD)
        self._select = f"SELECT {_FIELDS} FROM {records}"
        self._insert = f"INSERT INTO {records} ({_FIELDS}) VALUES ({', '.join('?' * 16)})"
        self._head = f"SELECT seq, mac, anchor_seq, anchor_mac, anchor_sig FROM {head} WHERE id = 1"
        self._move_head = f"UPDATE {head} SET seq = ?, mac = ? WHERE id = 1"
        self._lock_head = self._head + db.row_lock
        if db.kind == "postgresql":
            # One statement (one round trip) inserts the record and moves the head.
            self._append = f"WITH r AS ({self._insert}) {self._move_head}"
        self._move_anchor = f"UPDATE {head} SET anchor_seq = ?, anchor_mac = ?, anchor_sig = ? WHERE id = 1"
        self._records_table, self._head_table = records, head
        try:
            db.setup(_SCHEMA)
            with db.transaction(durable=True) as cur:
                if cur.execute(self._head).fetchone() is None:
                    # Replicas starting together on an empty database all find no head: the first
                    # insert wins, the others' (the same genesis row) change nothing.
                    cur.execute(
                        f"INSERT INTO {head} VALUES (1, 0, ?, 0, ?, ?) ON CONFLICT (id) DO NOTHING",
                        (GENESIS, GENESIS, anchor_signature(key, 0, GENESIS)),
                    )
        except BaseException:
            db.close()
            raise

    # -- writing ----------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> AuditRecord:
        """See :meth:`AuditTrail.append`."""
        with self.db.transaction(durable=event.durable) as cur:
            # Reading the head locks it (SQLite: the whole file already is): appenders queue here.
            seq, prev = cur.execute(self._lock_head).fetchone()[:2]
            record = build_record(self.key, event, int(seq) + 1, prev, self.clock())
            if self.db.kind == "postgresql":
                cur.execute(self._append, (*_row(record), record.seq, record.mac))
            else:
                cur.execute(self._insert, _row(record))
                cur.execute(self._move_head, (record.seq, record.mac))
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception:
                log.exception("the audit on_record hook failed for record %d (the record is stored)", record.seq)
        return record

    def pseudonym(self, user_id: str) -> str:
        """See :meth:`AuditTrail.pseudonym`."""
        return self.key.pseudonym(user_id)

    def pseudonymise(self, user_id: str) -> int:
        """See :meth:`AuditTrail.pseudonymise`."""
        ref = self.key.pseudonym(user_id)
        t = self._records_table
        with self.db.transaction(durable=True) as cur:
            changed = cur.execute(
                f"UPDATE {t} SET user_id = NULL, account_id = NULL WHERE user_ref = ? AND user_id IS NOT NULL", (ref,)
            ).rowcount
            # Account ids of the user's accounts may appear in records without the user id too.
            accounts = [
                r[0]
                for r in cur.execute(
                    f"SELECT DISTINCT account_ref FROM {t} WHERE user_ref = ? AND account_ref IS NOT NULL", (ref,)
                ).fetchall()
            ]
            for account_ref in accounts:
                changed += cur.execute(
                    f"UPDATE {t} SET account_id = NULL WHERE account_ref = ? AND account_id IS NOT NULL",
                    (account_ref,),
                ).rowcount
        self.db.checkpoint()
        return int(changed)

    def purge(self, before: datetime) -> PurgeReport:
        """See :meth:`AuditTrail.purge`. Refuses (:class:`SnapTradeAuditError`) when the chain
        does not verify: purging would destroy the evidence."""
        report = self.verify()
        if not report.ok:
            raise SnapTradeAuditError(f"refusing to purge an audit chain that does not verify: {report.message}")
        cutoff = before.timestamp()
        t = self._records_table
        with self.db.transaction(durable=True, lock=_HEAD) as cur:
            last = cur.execute(f"SELECT max(seq) FROM {t} WHERE ts < ?", (cutoff,)).fetchone()[0]
            if last is None:
                return PurgeReport(0, report.anchor_seq)
            (mac,) = cur.execute(f"SELECT mac FROM {t} WHERE seq = ?", (last,)).fetchone()
            removed = cur.execute(f"DELETE FROM {t} WHERE seq <= ?", (last,)).rowcount
            cur.execute(self._move_anchor, (last, mac, anchor_signature(self.key, int(last), mac)))
        self.db.checkpoint()
        self.append(AuditEvent("audit", "audit.purge", detail={"removed": removed, "anchor_seq": int(last)}))
        return PurgeReport(int(removed), int(last))

    # -- reading ----------------------------------------------------------------------------

    def head(self) -> Head:
        """The head row."""
        row = self.db.query(self._head)[0]
        return Head(int(row[0]), row[1], int(row[2]), row[3], row[4])

    def verify(self) -> VerifyReport:
        """See :meth:`AuditTrail.verify`: reads the head, then every record in sequence order."""
        # Read the head first: records appended meanwhile lie past it and chain on from it.
        head = self.head()
        rows = self.db.query(self._select + " ORDER BY seq")
        return verify_chain(self.key, head, [_record(r) for r in rows])

    def tail(self, limit: int = 20) -> list[AuditRecord]:
        """See :meth:`AuditTrail.tail`."""
        rows = self.db.query(self._select + " ORDER BY seq DESC LIMIT ?", (int(limit),))
        return [_record(r) for r in reversed(rows)]

    def records_for_user(self, user_id: str) -> list[AuditRecord]:
        """See :meth:`AuditTrail.records_for_user`."""
        rows = self.db.query(self._select + " WHERE user_ref = ? ORDER BY seq", (self.key.pseudonym(user_id),))
        return [_record(r) for r in rows]

    def count(self) -> int:
        """How many records the table holds."""
        return int(self.db.query(f"SELECT count(*) FROM {self._records_table}")[0][0])

    def close(self) -> None:
        """See :meth:`AuditTrail.close`."""
        self.db.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.description!r})"


def _row(r: AuditRecord) -> tuple[Any, ...]:
    return (
        r.seq,
        r.ts,
        r.kind,
        r.action,
        r.user_ref,
        r.user_id,
        r.account_ref,
        r.account_id,
        r.outcome,
        r.status,
        r.request_id,
        r.attempts,
        r.duration_ms,
        r.detail,
        r.prev_mac,
        r.mac,
    )


def _record(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(
        int(row[0]),
        float(row[1]),
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        None if row[9] is None else int(row[9]),
        row[10],
        int(row[11]),
        None if row[12] is None else float(row[12]),
        row[13],
        row[14],
        row[15],
    )


class SQLiteAuditTrail(SQLAuditTrail):
    """The embedded default: two tables in a SQLite file (by default the secret store's file)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: AuditKey,
        *,
        on_record: OnRecord | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (creating if needed) the audit tables in the SQLite file at ``path``."""
        super().__init__(SQLiteDatabase(path, what="audit trail"), key, on_record=on_record, clock=clock)


class PostgresAuditTrail(SQLAuditTrail):
    """The audit chain in PostgreSQL, shared by a fleet (``pip install 'aims-snaptrade[postgres]'``)."""

    def __init__(
        self,
        conninfo: str,
        key: AuditKey,
        *,
        schema: str = "public",
        on_record: OnRecord | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Connect and create ``<schema>.aims_snaptrade_audit`` and its head row if absent."""
        db = PostgresDatabase(conninfo, what="audit trail", schema=schema)
        super().__init__(db, key, on_record=on_record, clock=clock)
