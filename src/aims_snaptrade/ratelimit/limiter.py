"""Client-side rate limiting on the ``limits`` library, shared across replicas through Redis.

Every request takes one slot from each budget that applies to it (the AIMS plan's per-minute,
per-hour and per-day budgets, SnapTrade's customer budget, the per-account bucket of
account-scoped operations and an optional per-user budget), all counted in rolling windows by
``limits`` (moving window by default). With ``redis://`` storage every replica using the same
client id draws on the same budgets. When a budget is empty the call waits (bounded by
``max_wait``) or fails fast with :class:`~aims_snaptrade.errors.SnapTradeBudgetExhaustedError`.
SnapTrade's answers tighten the local view: 429s pause the limit they came from, and
``X-RateLimit-*Remaining`` lower than ours counts the requests someone else made.

Decisions live in the sans-IO :class:`RateLimitPolicy`; :class:`RateLimiter` (blocking) and
:class:`AsyncRateLimiter` (``limits.aio`` with redis-py's asyncio client, ``asyncio.sleep``) only do
the storage calls and the sleeping.

Example::

    policy = RateLimitPolicy.from_settings(settings)
    limiter = RateLimiter(policy, "redis://127.0.0.1:6379/0")
    limiter.acquire(get_operation("get_user_account_balance"), user_id="u1", account_id="a1")
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError
from limits.storage import RedisStorage, storage_from_string

from aims_snaptrade._ids import keyed_ids
from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeRateLimiterUnavailableError,
    UpstreamCause,
)
from aims_snaptrade.operations import Operation
from aims_snaptrade.ratelimit._policy import (
    ALERT_FRACTION,
    NAMESPACE,
    PLAN_PRESETS,
    Budget,
    BudgetKey,
    BudgetUsage,
    CallPlan,
    Engine,
    Outcome,
    PauseBook,
    RateLimitPolicy,
    ReportBook,
    Scope,
    SubjectTracker,
    Take,
    WaitQueue,
    parse_retry_after,
)
from aims_snaptrade.ratelimit._take import COMPOSED_CHECK, MemoryBudgets, Prepared, outcome_of, script_call
from aims_snaptrade.redaction import scrub_exception

__all__ = [
    "ALERT_FRACTION",
    "NAMESPACE",
    "PLAN_PRESETS",
    "AsyncRateLimiter",
    "Budget",
    "BudgetKey",
    "BudgetUsage",
    "RateLimitPolicy",
    "RateLimiter",
    "Scope",
    "parse_retry_after",
]

STORAGE_TIMEOUT = 2.0
"""Seconds a Redis connect or command may take before the limiter reports the storage unavailable."""

_REDIS_SCHEMES = ("redis", "rediss", "redis+unix")
_KEY_SETS = 4096  # (operation, user, account) combinations whose budget keys are kept
_PREFIX = RedisStorage.PREFIX  # limits' key prefix ("LIMITS"), which the composed script writes under too
# "//user:password@" (user may be empty): the password is what must never reach a message.
_USERINFO = re.compile(r"//([^:/@]*)(?::([^@/]*))?@")
_SCHEMES = ("memory", *_REDIS_SCHEMES)


def _safe_url(url: str) -> str:
    """``url`` with its password masked, for messages (works on malformed URLs too)."""
    return _USERINFO.sub(lambda m: f"//{m.group(1)}:***@" if m.group(2) is not None else m.group(0), url)


def _split_scheme(storage_url: str) -> tuple[str, str]:
    """``(scheme without async+, url without async+)``; refuses schemes we do not support."""
    if not isinstance(storage_url, str) or "://" not in storage_url:
        raise SnapTradeConfigurationError(
            f"SNAPTRADE_RATE_LIMIT_STORAGE_URL {storage_url!r} is not a storage URI.",
            hint="Use memory:// (one process) or redis://host:port/db (shared by replicas).",
        )
    url = storage_url.removeprefix("async+")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise SnapTradeConfigurationError(
            f"SNAPTRADE_RATE_LIMIT_STORAGE_URL uses {scheme!r}, which the rate limiter does not support.",
            hint="Use memory://, redis://, rediss:// or redis+unix://.",
        )
    return scheme, url


def _unavailable(url: str, exc: BaseException, doing: str) -> SnapTradeRateLimiterUnavailableError:
    cause = exc.storage_error if isinstance(exc, StorageError) else exc
    error = SnapTradeRateLimiterUnavailableError(
        f"The rate-limit storage {_safe_url(url)} failed while {doing} ({type(cause).__name__}); the call was not sent."
    )
    # Chain a scrubbed stand-in: the driver's text is not ours to vouch for. Callers raise the
    # error ``from`` it (``from None`` would clear it).
    error.__cause__ = UpstreamCause(scrub_exception(cause)).with_traceback(cause.__traceback__)
    return error


def _storage_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the storage failed": limits wraps most, not all (script loading)."""
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return (StorageError, OSError)
    return (StorageError, OSError, RedisError)


