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

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from aims_snaptrade._ids import MAX_TEXT_LENGTH, check_id, check_number, check_text
from aims_snaptrade._sql.database import Database, PostgresDatabase, SQLiteDatabase
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import SnapTradeAuditError, SnapTradeConfigurationError, SnapTradeValidationError
from aims_snaptrade.redaction import register_secret

__all__ = [
    "AuditCheckpoint",
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

    def canonical(self, chain_id: str | None = None) -> bytes:
        """The bytes the MAC covers (everything but the sequence number, the clear ids and the MAC).

        ``chain_id`` binds the record to its chain (every record of a chain made since chain
        identities exist); records of older databases were MACed without it.
        """
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
        body = self.prev_mac + "\n" + json.dumps(covered, separators=(",", ":"))
        return (body if chain_id is None else f"chain {chain_id}\n{body}").encode()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``time`` as ISO 8601, ``detail`` parsed)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["time"] = datetime.fromtimestamp(self.ts, UTC).isoformat()
        try:
            out["detail"] = json.loads(self.detail)
        except ValueError:  # a tampered detail: shown as stored (verify reports the record)
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class AuditCheckpoint:
    """The signed head of a chain at one moment, kept outside the database.

    ``aims-snaptrade audit checkpoint`` writes one (a JSON line); ``audit verify --checkpoint``
    then finds a truncated or rewound chain, an older backup restored, or another chain put in
    its place: states the database alone cannot tell from a genuine one.

    Attributes:
        chain_id: The identity of the chain (bound into every record's MAC).
        seq: The head's sequence number.
        mac: The head record's MAC.
        time: When the checkpoint was taken (seconds since the epoch).
        signature: HMAC of the above under the audit key.
    """

    chain_id: str
    seq: int
    mac: str
    time: float
    signature: str

    @staticmethod
    def message(chain_id: str, seq: int, mac: str, at: float) -> bytes:
        """The bytes the signature covers."""
        return f"checkpoint\n{chain_id}\n{seq}\n{mac}\n{at!r}".encode()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``at`` adds the time as ISO 8601)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["at"] = datetime.fromtimestamp(self.time, UTC).isoformat()
        return out

    @classmethod
    def from_json(cls, data: object) -> AuditCheckpoint:
        """Parse what :meth:`to_json` wrote; :class:`SnapTradeValidationError` names what is wrong."""
        if not isinstance(data, Mapping):
            raise SnapTradeValidationError(f"a checkpoint must be a JSON object, got {type(data).__name__}.")
        kinds: dict[str, tuple[type, ...]] = {
            "chain_id": (str,),
            "seq": (int,),
            "mac": (str,),
            "time": (int, float),
            "signature": (str,),
        }
        for name, types in kinds.items():
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, types):
                raise SnapTradeValidationError(
                    f"the checkpoint's {name!r} is missing or not a {types[0].__name__}.",
                    hint="Use a line written by `aims-snaptrade audit checkpoint`.",
                )
        return cls(data["chain_id"], data["seq"], data["mac"], float(data["time"]), data["signature"])


