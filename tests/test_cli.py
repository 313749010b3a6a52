"""The aims-snaptrade command line."""

from __future__ import annotations

import subprocess
import sys

from aims_snaptrade.cli.main import main
from aims_snaptrade.testing import SnapTradeEmulator


def test_demo_runs_the_whole_flow(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for step in ("Register a user", "Trading is refused", "reconnect", "Demo finished"):
        assert step in out


def test_verify_checks_settings_status_and_clock_without_printing_the_key(monkeypatch, capsys, tmp_path):
    with SnapTradeEmulator() as emu:
        monkeypatch.setenv("SNAPTRADE_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", emu.consumer_key)
        monkeypatch.setenv("SNAPTRADE_ENVIRONMENT", "sandbox")
        monkeypatch.setenv("SNAPTRADE_BASE_URL", emu.base_url)
        monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", f"sqlite:///{tmp_path}/s.db")
        assert main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "clock skew" in out and "online" in out
    assert emu.consumer_key not in out


def test_verify_reports_every_configuration_problem(monkeypatch, capsys):
    for name in ("SNAPTRADE_CLIENT_ID", "SNAPTRADE_CONSUMER_KEY", "SNAPTRADE_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["verify"]) == 2
    out = capsys.readouterr().out
    assert "FAIL  settings" in out
    assert "SNAPTRADE_CLIENT_ID" in out and "SNAPTRADE_ENVIRONMENT" in out


def test_generate_key_prints_a_usable_keyring():
    from aims_snaptrade.secrets import Keyring

    out = subprocess.run(
        [sys.executable, "-m", "aims_snaptrade", "generate-key", "--version", "v7"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.startswith("v7:")
    Keyring.parse(out)


def test_standalone_emulator_serves_until_terminated():
    import signal

    from snaptrade_client.auth import SnapTradeAuth
    from snaptrade_client.client import SnapTrade

    from aims_snaptrade.testing import DEFAULT_CLIENT_ID, DEFAULT_CONSUMER_KEY

    proc = subprocess.Popen(
        [sys.executable, "-m", "aims_snaptrade", "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        base_url = first.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/v1")
        auth = SnapTradeAuth.commercial_api_key(consumer_key=DEFAULT_CONSUMER_KEY, client_id=DEFAULT_CLIENT_ID)
        response = SnapTrade(host=base_url, auth=auth).authentication.list_snap_trade_users()
        assert response.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_rotate_keys_command_reencrypts_every_secret(monkeypatch, tmp_path, capsys):
    from aims_snaptrade.secrets import Keyring, SQLiteSecretStore

    old, new = Keyring.generate("v1"), Keyring.generate("v2")
    path = tmp_path / "secrets.db"
    store = SQLiteSecretStore(path, keyring=old)
    for i in range(25):
        store.put(f"user-{i}", f"user-secret-value-{i:04d}")
    store.close()
    monkeypatch.setenv("SNAPTRADE_CLIENT_ID", "AIMS-TEST")
    monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", "cli-test-consumer-key-1234")
    monkeypatch.setenv("SNAPTRADE_ENVIRONMENT", "sandbox")
    monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", f"sqlite:///{path}")
    both = f"{new.export()},{old.export()}"
    monkeypatch.setenv("SNAPTRADE_ENCRYPTION_KEYS", both)
    assert main(["rotate-keys", "--batch-size", "7"]) == 0
    out = capsys.readouterr().out
    assert "user-secret-value" not in out and new.export().split(":", 1)[1] not in out
    only_new = SQLiteSecretStore(path, keyring=Keyring.parse(new.export()))
    assert [only_new.get(f"user-{i}") for i in range(25)] == [f"user-secret-value-{i:04d}" for i in range(25)]
    only_new.close()
