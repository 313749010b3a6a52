"""The registry of every store that holds personal data, which export and erasure walk.

Each store that holds anything about a user declares how it exports and forgets one
(:class:`PersonalDataStore`: ``export_user`` and ``forget_user``). A client registers every such
store it opens (secrets, consents, order intents, the sync ledger, rate-limit keys, the audit
trail; custom stores opened by URL join through the same declaration), and
:func:`~aims_snaptrade.compliance.data_rights.export_user` and
:func:`~aims_snaptrade.compliance.data_rights.erase_user` walk the registry rather than a list of
their own: a store added later is exported and erased the day it is registered, and a store
that cannot say how to forget a user is refused when it is registered.

The audit trail is walked last: forgetting a user there pseudonymises the records that must
stay and remembers the pseudonym, so everything written about the user afterwards (the
``USER_DELETED`` webhook that follows, a refused call naming the id) is pseudonymous too.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aims_snaptrade._ids import check_id, check_text
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeValidationError

if TYPE_CHECKING:
    from aims_snaptrade.compliance.audit import AuditTrail
    from aims_snaptrade.secret_cache import SecretCache
    from aims_snaptrade.secrets.protocol import SecretStore
    from aims_snaptrade.sync.ledger.protocol import SyncLedger

__all__ = [
    "AUDIT",
    "PersonalDataHolder",
    "PersonalDataRegistry",
    "PersonalDataStore",
]

AUDIT = "audit_records"
"""The audit trail's name in the registry (always walked last)."""


@runtime_checkable
class PersonalDataStore(Protocol):
    """What a store holding personal data declares: how to export and how to forget one user.

    Contract (each store's conformance suite checks it): ``export_user`` returns a JSON-ready
    value holding everything stored about the user (never a secret in clear); ``forget_user``
    removes it all, so that no byte of the user id (or secret) stays in the store's files (WAL
    included) or rows, and returns how many rows or keys it removed (or pseudonymised).
    """

    def export_user(self, user_id: str) -> Any:
        """Everything held about ``user_id``, JSON-ready."""
        ...

    def forget_user(self, user_id: str) -> int:
        """Remove everything held about ``user_id``; returns how many rows or keys."""
        ...


@dataclass(frozen=True)
class PersonalDataHolder:
    """One registered store.

    Attributes:
        name: Its key in the export document's ``local`` and in the erasure receipt.
        holds: What it holds, in words (for the docs and ``repr``).
        store: The store (or an adapter declaring export and forget for it).
        receipt: The erasure receipt's key for what it removed (``<name>_removed`` by default).
    """

    name: str
    holds: str
    store: PersonalDataStore
    receipt: str


class PersonalDataRegistry:
    """Every store holding personal data, in the order erasure walks them (the audit trail last).

    Thread-safe. The clients perform ``StoreCall``s on it (``names``, ``export_user``,
    ``forget_user``) like on any store, so the flows stay free of IO.
    """

    blocking = True  # the stores behind it are (sqlite3, psycopg, Redis)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[str, PersonalDataHolder] = {}

    def register(self, name: str, store: object, *, holds: str, receipt: str | None = None) -> None:
        """Add a store; :class:`SnapTradeConfigurationError` when it declares no export and forget.

        A custom store (a plug-in opened by URL, or a store of your own holding user data) joins
        by implementing :class:`PersonalDataStore` and being registered here
        (``client.personal_data.register("crm", store, holds="...")``).
        """
        check_text(name, "name", limit=64)
        check_text(holds, "holds")
        if not isinstance(store, PersonalDataStore):
            raise SnapTradeConfigurationError(
                f"the {name} store ({type(store).__name__}) holds personal data but declares no "
                "export_user(user_id) and forget_user(user_id); implement both (see "
                "aims_snaptrade.compliance.PersonalDataStore) so export and erasure cannot miss it"
            )
        with self._lock:
            if name in self._holders:
                raise SnapTradeConfigurationError(f"a personal-data store named {name!r} is already registered")
            self._holders[name] = PersonalDataHolder(name, holds, store, receipt or f"{name}_removed")

    def holders(self) -> list[PersonalDataHolder]:
        """The registered stores in walking order: as registered, the audit trail last."""
        with self._lock:
            ordered = [h for h in self._holders.values() if h.name != AUDIT]
            return ordered + [h for h in self._holders.values() if h.name == AUDIT]

    def names(self) -> list[str]:
        """The registered names in walking order."""
        return [h.name for h in self.holders()]

    def _holder(self, name: str) -> PersonalDataHolder:
        with self._lock:
            holder = self._holders.get(name)
        if holder is None:
            raise SnapTradeValidationError(f"no personal-data store named {name!r} is registered")
        return holder

    def export_user(self, name: str, user_id: str) -> Any:
        """The named store's export of ``user_id``, made JSON-ready."""
        exported = self._holder(name).store.export_user(check_id(user_id))
        return json.loads(json.dumps(exported, default=str))

    def forget_user(self, name: str, user_id: str) -> tuple[str, int]:
        """Forget ``user_id`` in the named store; ``(receipt key, how many)``."""
        holder = self._holder(name)
        return holder.receipt, int(holder.store.forget_user(check_id(user_id)))

    def __repr__(self) -> str:
        return f"PersonalDataRegistry({', '.join(self.names())})"


