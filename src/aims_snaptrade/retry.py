"""Retry policies on tenacity: named presets, one decision function, a shared retry budget.

What is retried is decided in one place, :func:`should_retry`, from the error's ``retryable``
flag and the operation table:

* never: authentication, validation, not-found, permission, conflict, guardrail, configuration
  and unknown-outcome errors, and a local budget refusal (the limiter already waited);
* reads and other idempotent calls: connection errors (timeouts included), 429s and the other
  retryable errors (5xx, 503 brokerage failure, 425 data not ready);
* a non-idempotent write: only when the request provably never left (``request_sent=False``),
  when SnapTrade refused it with a 429 (a throttled request is not executed), or when it
  carries its idempotency key (``client_order_id``) *and* the policy sets
  ``retry_idempotent_writes``.

How long to wait: at least the error's ``retry_after`` (``Retry-After`` or ``*-Reset``), else
exponential backoff with full jitter (tenacity's ``wait_random_exponential``) capped at
``max_delay``. When to stop: after ``max_attempts``, before a sleep would end past the overall
``deadline`` (tenacity's ``stop_before_delay``), or when the :class:`RetryBudget` is empty.

:meth:`RetryPolicy.tenacity_kwargs` returns those pieces for ``tenacity.Retrying(**kw)`` and
``tenacity.AsyncRetrying(**kw)`` alike; only who sleeps differs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tenacity import (
    stop_after_attempt,
    stop_any,
    stop_before_delay,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from aims_snaptrade.errors import (
    SnapTradeAuthError,
    SnapTradeBudgetExhaustedError,
    SnapTradeConfigurationError,
    SnapTradeConflictError,
    SnapTradeConnectionError,
    SnapTradeDeadlineExceededError,
    SnapTradeError,
    SnapTradeGuardrailError,
    SnapTradeNotFoundError,
    SnapTradePermissionError,
    SnapTradeRateLimitError,
    SnapTradeTimeoutError,
    SnapTradeUnknownOutcomeError,
    SnapTradeValidationError,
)
from aims_snaptrade.operations import Operation

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["PRESETS", "RetryBudget", "RetryPolicy", "RetryRun", "RetryStats", "should_retry"]

log = logging.getLogger("aims_snaptrade.retry")

_NEVER_RETRIED: tuple[type[SnapTradeError], ...] = (
    SnapTradeAuthError,
    SnapTradeValidationError,
    SnapTradeNotFoundError,
    SnapTradePermissionError,
    SnapTradeConflictError,
    SnapTradeGuardrailError,
    SnapTradeConfigurationError,
    SnapTradeUnknownOutcomeError,
    # Raised by our own limiter after it waited as long as it was allowed to (or was told to
    # fail fast): retrying would only wait again, past what the caller asked for.
    SnapTradeBudgetExhaustedError,
    # The call's deadline ran out: another attempt could only end later still.
    SnapTradeDeadlineExceededError,
)


def should_retry(
    op: Operation,
    error: BaseException,
    *,
    has_idempotency_key: bool,
    retry_idempotent_writes: bool,
) -> bool:
    """Whether sending ``op`` again after ``error`` is safe and may help (see the module docs)."""
    if not isinstance(error, SnapTradeError) or isinstance(error, _NEVER_RETRIED):
        return False
    if not error.retryable:
        return False
    if op.idempotent:
        return True
    if isinstance(error, SnapTradeConnectionError) and not error.request_sent:
        return True
    if isinstance(error, SnapTradeRateLimitError):
        # SnapTrade refuses a throttled request before executing it.
        return True
    return bool(has_idempotency_key and op.idempotency_param and retry_idempotent_writes)


class RetryStats:
    """Counters for telemetry, thread-safe: attempts, retries, successes, budget refusals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {"attempts": 0, "retries": 0, "successes": 0, "budget_refusals": 0}

    def add(self, name: str, amount: int = 1) -> None:
        """Increase counter ``name``."""
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        return f"RetryStats({self.snapshot()})"