def _missing_redis(url: str) -> SnapTradeConfigurationError:
    return SnapTradeConfigurationError(
        f"SNAPTRADE_RATE_LIMIT_STORAGE_URL is {_safe_url(url)} but the redis package is not installed.",
        hint="pip install 'aims-snaptrade[redis]'.",
    )


def _redis_options(url: str, *, asynchronous: bool) -> dict[str, Any]:
    """A connection pool with bounded timeouts and a single immediate reconnect.

    redis-py's default client retries with exponential backoff for seconds; a limiter that
    hangs that long on a dead Redis is worse than one that says so, so the pool is ours.
    """
    try:
        if asynchronous:
            from redis.asyncio import ConnectionPool as AsyncPool
            from redis.asyncio.retry import Retry as AsyncRetry
            from redis.backoff import NoBackoff

            pool_url = url.replace("redis+unix://", "unix://", 1)
            return {
                "implementation": "redispy",
                "connection_pool": AsyncPool.from_url(
                    pool_url,
                    socket_connect_timeout=STORAGE_TIMEOUT,
                    socket_timeout=STORAGE_TIMEOUT,
                    retry=AsyncRetry(NoBackoff(), 1),
                ),
            }
        from redis import ConnectionPool
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        pool_url = url.replace("redis+unix://", "unix://", 1)
        return {
            "connection_pool": ConnectionPool.from_url(
                pool_url,
                socket_connect_timeout=STORAGE_TIMEOUT,
                socket_timeout=STORAGE_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
            )
        }
    except ImportError:
        raise _missing_redis(url) from None
    except ValueError:
        # The parser's message may quote the URL, password included: name the URL ourselves.
        raise SnapTradeConfigurationError(
            f"SNAPTRADE_RATE_LIMIT_STORAGE_URL {_safe_url(url)} is malformed.",
            hint="Use redis://[:password@]host:port/db, rediss://... or redis+unix:///path/to/socket.",
        ) from None


def _open(url: str, scheme: str, *, asynchronous: bool) -> tuple[Any, Any]:
    """Build the ``limits`` storage for ``url``: ``(storage, the Redis pool we own or None)``."""
    options: dict[str, Any] = {"wrap_exceptions": True}
    if scheme in _REDIS_SCHEMES:
        options.update(_redis_options(url, asynchronous=asynchronous))
    target = ("async+" + url) if asynchronous else url
    try:
        storage = storage_from_string(target, **options)
    except LimitsConfigurationError as exc:
        if "prerequisite" in str(exc):
            raise _missing_redis(url) from None
        # limits' message quotes the URL as given, password included: keep it out.
        raise SnapTradeConfigurationError(
            f"SNAPTRADE_RATE_LIMIT_STORAGE_URL {_safe_url(url)} is not usable by limits."
        ) from None
    return storage, options.get("connection_pool")


