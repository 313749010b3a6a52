"""``sync_portfolio``: one user's incremental sync, as a flow on the road.

The flow reads the user's ledger rows, asks the :class:`~aims_snaptrade.sync.policy.SyncPolicy`
what is due, fetches only that through :meth:`Core.call` and the typed reads (so budgets, retries,
redaction and telemetry apply), and writes what it learnt back in one ledger transaction. It does
no IO itself: the ledger is reached with ``StoreCall(..., store="ledger")`` effects, so the sync and
the async client run the same code.

Per-account failures never fail the user: a disabled connection makes its accounts ``stale``
(with the authorization id to reconnect), 425 ``populating``, 410 ``retired``, anything else
``failed``. Only failures before any account is fetched (listing the user's connections and
accounts, the ledger, the lease) fail the user's sync.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from aims_snaptrade import errors as e
from aims_snaptrade.models import Account, Activity
from aims_snaptrade.pipeline import CallOptions, Core, Flow, Send, StoreCall, T
from aims_snaptrade.sync.policy import SyncPolicy
from aims_snaptrade.sync.records import AccountRecord, AccountStatus, AccountUpdate, SyncOutcome, UserRecord
from aims_snaptrade.sync.snapshot import AccountSnapshot, AccountState, PortfolioSnapshot, SyncFailure

__all__ = ["MAX_ROUNDS", "SnapTradeSyncInProgressError", "sync_portfolio"]

SnapTradeSyncInProgressError = e.SnapTradeSyncInProgressError

LEDGER = "ledger"


def _counted(flow: Flow[T], sent: list[int]) -> Flow[T]:
    """Run ``flow`` unchanged, counting the requests it sends in ``sent[0]``."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if isinstance(effect, Send):
            sent[0] += 1
        try:
            value, error = (yield effect), None
        except BaseException as exc:  # handed back to the flow, which decides
            if isinstance(exc, GeneratorExit):
                flow.close()
                raise
            value, error = None, exc


MAX_ROUNDS = 5
"""Rounds one holder syncs for marks that arrived during its own sync, before leaving the rest to ``sync_due``."""


def sync_portfolio(
    core: Core,
    user_id: str,
    *,
    policy: SyncPolicy,
    force: bool = False,
    options: CallOptions | None = None,
    lease_owner: str | None = None,
) -> Flow[PortfolioSnapshot]:
    """Sync what is due of one user under ``policy`` (everything with ``force``); see the module docs.

    ``lease_owner`` names who holds the user meanwhile (a fresh id by default). A resumed batch
    passes its batch id, so that it takes over the leases its crashed predecessor left behind.

    Marks that webhooks make *during* the sync are not lost: a second sync of the user finds the
    lease held and raises :class:`SnapTradeSyncInProgressError` without sending anything, and the
    holder reads the user's marks again before it releases the lease; what was marked after its
    round started is synced in another round (at most :data:`MAX_ROUNDS`). After releasing it
    reads them once more, so a mark that landed between that read and the release is taken up
    again (or by whoever took the lease meanwhile).
    """
    if not isinstance(user_id, str) or not user_id.strip():
        raise e.SnapTradeValidationError(f"user_id must be a non-empty string, got {type(user_id).__name__}.")
    if not isinstance(policy, SyncPolicy):
        raise e.SnapTradeValidationError(f"policy must be a SyncPolicy, got {type(policy).__name__}.")
    if not isinstance(force, bool):
        raise e.SnapTradeValidationError(f"force must be True or False, got {type(force).__name__}.")
    owner = lease_owner or uuid.uuid4().hex
    if not (yield from _acquire(user_id, owner, policy)):
        raise SnapTradeSyncInProgressError(f"Another worker is syncing user {user_id!r}.")
    sent = [0]
    snapshot: PortfolioSnapshot | None = None
    unknown = False  # the ledger held nothing of the user before this sync took its lease
    for round_number in range(1, MAX_ROUNDS + 1):
        started = time.time()
        try:
            record = yield StoreCall("load_user", (user_id,), store=LEDGER)
            unknown = round_number == 1 and (record is None or _empty(record))
            fetched, outcome = yield from _counted(
                _sync(core, user_id, record, policy, started, force and round_number == 1, options), sent
            )
            yield StoreCall("save_sync", (outcome,), store=LEDGER)
            after = yield StoreCall("load_user", (user_id,), store=LEDGER)
        except GeneratorExit:
            raise  # closed unfinished (a cancelled task): the lease expires by itself
        except e.SnapTradeNotFoundError:
            if unknown and sent[0] == 0:
                # No secret and no ledger row: an erased person (or an id never registered), named
                # by a task queued before the erasure. Taking the lease wrote the id back: forget it.
                yield StoreCall("forget_user", (user_id,), store=LEDGER)
            else:
                yield StoreCall("release_lease", (user_id, owner), store=LEDGER)
            raise
        except BaseException:
            yield StoreCall("release_lease", (user_id, owner), store=LEDGER)
            raise
        snapshot = fetched if snapshot is None else _merged(snapshot, fetched)
        if _marked_since(after, started) and round_number < MAX_ROUNDS:
            continue  # marked while we fetched: sync that too before giving the user back
        yield StoreCall("release_lease", (user_id, owner), store=LEDGER)
        if round_number == MAX_ROUNDS:
            break  # a user marked without pause: the rest is left to the next sync_due
        # A mark may have landed between the read above and the release, when a second worker
        # that found the lease held had already given up: look once more.
        after = yield StoreCall("load_user", (user_id,), store=LEDGER)
        if not _marked_since(after, started) or not (yield from _acquire(user_id, owner, policy)):
            break  # nothing new, or the worker that holds the user now syncs it
    assert snapshot is not None
    return snapshot.model_copy(update={"requests": sent[0]})