class RetryBudget:
    """A retry token bucket as in botocore's ``standard`` retry mode; thread-safe, shared per client.

    The bucket starts full. A retry costs ``retry_cost`` tokens (``timeout_retry_cost`` after a
    timeout); when the bucket cannot pay, the call stops retrying and its error surfaces. A success
    refunds the cost of the retry that led to it, or ``success_refill`` token if it needed none.
    During an outage every caller quickly drains the bucket, so the failing service sees about
    one request per call instead of one per attempt; as calls succeed again it refills.

    Attributes:
        stats: The :class:`RetryStats` of every call using this budget.
    """

    def __init__(
        self,
        capacity: int = 500,
        retry_cost: int = 5,
        timeout_retry_cost: int = 10,
        success_refill: int = 1,
    ) -> None:
        for name, value, low in (
            ("capacity", capacity, 1),
            ("retry_cost", retry_cost, 0),
            ("timeout_retry_cost", timeout_retry_cost, 0),
            ("success_refill", success_refill, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SnapTradeConfigurationError(f"Retry budget {name} must be an integer >= {low}, got {value!r}.")
        self.capacity = capacity
        self.retry_cost = retry_cost
        self.timeout_retry_cost = timeout_retry_cost
        self.success_refill = success_refill
        self.stats = RetryStats()
        self._lock = threading.Lock()
        self._tokens = capacity

    @property
    def available(self) -> int:
        """Tokens left."""
        with self._lock:
            return self._tokens

    def withdraw(self, error: BaseException | None) -> int | None:
        """Pay for one retry after ``error``: the tokens taken, or ``None`` when the bucket is short."""
        cost = self.timeout_retry_cost if isinstance(error, SnapTradeTimeoutError) else self.retry_cost
        with self._lock:
            if self._tokens < cost:
                refused = True
            else:
                self._tokens -= cost
                refused = False
        if refused:
            self.stats.add("budget_refusals")
            return None
        return cost

    def deposit(self, amount: int) -> None:
        """Give ``amount`` tokens back (never beyond capacity)."""
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + amount)

    def succeeded(self, last_cost: int | None = None) -> None:
        """A call succeeded: refund its last retry's cost, or ``success_refill`` if it needed none."""
        self.stats.add("successes")
        self.deposit(last_cost if last_cost is not None else self.success_refill)

    def __repr__(self) -> str:
        return f"RetryBudget(available={self.available}, capacity={self.capacity})"


class _Call:
    """Per-call state shared by the tenacity callables of one ``tenacity_kwargs`` result."""

    def __init__(self, policy: RetryPolicy, op: Operation, has_key: bool, budget: RetryBudget) -> None:
        self.policy = policy
        self.op = op
        self.has_key = has_key
        self.budget = budget
        self.last_cost: int | None = None
        self.stopped_by_deadline = False

    def before(self, retry_state: RetryCallState) -> None:
        self.budget.stats.add("attempts")

    def before_sleep(self, retry_state: RetryCallState) -> None:
        self.budget.stats.add("retries")
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        # Only fields, never the message: they identify the failure without carrying payloads.
        log.warning(
            "Retrying %s in %.2f s after attempt %d of %d failed: %s (status=%s, code=%s, request_id=%s)",
            self.op.name,
            retry_state.upcoming_sleep,
            retry_state.attempt_number,
            self.policy.max_attempts,
            type(error).__name__,
            getattr(error, "status", None),
            getattr(error, "code", None),
            getattr(error, "request_id", None),
        )


class _RetryDecision(retry_base):
    """tenacity ``retry``: :func:`should_retry` on failures; refills the budget on success."""

    def __init__(self, call: _Call) -> None:
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None:
            return False
        if not outcome.failed:
            self.call.budget.succeeded(self.call.last_cost)
            return False
        error = outcome.exception()
        return error is not None and should_retry(
            self.call.op,
            error,
            has_idempotency_key=self.call.has_key,
            retry_idempotent_writes=self.call.policy.retry_idempotent_writes,
        )


class _StopWhenBudgetEmpty(stop_base):
    """tenacity ``stop``: pays the retry's tokens; stops when the budget cannot.

    Placed last in ``stop_any`` so tokens are only taken for a retry nothing else stops.
    """

    def __init__(self, call: _Call) -> None:
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        cost = self.call.budget.withdraw(error)
        if cost is None:
            return True
        self.call.last_cost = cost
        return False


class _StopBeforeDeadline(stop_before_delay):
    """tenacity ``stop``: no sleep may end past the deadline (and say that this was the reason)."""

    def __init__(self, call: _Call, deadline: float) -> None:
        super().__init__(deadline)
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> bool:
        stop = super().__call__(retry_state)
        if stop:
            self.call.stopped_by_deadline = True
        return stop


@dataclass(frozen=True)
class RetryRun:
    """The retry state of one call: ``tenacity`` keyword arguments and why it stopped.

    Attributes:
        kwargs: For ``tenacity.Retrying(**kwargs)`` / ``tenacity.AsyncRetrying(**kwargs)``.
    """

    kwargs: dict[str, Any]
    _call: _Call = field(repr=False)

    @property
    def stopped_by_deadline(self) -> bool:
        """The next attempt's wait would have ended past the deadline, so it was not made."""
        return self._call.stopped_by_deadline


class _WaitRetryAfter(wait_base):
    """tenacity ``wait``: the backoff, raised to the error's ``retry_after`` when it names one."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self.backoff(retry_state))
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            retry_after = getattr(outcome.exception(), "retry_after", None)
            if isinstance(retry_after, int | float) and retry_after > 0:
                # A floor, not a cap: SnapTrade said when it will accept the request again.
                delay = max(delay, float(retry_after))
        return delay


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried: a value; build one or take a :meth:`preset`.

    Per-call variants: ``dataclasses.replace(policy, max_attempts=1)`` keeps the same
    :class:`RetryBudget`, so the variant still counts against the client's budget.

    Attributes:
        name: Preset name, or ``"custom"``.
        max_attempts: Attempts in total, the first included (1 = no retry).
        deadline: Overall seconds from the first attempt: no sleep may end past it, and it bounds
            budget waits and each attempt's read timeout too (see ``CallOptions.deadline``).
            ``None``: none.
        initial_delay: Backoff window of the first retry, seconds (doubles each retry).
        max_delay: Cap of the backoff window, seconds (a longer ``retry_after`` still wins).
        full_jitter: Sleep a uniform random time within the window (AWS "full jitter"); ``False``
            sleeps the whole window (deterministic, for tests).
        retry_idempotent_writes: Resend writes that carry their idempotency key
            (``client_order_id``). Off in every preset: SnapTrade does not document that it
            de-duplicates orders by ``client_order_id``, so turning it on is a decision for the
            service that places the orders.
        budget_capacity: Tokens of the :class:`RetryBudget` created when ``budget`` is not given.
        retry_cost: Tokens per retry.
        timeout_retry_cost: Tokens per retry after a timeout.
        success_refill: Tokens a success without retries gives back.
        budget: The shared :class:`RetryBudget` (created from the ``budget_*`` values if omitted).
    """

    name: str = "custom"
    max_attempts: int = 3
    deadline: float | None = 30.0
    initial_delay: float = 0.5
    max_delay: float = 8.0
    full_jitter: bool = True
    retry_idempotent_writes: bool = False
    budget_capacity: int = 500
    retry_cost: int = 5
    timeout_retry_cost: int = 10
    success_refill: int = 1
    budget: RetryBudget | None = field(default=None, compare=False, repr=False)

    PRESET_NAMES: ClassVar[tuple[str, ...]] = ("none", "standard", "patient")

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            problems.append(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if self.deadline is not None and not (isinstance(self.deadline, int | float) and self.deadline > 0):
            problems.append(f"deadline must be seconds > 0 or None, got {self.deadline!r}")
        if not (isinstance(self.initial_delay, int | float) and self.initial_delay >= 0):
            problems.append(f"initial_delay must be seconds >= 0, got {self.initial_delay!r}")
        if not (isinstance(self.max_delay, int | float) and self.max_delay >= self.initial_delay):
            problems.append(f"max_delay must be seconds >= initial_delay, got {self.max_delay!r}")
        if problems:
            raise SnapTradeConfigurationError("Invalid retry policy: " + "; ".join(problems) + ".")
        if self.budget is None:
            # frozen: the budget is created once here and then shared by every replace() copy.
            object.__setattr__(
                self,
                "budget",
                RetryBudget(self.budget_capacity, self.retry_cost, self.timeout_retry_cost, self.success_refill),
            )

    @classmethod
    def preset(cls, name: str) -> RetryPolicy:
        """A named policy (each call builds a fresh one with its own budget).

        * ``none``: one attempt, never retried.
        * ``standard`` (default): 3 attempts within 30 s, backoff from 0.5 s capped at 8 s: rides out
          a blip without holding a request for long.
        * ``patient``: 6 attempts within 120 s, backoff from 1 s capped at 30 s: for background jobs
          that prefer late to failed.

        All presets use full jitter, honour ``retry_after``, and share botocore's budget values
        (500 tokens, 5 per retry, 10 after a timeout, 1 back per success). None resends writes.

        Raises:
            SnapTradeConfigurationError: ``name`` is not a preset.
        """
        key = str(name).strip().lower()
        if key not in PRESETS:
            raise SnapTradeConfigurationError(
                f"Unknown retry policy {name!r}.",
                hint=f"Set SNAPTRADE_RETRY_POLICY to one of {', '.join(cls.PRESET_NAMES)}.",
            )
        return cls(name=key, **PRESETS[key])

    @property
    def stats(self) -> RetryStats:
        """Attempt/retry counters of every call under this policy's budget."""
        assert self.budget is not None
        return self.budget.stats

    def tenacity_kwargs(self, op: Operation, *, has_idempotency_key: bool) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying`` / ``tenacity.AsyncRetrying`` for one call of ``op``.

        ``stop``, ``wait``, ``retry``, ``before``, ``before_sleep`` and ``reraise=True`` (the last
        error is raised as it is, never wrapped in ``RetryError``). Build a new set per call: it
        carries the call's budget bookkeeping.
        """
        return self.start(op, has_idempotency_key=has_idempotency_key, deadline=self.deadline).kwargs

    def first_attempt_succeeded(self) -> None:
        """Settle a call whose first attempt succeeded, as tenacity's bookkeeping would have."""
        assert self.budget is not None
        self.budget.succeeded()

    def start(self, op: Operation, *, has_idempotency_key: bool, deadline: float | None) -> RetryRun:
        """The retry state of one call of ``op`` whose overall deadline is ``deadline`` seconds.

        The client passes the earlier of this policy's :attr:`deadline` and the call's own
        (``CallOptions(deadline=...)``); :attr:`RetryRun.stopped_by_deadline` then tells a stop
        for time from the others.
        """
        assert self.budget is not None
        call = _Call(self, op, has_idempotency_key, self.budget)
        stops: list[stop_base] = [stop_after_attempt(self.max_attempts)]
        if deadline is not None:
            stops.append(_StopBeforeDeadline(call, deadline))
        # Last: tokens are only paid for a retry that nothing else stops.
        stops.append(_StopWhenBudgetEmpty(call))
        backoff: wait_base = (
            wait_random_exponential(multiplier=self.initial_delay, max=self.max_delay)
            if self.full_jitter
            else wait_exponential(multiplier=self.initial_delay, max=self.max_delay)
        )
        kwargs = {
            "stop": stop_any(*stops),
            "wait": _WaitRetryAfter(backoff),
            "retry": _RetryDecision(call),
            "before": call.before,
            "before_sleep": call.before_sleep,
            "reraise": True,
        }
        return RetryRun(kwargs, call)


PRESETS: dict[str, dict[str, Any]] = {
    "none": {"max_attempts": 1, "deadline": None},
    "standard": {"max_attempts": 3, "deadline": 30.0, "initial_delay": 0.5, "max_delay": 8.0},
    "patient": {"max_attempts": 6, "deadline": 120.0, "initial_delay": 1.0, "max_delay": 30.0},
}
"""The preset values :meth:`RetryPolicy.preset` builds from (see its docs)."""