def _check_reachable(url: str, scheme: str) -> None:
    """Fail at start-up, not on the first call, when the storage does not answer."""
    if scheme not in _REDIS_SCHEMES:
        return
    storage, pool = _open(url, scheme, asynchronous=False)
    try:
        reachable = storage.check()
    finally:
        if pool is not None:
            pool.disconnect()
    if not reachable:
        raise SnapTradeConfigurationError(
            f"The rate-limit storage {_safe_url(url)} does not answer.",
            hint="Start Redis or fix SNAPTRADE_RATE_LIMIT_STORAGE_URL; the client never runs without limits.",
        )


class _Planned(NamedTuple):
    """A :class:`CallPlan` and what the storage derived from its claims, once."""

    plan: CallPlan
    memory: Prepared | None  # MemoryBudgets.prepare(plan.claims)
    script: tuple[list[str], str] | None  # the composed script's KEYS and budget fields


class _Shared:
    """What the two shells share: the policy, pauses, the wait queue, pending reports, tracked buckets."""

    def __init__(
        self,
        policy: RateLimitPolicy,
        storage_url: str,
        clock: Callable[[], float],
        id_secret: str | None = None,
    ) -> None:
        if not isinstance(policy, RateLimitPolicy):
            raise SnapTradeConfigurationError(
                f"policy must be a RateLimitPolicy, got {type(policy).__name__}.",
                hint="Build it with RateLimitPolicy.from_settings(settings).",
            )
        self.policy = policy
        self.storage_url = storage_url
        self._scheme, self._url = _split_scheme(storage_url)
        self._clock = clock
        self._pauses = PauseBook()
        self._queue = WaitQueue()
        self._reports = ReportBook()
        self._subjects = SubjectTracker()
        # The plan of (operation, user, account), computed once: every call needs it.
        self._plans: dict[tuple[str, str | None, str | None], _Planned] = {}
        self._memory: MemoryBudgets | None = None
        # Redis is shared infrastructure: its keys name users and accounts by keyed hashes only
        # (docs/traffic-control.md). Memory budgets never leave the process and keep clear ids.
        self._hashed = keyed_ids(id_secret, "rate-limit ids") if id_secret and self._scheme != "memory" else None

    def _subject(self, value: str | None) -> str | None:
        """The id as the budgets' keys hold it (a keyed hash on shared storage)."""
        return value if value is None or self._hashed is None else self._hashed(value)

    def forget_user(self, user_id: str) -> int:
        """Delete the user's budget keys on Redis, and those of the accounts this process saw the
        user use (the others expire with their window); returns how many keys. Erasure calls it
        through the personal-data registry. Memory budgets hold nothing past the process: 0."""
        if self._hashed is None:
            return 0
        import redis

        accounts = {account for (_, user, account) in list(self._plans) if user == user_id and account}
        patterns = [f"{_PREFIX}:*/user/{self._hashed(user_id)}/*"]
        patterns += [f"{_PREFIX}:*/account/{self._hashed(account)}/*" for account in sorted(accounts)]
        pool = _redis_options(self._url, asynchronous=False)["connection_pool"]
        client = redis.Redis(connection_pool=pool)
        try:
            removed = 0
            for pattern in patterns:
                keys = list(client.scan_iter(match=pattern, count=1000))
                if keys:
                    removed += int(client.delete(*keys))
            return removed
        except _storage_failures() as exc:
            error = _unavailable(self.storage_url, exc, "forgetting a user's budgets")
            raise error from error.__cause__
        finally:
            pool.disconnect()

    def _connect(self, *, asynchronous: bool) -> Any:
        """Check the storage answers, open it, and return ``limits``' strategy over it (for usage)."""
        _check_reachable(self._url, self._scheme)
        self._storage, self._pool = _open(self._url, self._scheme, asynchronous=asynchronous)
        if self._scheme == "memory":
            if asynchronous:
                from limits.aio.storage.memory import Entry
            else:
                from limits.storage.memory import Entry  # type: ignore[assignment]

                # limits' expiry runs in a timer thread 10 ms after the storage is built (again only
                # after limits' own hits, which this limiter never makes) and replaces the windows
                # without the check's lock: a slot taken meanwhile would be lost. The check's own
                # sweep expires entries under its lock.
                self._storage.timer.cancel()
            self._memory = MemoryBudgets(self._storage, Entry)
        if asynchronous:
            from limits.aio import strategies as chosen
        else:
            from limits import strategies as chosen  # type: ignore[no-redef]
        if self.policy.strategy == "moving-window":
            return chosen.MovingWindowRateLimiter(self._storage)
        return chosen.SlidingWindowCounterRateLimiter(self._storage)

    def _options(
        self, mode: Literal["wait", "fail"] | None, max_wait: float | None
    ) -> tuple[Literal["wait", "fail"], float]:
        if mode is None and max_wait is None:  # the policy's own, checked when it was built
            return self.policy.mode, float(self.policy.max_wait)
        mode = self.policy.mode if mode is None else mode
        if mode not in ("wait", "fail"):
            raise SnapTradeConfigurationError(f"rate-limit mode must be 'wait' or 'fail', got {mode!r}.")
        wait = self.policy.max_wait if max_wait is None else max_wait
        if not isinstance(wait, int | float) or not wait >= 0:
            raise SnapTradeConfigurationError(f"max_wait must be seconds >= 0, got {wait!r}.")
        return mode, float(wait)

    def _begin(
        self,
        op: Operation,
        user_id: str | None,
        account_id: str | None,
        mode: Literal["wait", "fail"] | None,
        max_wait: float | None,
        deadline: float | None,
    ) -> float | tuple[Engine, _Planned]:
        """Start an acquire: the stamp when its first attempt took the slots, else the engine to drive.

        On memory, a call that finds nobody queued and no pause makes its first attempt at once,
        under the storage's lock (:meth:`MemoryBudgets.take_first`): no queue, no engine unless
        refused, and refused it is queued before the lock is released. On Redis the attempt is a
        round trip, during which later calls must see this one queued: the engine queues first.
        """
        chosen_mode, chosen_wait = self._options(mode, max_wait)
        planned = self._plan_of(op, user_id, account_id)
        plan = planned.plan
        if plan.subjects:
            self._subjects.add(plan.subjects)
        start = self._clock()
        first: tuple[Take, Outcome] | None = None
        ticket = None
        if self._memory is not None:
            queue = self._queue
            take = self.policy.first_take(plan, pauses=self._pauses, queue=queue, reports=self._reports, now=start)
            if take is not None:
                # A first take claims the plan's budgets, one slot each, with SnapTrade's reports
                # when some are pending: the fast paths read those themselves.
                outcome, ticket = self._memory.take_first(take, planned.memory, queue, plan.names)
                if outcome is None:  # a call queued meanwhile: the feedback taken for this attempt goes back
                    for claim, name in zip(take.claims, plan.names, strict=True):
                        if claim.report is not None or claim.moves:
                            self._reports.restore(name, claim.report, claim.moves)
                elif outcome.taken:
                    return float(outcome.stamp)
                else:
                    first = (take, outcome)
        engine = self.policy.acquire_steps(
            op,
            plan,
            pauses=self._pauses,
            queue=self._queue,
            reports=self._reports,
            mode=chosen_mode,
            max_wait=chosen_wait,
            deadline=deadline,
            clock=self._clock,
            start=start,
            first=first,
            ticket=ticket,
        )
        return engine, planned

    def _plan_of(self, op: Operation, user_id: str | None, account_id: str | None) -> _Planned:
        known = self._plan_key(op, user_id, account_id)
        user_id, account_id = known[1], known[2]
        planned = self._plans.get(known)
        if planned is None:
            plan = self.policy.plan(op, user_id=self._subject(user_id), account_id=self._subject(account_id))
            if self._memory is not None:
                planned = _Planned(plan, self._memory.prepare(plan.claims, plan.sliding), None)
            else:
                keys, args = script_call(Take(plan.claims, 0.0, plan.sliding), _PREFIX)
                planned = _Planned(plan, None, (keys, args[1]))
            if len(self._plans) >= _KEY_SETS:
                self._plans.clear()
            self._plans[known] = planned
        return planned

    def _plan_key(
        self, op: Operation, user_id: str | None, account_id: str | None
    ) -> tuple[str, str | None, str | None]:
        """The ids a plan of ``op`` depends on: only those a budget key or pause scope holds.

        Without a user budget, a call for a new user reuses the plan (keys, claims, the memory
        storage's prepared take) of the users before it instead of building and hashing its own.
        On shared storage the user stays beside an account in the key: :meth:`forget_user` finds
        the accounts a user's calls drew on there.
        """
        policy = self.policy
        if account_id is not None and not (
            op.account_scoped or (policy.trade_budget is not None and op.trading and not op.idempotent)
        ):
            account_id = None
        if (
            user_id is not None
            and not (policy.user_budget is not None and op.user_scoped)
            and (account_id is None or self._hashed is None)
        ):
            user_id = None
        return op.name, user_id, account_id

    def _prepared(self, take: Take, planned: _Planned | None) -> Prepared | None:
        """What the memory storage derived from the plan's claims, when ``take`` claims just those."""
        if planned is not None and take.claims is planned.plan.claims:
            return planned.memory
        return None

    def _script_call(self, take: Take, planned: _Planned | None) -> tuple[list[str], list[Any]]:
        """The composed script's ``(KEYS, ARGV)``: the plan's, built once, when ``take`` claims just those."""
        if planned is not None and planned.script is not None and take.claims is planned.plan.claims:
            keys, fields = planned.script
            return keys, [repr(take.now), fields, ""]
        return script_call(take, _PREFIX)

    def _observe(
        self,
        op: Operation,
        account_id: str | None,
        status: int,
        headers: Mapping[str, str],
        sent_at: float | None,
        user_id: str | None,
    ) -> Scope | None:
        return self.policy.observe(
            op,
            account_id=self._subject(account_id),
            status=status,
            headers=headers,
            pauses=self._pauses,
            reports=self._reports,
            sent_at=sent_at,
            clock=self._clock,
            keys=self._plan_of(op, user_id, account_id).plan.keys if sent_at is not None else None,
        )

    def _usage_keys(self) -> list[BudgetKey]:
        return self.policy.client_keys() + self._subjects.keys()

    def _usage(self, key: BudgetKey, reset_at: float, remaining: int) -> BudgetUsage:
        budget = key.budget
        now = self._clock()
        remaining = max(0, min(budget.limit, remaining))
        used = budget.limit - remaining
        fraction = used / budget.limit
        paused = self._pauses.until(budget.scope, key.subject, now) if budget.scope != "plan" else None
        return BudgetUsage(
            name=budget.name,
            scope=budget.scope,
            subject=key.subject,
            limit=budget.limit,
            window=budget.window,
            used=used,
            remaining=remaining,
            fraction=fraction,
            reset_at=max(reset_at, now),
            paused_until=paused,
            alert=fraction >= self.policy.alert_fraction or paused is not None,
        )

    @contextmanager
    def _storage_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except _storage_failures() as exc:  # evaluated only when something was raised
            error = _unavailable(self.storage_url, exc, doing)
            raise error from error.__cause__