def _acquire(user_id: str, owner: str, policy: SyncPolicy) -> Flow[bool]:
    now = time.time()
    leased = yield StoreCall("acquire_lease", (user_id, owner, now, now + policy.lease_seconds), store=LEDGER)
    return bool(leased)


def _empty(record: UserRecord) -> bool:
    """A row that only a lease wrote: nothing synced, nothing marked, no account."""
    return (
        record.accounts_synced_at is None
        and record.dirty_at is None
        and record.last_synced_at is None
        and not record.accounts
    )


def _marked_since(record: UserRecord | None, started: float) -> bool:
    """True when a webhook marked something of the user since ``started`` that a sync would fetch.

    Read after the round's save, which clears every mark the round covered (stamped at or before
    ``started``): a mark stamped at ``started`` itself that is still there landed after the round's
    read (a coarse clock, or two processes reading the same instant), so it counts.
    """
    if record is None:
        return False
    if record.dirty_at is not None and record.dirty_at >= started:
        return True
    return any(
        account.status is AccountStatus.ACTIVE
        and any(at is not None and at >= started for at in (account.holdings_dirty_at, account.activities_dirty_at))
        for account in record.accounts
    )


def _merged(first: PortfolioSnapshot, later: PortfolioSnapshot) -> PortfolioSnapshot:
    """One snapshot of two rounds: what the later round fetched replaces, activities add up."""
    accounts = {a.account_id: a for a in first.accounts}
    for account in later.accounts:
        earlier = accounts.get(account.account_id)
        if earlier is None or account.state is not AccountState.NOT_DUE:
            if earlier is not None:
                seen = {a.id for a in account.new_activities if a.id is not None}
                carried = [a for a in earlier.new_activities if a.id is None or a.id not in seen]
                update: dict[str, Any] = {
                    "new_activities": carried + account.new_activities,
                    "activities_fetched": earlier.activities_fetched or account.activities_fetched,
                }
                if not account.holdings_fetched and earlier.holdings_fetched:
                    update.update(balances=earlier.balances, positions=earlier.positions, holdings_fetched=True)
                account = account.model_copy(update=update)
            accounts[account.account_id] = account
    return later.model_copy(
        update={
            "started_at": first.started_at,
            "accounts_listed": first.accounts_listed or later.accounts_listed,
            "accounts": [accounts[i] for i in sorted(accounts)],
        }
    )


def _sync(
    core: Core,
    user_id: str,
    record: UserRecord | None,
    policy: SyncPolicy,
    started: float,
    force: bool,
    options: CallOptions | None,
) -> Flow[tuple[PortfolioSnapshot, SyncOutcome]]:
    listed = force or policy.accounts_due(record, started)
    known = {a.account_id: a for a in record.accounts} if record else {}
    listing: dict[str, Account] = {}
    disabled: set[str] = set()
    removed: list[str] = []
    if listed:
        response = yield from core.call("list_brokerage_authorizations", {"user_id": user_id}, options=options)
        body = response.body if isinstance(response.body, list) else []
        disabled = {str(a["id"]) for a in body if isinstance(a, Mapping) and a.get("disabled") and a.get("id")}
        listing = {a.id: a for a in (yield from core.list_accounts(user_id, options))}
        removed = sorted(i for i, a in known.items() if i not in listing and a.status is not AccountStatus.GONE)
        ids = sorted(listing)
    else:
        ids = sorted(i for i, a in known.items() if a.status is not AccountStatus.GONE)
    snapshots: list[AccountSnapshot] = []
    updates: list[AccountUpdate] = []
    for account_id in ids:
        account = listing.get(account_id)
        previous = known.get(account_id)
        connection = account.connection_id if account else (previous.connection_id if previous else None)
        if listed:
            stale = connection is not None and connection in disabled
        else:
            stale = previous is not None and previous.status is AccountStatus.STALE
        if stale:
            snapshots.append(
                AccountSnapshot(
                    account_id=account_id,
                    connection_id=connection,
                    state=AccountState.STALE,
                    account=account,
                    reconnect_authorization_id=connection,
                )
            )
            updates.append(AccountUpdate(account_id, connection, AccountStatus.STALE))
            continue
        # A listed account is active again even if the ledger had it stale (its connection was repaired).
        current = previous if previous is None or not listed else _active(previous)
        snapshot, update = yield from _sync_account(
            core, user_id, account_id, connection, account, current, policy, started, force, options
        )
        snapshots.append(snapshot)
        updates.append(update)
    snapshots.extend(
        AccountSnapshot(account_id=i, connection_id=known[i].connection_id, state=AccountState.GONE) for i in removed
    )
    snapshots.sort(key=lambda snapshot: snapshot.account_id)  # PortfolioSnapshot.accounts: in account id order
    finished = time.time()
    portfolio = PortfolioSnapshot(
        user_id=user_id,
        started_at=datetime.fromtimestamp(started, UTC),
        finished_at=datetime.fromtimestamp(finished, UTC),
        accounts_listed=listed,
        accounts=snapshots,
    )
    outcome = SyncOutcome(
        user_id=user_id,
        started_at=started,
        finished_at=finished,
        accounts_synced_at=started if listed else None,
        accounts=tuple(updates),
        removed=tuple(removed),
        leased=True,  # sync_portfolio holds the lease: an erasure meanwhile is not undone by the save
    )
    return portfolio, outcome


