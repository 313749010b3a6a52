"""The compliance commands end to end: consent, audit verify/tail, export-user, erase-user, with --json."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest
from compliance_helpers import AUDIT_SECRET

from aims_snaptrade.cli.main import main


@pytest.fixture
def env(monkeypatch, tmp_path, emu):
    user = emu.connect("gina", brokerage="ALPACA")
    db = tmp_path / "aims.db"
    for name, value in {
        "SNAPTRADE_CLIENT_ID": emu.client_id,
        "SNAPTRADE_CONSUMER_KEY": emu.consumer_key,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_BASE_URL": emu.base_url,
        "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{db}",
        "SNAPTRADE_AUDIT_KEY": AUDIT_SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    from aims_snaptrade.secrets import SQLiteSecretStore

    store = SQLiteSecretStore(db)
    store.put(user.user_id, user.user_secret)
    store.close()
    return user, db


def _json(capsys, argv):
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_consent_audit_export_and_erase_from_the_command_line(env, capsys, emu):
    user, db = env
    code, granted = _json(capsys, ["consent", "grant", user.user_id, "--disclosure-version", "v9", "--source", "cli"])
    assert code == 0
    assert granted["scope"] == "read"
    code, shown = _json(capsys, ["consent", "show", user.user_id])
    assert shown["current"]["read"]["allowed"] is True
    assert shown["current"]["trade"]["reason"] == "missing"
    assert main(["consent", "show", user.user_id]) == 0
    assert "granted" in capsys.readouterr().out

    code, exported = _json(capsys, ["export-user", user.user_id])
    assert code == 0
    assert exported["snaptrade"]["user"]["registered"] is True

    code, revoked = _json(capsys, ["consent", "revoke", user.user_id, "--source", "cli"])
    assert revoked["revoked"] == 1

    assert main(["erase-user", user.user_id]) == 2  # no --confirm: nothing happens
    capsys.readouterr()
    assert emu.journal.count(operation="delete_snap_trade_user") == 0
    code, receipt = _json(capsys, ["erase-user", user.user_id, "--confirm"])
    assert code == 0
    assert receipt["snaptrade"]["deleted"] is True
    assert receipt["local"]["secret_removed"] is True

    code, report = _json(capsys, ["audit", "verify"])
    assert code == 0
    assert report["ok"] is True
    code, tail = _json(capsys, ["audit", "tail", "-n", "3"])
    assert [r["action"] for r in tail][-1] == "data_rights.erase"
    assert main(["audit", "tail"]) == 0
    assert "data_rights.erase" in capsys.readouterr().out

    # A tampered record makes `audit verify` exit 1 and name the position.
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE aims_snaptrade_audit SET status = 299 WHERE seq = 2")
        conn.commit()
    code, report = _json(capsys, ["audit", "verify"])
    assert (code, report["problem"], report["position"]) == (1, "altered", 2)
    assert main(["audit", "verify"]) == 1
    assert "altered at seq 2" in capsys.readouterr().out


def test_audit_commands_need_the_audit_key(env, monkeypatch, capsys):
    monkeypatch.delenv("SNAPTRADE_AUDIT_KEY")
    assert main(["audit", "verify"]) == 2
    assert "SNAPTRADE_AUDIT_KEY" in capsys.readouterr().err


def test_rotate_keys_is_audited(env, monkeypatch, capsys, tmp_path):
    from aims_snaptrade.secrets import Keyring, SQLiteSecretStore

    keys = Keyring.generate("v1")
    db = tmp_path / "keys.db"
    store = SQLiteSecretStore(db, keys)
    store.put("henry", "henry-secret-0123456789")
    store.close()
    monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SNAPTRADE_ENCRYPTION_KEYS", keys.rotated("v2").export())
    assert main(["rotate-keys"]) == 0
    capsys.readouterr()
    code, tail = _json(capsys, ["audit", "tail", "-n", "1"])
    assert code == 0
    (record,) = tail
    assert (record["kind"], record["action"], record["outcome"]) == ("key", "key.rotate", "ok")
    assert (record["detail"]["current_version"], record["detail"]["reencrypted"]) == ("v2", 1)
