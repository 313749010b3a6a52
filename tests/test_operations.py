"""The operation table must describe exactly the installed SDK's operations."""

from __future__ import annotations

import importlib
import inspect

import pytest
from snaptrade_client import SnapTrade, SnapTradeAuth

from aims_snaptrade import OPERATIONS
from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.operations import get_operation

TAGS = (
    "account_information",
    "api_status",
    "authentication",
    "connections",
    "experimental_endpoints",
    "management",
    "reference_data",
    "trading",
)


def _unwrap(func):
    # The SDK's deprecation decorator does not use functools.wraps: follow its closure.
    while func.__closure__ and func.__module__ == "snaptrade_client.api_client":
        func = next(c.cell_contents for c in func.__closure__ if inspect.isfunction(c.cell_contents))
    return func


def _sdk_operations() -> dict[str, tuple[str, str, str, set[str]]]:
    sdk = SnapTrade(auth=SnapTradeAuth.commercial_api_key(consumer_key="k" * 10, client_id="c"))
    found = {}
    for tag in TAGS:
        api_type = type(getattr(sdk, tag))
        for name in dir(api_type):
            if name.startswith("_"):
                continue
            func = _unwrap(getattr(api_type, name))
            if not callable(func) or inspect.iscoroutinefunction(func):
                continue
            module = importlib.import_module(func.__module__)
            params = set(inspect.signature(func).parameters)
            found[name] = (tag, func.__module__.rsplit(".", 1)[1].upper(), module.path.value, params)
    return found


SDK_OPERATIONS = _sdk_operations()


def test_table_covers_every_sdk_operation_and_nothing_else():
    assert set(OPERATIONS) == set(SDK_OPERATIONS)
    assert len(OPERATIONS) == 63


@pytest.mark.parametrize("name", sorted(SDK_OPERATIONS))
def test_row_matches_sdk(name):
    tag, method, path, params = SDK_OPERATIONS[name]
    op = OPERATIONS[name]
    assert (op.tag, op.method, op.path) == (tag, method, path)
    assert op.needs_user_secret == ("user_secret" in params)
    assert op.user_scoped == ("user_id" in params)
    assert op.account_scoped == ("account_id" in params)
    if op.idempotency_param:
        assert op.idempotency_param in params
    # every sync method has an async twin the async client can call
    assert hasattr(getattr(SnapTrade(auth=SnapTradeAuth.commercial_api_key("k" * 10, "c")), tag), op.async_name)


def test_writes_that_move_money_are_trading_and_not_idempotent():
    for name in ("place_force_order", "place_order", "cancel_order", "replace_order", "place_crypto_order"):
        op = OPERATIONS[name]
        assert op.trading and not op.idempotent
    assert OPERATIONS["place_force_order"].idempotency_param == "client_order_id"
    assert not OPERATIONS["register_snap_trade_user"].idempotent
    assert OPERATIONS["delete_snap_trade_user"].destructive
    assert OPERATIONS["delete_connection"].destructive
    assert not OPERATIONS["check"].signed


def test_unknown_operation_names_close_matches():
    with pytest.raises(SnapTradeValidationError, match="list_all_user_accounts"):
        get_operation("list_all_user_account")


def test_signed_flag_matches_the_sdks_auth_modes():
    # The SDK sends operations whose path module declares no auth modes without clientId,
    # timestamp or Signature (check, list_institutions): the limiter and emulator must know.
    import pkgutil

    import snaptrade_client.paths as paths

    by_route = {(op.method, op.path): name for name, op in OPERATIONS.items()}
    unsigned = set()
    for info in pkgutil.iter_modules(paths.__path__):
        package = importlib.import_module(f"snaptrade_client.paths.{info.name}")
        for method in ("get", "post", "put", "patch", "delete"):
            try:
                module = importlib.import_module(f"snaptrade_client.paths.{info.name}.{method}")
            except ModuleNotFoundError:
                continue
            if not hasattr(module, "_auth_modes"):
                unsigned.add(by_route[(method.upper(), package.path.value)])
    assert unsigned == {name for name, op in OPERATIONS.items() if not op.signed}
    assert "list_institutions" in unsigned
