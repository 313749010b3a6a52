"""Production fails closed: what docs/guardrails.md promises, as properties over the set-up.

- a secret store is accepted only when it declares ``persistent`` and ``encrypted`` as the bool
  ``True``: ``1``, ``"yes"``, ``1.0`` or a missing declaration are refused;
- an in-memory consent store, audit trail or order-intent journal is refused, also when passed
  in explicitly rather than opened from a URL;
- every violation is listed at once, numbered from 1, each naming the exact setting to change;
- destructive calls need ``confirm=True`` itself, never a truthy stand-in;
- none of it applies in the sandbox.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient, SnapTradeGuardrailError
from aims_snaptrade.compliance import AuditKey, SQLiteAuditTrail
from aims_snaptrade.guardrails import COMMERCIAL_ONLY, check_call, check_startup, consent_scope
from aims_snaptrade.operations import OPERATIONS
from aims_snaptrade.secrets import Keyring, SQLiteSecretStore
from aims_snaptrade.settings import Settings
from aims_snaptrade.trading import MemoryOrderIntentStore

KEY = "prod-consumer-key-abcdef0123456789"
HTTPS = "https://api.snaptrade.com/api/v1"


class Consent:
    persistent = True

    def has_consent(self, user_id: str, scope: str) -> bool:
        return True


class Declared:
    """A custom store declaring its traits with whatever values the test gives."""

    def __init__(self, **traits: Any) -> None:
        for name, value in traits.items():
            setattr(self, name, value)


class Durable:
    persistent = True


def _settings(environment: str = "production", **values: Any) -> Settings:
    return Settings.build({"client_id": "AIMS-PROD", "consumer_key": KEY, "environment": environment, **values})


PRODUCTION = _settings()
SAFE_STORE = Declared(persistent=True, encrypted=True)

# Truthy (and falsy) stand-ins that are not the bool True.
not_true = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from([None, False, "True", "yes", b"1", [True], (True,), object()]),
).filter(lambda v: v is not True)


def _refusal(**kwargs: Any) -> str:
    values = {"store": SAFE_STORE, "consent": Consent(), "audit": Durable(), **kwargs}
    with pytest.raises(SnapTradeGuardrailError) as raised:
        check_startup(PRODUCTION, **values)
    assert raised.value.hint == "Fix every item listed; the client was not created."
    return str(raised.value)


def test_a_safe_production_setup_passes() -> None:
    check_startup(PRODUCTION, store=SAFE_STORE, consent=Consent(), audit=Durable())
    check_startup(PRODUCTION, store=None, consent=Consent(), audit=Durable())  # no store: nothing to check


@given(trait=st.sampled_from(["persistent", "encrypted"]), value=not_true)
@settings(max_examples=60)
def test_a_store_trait_other_than_the_bool_true_is_refused(trait: str, value: Any) -> None:
    store = Declared(**{"persistent": True, "encrypted": True, trait: value})
    text = _refusal(store=store)
    if value is None:  # getattr cannot tell "declared None" from "not declared": both are refused
        assert f"does not declare `{trait}`" in text
    else:
        assert f"the secret store Declared is not {trait}" in text
    assert text.startswith("Refusing an unsafe production set-up: (1) the secret store Declared ")
    check_startup(_settings("sandbox"), store=store, consent=None, audit=None)  # the sandbox allows it


@pytest.mark.parametrize("missing", ["persistent", "encrypted"])
def test_a_store_that_does_not_declare_a_trait_is_refused(missing: str) -> None:
    traits = {"persistent": True, "encrypted": True}
    del traits[missing]
    text = _refusal(store=Declared(**traits))
    assert f"the secret store Declared does not declare `{missing}`; give the class `{missing} = True`" in text


@given(value=st.sampled_from([False, 0, "", None, [], 0.0]))
@settings(max_examples=12)
def test_an_in_memory_consent_store_or_audit_trail_is_refused(value: Any) -> None:
    consent, audit = Consent(), Durable()
    consent.persistent = value  # type: ignore[misc]
    audit.persistent = value
    text = _refusal(consent=consent, audit=audit)
    assert "(1) the consent store is in memory; set SNAPTRADE_CONSENT_STORE_URL to sqlite:/// or postgresql://" in text
    assert "(2) the audit trail is in memory; set SNAPTRADE_AUDIT_STORE_URL to sqlite:/// or postgresql://" in text


def test_a_consent_checker_or_audit_trail_that_says_nothing_is_taken_as_persistent() -> None:
    """Only the secret store must declare; a plain ConsentChecker object or trail without the attribute passes."""

    class Plain:
        def has_consent(self, user_id: str, scope: str) -> bool:
            return True

    check_startup(PRODUCTION, store=SAFE_STORE, consent=Plain(), audit=object())


def test_every_violation_is_listed_at_once_numbered_from_one_with_the_setting_to_change() -> None:
    settings_ = _settings(base_url="http://api.example.com/api/v1", consent_required=False)
    with pytest.raises(SnapTradeGuardrailError) as raised:
        check_startup(settings_, store=Declared(persistent=False), consent=None, audit=None)
    text = str(raised.value)
    numbers = [int(n) for n in re.findall(r"\((\d+)\) ", text)]
    assert numbers == [1, 2, 3, 4, 5]
    for setting in (
        "SNAPTRADE_BASE_URL uses http:// in production; use https://api.snaptrade.com/api/v1",
        "SNAPTRADE_SECRET_STORE_URL",
        "does not declare `encrypted`",
        "unset SNAPTRADE_CONSENT_REQUIRED",
        "set SNAPTRADE_AUDIT_KEY (at least 32 characters",
        "`aims-snaptrade generate-key`) or pass audit=<AuditTrail>",
    ):
        assert setting in text
    assert "; (2) " in text and text.endswith(".")
    # Each item starts with what is wrong and ends with how to fix it.
    body = text.split(" Hint: ")[0].removeprefix("Refusing an unsafe production set-up: (1) ").removesuffix(".")
    items = re.split(r"; \(\d\) ", body)
    assert items[3] == "consent checks are disabled; unset SNAPTRADE_CONSENT_REQUIRED (production needs them)"
    assert items[4].startswith("no audit trail is kept; set SNAPTRADE_AUDIT_KEY")
    assert items[4].endswith("`aims-snaptrade generate-key`) or pass audit=<AuditTrail>")


def test_a_production_base_url_on_this_machine_is_refused() -> None:
    # (Settings already refuse "localhost" and "[::1]" as base URL hosts: 127.0.0.1 is the one that gets here.)
    settings_ = _settings(base_url="https://127.0.0.1:8443/api/v1")
    with pytest.raises(SnapTradeGuardrailError) as raised:
        check_startup(settings_, store=SAFE_STORE, consent=Consent(), audit=Durable())
    assert "(1) SNAPTRADE_BASE_URL points at this machine in production; remove it to use SnapTrade" in str(
        raised.value
    )


def test_a_missing_consent_checker_names_how_to_give_one() -> None:
    text = _refusal(consent=None)
    assert "(1) no consent checker was given; pass consent=<ConsentChecker> to the client" in text
    assert text.split(" Hint: ")[0].endswith("(from_env() opens the consent store of SNAPTRADE_CONSENT_STORE_URL).")


@pytest.mark.parametrize(
    ("in_memory", "refusal"),
    [("order_intent_store", "order-intent journal is in memory"), ("audit", "the audit trail is in memory")],
)
def test_an_in_memory_journal_or_audit_trail_passed_in_explicitly_is_refused(
    tmp_path: Path, in_memory: str, refusal: str
) -> None:
    store = SQLiteSecretStore(tmp_path / "s.db", keyring=Keyring.generate("v1"))
    audit = SQLiteAuditTrail(":memory:" if in_memory == "audit" else tmp_path / "a.db", AuditKey("k" * 32))
    journal = {"order_intent_store": MemoryOrderIntentStore()} if in_memory == "order_intent_store" else {}
    try:
        with pytest.raises(SnapTradeGuardrailError, match=refusal):
            SafeSnapTradeClient(
                client_id="AIMS-PROD",
                consumer_key=KEY,
                environment="production",
                secret_store=store,
                consent=Consent(),
                audit=audit,
                **journal,
            )
    finally:
        store.close()
        audit.close()


# Per-call checks -------------------------------------------------------------------------------

DESTRUCTIVE = sorted(name for name, op in OPERATIONS.items() if op.destructive and not op.trading)


@given(name=st.sampled_from(DESTRUCTIVE), confirm=not_true)
@settings(max_examples=60)
def test_a_destructive_call_needs_confirm_true_itself(name: str, confirm: Any) -> None:
    sandbox = _settings("sandbox", trading_enabled=True)
    with pytest.raises(SnapTradeGuardrailError) as raised:
        check_call(sandbox, OPERATIONS[name], {}, confirm=confirm)
    assert str(raised.value).startswith(f"{name} deletes or disables data and needs explicit confirmation.")
    assert raised.value.operation == name
    assert raised.value.hint == "Pass confirm=True once you are sure."
    check_call(sandbox, OPERATIONS[name], {}, confirm=True)


def test_user_management_is_refused_for_personal_keys_naming_the_operation() -> None:
    personal = _settings("sandbox", key_type="personal")
    for name in sorted(COMMERCIAL_ONLY):
        with pytest.raises(SnapTradeGuardrailError) as raised:
            check_call(personal, OPERATIONS[name], {}, confirm=True)
        assert raised.value.operation == name
        assert raised.value.hint == "Use a Commercial key, or call the data operations without user management."
        check_call(_settings("sandbox"), OPERATIONS[name], {}, confirm=True)


def test_trading_calls_are_refused_while_trading_is_disabled_naming_the_switch() -> None:
    for name in sorted(n for n, op in OPERATIONS.items() if op.trading):
        with pytest.raises(SnapTradeGuardrailError) as raised:
            check_call(_settings("sandbox"), OPERATIONS[name], {}, confirm=True)
        assert raised.value.operation == name
        assert raised.value.hint is not None and raised.value.hint.startswith("Set SNAPTRADE_TRADING_ENABLED=true")


def test_the_consent_scope_of_every_operation() -> None:
    for name, op in OPERATIONS.items():
        expected = None if not op.user_scoped or name in COMMERCIAL_ONLY else ("trade" if op.trading else "read")
        assert consent_scope(op) == expected, name
    assert consent_scope(OPERATIONS["place_force_order"]) == "trade"
    assert consent_scope(OPERATIONS["list_user_accounts"]) == "read"
    assert consent_scope(OPERATIONS["delete_snap_trade_user"]) is None  # user management, not user data