class RateLimiter(_Shared):
    """Blocking rate limiter over ``limits``' sync storages (``memory://``, ``redis://``).

    Thread-safe. Waiting uses ``time.sleep``; waiters of one limiter are served in arrival order.
    Construction fails with :class:`SnapTradeConfigurationError` when the storage URI is wrong or
    Redis does not answer; later storage failures raise
    :class:`SnapTradeRateLimiterUnavailableError` (the call is not sent: there is no unlimited
    fallback).

    Args:
        policy: Budgets and defaults, usually ``RateLimitPolicy.from_settings(settings)``.
        storage_url: ``memory://`` (this process only) or ``redis://[:password@]host:port/db``.
        clock: Wall clock in Unix seconds; ``limits`` stamps entries with ``time.time()``, so only
            replace it together with that (tests).
        sleep: How to wait (tests pass a fake).
        id_secret: On Redis, user and account ids in keys are keyed hashes under this secret (the
            clients pass the consumer key, so every replica shares the keys); ``None`` keeps them clear.
    """

    def __init__(
        self,
        policy: RateLimitPolicy,
        storage_url: str = "memory://",
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        id_secret: str | None = None,
    ) -> None:
        super().__init__(policy, storage_url, clock, id_secret)
        self._sleep = sleep
        from limits import strategies

        self._strategy: strategies.RateLimiter = self._connect(asynchronous=False)
        self._script: Any = None
        if self._pool is not None:
            import redis

            self._script = redis.Redis(connection_pool=self._pool).register_script(COMPOSED_CHECK)

    def _take(self, take: Take, planned: _Planned | None = None) -> Outcome:
        if self._memory is not None:
            return self._memory.take(take, self._prepared(take, planned))
        keys, args = self._script_call(take, planned)
        return outcome_of(self._script(keys=keys, args=args), len(take.claims))

    def _drive(self, engine: Engine, doing: str, planned: _Planned | None = None) -> float:
        answer: object = None
        try:
            while True:
                try:
                    step = engine.send(answer)
                except StopIteration as stop:
                    return float(stop.value)
                if isinstance(step, Take):
                    answer = self._take(step, planned)
                else:
                    self._sleep(step.seconds)
                    answer = None
        except _storage_failures() as exc:  # evaluated only when something was raised
            error = _unavailable(self.storage_url, exc, doing)
            raise error from error.__cause__
        finally:
            engine.close()

    def acquire(
        self,
        op: Operation,
        *,
        user_id: str | None,
        account_id: str | None,
        mode: Literal["wait", "fail"] | None = None,
        max_wait: float | None = None,
        deadline: float | None = None,
    ) -> float:
        """Take a slot of every budget ``op`` draws on at once (one storage round trip), or raise.

        ``mode`` and ``max_wait`` default to the policy's. In ``wait`` mode the call sleeps until
        every budget has a slot, but never longer than ``max_wait`` nor past ``deadline`` (seconds
        left of the call): when the slot frees later than that, it raises at once rather than
        sleeping first. Returns the time (this limiter's clock) the slots were taken.

        Raises:
            SnapTradeBudgetExhaustedError: No slot within ``max_wait`` (``retry_after``, ``limit_scope`` set).
            SnapTradeDeadlineExceededError: No slot before ``deadline`` (which was the shorter bound).
            SnapTradeRateLimiterUnavailableError: The storage failed.
        """
        begun = self._begin(op, user_id, account_id, mode, max_wait, deadline)
        if isinstance(begun, float):
            return begun
        engine, planned = begun
        return self._drive(engine, "taking budget", planned)

    def observe(
        self,
        op: Operation,
        *,
        account_id: str | None,
        status: int,
        headers: Mapping[str, str],
        sent_at: float | None = None,
        user_id: str | None = None,
    ) -> Scope | None:
        """Feed back SnapTrade's answer (status and ``X-RateLimit-*`` / ``Retry-After`` headers).

        No storage IO: a 429 pauses a scope in this process (returned: the 429's scope), reported
        counts are recorded by the next :meth:`acquire`. ``sent_at`` is what :meth:`acquire`
        returned for the request and ``user_id`` what it was given: with them, slots answered
        later than the margin absorbs are re-stamped to the answer by the next check.
        """
        return self._observe(op, account_id, status, headers, sent_at, user_id)

    def usage(self) -> list[BudgetUsage]:
        """How full each client-wide budget and each recently used account/user bucket is."""
        keys = self._usage_keys()
        result = []
        with self._storage_errors("reading usage"):
            self._drive(self.policy.flush_steps(keys, reports=self._reports, clock=self._clock), "recording feedback")
            for key in keys:
                stats = self._strategy.get_window_stats(key.budget.item, *key.identifiers)
                result.append(self._usage(key, stats.reset_time, stats.remaining))
        return result

    def close(self) -> None:
        """Release the storage connections (the budgets themselves stay in the storage)."""
        if self._pool is not None:
            self._pool.disconnect()