# --- declarations for the library's own stores --------------------------------------------------


class SecretStoreData:
    """The secret store: exports whether a secret is stored (never the secret), forgets it."""

    def __init__(self, store: SecretStore, cache: SecretCache | None = None) -> None:
        self.store, self.cache = store, cache

    def export_user(self, user_id: str) -> dict[str, bool]:
        return {
            "stored": self.store.get(user_id) is not None,
            "rotation_pending": user_id in self.store.pending_rotations(),
        }

    def forget_user(self, user_id: str) -> int:
        if self.cache is not None:
            self.cache.forget(user_id)
        return int(bool(self.store.delete(user_id)))


class ConsentStoreData:
    """A consent store: exports every grant, forgets them all."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def export_user(self, user_id: str) -> list[dict[str, Any]]:
        return [record.to_json() for record in self.store.records(user_id)]

    def forget_user(self, user_id: str) -> int:
        return int(self.store.erase(user_id))


class AuditTrailData:
    """The audit trail: exports the user's records, pseudonymises them (and every later one)."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def export_user(self, user_id: str) -> list[dict[str, Any]]:
        return [record.to_json() for record in self.trail.records_for_user(user_id)]

    def forget_user(self, user_id: str) -> int:
        return int(self.trail.pseudonymise(user_id))


class SyncLedgerData:
    """The sync ledger (opened on first use): exports the user's sync state, forgets its rows."""

    def __init__(self, ledger: Callable[[], SyncLedger]) -> None:
        self.ledger = ledger

    def export_user(self, user_id: str) -> Any:
        record = self.ledger().load_user(user_id)
        return None if record is None else dataclasses.asdict(record)

    def forget_user(self, user_id: str) -> int:
        return int(self.ledger().forget_user(user_id))


class RateLimitKeysData:
    """The rate limiter's budget keys: on Redis they name users and accounts by keyed hashes only
    and expire with their window, so there is nothing to export; forgetting deletes the user's
    keys (and those of the accounts this process saw the user use)."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    def export_user(self, user_id: str) -> dict[str, str]:
        return {"holds": "budget counters keyed by a keyed hash of the id (Redis) or in memory, expiring"}

    def forget_user(self, user_id: str) -> int:
        return int(self.limiter.forget_user(user_id))


class WebhookClaimsData:
    """The webhook dedupe store's claims: keyed hashes of webhook ids (``WebhookReceiver.claim_key``)
    with a token and an expiry, nothing that names a user; they expire after the retention."""

    def export_user(self, user_id: str) -> dict[str, str]:
        return {"holds": "keyed hashes of webhook ids, expiring; no user id"}

    def forget_user(self, user_id: str) -> int:
        return 0
