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

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aims_snaptrade import errors as e
from aims_snaptrade._ids import check_id
from aims_snaptrade.compliance.audit import AuditEvent, Scalar
from aims_snaptrade.pipeline import StoreCall

if TYPE_CHECKING:
    from aims_snaptrade.pipeline import CallOptions, Core, Flow

__all__ = ["ErasureReceipt", "erase_user", "export_user"]

_PAGE = 1000


def _check_user(user_id: object) -> str:
    return check_id(user_id, "user_id")


def _body(response: Any) -> Any:
    return response.body


PERSONAL_DATA = "personal_data"
"""The shells' name for the :class:`~aims_snaptrade.compliance.personal_data.PersonalDataRegistry`."""


def export_user(core: Core, user_id: str, options: CallOptions | None = None) -> Flow[dict[str, Any]]:
    """One JSON-ready document with everything held about ``user_id``, locally and at SnapTrade.

    ``local``: one entry per store of the personal-data registry (``secret``: whether one is
    stored and whether a rotation is pending, never the secret; ``consents``: every grant;
    ``order_intents``; ``sync``: the ledger's record or ``None``; ``rate_limits``;
    ``audit_records``; and any store registered since). ``snaptrade``: whether the user is
    registered, connections, accounts and, per account, balances, positions and every page of
    activities, as SnapTrade answered them.
    """
    user_id = _check_user(user_id)
    names: list[str] = yield StoreCall("names", (), store=PERSONAL_DATA)
    local: dict[str, Any] = {}
    for name in names:
        local[name] = yield StoreCall("export_user", (name, user_id), store=PERSONAL_DATA)
    stored = bool((local.get("secret") or {}).get("stored"))

    def get(name: str, **arguments: Any) -> Flow[Any]:
        response = yield from core.call(name, {"user_id": user_id, **arguments}, options=options, exempt=True)
        return _body(response)

    users = yield from core.call("list_snap_trade_users", {}, options=options, exempt=True)
    registered = user_id in (users.body or [])
    remote: dict[str, Any] = {"user": {"user_id": user_id, "registered": registered}}
    if registered and stored:
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
    counts: dict[str, Scalar] = {name: len(value) for name, value in local.items() if isinstance(value, list)}
    counts["registered"] = registered
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
        local: One entry per registered store: ``secret_removed``, ``consents_removed`` (rows),
            ``order_intents_removed``, ``sync_rows_removed``, ``rate_limits_removed`` (keys),
            ``audit_records_pseudonymised`` (rows whose clear ids were blanked; the records and
            the chain stay), and ``<name>_removed`` for stores registered by the application.
    """

    user_ref: str | None
    erased_at: str
    snaptrade: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def erase_user(core: Core, user_id: str, *, confirm: bool, options: CallOptions | None = None) -> Flow[ErasureReceipt]:
    """Delete ``user_id`` at SnapTrade, then in every store of the personal-data registry; the
    audit records that must stay are pseudonymised, and so is every record written about the
    user afterwards.

    Needs ``confirm=True`` (refused, and the refusal audited, before anything happens otherwise).
    """
    user_id = _check_user(user_id)
    if confirm is not True:
        refusal = e.SnapTradeGuardrailError(
            f"erase_user({user_id!r}) deletes the user at SnapTrade and locally, and needs confirm=True.",
            operation="erase_user",
            hint="Pass confirm=True once you are sure; nothing was deleted.",
        )
        yield from core.refuse(refusal, {"user_id": user_id})
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
    # Every registered store, in the registry's order (the audit trail last, so it remembers the
    # pseudonym only once everything else is gone).
    names: list[str] = yield StoreCall("names", (), store=PERSONAL_DATA)
    local: dict[str, Any] = {}
    for name in names:
        key, count = yield StoreCall("forget_user", (name, user_id), store=PERSONAL_DATA)
        local[key] = bool(count) if key == "secret_removed" else count
    core.secrets.forget(user_id)
    user_ref = (yield StoreCall("pseudonym", (user_id,), store="audit")) if core.audit else None
    detail: dict[str, Scalar] = {"snaptrade_deleted": bool(snaptrade["deleted"]), **local}
    erased = AuditEvent("data_rights", "data_rights.erase", user_id=user_id, detail=detail, pseudonymous=True)
    yield from core.record(erased)
    return ErasureReceipt(user_ref, datetime.now(UTC).isoformat(), snaptrade, local)
