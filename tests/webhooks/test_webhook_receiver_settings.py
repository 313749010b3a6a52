"""``WebhookReceiver.from_settings``: what it takes from the settings, what an option overrides,
and what production refuses (docs/webhooks.md, "FastAPI..." and "De-duplication stores")."""

from __future__ import annotations

import inspect
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from webhook_helpers import KEY, payload, signed

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.settings import Settings
from aims_snaptrade.webhooks import MemoryWebhookDedupeStore, SQLiteWebhookDedupeStore, WebhookEvent, WebhookReceiver


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "SNAPTRADE_CLIENT_ID": "AIMS-TEST",
            "SNAPTRADE_CONSUMER_KEY": KEY,
            "SNAPTRADE_ENVIRONMENT": "sandbox",
            "SNAPTRADE_WEBHOOK_DEDUPE_URL": f"sqlite:///{tmp_path}/claims.db",
            "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{tmp_path}/secrets.db",
            **extra,
        }
    )


def ignore(event: WebhookEvent) -> None:
    pass


def test_an_unknown_option_is_named_with_the_options_there_are(tmp_path: Path) -> None:
    options = sorted(set(inspect.signature(WebhookReceiver.__init__).parameters) - {"self", "handler", "consumer_key"})
    expected = f"unknown WebhookReceiver option(s) 'dedup', 'tolerence': use {', '.join(options)}."
    with pytest.raises(SnapTradeConfigurationError, match=f"^{re.escape(expected)}") as refused:
        WebhookReceiver.from_settings(ignore, settings_for(tmp_path), tolerence=1, dedup="memory://")
    assert refused.value.message == expected


def test_an_explicit_store_replaces_the_settings_url(tmp_path: Path) -> None:
    store = MemoryWebhookDedupeStore()
    settings = settings_for(tmp_path, SNAPTRADE_WEBHOOK_DEDUPE_URL=f"sqlite:///{tmp_path}/missing-dir/claims.db")
    with WebhookReceiver.from_settings(ignore, settings, dedupe=store) as receiver:
        assert receiver.dedupe is store
        assert receiver.handle(*signed(payload())).outcome == "processed"
    assert not (tmp_path / "missing-dir").exists()
    with WebhookReceiver.from_settings(ignore, settings_for(tmp_path)) as receiver:
        assert isinstance(receiver.dedupe, SQLiteWebhookDedupeStore)
        assert receiver.dedupe.path == tmp_path / "claims.db"


def test_claims_are_keyed_by_the_audit_key_so_they_survive_a_consumer_key_rotation(tmp_path: Path) -> None:
    audit_key = secrets.token_urlsafe(32)
    new_key = "new-" + secrets.token_urlsafe(24)
    seen: list[Any] = []
    before = WebhookReceiver.from_settings(
        ignore, settings_for(tmp_path, SNAPTRADE_AUDIT_KEY=audit_key), on_verified=seen.append
    )
    after = WebhookReceiver.from_settings(
        ignore,
        settings_for(
            tmp_path,
            SNAPTRADE_AUDIT_KEY=audit_key,
            SNAPTRADE_CONSUMER_KEY=new_key,
            SNAPTRADE_PREVIOUS_CONSUMER_KEY=KEY,
        ),
        on_verified=seen.append,
    )
    unaudited = WebhookReceiver.from_settings(ignore, settings_for(tmp_path))
    try:
        body = payload()
        headers, raw = signed(body)  # signed with the old key, delivered before and after the rotation
        assert before.claim_key("w-1") == after.claim_key("w-1") != unaudited.claim_key("w-1")
        assert WebhookReceiver(ignore, consumer_key=KEY, id_key=audit_key).claim_key("w-1") == before.claim_key("w-1")
        assert unaudited.claim_key("w-1") == WebhookReceiver(ignore, consumer_key=KEY).claim_key("w-1")
        assert before.handle(headers, raw).outcome == "processed"
        assert after.handle(headers, raw).outcome == "duplicate"  # the same claim, under the audit key
    finally:
        for receiver in (before, after, unaudited):
            receiver.close()


def test_production_refuses_only_the_memory_store(tmp_path: Path) -> None:
    production = settings_for(tmp_path, SNAPTRADE_ENVIRONMENT="production")
    with WebhookReceiver.from_settings(ignore, production) as receiver:
        assert receiver.dedupe.kind == "sqlite"
    with WebhookReceiver.from_settings(
        ignore, settings_for(tmp_path, SNAPTRADE_WEBHOOK_DEDUPE_URL="memory://")
    ) as receiver:
        assert receiver.dedupe.kind == "memory"  # a sandbox may keep its claims in memory
    expected = (
        "production refuses the memory webhook dedupe store: set SNAPTRADE_WEBHOOK_DEDUPE_URL to "
        "redis://..., postgresql://... (replicas) or sqlite:///path (one host)."
    )
    for refused_settings, options in (
        (settings_for(tmp_path, SNAPTRADE_ENVIRONMENT="production", SNAPTRADE_WEBHOOK_DEDUPE_URL="memory://"), {}),
        (production, {"dedupe": MemoryWebhookDedupeStore()}),
    ):
        with pytest.raises(SnapTradeConfigurationError) as refused:
            WebhookReceiver.from_settings(ignore, refused_settings, **options)
        assert refused.value.message == expected
