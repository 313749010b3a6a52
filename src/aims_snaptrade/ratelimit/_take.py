"""Who performs a :class:`~aims_snaptrade.ratelimit._policy.Take`: Redis (one script) or memory (one lock).

Both take every budget of a call or none, in one step, and write ``limits``' own layout so its
strategies read the result (``get_window_stats`` for usage). Redis runs
:data:`~aims_snaptrade.ratelimit._lua.COMPOSED_CHECK`, loaded once and then called by its SHA
(``EVALSHA``; redis-py reloads it if the server forgot it); memory runs the same algorithm in
Python under one lock, on ``limits``' in-memory storage.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Any, NamedTuple

from aims_snaptrade.ratelimit._lua import COMPOSED_CHECK
from aims_snaptrade.ratelimit._policy import Claim, Outcome, Report, Take, WaitQueue

__all__ = ["COMPOSED_CHECK", "MemoryBudgets", "Prepared", "outcome_of", "script_call"]

# Sweep keys whose every entry has expired once per this many takes (memory only: Redis expires keys itself).
_SWEEP_EVERY = 4096


def _span(claim: Claim) -> float:
    return claim.key.budget.window + claim.margin


def script_call(take: Take, prefix: str) -> tuple[list[str], list[Any]]:
    """``(KEYS, ARGV)`` of the composed script for ``take`` (``prefix``: the storage's key prefix)."""
    keys: list[str] = []
    fields: list[str] = []
    for claim in take.claims:
        name = claim.key.storage_key
        if take.sliding:
            keys += [f"{prefix}:{{{name}}}", f"{prefix}:{{{name}}}/-1"]
        else:
            keys.append(f"{prefix}:{name}")
        report = claim.report
        fields.append(
            f"{1 if take.sliding else 0} {claim.key.budget.limit} {_span(claim)!r} {claim.amount} {claim.depth} "
            + (
                f"{report.since!r} {report.used} {report.noise} {1 if report.hold_until is not None else 0}"
                if report is not None
                else "-1 0 0 0"
            )
        )
    moves = [
        f"{index} {old!r} {new!r}"
        for index, claim in enumerate(take.claims, start=1)
        for old, new in claim.moves
        if not take.sliding
    ]
    return keys, [repr(take.now), " ".join(fields), " ".join(moves)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def outcome_of(result: list[Any], count: int) -> Outcome:
    """The script's answer as an :class:`Outcome`."""
    statuses = [_text(value) for value in result[1 : 1 + count]]
    return Outcome(
        taken=int(result[0]) == 1,
        waits=tuple(None if s == "" else 0.0 if s == "h" else float(s) for s in statuses),
        held=tuple(s == "h" for s in statuses),
        recorded=tuple(int(value) for value in result[1 + count : 1 + 2 * count]),
        stamp=float(_text(result[1 + 2 * count])),
    )


def _beyond(claim: Claim, report: Report, used: int) -> int:
    """What SnapTrade counted beyond the ``used`` slots the bucket holds (recorded above the report's noise)."""
    return min(report.used - used, claim.key.budget.limit)


def _weighted_of(claim: Claim, state: tuple[int, float, int, float, str]) -> int:
    """A sliding window's weighted count from the counters :meth:`MemoryBudgets._sliding` read."""
    pc, pt, cc, _, _ = state
    return math.floor(pc * pt / claim.key.budget.window) + cc


class Prepared(NamedTuple):
    """What :meth:`MemoryBudgets.prepare` derives once from a plan's claims (one slot each, no feedback).

    Per budget its storage key, limit, ``window + margin`` (moving) or window (sliding), and the
    index of its span in ``spans``: budgets of one span share the entry a take stamps (entries
    are never changed in place, only replaced). ``taken`` is the :class:`Outcome` fields of a
    take that took every budget.
    """

    names: tuple[str, ...]
    limits: tuple[int, ...]
    spans: tuple[float, ...]
    shared: tuple[int, ...]
    distinct: tuple[float, ...]
    taken: tuple[tuple[None, ...], tuple[bool, ...], tuple[int, ...]]


class MemoryBudgets:
    """The composed check on ``limits``' memory storage (sync or ``limits.aio``), under one lock.

    Moving windows are ``limits``' entry lists (newest first, trimmed to the limit; an entry
    expires ``window + margin`` after it was taken), sliding windows its time-bucketed counters.
    Only this object writes them, always under its lock; ``limits``' readers (``usage()``) read
    them without it, as a snapshot.
    """

    def __init__(self, storage: Any, entry_type: Any) -> None:
        self._storage = storage
        self._entry = entry_type
        self._lock = threading.Lock()
        self._takes = 0

    @staticmethod
    def prepare(claims: tuple[Claim, ...], sliding: bool) -> Prepared:
        """Derive once what every :meth:`take` of exactly ``claims`` needs (see :class:`Prepared`)."""
        spans = tuple([claim.key.budget.window if sliding else _span(claim) for claim in claims])
        distinct = tuple(dict.fromkeys(spans))
        n = len(claims)
        return Prepared(
            names=tuple([claim.key.storage_key for claim in claims]),
            limits=tuple([claim.key.budget.limit for claim in claims]),
            spans=spans,
            shared=tuple([distinct.index(span) for span in spans]),
            distinct=distinct,
            taken=((None,) * n, (False,) * n, (0,) * n),
        )

    def take(self, take: Take, prepared: Prepared | None = None) -> Outcome:
        """Record the reports, then take every claim or none (the script's algorithm).

        ``prepared``: :meth:`prepare` of ``take.claims``' budgets (one slot each, nobody ahead),
        which a take that finds room everywhere, and feedback that records nothing, uses to skip
        the general rules.
        """
        with self._lock:
            return self._take(take, prepared)

    def take_first(
        self, take: Take, prepared: Prepared | None, queue: WaitQueue, names: tuple[str, ...]
    ) -> tuple[Outcome | None, int | None]:
        """A call's first attempt, made only when no call of this process is queued.

        Under the lock every take holds: ``(None, None)`` when a call is queued (nothing taken:
        queue behind it), else the :meth:`take`'s outcome, and when it was refused the ticket of
        the call, queued under ``names`` before the lock is released, so no call arriving later
        goes ahead of it.
        """
        with self._lock:
            if not queue.idle():
                return None, None
            outcome = self._take(take, prepared)
            return outcome, None if outcome.taken else queue.arrive(names)

    def _take(self, take: Take, prepared: Prepared | None) -> Outcome:
        if prepared is not None:
            outcome = self._sliding_first(take, prepared) if take.sliding else self._moving_first(take, prepared)
            if outcome is not None:
                return outcome
        if not take.sliding and all(c.report is None and c.amount == 1 and not c.moves for c in take.claims):
            return self._plain(take)
        n = len(take.claims)
        waits: list[float | None] = [None] * n
        held = [False] * n
        recorded = [0] * n
        if not take.sliding:
            for claim in take.claims:
                for old, new in claim.moves:
                    self._move(claim, old, new)
        # Entries stay sorted, newest first (see the script): never stamp before the newest.
        now = take.now
        if not take.sliding:
            for claim in take.claims:
                events = self._events(claim)
                if events and events[0].atime > now:
                    now = events[0].atime
        for i, claim in enumerate(take.claims):
            report = claim.report
            if report is None:
                continue
            used = self._weighted(claim, now) if take.sliding else self._reported_used(claim, report)
            missing = _beyond(claim, report, used)
            if missing > report.noise:
                if report.hold_until is not None:
                    held[i] = True
                    waits[i] = 0.0
                else:
                    self._add(claim, missing, now, take.sliding)
                    recorded[i] = missing
        for i, claim in enumerate(take.claims):
            if claim.amount > 0 and not held[i]:
                waits[i] = self._sliding_wait(claim, now) if take.sliding else self._moving_wait(claim, now)
        taken = all(w is None for w in waits)
        if taken:
            for claim in take.claims:
                if claim.amount > 0:
                    self._add(claim, claim.amount, now, take.sliding)
        self._counted(now)
        return Outcome(taken, tuple(waits), tuple(held), tuple(recorded), now)

    def _counted(self, now: float) -> None:
        self._takes += 1
        if self._takes % _SWEEP_EVERY == 0:
            self._sweep(now)

    # --- moving window ---------------------------------------------------------------------------

    def _moving_first(self, take: Take, prepared: Prepared) -> Outcome | None:
        """One slot of every budget when each has room, in one pass; ``None`` (nothing taken) when one has none.

        As :meth:`_sliding_first`, a claim's report that records nothing stays on this path; a
        report that does, or slots to re-stamp, are the general rules' work (``None``).
        """
        events_of = self._storage.events
        windows = [events_of.setdefault(name, []) for name in prepared.names]
        now = take.now
        for events in windows:
            if events and events[0].atime > now:  # entries stay sorted, newest first
                now = events[0].atime
        for claim in take.claims:
            if claim.moves:
                return None
            report = claim.report
            if report is not None and _beyond(claim, report, self._reported_used(claim, report)) > report.noise:
                return None
        for events, limit, span in zip(windows, prepared.limits, prepared.spans, strict=True):
            if len(events) >= limit and events[limit - 1].atime + span >= now:
                return None
        entries = []
        for span in prepared.distinct:
            entry = self._entry.__new__(self._entry)
            entry.atime = now
            entry.expiry = now + span
            entries.append(entry)
        for events, limit, shared in zip(windows, prepared.limits, prepared.shared, strict=True):
            events.insert(0, entries[shared])
            if len(events) > limit:
                del events[limit:]
        self._counted(now)
        return Outcome(True, *prepared.taken, now)

    def _plain(self, take: Take) -> Outcome:
        """The common case, one slot of moving windows and no reports: the same rules, in one pass."""
        claims = take.claims
        events_of = self._storage.events
        now = take.now
        windows = []
        for claim in claims:
            events = events_of.get(claim.key.storage_key)
            if events is None:
                events = events_of[claim.key.storage_key] = []
            elif events and events[0].atime > now:
                now = events[0].atime
            windows.append(events)
        waits: list[float | None] | None = None
        for i, (claim, events) in enumerate(zip(claims, windows, strict=True)):
            budget = claim.key.budget
            position = budget.limit - 1 - claim.depth
            if position < 0:
                wait = self._moving_wait(claim, now)
            elif position >= len(events):
                continue
            else:
                frees = events[position].atime + budget.window + claim.margin
                if frees < now:
                    continue
                wait = max(frees - now, 0.001)
            if waits is None:
                waits = [None] * len(claims)
            waits[i] = wait
        if waits is None:
            for claim, events in zip(claims, windows, strict=True):
                entry = self._entry.__new__(self._entry)
                entry.atime = now
                entry.expiry = now + claim.key.budget.window + claim.margin
                events.insert(0, entry)
                if len(events) > claim.key.budget.limit:
                    del events[claim.key.budget.limit :]
        self._counted(now)
        n = len(claims)
        if waits is None:
            return Outcome(True, (None,) * n, (False,) * n, (0,) * n, now)
        return Outcome(False, tuple(waits), (False,) * n, (0,) * n, now)

    def _events(self, claim: Claim) -> list[Any]:
        return self._storage.events.get(claim.key.storage_key) or []

    def _used(self, claim: Claim, since: float) -> int:
        return bisect.bisect_left(self._events(claim), -since, key=lambda entry: -entry.atime)

    def _reported_used(self, claim: Claim, report: Report) -> int:
        """Slots of a moving window taken since SnapTrade's ``report`` could have counted them."""
        return self._used(claim, report.since - _span(claim))

    def _moving_wait(self, claim: Claim, now: float) -> float | None:
        limit, span = claim.key.budget.limit, _span(claim)
        need = claim.amount + claim.depth
        lap, index = divmod(need - 1, limit)
        events = self._events(claim)
        position = limit - index - 1
        if position >= len(events):
            return None if lap == 0 else lap * span
        frees = events[position].atime + span * (lap + 1)
        if lap == 0 and frees < now:
            return None
        return max(float(frees) - now, 0.001)

    def _move(self, claim: Claim, old: float, new: float) -> None:
        events = self._events(claim)
        for i, entry in enumerate(events):  # a recent slot: near the head
            if entry.atime == old:
                del events[i]
                moved = self._entry.__new__(self._entry)
                moved.atime = new
                moved.expiry = new + _span(claim)
                events.insert(bisect.bisect_left(events, -new, key=lambda e: -e.atime), moved)
                return
            if entry.atime < old:
                return

    def _push(self, claim: Claim, count: int, now: float) -> None:
        entry = self._entry.__new__(self._entry)
        entry.atime = now
        entry.expiry = now + _span(claim)  # limits' expiry sweep keeps the margin too
        limit = claim.key.budget.limit
        events = self._storage.events.setdefault(claim.key.storage_key, [])
        # In place, as limits does: copying a day's window on every call would cost more than the check.
        events[:0] = [entry] * min(count, limit)
        del events[limit:]

    # --- sliding-window counter ------------------------------------------------------------------

    def _counter(self, key: str, now: float) -> int:
        if self._storage.expirations.get(key, 0) <= now:
            self._storage.storage.pop(key, None)
            self._storage.expirations.pop(key, None)
        return int(self._storage.storage.get(key, 0))

    def _sliding(self, claim: Claim, now: float) -> tuple[int, float, int, float, str]:
        window = claim.key.budget.window
        previous, current = self._storage.sliding_window_keys(claim.key.storage_key, window, now)
        pc, cc = self._counter(previous, now), self._counter(current, now)
        pt = (1 - (((now - window) / window) % 1)) * window if pc else 0.0
        ct = (1 - ((now / window) % 1)) * window + window
        return pc, pt, cc, ct, current

    def _sliding_first(self, take: Take, prepared: Prepared) -> Outcome | None:
        """One slot of every counter when each has room; ``None`` (nothing taken) when one has none.

        A claim may carry SnapTrade's report (the first take after an answer with
        ``X-RateLimit-Remaining``, i.e. after almost every answer): when SnapTrade counted no
        more than the local counter plus the report's noise, the general rules would record
        nothing and hold nothing, so the take goes on here; otherwise it is theirs (``None``).
        """
        now = take.now
        currents = []
        for claim in take.claims:
            state = self._sliding(claim, now)
            report = claim.report
            if report is not None and _beyond(claim, report, _weighted_of(claim, state)) > report.noise:
                return None
            if self._sliding_wait_of(claim, state) is not None:
                return None
            currents.append(state[4])
        for current, window in zip(currents, prepared.spans, strict=True):
            self._bump(current, window, 1, now)
        self._counted(now)
        return Outcome(True, *prepared.taken, now)

    def _weighted(self, claim: Claim, now: float) -> int:
        return _weighted_of(claim, self._sliding(claim, now))

    def _sliding_wait(self, claim: Claim, now: float) -> float | None:
        return self._sliding_wait_of(claim, self._sliding(claim, now))

    @staticmethod
    def _sliding_wait_of(claim: Claim, state: tuple[int, float, int, float, str]) -> float | None:
        """:meth:`_sliding_wait` from the counters :meth:`_sliding` read."""
        limit, window = claim.key.budget.limit, claim.key.budget.window
        pc, pt, cc, ct, _ = state
        need = claim.amount + claim.depth
        if _weighted_of(claim, state) + need <= limit:
            return None
        room = limit - cc - need
        if pc > 0 and room >= 0:
            return max(pt - (room + 1) * window / pc, 0.001)
        return max(ct - window, 0.001)

    def _add(self, claim: Claim, count: int, now: float, sliding: bool) -> None:
        if not sliding:
            self._push(claim, count, now)
            return
        _, _, _, _, current = self._sliding(claim, now)
        self._bump(current, claim.key.budget.window, count, now)

    def _bump(self, current: str, window: float, count: int, now: float) -> None:
        """Count ``count`` in the current window's counter, which expires two windows after it starts."""
        if self._storage.storage.get(current, 0) == 0:
            self._storage.expirations[current] = now + 2 * window
        self._storage.storage[current] += count

    def _sweep(self, now: float) -> None:
        events = self._storage.events
        for key in [k for k, entries in events.items() if not entries or entries[0].expiry <= now]:
            events.pop(key, None)
        for key in [k for k, at in self._storage.expirations.items() if at <= now]:
            self._storage.storage.pop(key, None)
            self._storage.expirations.pop(key, None)
