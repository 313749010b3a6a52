"""Custom stores by URL scheme: a real plug-in package registered by entry point.

The plug-in is a directory holding a module and a ``vaultish-0.1.dist-info`` with ``METADATA``
and ``entry_points.txt``: on ``sys.path`` that is exactly what ``pip install`` leaves behind, so
``importlib.metadata.entry_points`` finds it with no mocking.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.cli.main import main
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeGuardrailError
from aims_snaptrade.secrets import Keyring, open_secret_store
from aims_snaptrade.store_registry import STORE_GROUPS, known_schemes, resolve_store_factory
from aims_snaptrade.testing import SnapTradeEmulator

PLUGIN_MODULE = '''
"""A custom secret store in its own package: SQLite underneath, opened from vaultish:///path."""
from aims_snaptrade.secrets import SQLiteSecretStore


class UndeclaredStore:
    """Implements the protocol but declares neither ``persistent`` nor ``encrypted``."""

    kind = "vaultish"

    def __init__(self, url, keyring):
        self.url = url
        self._inner = SQLiteSecretStore(url.partition(":///")[2], keyring)

    def get(self, user_id):
        return self._inner.get(user_id)

    def put(self, user_id, secret):
        self._inner.put(user_id, secret)

    def delete(self, user_id):
        return self._inner.delete(user_id)

    def user_ids(self):
        return self._inner.user_ids()

    def begin_rotation(self, user_id):
        self._inner.begin_rotation(user_id)

    def complete_rotation(self, user_id, new_secret):
        self._inner.complete_rotation(user_id, new_secret)

    def abort_rotation(self, user_id):
        self._inner.abort_rotation(user_id)

    def pending_rotations(self):
        return self._inner.pending_rotations()

    def close(self):
        self._inner.close()


class DeclaredStore(UndeclaredStore):
    persistent = True
    encrypted = True