Problem = Literal["altered", "deleted", "inserted", "reordered", "checkpoint", "rewound", "forked", "replaced"]


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`AuditTrail.verify`.

    Attributes:
        ok: ``True`` when every record from the anchor to the head chains correctly.
        checked: Records checked.
        anchor_seq: Where verification started (0, or the last purge's checkpoint).
        head_seq: The head's sequence number.
        problem: ``"altered"`` (content or a column's type changed), ``"deleted"``,
            ``"inserted"``, ``"reordered"``, ``"checkpoint"`` (an anchor or checkpoint not signed by
            this key), and against a checkpoint: ``"rewound"`` (the chain ends before the
            checkpoint: truncated, rewound or an older backup), ``"forked"`` (the record at the
            checkpoint differs: a backup restored and written on) or ``"replaced"`` (another chain).
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
    """The head row: last record, the signed anchor where verification starts, the chain's identity.

    ``chain_id`` is ``None`` only for a database from before chain identities (never opened by
    this version); ``bound_from`` is the first sequence number whose MAC binds ``chain_id``.
    """

    seq: int
    mac: str
    anchor_seq: int
    anchor_mac: str
    anchor_sig: str
    chain_id: str | None = None
    bound_from: int = 1


def anchor_signature(key: AuditKey, seq: int, mac: str, chain_id: str | None = None, bound_from: int = 1) -> str:
    """The signature of a checkpoint (an anchor); with a chain identity, it binds that too."""
    if chain_id is None:
        return key.mac(f"anchor\n{seq}\n{mac}".encode())
    return key.mac(f"anchor\n{chain_id}\n{bound_from}\n{seq}\n{mac}".encode())


MAX_DETAIL_ITEMS = 32
MAX_DETAIL_CHARS = 4096
MAX_ATTEMPTS = 10_000


def _detail_value(name: str, value: object) -> Scalar:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value, f"detail[{name!r}]", limit=1024) if value else value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise SnapTradeValidationError(f"detail[{name!r}] is an integer beyond +-2**53 (JSON numbers lose it).")
        return value
    if isinstance(value, float):
        return check_number(value, f"detail[{name!r}]", minimum=-1e15, maximum=1e15)
    raise SnapTradeValidationError(
        f"detail[{name!r}] must be a string, number, bool or None, got {type(value).__name__}."
    )


def check_event(event: object) -> AuditEvent:
    """``event`` in its one canonical form, or a :class:`SnapTradeValidationError` naming the field.

    Everything stored is what is signed: numbers are finite and typed as the columns hold them,
    texts are bounded and free of control characters, so no valid event ever verifies as tampered.
    Limits: ids 1,024 characters, texts 256, ``detail`` 32 entries and 4,096 characters as JSON.
    """
    if not isinstance(event, AuditEvent):
        raise SnapTradeValidationError(f"append needs an AuditEvent, got {type(event).__name__}.")
    check_text(event.kind, "kind", limit=64)
    check_text(event.action, "action", limit=MAX_TEXT_LENGTH)
    check_text(event.outcome, "outcome", limit=MAX_TEXT_LENGTH)
    for name in ("user_id", "account_id", "request_id"):
        value = getattr(event, name)
        if value is not None:
            check_id(value, name)
    if event.status is not None and (
        isinstance(event.status, bool) or not isinstance(event.status, int) or not 0 <= event.status <= 999
    ):
        raise SnapTradeValidationError(f"status must be an HTTP status (an int 0-999) or None, got {event.status!r}.")
    if (
        isinstance(event.attempts, bool)
        or not isinstance(event.attempts, int)
        or not 0 <= event.attempts <= MAX_ATTEMPTS
    ):
        raise SnapTradeValidationError(f"attempts must be an int 0-{MAX_ATTEMPTS}, got {event.attempts!r}.")
    duration = None
    if event.duration_ms is not None:
        duration = round(check_number(event.duration_ms, "duration_ms", maximum=1e12), 3)
    for name in ("durable", "pseudonymous"):
        if not isinstance(getattr(event, name), bool):
            raise SnapTradeValidationError(f"{name} must be True or False.")
    if not isinstance(event.detail, Mapping):
        raise SnapTradeValidationError(f"detail must be a mapping, got {type(event.detail).__name__}.")
    if len(event.detail) > MAX_DETAIL_ITEMS:
        raise SnapTradeValidationError(f"detail has {len(event.detail)} entries; at most {MAX_DETAIL_ITEMS}.")
    detail = {check_text(k, "a detail key", limit=64): _detail_value(k, v) for k, v in event.detail.items()}
    if len(json.dumps(detail, separators=(",", ":"))) > MAX_DETAIL_CHARS:
        raise SnapTradeValidationError(f"detail is longer than {MAX_DETAIL_CHARS} characters as JSON.")
    return dataclasses.replace(event, duration_ms=duration, detail=detail)


def build_record(
    key: AuditKey, event: AuditEvent, seq: int, prev_mac: str, ts: float, chain_id: str | None = None
) -> AuditRecord:
    """The record for ``event`` at ``seq`` after ``prev_mac`` in chain ``chain_id`` (pure)."""
    event = check_event(event)
    detail = json.dumps(dict(event.detail), separators=(",", ":"), sort_keys=True, allow_nan=False)
    user_ref = key.pseudonym(event.user_id) if event.user_id is not None else None
    account_ref = key.pseudonym(event.account_id) if event.account_id is not None else None
    draft = AuditRecord(
        seq=seq,
        ts=round(float(ts), 6),
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
        duration_ms=event.duration_ms,
        detail=detail,
        prev_mac=prev_mac,
        mac="",
    )
    return AuditRecord(**{**draft.__dict__, "mac": key.mac(draft.canonical(chain_id))})


def _self_consistent(key: AuditKey, r: AuditRecord, chain_id: str | None) -> bool:
    if not hmac.compare_digest(r.mac, key.mac(r.canonical(chain_id))):
        return False
    # Clear ids must match the pseudonyms the MAC covers (blanked ids are fine: erasure).
    for clear, ref in ((r.user_id, r.user_ref), (r.account_id, r.account_ref)):
        if clear is not None and (ref is None or key.pseudonym(clear) != ref):
            return False
    return True


def verify_chain(key: AuditKey, head: Head, records: Sequence[AuditRecord], *, complete: bool = True) -> VerifyReport:
    """Check ``records`` (in sequence order) from the head's anchor to the head itself (pure).

    ``records`` were read in the same snapshot as ``head``, so a record past the head is an
    insertion. ``complete=False`` checks a prefix only (the records before a malformed one).
    """

    def bad(problem: Problem, position: int | None, message: str, checked: int) -> VerifyReport:
        return VerifyReport(False, checked, head.anchor_seq, head.seq, problem, position, message)

    def chain_of(r: AuditRecord) -> str | None:
        return head.chain_id if head.chain_id is not None and r.seq >= head.bound_from else None

    signed = anchor_signature(key, head.anchor_seq, head.anchor_mac, head.chain_id, head.bound_from)
    if not hmac.compare_digest(head.anchor_sig, signed):
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
        if r.seq > head.seq:
            return bad("inserted", r.seq, f"record {r.seq} lies past the head (seq {head.seq})", i)
        if not _self_consistent(key, r, chain_of(r)):
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
    if not complete:
        return VerifyReport(True, len(records), head.anchor_seq, head.seq)
    # The head itself must be the chain's last record.
    empty = head.anchor_mac if head.seq == head.anchor_seq else None
    at_head = next((r.mac for r in records if r.seq == head.seq), empty)
    if at_head != head.mac:
        return bad(
            "deleted", prev_seq + 1, f"the last records after {prev_seq} are missing (head is {head.seq})", len(records)
        )
    return VerifyReport(True, len(records), head.anchor_seq, head.seq)


def check_checkpoints(
    key: AuditKey, head: Head, records: Sequence[AuditRecord], checkpoints: Sequence[AuditCheckpoint]
) -> VerifyReport | None:
    """The first checkpoint the chain (already verified) contradicts, as a failed report (pure)."""

    def bad(problem: Problem, position: int | None, message: str) -> VerifyReport:
        return VerifyReport(False, len(records), head.anchor_seq, head.seq, problem, position, message)

    by_seq = {r.seq: r.mac for r in records}
    for cp in checkpoints:
        at = datetime.fromtimestamp(cp.time, UTC).isoformat()
        expected = key.mac(AuditCheckpoint.message(cp.chain_id, cp.seq, cp.mac, cp.time))
        if not hmac.compare_digest(cp.signature, expected):
            return bad("checkpoint", cp.seq, f"the checkpoint of {at} is not signed by this key (forged or altered)")
        if head.chain_id != cp.chain_id:
            return bad(
                "replaced",
                None,
                f"this database holds chain {head.chain_id}, not chain {cp.chain_id} of the checkpoint of {at} "
                "(another database's chain, or the head was deleted and recreated)",
            )
        if head.seq < cp.seq:
            return bad(
                "rewound",
                head.seq + 1,
                f"the chain ends at seq {head.seq} but the checkpoint of {at} saw seq {cp.seq}: records after "
                f"{head.seq} were cut (truncation, a rewound head or an older backup restored)",
            )
        if cp.seq < head.anchor_seq:
            continue  # purged since: the anchor moved past it, nothing left to compare
        found = head.anchor_mac if cp.seq == head.anchor_seq else by_seq.get(cp.seq)
        if found is None or not hmac.compare_digest(found, cp.mac):
            return bad(
                "forked",
                cp.seq,
                f"record {cp.seq} is not the one the checkpoint of {at} saw (a backup restored and written on, "
                "or a rewritten chain)",
            )
    return None


@runtime_checkable
class AuditTrail(Protocol):  # pragma: no mutate block (docs/testing.md: Protocols)
    """Where audit records go. Built-ins: :class:`SQLiteAuditTrail`, :class:`PostgresAuditTrail`.

    Contract: ``append`` returns once the record is committed (flushed to disk when
    ``event.durable``); appends from many threads and processes form one chain; every method is
    thread-safe. A custom sink (entry point group ``aims_snaptrade.audit_stores``) may forward
    records elsewhere but must keep these guarantees to be verifiable.
    """

    def append(self, event: AuditEvent) -> AuditRecord:
        """Add a record to the chain."""
        ...

    def verify(self, checkpoints: Sequence[AuditCheckpoint] = ()) -> VerifyReport:
        """Check the whole chain from the anchor to the head, and against ``checkpoints``."""
        ...

    def checkpoint(self) -> AuditCheckpoint:
        """The signed head now, to keep outside the database."""
        ...

    def tail(self, limit: int = 20) -> list[AuditRecord]:
        """The last ``limit`` records, oldest first."""
        ...

    def records_for_user(self, user_id: str) -> list[AuditRecord]:
        """Every record about the user (found by pseudonym, so also after erasure)."""
        ...

    def pseudonymise(self, user_id: str) -> int:
        """Blank the user's clear ids in every record (the pseudonyms stay); returns how many.

        From then on every record about the user (or the user's accounts) is written with
        pseudonyms only, whoever appends it: the erasure is remembered by pseudonym.
        """
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
_ERASED = "aims_snaptrade_audit_erased"
_FIELDS = (
    "seq, ts, kind, action, user_ref, user_id, account_ref, account_id, outcome, status, request_id, "
    "attempts, duration_ms, detail, prev_mac, mac"
)
_HEAD_FIELDS = "seq, mac, anchor_seq, anchor_mac, anchor_sig, chain_id, bound_from"
# Version 2 (issue 24), additive: the chain's identity in the head (bound into the MAC of every
# record from ``bound_from`` on; a chain from version 1 gets one when first opened, see
# _adopt_identity) and the pseudonyms of erased users. compatible_from=2: a version-1 library
# would append records without the identity (they would not verify) and ignore erasures.
_ERASED_TABLE = f"CREATE TABLE IF NOT EXISTS {{t:{_ERASED}}} (ref TEXT PRIMARY KEY)"
_SCHEMA = StoreSchema(
    store="audit",
    table=_RECORDS,
    version=2,
    compatible_from=2,
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
        anchor_seq BIGINT NOT NULL, anchor_mac TEXT NOT NULL, anchor_sig TEXT NOT NULL,
        chain_id TEXT, bound_from BIGINT
    )""",
        _ERASED_TABLE,
    ),
    migrations={
        1: (
            f"ALTER TABLE {{t:{_HEAD}}} ADD COLUMN chain_id TEXT",
            f"ALTER TABLE {{t:{_HEAD}}} ADD COLUMN bound_from BIGINT",
            _ERASED_TABLE,
        )
    },
)

OnRecord = Callable[[AuditRecord], None]


class _Malformed(Exception):
    """A stored row whose columns do not hold the types the chain was written with."""

    def __init__(self, seq: int | None, column: str, value: object) -> None:
        super().__init__(column)
        self.seq, self.column, self.value = seq, column, value

    def describe(self, where: str) -> str:
        return f"{where}: column {self.column} holds a {type(self.value).__name__}, not what was written"


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
        records, head, erased = db.table(_RECORDS), db.table(_HEAD), db.table(_ERASED)
        self._select = f"SELECT {_FIELDS} FROM {records}"
        self._insert = f"INSERT INTO {records} ({_FIELDS}) VALUES ({', '.join('?' * 16)})"
        self._head = f"SELECT {_HEAD_FIELDS} FROM {head} WHERE id = 1"
        self._move_head = f"UPDATE {head} SET seq = ?, mac = ? WHERE id = 1"
        # The head (locked) and whether the event names an erased user or account, in one read.
        self._lock_head = (
            f"SELECT seq, mac, chain_id, bound_from, (SELECT count(*) FROM {erased} WHERE ref IN (?, ?)) "
            f"FROM {head} WHERE id = 1" + db.row_lock
        )
        self._mark_erased = f"INSERT INTO {erased} (ref) VALUES (?) ON CONFLICT (ref) DO NOTHING"
        if db.kind == "postgresql":
            # One statement (one round trip) inserts the record and moves the head.
            self._append = f"WITH r AS ({self._insert}) {self._move_head}"
        self._move_anchor = f"UPDATE {head} SET anchor_seq = ?, anchor_mac = ?, anchor_sig = ? WHERE id = 1"
        self._records_table, self._head_table = records, head
        try:
            db.setup(_SCHEMA)
            self._adopt_identity()
        except BaseException:
            db.close()
            raise

    def _adopt_identity(self) -> None:
        """Create the head of a new chain, or give a chain from before identities its own."""
        head, records = self._head_table, self._records_table
        with self.db.transaction(durable=True) as cur:
            row = cur.execute(self._head + self.db.row_lock).fetchone()
            if row is None:
                if cur.execute(f"SELECT 1 FROM {records} LIMIT 1").fetchone() is not None:
                    # Records without a head: the head row was deleted. Recreating it would hide
                    # that (and whatever was cut with it); verify reports it, appends refuse.
                    log.error("the audit head row is missing while records remain; run `aims-snaptrade audit verify`")
                    return
                chain = str(uuid.uuid4())
                cur.execute(
                    f"INSERT INTO {head} (id, seq, mac, anchor_seq, anchor_mac, anchor_sig, chain_id, bound_from) "
                    # Replicas starting together on an empty database all find no head: the first
                    # insert wins, the others' change nothing (their chain ids are never used).
                    "VALUES (1, 0, ?, 0, ?, ?, ?, 1) ON CONFLICT (id) DO NOTHING",
                    (GENESIS, GENESIS, anchor_signature(self.key, 0, GENESIS, chain, 1), chain),
                )
                return
            if row[5] is not None:
                return
            # A database from before chain identities: records from the next one on bind it. The
            # anchor is re-signed only when its old signature holds (a forged one stays visible).
            seq, anchor_seq, anchor_mac, anchor_sig = row[0], row[2], row[3], row[4]
            chain, bound_from = str(uuid.uuid4()), int(seq) + 1
            if hmac.compare_digest(str(anchor_sig), anchor_signature(self.key, int(anchor_seq), str(anchor_mac))):
                anchor_sig = anchor_signature(self.key, int(anchor_seq), str(anchor_mac), chain, bound_from)
            cur.execute(
                f"UPDATE {head} SET chain_id = ?, bound_from = ?, anchor_sig = ? WHERE id = 1 AND chain_id IS NULL",
                (chain, bound_from, anchor_sig),
            )

    # -- writing ----------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> AuditRecord:
        """See :meth:`AuditTrail.append`. Malformed input raises :class:`SnapTradeValidationError`
        before anything is written (see :func:`check_event` for the limits)."""
        event = check_event(event)
        refs = (
            None if event.user_id is None else self.key.pseudonym(event.user_id),
            None if event.account_id is None else self.key.pseudonym(event.account_id),
        )
        with self.db.transaction(durable=event.durable) as cur:
            # Reading the head locks it (SQLite: the whole file already is): appenders queue here.
            row = cur.execute(self._lock_head, refs).fetchone()
            if row is None:
                raise SnapTradeAuditError(
                    "the audit head row is missing (deleted): nothing was appended; run `aims-snaptrade audit verify`"
                )
            seq, prev, chain_id, bound_from, erased = row
            if erased and not event.pseudonymous:
                event = dataclasses.replace(event, pseudonymous=True)  # erased stays erased
            next_seq = int(seq) + 1
            chain = chain_id if chain_id is not None and next_seq >= int(bound_from) else None
            record = build_record(self.key, event, next_seq, prev, self.clock(), chain)
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
        return self.key.pseudonym(check_id(user_id))

    def pseudonymise(self, user_id: str) -> int:
        """See :meth:`AuditTrail.pseudonymise`."""
        ref = self.pseudonym(user_id)
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
            for erased in (ref, *accounts):
                cur.execute(self._mark_erased, (erased,))
        self.db.checkpoint()
        return int(changed)

    def purge(self, before: datetime) -> PurgeReport:
        """See :meth:`AuditTrail.purge`. Refuses (:class:`SnapTradeAuditError`) when the chain
        does not verify: purging would destroy the evidence."""
        if not isinstance(before, datetime) or before.tzinfo is None or before.utcoffset() is None:
            raise SnapTradeValidationError("purge(before) needs a timezone-aware datetime (e.g. datetime.now(UTC)).")
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
            chain_id, bound_from = cur.execute(
                f"SELECT chain_id, bound_from FROM {self._head_table} WHERE id = 1"
            ).fetchone()
            removed = cur.execute(f"DELETE FROM {t} WHERE seq <= ?", (last,)).rowcount
            signature = anchor_signature(self.key, int(last), mac, chain_id, int(bound_from))
            cur.execute(self._move_anchor, (last, mac, signature))
        self.db.checkpoint()
        self.append(AuditEvent("audit", "audit.purge", detail={"removed": removed, "anchor_seq": int(last)}))
        return PurgeReport(int(removed), int(last))

    # -- reading ----------------------------------------------------------------------------

    def head(self) -> Head:
        """The head row (:class:`SnapTradeAuditError` when it is missing or malformed)."""
        rows = self.db.query(self._head)
        if not rows:
            raise SnapTradeAuditError("the audit head row is missing; run `aims-snaptrade audit verify`")
        try:
            return _head(rows[0])
        except _Malformed as bad:
            raise SnapTradeAuditError(
                bad.describe("the audit head row") + "; run `aims-snaptrade audit verify`"
            ) from None

    def checkpoint(self) -> AuditCheckpoint:
        """See :meth:`AuditTrail.checkpoint`: the head now, signed (:class:`SnapTradeAuditError`
        when the chain has no identity or no head)."""
        head = self.head()
        if head.chain_id is None:
            raise SnapTradeAuditError("this audit chain has no identity yet; open it with this version first")
        at = round(float(self.clock()), 6)
        signature = self.key.mac(AuditCheckpoint.message(head.chain_id, head.seq, head.mac, at))
        return AuditCheckpoint(head.chain_id, head.seq, head.mac, at, signature)

    def verify(self, checkpoints: Sequence[AuditCheckpoint] = ()) -> VerifyReport:
        """See :meth:`AuditTrail.verify`: the head and every record read in one snapshot.

        Never raises on tampered data: a missing head, a column holding another type than was
        written, a record past the head are each reported with their sequence number.
        """
        checkpoints = [checkpoints] if isinstance(checkpoints, AuditCheckpoint) else list(checkpoints)
        for cp in checkpoints:
            if not isinstance(cp, AuditCheckpoint):
                raise SnapTradeValidationError(f"checkpoints must be AuditCheckpoint objects, got {type(cp).__name__}.")
        heads, rows = self.db.snapshot(((self._head, ()), (self._select + " ORDER BY seq", ())))
        if not heads:
            last = max((r[0] for r in rows if isinstance(r[0], int)), default=0)
            return VerifyReport(
                False, 0, 0, last, "deleted", last, "the head row is missing (deleted, perhaps with the last records)"
            )
        try:
            head = _head(heads[0])
        except _Malformed as bad:
            return VerifyReport(False, 0, 0, 0, "altered", None, bad.describe("the head row"))
        records: list[AuditRecord] = []
        for row in rows:
            try:
                records.append(_record(row))
            except _Malformed as bad:
                prefix = verify_chain(self.key, head, records, complete=False)
                if not prefix.ok:
                    return prefix
                position = bad.seq if bad.seq is not None else (records[-1].seq + 1 if records else head.anchor_seq + 1)
                return VerifyReport(
                    False,
                    len(records),
                    head.anchor_seq,
                    head.seq,
                    "altered",
                    position,
                    bad.describe(f"record {position}"),
                )
        report = verify_chain(self.key, head, records)
        if report.ok and checkpoints:
            return check_checkpoints(self.key, head, records, checkpoints) or report
        return report

    def tail(self, limit: int = 20) -> list[AuditRecord]:
        """See :meth:`AuditTrail.tail`."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 2**62:
            raise SnapTradeValidationError(f"limit must be a non-negative int, got {limit!r}.")
        rows = self.db.query(self._select + " ORDER BY seq DESC LIMIT ?", (limit,))
        return [_readable(r) for r in reversed(rows)]

    def records_for_user(self, user_id: str) -> list[AuditRecord]:
        """See :meth:`AuditTrail.records_for_user`."""
        rows = self.db.query(self._select + " WHERE user_ref = ? ORDER BY seq", (self.pseudonym(user_id),))
        return [_readable(r) for r in rows]

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


_COLUMN_TYPES: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    ("seq", (int,), False),
    ("ts", (float, int), False),
    ("kind", (str,), False),
    ("action", (str,), False),
    ("user_ref", (str,), True),
    ("user_id", (str,), True),
    ("account_ref", (str,), True),
    ("account_id", (str,), True),
    ("outcome", (str,), False),
    ("status", (int,), True),
    ("request_id", (str,), True),
    ("attempts", (int,), False),
    ("duration_ms", (float, int), True),
    ("detail", (str,), False),
    ("prev_mac", (str,), False),
    ("mac", (str,), False),
)


