"""Data rights: export everything held about a user, and erase it, as flows on the road.

Both are generators built from :meth:`Core.call <aims_snaptrade.pipeline.Core.call>` and store
effects, so the sync and async clients run the same code, every SnapTrade call inherits the
guardrails, budgets, retries, redaction, telemetry and audit of the road, and nothing blocks an
event loop. The calls skip the rollout and consent checks (``exempt=True``): a person may export
or erase their data after withdrawing consent. Both are audited durably.

Erasure order: SnapTrade first (``deleteUser``, queued by SnapTrade), then the local secret,
consents and cached secret, then the audit records are pseudonymised. A failure at SnapTrade
leaves everything local in place, so the erasure can simply be run again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aims_snaptrade import errors as e
from aims_snaptrade.compliance.audit import AuditEvent
from aims_snaptrade.pipeline import StoreCall

if TYPE_CHECKING:
    from aims_snaptrade.pipeline import CallOptions, Core, Flow

__all__ = ["ErasureReceipt", "erase_user", "export_user"]

_PAGE = 1000


def _check_user(user_id: object) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise e.SnapTradeValidationError("user_id must be a non-empty string.")
    return user_id


def _body(response: Any) -> Any:
    return response.body


def _has(core: Core, method: str) -> bool:
    return core.consent is not None and hasattr(core.consent, method)


def export_user(
    core: Core, user_id: str, options: CallOptions | None = None, *, ledger: bool = False
) -> Flow[dict[str, Any]]:
    """One JSON-ready document with everything held about ``user_id``, locally and at SnapTrade.

    ``local``: consents (every grant), audit records about the user, and secret metadata (whether
    one is stored, whether a rotation is pending; never the secret). ``snaptrade``: whether the
    user is registered, connections, accounts and, per account, balances, positions and every
    page of activities, as SnapTrade answered them. With ``ledger``, ``local`` also holds the
    user's portfolio-sync state (``sync``: the ledger's record, or ``None``).
    """
    user_id = _check_user(user_id)
    stored = yield StoreCall("get", (user_id,))
    pending = yield StoreCall("pending_rotations", ())
    consents = (yield StoreCall("records", (user_id,), store="consent")) if _has(core, "records") else []
    audit = (yield StoreCall("records_for_user", (user_id,), store="audit")) if core.audit else []
    local: dict[str, Any] = {
        "secret": {"stored": stored is not None, "rotation_pending": user_id in pending},
        "consents": [c.to_json() for c in consents],
        "audit_records": [r.to_json() for r in audit],
    }
    if ledger:
        record = yield StoreCall("load_user", (user_id,), store="ledger")
        local["sync"] = None if record is None else json.loads(json.dumps(asdict(record), default=str))

    def get(name: str, **arguments: Any) -> Flow[Any]:
        response = yield from core.call(name, {"user_id": user_id, **arguments}, options=options, exempt=True)
        return _body(response)

    users = yield from core.call("list_snap_trade_users", {}, options=options, exempt=True)
    registered = user_id in (users.body or [])
    remote: dict[str, Any] = {"user": {"user_id": user_id, "registered": registered}}
    if registered and stored is not None:
        remote["connections"] = yield from get("list_brokerage_authorizations")
        accounts = yield from get("list_all_user_accounts")
        remote["accounts"] = accounts
        details: dict[str, Any] = {}
        for account in (accounts or {}).get("results") or [] if isinstance(accounts, Mapping) else []:
            account_id = account.get("id") if isinstance(account, Mapping) else None
            if not isinstance(account_id, str):
                continue
            details[account_id] = {
                "balances": (yield from get("get_user_account_balance", account_id=account_id)),
                "positions": (yield from get("get_all_account_positions", account_id=account_id)),
                "activities": (yield from _activities(get, account_id)),
            }
        remote["account_data"] = details
    document = {
        "user_id": user_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "local": local,
        "snaptrade": remote,
    }
    counts = {"consents": len(consents), "audit_records": len(audit), "registered": registered}
    yield from core.record(AuditEvent("data_rights", "data_rights.export", user_id=user_id, detail=counts))
    return document


def _activities(get: Any, account_id: str) -> Flow[list[Any]]:
    collected: list[Any] = []
    while True:
        body = yield from get("get_account_activities", account_id=account_id, limit=_PAGE, offset=len(collected))
        page = (body or {}).get("data") or [] if isinstance(body, Mapping) else []
        collected.extend(page)
        total = ((body or {}).get("pagination") or {}).get("total") if isinstance(body, Mapping) else None
        if not page or len(page) < _PAGE or (isinstance(total, int) and len(collected) >= total):
            return collected


@dataclass(frozen=True)
class ErasureReceipt:
    """What :func:`erase_user` removed, where.

    Attributes:
        user_ref: The user's pseudonym in the audit trail (``None`` without an audit trail).
        erased_at: When the erasure finished.
        snaptrade: ``deleted`` (SnapTrade accepted the deletion; it is queued and a
            ``USER_DELETED`` webhook follows), ``status``/``detail`` as answered, ``request_id``,
            or ``deleted: False`` with ``reason: "not registered"``.
        local: ``secret_removed``, ``consents_removed`` (rows), ``audit_records_pseudonymised``
            (rows whose clear ids were blanked; the records and the chain stay).
    """

    user_ref: str | None
    erased_at: str
    snaptrade: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def erase_user(
    core: Core, user_id: str, *, confirm: bool, options: CallOptions | None = None, ledger: bool = False
) -> Flow[ErasureReceipt]:
    """Delete ``user_id`` at SnapTrade and locally; pseudonymise the audit records that must stay.

    Needs ``confirm=True`` (refused before anything happens otherwise). With ``ledger``, the
    user's portfolio-sync rows are deleted too (``sync_rows_removed``).
    """
    user_id = _check_user(user_id)
    if confirm is not True:
        raise e.SnapTradeGuardrailError(
            f"erase_user({user_id!r}) deletes the user at SnapTrade and locally, and needs confirm=True.",
            operation="erase_user",
            hint="Pass confirm=True once you are sure; nothing was deleted.",
        )
    snaptrade: dict[str, Any]
    try:
        response = yield from core.call("delete_snap_trade_user", {"user_id": user_id}, confirm=True, exempt=True)
    except e.SnapTradeNotFoundError as missing:
        if missing.status is None:
            raise
        snaptrade = {"deleted": False, "reason": "not registered", "request_id": missing.request_id}
    else:
        body = response.body if isinstance(response.body, Mapping) else {}
        snaptrade = {
            "deleted": True,
            "status": body.get("status") if isinstance(body.get("status"), str) else None,
            "detail": body.get("detail") if isinstance(body.get("detail"), str) else None,
            "request_id": response.request_id,
        }
    core.secrets.forget(user_id)
    secret_removed = yield StoreCall("delete", (user_id,))
    consents_removed = (yield StoreCall("erase", (user_id,), store="consent")) if _has(core, "erase") else 0
    pseudonymised = (yield StoreCall("pseudonymise", (user_id,), store="audit")) if core.audit else 0
    user_ref = (yield StoreCall("pseudonym", (user_id,), store="audit")) if core.audit else None
    sync_removed = (yield StoreCall("forget_user", (user_id,), store="ledger")) if ledger else 0
    local = {
        "secret_removed": bool(secret_removed),
        "consents_removed": int(consents_removed),
        "sync_rows_removed": int(sync_removed),
        "audit_records_pseudonymised": int(pseudonymised),
    }
    detail = {"snaptrade_deleted": bool(snaptrade["deleted"]), **local}
    erased = AuditEvent("data_rights", "data_rights.erase", user_id=user_id, detail=detail, pseudonymous=True)
    yield from core.record(erased)
    return ErasureReceipt(user_ref, datetime.now(UTC).isoformat(), snaptrade, local)