'''

ENTRY_POINTS = """
[aims_snaptrade.secret_stores]
vaultish = vaultish_store:UndeclaredStore
vaultish-declared = vaultish_store:DeclaredStore
broken = vaultish_store:NoSuchName
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    (root / "vaultish_store.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = root / "vaultish-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vaultish\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture
def plugin(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(plugin_dir))
    yield plugin_dir
    sys.modules.pop("vaultish_store", None)


def _env(monkeypatch: pytest.MonkeyPatch, emu: SnapTradeEmulator, url: str, **extra: str) -> None:
    for name in [n for n in os.environ if n.startswith("SNAPTRADE_")]:
        monkeypatch.delenv(name)
    values = {
        "SNAPTRADE_CLIENT_ID": emu.client_id,
        "SNAPTRADE_CONSUMER_KEY": emu.consumer_key,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_BASE_URL": emu.base_url,
        "SNAPTRADE_SECRET_STORE_URL": url,
        "SNAPTRADE_ENCRYPTION_KEYS": Keyring.generate("v1").export(),
        # A plug-in secret store holds no consent table: consent lives in a file of its own.
        "SNAPTRADE_CONSENT_STORE_URL": f"sqlite:///{url.partition(':///')[2]}.consent.db",
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_builtins_win_and_unknown_schemes_explain_how_to_register() -> None:
    def builtin() -> None: ...

    assert resolve_store_factory("aims_snaptrade.consent_stores", "SQLite", {"sqlite": builtin}) is builtin
    with pytest.raises(SnapTradeConfigurationError) as info:
        resolve_store_factory("aims_snaptrade.consent_stores", "vault", {"sqlite": builtin})
    text = str(info.value)
    assert "unknown consent store scheme 'vault'" in text
    assert "aims_snaptrade.consent_stores" in text
    assert "sqlite://" in text
    assert '[project.entry-points."aims_snaptrade.consent_stores"] vault = ' in text
    assert set(STORE_GROUPS) >= {"aims_snaptrade.secret_stores", "aims_snaptrade.sync_ledgers"}


def test_plugin_scheme_opens_the_plugin_store(plugin: Path, tmp_path: Path) -> None:
    assert {"vaultish", "vaultish-declared", "broken"} <= set(known_schemes("aims_snaptrade.secret_stores", {}))
    store = open_secret_store(f"vaultish:///{tmp_path}/v.db", Keyring.generate("v1"))
    try:
        assert type(store).__name__ == "UndeclaredStore"
        store.put("user-1", "secret-value-1")
        assert store.get("user-1") == "secret-value-1"
    finally:
        store.close()


def test_a_plugin_that_does_not_import_is_a_configuration_error(plugin: Path) -> None:
    with pytest.raises(SnapTradeConfigurationError, match=r"cannot be loaded.*reinstall"):
        open_secret_store("broken://x")


def test_from_env_uses_the_plugin_by_url(plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SnapTradeEmulator() as emu:
        _env(monkeypatch, emu, f"vaultish:///{tmp_path}/v.db")
        with SafeSnapTradeClient.from_env() as client:
            assert type(client.secret_store).__name__ == "UndeclaredStore"
            client.register_user("user-ep")
            assert client.secret_store.user_ids() == ["user-ep"]


@pytest.mark.parametrize(
    ("scheme", "refusals"),
    [("vaultish", ["does not declare `persistent`", "does not declare `encrypted`"]), ("vaultish-declared", [])],
)
def test_production_refuses_a_store_until_it_declares_itself(
    plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str, refusals: list[str]
) -> None:
    class Consent:
        def has_consent(self, user_id: str, scope: str) -> bool:
            return True

    with SnapTradeEmulator() as emu:
        _env(monkeypatch, emu, f"{scheme}:///{tmp_path}/v.db", SNAPTRADE_ENVIRONMENT="production")
    monkeypatch.delenv("SNAPTRADE_BASE_URL")  # production needs SnapTrade's HTTPS URL; nothing is sent
    # Production also keeps an audit trail (docs/compliance.md).
    monkeypatch.setenv("SNAPTRADE_AUDIT_KEY", "audit-key-for-the-registry-test-0123456789")
    monkeypatch.setenv("SNAPTRADE_AUDIT_STORE_URL", f"sqlite:///{tmp_path}/audit.db")
    if refusals:
        with pytest.raises(SnapTradeGuardrailError) as info:
            SafeSnapTradeClient.from_env(consent=Consent())
        for refusal in refusals:
            assert refusal in str(info.value)
    else:
        SafeSnapTradeClient.from_env(consent=Consent()).close()


def test_cli_uses_the_plugin_by_url(plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # rotate-keys opens the store from SNAPTRADE_SECRET_STORE_URL; the plug-in is not KeyRotatable,
    # so the command must get as far as saying exactly that about the plug-in's store.
    with SnapTradeEmulator() as emu:
        _env(monkeypatch, emu, f"vaultish-declared:///{tmp_path}/v.db")
    assert main(["rotate-keys"]) == 2
    assert "DeclaredStore" in capsys.readouterr().err


def test_verify_opens_the_plugin_by_url(plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import json

    with SnapTradeEmulator() as emu:
        _env(monkeypatch, emu, f"vaultish-declared:///{tmp_path}/v.db")
        code = main(["verify", "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert code == 0, checks
    assert "opened by its plug-in's factory" in checks["secret store"]["detail"]


def test_a_fresh_process_finds_the_plugin_through_pythonpath(plugin_dir: Path, tmp_path: Path) -> None:
    code = (
        "from aims_snaptrade.secrets import open_secret_store, Keyring\n"
        f"s = open_secret_store('vaultish-declared:///{tmp_path}/p.db', Keyring.generate('v1'))\n"
        "print(type(s).__name__, s.persistent, s.encrypted)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["DeclaredStore", "True", "True"]


def test_probing_opens_missing_sqlite_files_elsewhere_and_removes_them(tmp_path: Path) -> None:
    from aims_snaptrade.secrets import SQLiteSecretStore
    from aims_snaptrade.store_registry import probing

    existing = SQLiteSecretStore(tmp_path / "existing.db")
    existing.close()
    with probing():
        first = open_secret_store(f"sqlite:///{tmp_path}/missing.db")
        second = open_secret_store(f"sqlite:///{tmp_path}/missing.db")
        copied = open_secret_store(f"sqlite:///{tmp_path}/existing.db")
        assert isinstance(first, SQLiteSecretStore)
        assert isinstance(second, SQLiteSecretStore)
        assert first.path == second.path  # one stand-in per real path: sharing stores still share
        assert first.path.parent != tmp_path
        # An existing file is probed through a copy: nothing a store creates there reaches it.
        assert copied.path.parent == first.path.parent and copied.path.name.endswith("-existing.db")
        copied.put("probe-user", "probe-secret-123456")
        scratch = first.path.parent
        for store in (first, second, copied):
            store.close()
    assert not scratch.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.db"]
    reopened = SQLiteSecretStore(tmp_path / "existing.db")
    assert reopened.user_ids() == []
    reopened.close()