def _typed(row: Sequence[Any], columns: Sequence[tuple[str, tuple[type, ...], bool]], seq: int | None) -> list[Any]:
    """The row's values when each column holds the type it was written with; else :class:`_Malformed`."""
    if len(row) != len(columns):
        raise _Malformed(seq, "(count)", row)
    out: list[Any] = []
    for value, (name, types, nullable) in zip(row, columns, strict=True):
        if value is None and nullable:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise _Malformed(seq, name, value)
        out.append(float(value) if float in types else value)  # type: ignore[arg-type]  # int or float here
    return out


def _record(row: Sequence[Any]) -> AuditRecord:
    seq = row[0] if row and isinstance(row[0], int) and not isinstance(row[0], bool) else None
    return AuditRecord(*_typed(row, _COLUMN_TYPES, seq))


def _readable(row: Sequence[Any]) -> AuditRecord:
    try:
        return _record(row)
    except _Malformed as bad:
        raise SnapTradeAuditError(
            bad.describe(f"audit record {bad.seq}") + "; run `aims-snaptrade audit verify`"
        ) from None


_HEAD_TYPES: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    ("seq", (int,), False),
    ("mac", (str,), False),
    ("anchor_seq", (int,), False),
    ("anchor_mac", (str,), False),
    ("anchor_sig", (str,), False),
    ("chain_id", (str,), True),
    ("bound_from", (int,), True),
)


def _head(row: Sequence[Any]) -> Head:
    seq, mac, anchor_seq, anchor_mac, anchor_sig, chain_id, bound_from = _typed(row, _HEAD_TYPES, None)
    return Head(seq, mac, anchor_seq, anchor_mac, anchor_sig, chain_id, 1 if bound_from is None else bound_from)


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
