"""Test tools: a SnapTrade API emulator and the pytest plugin built on it.

:class:`SnapTradeEmulator` is an HTTP server speaking SnapTrade's API (signed requests, users,
Connection Portal, connections, accounts, balances, positions, activities, orders, rate limits and
SnapTrade's error codes), with deterministic Sandbox-like portfolios, fault injection and a request
journal. The official SDK, and any client built on it, runs against it unchanged::

    from aims_snaptrade.testing import Fault, SnapTradeEmulator

    with SnapTradeEmulator() as emu:
        user = emu.connect("alice")                      # registered, one Sandbox connection
        emu.faults.add(Fault.status(503), operation="list_all_user_accounts")
        sdk = emu.sdk()                                  # official SDK wired to emu.base_url
        ...

With the package installed, pytest gets the fixtures of :mod:`aims_snaptrade.testing.pytest_plugin`
(``snaptrade_emulator``, ``snaptrade_faults``, ``snaptrade_journal``, ``snaptrade_user``...).

Names are imported lazily: importing this package does not import aiohttp until an emulator
class is used, so the pytest plugin costs nothing to projects that do not use it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aims_snaptrade.testing.config import (
        API_PREFIX,
        DEFAULT_CLIENT_ID,
        DEFAULT_CONSUMER_KEY,
        DEFAULT_PERSONAL_CLIENT_ID,
        DEFAULT_PERSONAL_CONSUMER_KEY,
        HOLDINGS_SUNSET_OPERATIONS,
        SNAPTRADE_ACCOUNT_RATE_LIMIT,
        SNAPTRADE_CUSTOMER_RATE_LIMIT,
        ClientCredentials,
        EmulatorConfig,
        RateLimit,
    )
    from aims_snaptrade.testing.emulator import ConnectedUser, SnapTradeEmulator, run
    from aims_snaptrade.testing.faults import Fault, FaultInjector, FaultKind, FaultRule
    from aims_snaptrade.testing.journal import Journal, JournalEntry
    from aims_snaptrade.testing.portal import complete_portal_link, portal_outcome
    from aims_snaptrade.testing.seed import ConnectionPortalError, Scenario
    from aims_snaptrade.testing.signing import sign
    from aims_snaptrade.testing.webhooks import WebhookEmitter, WebhookFault

__all__ = [
    "API_PREFIX",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CONSUMER_KEY",
    "DEFAULT_PERSONAL_CLIENT_ID",
    "DEFAULT_PERSONAL_CONSUMER_KEY",
    "HOLDINGS_SUNSET_OPERATIONS",
    "SNAPTRADE_ACCOUNT_RATE_LIMIT",
    "SNAPTRADE_CUSTOMER_RATE_LIMIT",
    "ClientCredentials",
    "ConnectedUser",
    "ConnectionPortalError",
    "EmulatorConfig",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "FaultRule",
    "Journal",
    "JournalEntry",
    "RateLimit",
    "Scenario",
    "SnapTradeEmulator",
    "WebhookEmitter",
    "WebhookFault",
    "complete_portal_link",
    "portal_outcome",
    "run",
    "sign",
]

_WHERE = {
    "API_PREFIX": "config",
    "DEFAULT_CLIENT_ID": "config",
    "DEFAULT_CONSUMER_KEY": "config",
    "DEFAULT_PERSONAL_CLIENT_ID": "config",
    "DEFAULT_PERSONAL_CONSUMER_KEY": "config",
    "HOLDINGS_SUNSET_OPERATIONS": "config",
    "SNAPTRADE_ACCOUNT_RATE_LIMIT": "config",
    "SNAPTRADE_CUSTOMER_RATE_LIMIT": "config",
    "ClientCredentials": "config",
    "EmulatorConfig": "config",
    "RateLimit": "config",
    "ConnectedUser": "emulator",
    "SnapTradeEmulator": "emulator",
    "run": "emulator",
    "Fault": "faults",
    "FaultInjector": "faults",
    "FaultKind": "faults",
    "FaultRule": "faults",
    "Journal": "journal",
    "JournalEntry": "journal",
    "ConnectionPortalError": "seed",
    "Scenario": "seed",
    "sign": "signing",
    "complete_portal_link": "portal",
    "portal_outcome": "portal",
    "WebhookEmitter": "webhooks",
    "WebhookFault": "webhooks",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
