"""Fuzz every public input: only documented ``SnapTradeError`` subclasses may come out, and no orphans.

Settings (arguments and environment), ``CallOptions``, the arguments of ``call`` and of every
typed helper (ids of every shape: empty, NUL, 1,025 characters, bytes, numbers, containers), and
SnapTrade answers with fields missing, added, null or of the wrong type. An orphan is a user
SnapTrade created whose secret is not in the store.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hardening_helpers import COUNTS, PROFILE, against
from hypothesis import given
from hypothesis import strategies as st

from aims_snaptrade import (
    CallOptions,
    SafeSnapTradeClient,
    SnapTradeConfigurationError,
    SnapTradeError,
    SnapTradeValidationError,
)
from aims_snaptrade.operations import OPERATIONS
from aims_snaptrade.retry import RetryPolicy
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.settings import Settings
from aims_snaptrade.testing import ConnectedUser, Fault, SnapTradeEmulator

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", " ", "x" * 1025, "nul\x00id", "\u202e", "../../etc", "%00", "{[", "http://[::1"]),
    st.binary(max_size=8),
    st.text(max_size=12).map(lambda s: "https://" + s),
    st.text(max_size=12).map(lambda s: "memory://" + s),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
"""Values of every wrong (and some right) shape."""


def _typed(figures: str, run: Any, expected: type[SnapTradeError] = SnapTradeError) -> Any:
    """Run ``run()``: a result or an ``expected`` error count as handled; anything else fails the test."""
    counts = COUNTS[figures]
    counts["cases"] += 1
    counts["unexpected exception types"] += 0
    try:
        return run()
    except expected:
        counts["typed errors"] += 1
        return None
    except Exception:
        counts["unexpected exception types"] += 1
        raise


# --- settings and options (no IO) --------------------------------------------------------------

_FIELDS = sorted(Settings.model_fields)


@PROFILE
@given(values=st.dictionaries(st.sampled_from(_FIELDS), JUNK, max_size=6))
def test_settings_from_arguments(values):
    base = {"client_id": "c", "consumer_key": "consumer-key-1", "environment": "sandbox"}

    def run() -> None:
        settings = Settings.build({**base, **values})
        # Built settings must also build a client (the store is given: no files from junk URLs).
        SafeSnapTradeClient(settings, secret_store=MemorySecretStore()).close()

    _typed("fuzz settings (arguments)", run, SnapTradeConfigurationError)


@PROFILE
@given(env=st.dictionaries(st.sampled_from([f"SNAPTRADE_{f.upper()}" for f in _FIELDS]), st.text(), max_size=6))
def test_settings_from_the_environment(env):
    base = {"SNAPTRADE_CLIENT_ID": "c", "SNAPTRADE_CONSUMER_KEY": "consumer-key-1", "SNAPTRADE_ENVIRONMENT": "sandbox"}
    _typed("fuzz settings (environment)", lambda: Settings.from_env({**base, **env}), SnapTradeConfigurationError)


@PROFILE
@given(
    timeout=st.one_of(JUNK, st.tuples(JUNK, JUNK)),
    mode=JUNK,
    max_wait=JUNK,
    retry=st.one_of(st.none(), st.just(RetryPolicy.preset("none")), JUNK),
)
def test_call_options(timeout, mode, max_wait, retry):
    def run() -> CallOptions:
        options = CallOptions(timeout=timeout, rate_limit_mode=mode, max_wait=max_wait, retry=retry)
        for value in options.timeout if isinstance(options.timeout, tuple) else (options.timeout,):
            assert value is None or (math.isfinite(value) and 0 < value <= 600)
        return options

    _typed("fuzz CallOptions", run)


# --- the client against the emulator -------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[SnapTradeEmulator, MemorySecretStore, SafeSnapTradeClient, ConnectedUser]]:
    with SnapTradeEmulator() as emu:
        user = emu.connect("fuzz-user", brokerage="ALPACA")
        store = MemorySecretStore()
        store.put(user.user_id, user.user_secret)
        with SafeSnapTradeClient(**against(emu, secret_store=store)) as client:
            yield emu, store, client, user


def _orphans(emu: SnapTradeEmulator, store: MemorySecretStore, user_id: Any) -> int:
    """1 when SnapTrade holds ``user_id`` and the store does not hold its secret."""
    if not isinstance(user_id, str):
        return 0
    at_snaptrade = emu.state.find_user(emu.client_id, user_id) is not None
    try:
        stored = store.get(user_id)
    except SnapTradeError:
        stored = None
    return int(at_snaptrade and stored is None)


_NOT_INPUTS = {"close", "from_env", "add_call_observer", "call", "stream_sync"}
HELPERS = sorted(
    name
    for name, member in inspect.getmembers(SafeSnapTradeClient, inspect.isfunction)
    if not name.startswith("_") and name not in _NOT_INPUTS
)
"""Every public method of the client that takes input (``call`` has its own property below)."""


@st.composite
def helper_calls(draw: Any, user: ConnectedUser) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """A helper and arguments for it from its signature: junk, or a real id now and then."""
    name = draw(st.sampled_from(HELPERS))
    real = {"user_id": st.just(user.user_id), "account_id": st.just(user.account_ids[0])}
    fresh = st.text(min_size=1, max_size=12).map(lambda s: "fz-" + s)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for parameter in list(inspect.signature(getattr(SafeSnapTradeClient, name)).parameters.values())[1:]:
        optional = parameter.default is not inspect.Parameter.empty
        if optional and not draw(st.booleans()):
            continue
        if parameter.name == "confirm":
            value = draw(st.one_of(JUNK, st.just(False)))  # never True: the fuzz user stays
        elif parameter.name == "options":
            value = draw(st.one_of(JUNK, st.just(CallOptions(timeout=2.0))))
        elif parameter.name in real:
            value = draw(st.one_of(JUNK, real[parameter.name], fresh))
        else:
            value = draw(JUNK)
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and not optional:
            args.append(value)
        else:
            kwargs[parameter.name] = value
    return name, tuple(args), kwargs


@PROFILE
@given(data=st.data())
def test_every_typed_helper(world, data):
    emu, store, client, user = world
    emu.faults.clear()
    name, args, kwargs = data.draw(helper_calls(user))
    _typed("fuzz typed helpers", lambda: getattr(client, name)(*args, **kwargs))
    orphaned = _orphans(emu, store, args[0]) if name in ("register_user", "ensure_user") and args else 0
    COUNTS["fuzz typed helpers"]["orphaned registrations"] += orphaned
    assert not orphaned


_NAMES = sorted(OPERATIONS)


@PROFILE
@given(
    name=st.one_of(st.sampled_from(_NAMES), JUNK),
    arguments=st.dictionaries(
        st.sampled_from(["user_id", "user_secret", "account_id", "symbol", "units", "query_params", "body"]),
        JUNK,
        max_size=4,
    ),
    confirm=st.one_of(st.just(False), JUNK),
)
def test_call(world, name, arguments, confirm):
    emu, _, client, _ = world
    emu.faults.clear()
    if "user_id" in arguments and isinstance(arguments["user_id"], str) and arguments["user_id"]:
        arguments["user_id"] = "fz-" + arguments["user_id"]  # never the fuzz user: writes stay harmless
    _typed("fuzz call", lambda: client.call(name, confirm=confirm, **arguments))


# --- SnapTrade answers with missing, extra, null and mistyped fields ------------------------------

_READS = {
    "check": lambda c, u: c.api_status(),
    "list_all_user_accounts": lambda c, u: c.list_accounts(u.user_id),
    "get_user_account_balance": lambda c, u: c.get_balances(u.user_id, u.account_ids[0]),
    "get_all_account_positions": lambda c, u: c.get_positions(u.user_id, u.account_ids[0]),
    "get_account_activities": lambda c, u: c.get_activities(u.user_id, u.account_ids[0]),
    "login_snap_trade_user": lambda c, u: c.connection_portal_url(u.user_id),
}

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.just([]), st.just({}))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            found.extend(_paths(item, (*prefix, index)))
    return found


@st.composite
def mutated(draw: Any, body: Any) -> Any:
    """``body`` with a few fields removed, added, nulled or replaced by a value of another type."""
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(body)))
        if not path:
            return draw(_VALUES)
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["remove", "add", "null", "retype"]))
        if action == "remove" and isinstance(parent, dict):
            parent.pop(last, None)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(_VALUES)
        elif action == "null":
            parent[last] = None
        else:
            parent[last] = draw(_VALUES)
    return body


@pytest.fixture(scope="module")
def real_answers() -> dict[str, Any]:
    """One real answer body per read (the JSON on the wire), captured from an emulator through the SDK."""
    with SnapTradeEmulator() as emu:
        return _answers(emu, emu.connect("answers-user", brokerage="ALPACA"))


def _answers(emu: SnapTradeEmulator, user: ConnectedUser) -> dict[str, Any]:
    sdk = emu.sdk(retries=False)
    answers = {
        "check": sdk.api_status.check().response.data,
        "list_all_user_accounts": sdk.account_information.list_all_user_accounts(
            user_id=user.user_id, user_secret=user.user_secret
        ).response.data,
        "get_user_account_balance": sdk.account_information.get_user_account_balance(
            user_id=user.user_id, user_secret=user.user_secret, account_id=user.account_ids[0]
        ).response.data,
        "get_all_account_positions": sdk.account_information.get_all_account_positions(
            user_id=user.user_id, user_secret=user.user_secret, account_id=user.account_ids[0]
        ).response.data,
        "get_account_activities": sdk.account_information.get_account_activities(
            user_id=user.user_id, user_secret=user.user_secret, account_id=user.account_ids[0], limit=5
        ).response.data,
        "login_snap_trade_user": sdk.authentication.login_snap_trade_user(
            user_id=user.user_id, user_secret=user.user_secret
        ).response.data,
    }
    return {operation: json.loads(raw) for operation, raw in answers.items()}


@PROFILE
@given(data=st.data(), operation=st.sampled_from(sorted(_READS)))
def test_answers_with_missing_extra_null_and_mistyped_fields(world, real_answers, data, operation):
    emu, _, client, user = world
    emu.faults.clear()
    body = data.draw(mutated(real_answers[operation]))
    emu.faults.add(Fault.answer(body), operation=operation)
    _typed("fuzz answers", lambda: _READS[operation](client, user))


def test_a_mistyped_argument_is_a_validation_error(world):
    _, _, client, user = world
    with pytest.raises(SnapTradeValidationError):
        client.get_balances(user.user_id, 42)  # type: ignore[arg-type]