class AsyncRateLimiter(_Shared):
    """The :class:`RateLimiter` for asyncio: same decisions, awaited storage, ``asyncio.sleep``.

    Uses ``limits.aio`` storages (``async+memory://``, ``async+redis://`` with redis-py's asyncio
    client, so no extra dependency); the plain ``memory://`` / ``redis://`` URIs of the settings are
    accepted and mapped. A Redis storage is checked once at construction with a short blocking
    ping (start-up only), so a wrong URI fails there as in the sync client. Keys are the same as
    the sync limiter's, so sync and async clients share one budget. Waiting tasks are served in
    arrival order.
    """

    def __init__(
        self,
        policy: RateLimitPolicy,
        storage_url: str = "memory://",
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        id_secret: str | None = None,
    ) -> None:
        super().__init__(policy, storage_url, clock, id_secret)
        import asyncio

        self._sleep: Callable[[float], Awaitable[object]] = sleep or asyncio.sleep
        from limits.aio import strategies

        self._strategy: strategies.RateLimiter = self._connect(asynchronous=True)
        self._script: Any = None
        if self._pool is not None:
            import redis.asyncio

            self._script = redis.asyncio.Redis(connection_pool=self._pool).register_script(COMPOSED_CHECK)

    async def _take(self, take: Take, planned: _Planned | None = None) -> Outcome:
        if self._memory is not None:
            # A lock held for microseconds, never across an await.
            return self._memory.take(take, self._prepared(take, planned))
        keys, args = self._script_call(take, planned)
        return outcome_of(await self._script(keys=keys, args=args), len(take.claims))

    async def _drive(self, engine: Engine, doing: str, planned: _Planned | None = None) -> float:
        answer: object = None
        try:
            while True:
                try:
                    step = engine.send(answer)
                except StopIteration as stop:
                    return float(stop.value)
                if isinstance(step, Take):
                    answer = await self._take(step, planned)
                else:
                    await self._sleep(step.seconds)
                    answer = None
        except _storage_failures() as exc:  # evaluated only when something was raised
            error = _unavailable(self.storage_url, exc, doing)
            raise error from error.__cause__
        finally:
            engine.close()

    async def acquire(
        self,
        op: Operation,
        *,
        user_id: str | None,
        account_id: str | None,
        mode: Literal["wait", "fail"] | None = None,
        max_wait: float | None = None,
        deadline: float | None = None,
    ) -> float:
        """Take a slot of every budget ``op`` draws on, or raise; see :meth:`RateLimiter.acquire`.

        Waiting awaits ``asyncio.sleep``: the event loop keeps running.
        """
        begun = self._begin(op, user_id, account_id, mode, max_wait, deadline)
        if isinstance(begun, float):
            return begun
        engine, planned = begun
        return await self._drive(engine, "taking budget", planned)

    async def observe(
        self,
        op: Operation,
        *,
        account_id: str | None,
        status: int,
        headers: Mapping[str, str],
        sent_at: float | None = None,
        user_id: str | None = None,
    ) -> Scope | None:
        """Feed back SnapTrade's answer; see :meth:`RateLimiter.observe` (no IO, nothing awaited)."""
        return self._observe(op, account_id, status, headers, sent_at, user_id)

    async def usage(self) -> list[BudgetUsage]:
        """How full each budget is; see :meth:`RateLimiter.usage`."""
        keys = self._usage_keys()
        result = []
        with self._storage_errors("reading usage"):
            await self._drive(
                self.policy.flush_steps(keys, reports=self._reports, clock=self._clock), "recording feedback"
            )
            for key in keys:
                stats = await self._strategy.get_window_stats(key.budget.item, *key.identifiers)
                result.append(self._usage(key, stats.reset_time, stats.remaining))
        return result

    async def close(self) -> None:
        """Release the storage connections (the budgets themselves stay in the storage)."""
        if self._pool is not None:
            await self._pool.disconnect()