def _active(record: AccountRecord) -> AccountRecord:
    if record.status is AccountStatus.STALE:
        # Back from a disabled connection: whatever happened meanwhile is unknown, fetch it all.
        return AccountRecord(
            record.account_id,
            record.connection_id,
            activities_cursor=record.activities_cursor,
            cursor_ids=record.cursor_ids,
        )
    return record


def _sync_account(
    core: Core,
    user_id: str,
    account_id: str,
    connection: str | None,
    account: Account | None,
    record: AccountRecord | None,
    policy: SyncPolicy,
    started: float,
    force: bool,
    options: CallOptions | None,
) -> Flow[tuple[AccountSnapshot, AccountUpdate]]:
    holdings_due = force or policy.holdings_due(record, started)
    activities_due = force or policy.activities_due(record, started)
    fields: dict[str, Any] = {"account_id": account_id, "connection_id": connection, "account": account}
    update: dict[str, Any] = {}
    if not (holdings_due or activities_due):
        return (
            AccountSnapshot(**fields, state=AccountState.NOT_DUE),
            AccountUpdate(account_id, connection, AccountStatus.ACTIVE),
        )
    try:
        if holdings_due:
            try:
                fields["balances"] = yield from core.get_balances(user_id, account_id, options)
                fields["positions"] = yield from core.get_positions(user_id, account_id, options)
            except e.SnapTradeEndpointRetiredError:
                # Retired for good for this account: record the attempt so that it is not polled
                # again before the interval, and carry on with activities.
                update["holdings_synced_at"] = started
                fields.update(balances=None, positions=None, state=AccountState.RETIRED)
            else:
                update["holdings_synced_at"] = started
                fields["holdings_fetched"] = True
        if activities_due:
            cursor = record.activities_cursor if record else None
            seen = set(record.cursor_ids) if record else set()
            start = date.fromisoformat(cursor) if cursor else None
            activities = yield from core.get_activities(user_id, account_id, start_date=start, options=options)
            new = [a for a in activities if a.id is None or a.id not in seen]
            update.update(_advance(cursor, activities))
            update["activities_synced_at"] = started
            fields["new_activities"] = new
            fields["activities_fetched"] = True
    except e.SnapTradeConnectionDisabledError as error:
        fields.update(
            state=AccountState.STALE, reconnect_authorization_id=connection, error=SyncFailure.from_error(error)
        )
        return AccountSnapshot(**fields), AccountUpdate(account_id, connection, AccountStatus.STALE)
    except e.SnapTradeDataNotReadyError as error:
        fields.update(state=AccountState.POPULATING, error=SyncFailure.from_error(error))
    except e.SnapTradeEndpointRetiredError as error:
        fields.update(state=AccountState.RETIRED, error=SyncFailure.from_error(error))
        update["activities_synced_at"] = started
    except e.SnapTradeError as error:
        fields.update(state=AccountState.FAILED, error=SyncFailure.from_error(error))
    fields.setdefault("state", AccountState.SYNCED)
    return AccountSnapshot(**fields), AccountUpdate(account_id, connection, AccountStatus.ACTIVE, **update)


def _day(activity: Activity) -> str | None:
    return activity.trade_date.date().isoformat() if activity.trade_date is not None else None


def _advance(cursor: str | None, activities: list[Activity]) -> dict[str, Any]:
    """The new activities cursor: the newest trade date seen, and the ids seen on that date.

    The next fetch starts on that date (SnapTrade's ``startDate`` is inclusive), so activities
    booked later the same day are not missed; the ids keep the ones already reported out. Every
    activity of the cursor day is in each fetch, so the ids are exactly that day's.
    """
    newest = cursor
    for activity in activities:
        day = _day(activity)
        if day is not None and (newest is None or day > newest):
            newest = day
    if newest is None:
        return {}
    ids = {a.id for a in activities if a.id is not None and _day(a) == newest}
    return {"activities_cursor": newest, "cursor_ids": tuple(sorted(ids))}
