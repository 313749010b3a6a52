"""The wheel as a user installs it: built once per session, installed (not editable) in a fresh
virtual environment outside the checkout, and run from directories it must not write into.

Slow (about 30 s: one ``python -m build`` and one ``pip install`` per session), so every test here
shares the one installation of :func:`installed`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    site_packages: Path


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """``python -m build --wheel`` of the checkout, installed into a fresh venv under /tmp."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("aims_snaptrade-*.whl")
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    found = subprocess.run(
        [str(python), "-c", "import aims_snaptrade; print(aims_snaptrade.__file__)"],
        cwd="/",
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    site_packages = Path(found).parent.parent
    assert not Path(found).is_relative_to(ROOT), "the checkout, not the wheel, was imported"
    assert site_packages.is_relative_to(venv)
    return Installed(wheel, python, site_packages)


def _isolated_env(base: Path) -> dict[str, str]:
    """An environment with its own HOME, XDG dirs and TMPDIR (all empty), no SNAPTRADE_* and no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPTRADE_", "XDG_", "PYTHON"))}
    for name in ("home", "tmp"):
        (base / name).mkdir()
    return env | {"HOME": str(base / "home"), "TMPDIR": str(base / "tmp"), "PYTHONNOUSERSITE": "1"}


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_the_wheel_carries_py_typed_and_every_data_file_of_the_package(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "src/aims_snaptrade"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    package_files = {name.removeprefix("src/") for name in tracked}
    assert "aims_snaptrade/py.typed" in package_files
    assert package_files <= names, f"missing from the wheel: {sorted(package_files - names)}"
    assert not any(n.startswith(("tests/", "docs/")) for n in names)


def test_the_demo_runs_from_the_root_directory_and_writes_nowhere(installed: Installed, tmp_path: Path) -> None:
    env = _isolated_env(tmp_path)
    root_before = sorted(os.listdir("/"))
    done = subprocess.run(
        [str(installed.python), "-m", "aims_snaptrade", "demo"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Demo finished: every step behaved as expected." in done.stdout
    assert sorted(os.listdir("/")) == root_before
    assert _tree(tmp_path / "home") == []
    assert _tree(tmp_path / "tmp") == []  # its throwaway store is removed


_SERVICE = textwrap.dedent(
    """
    import os, sys
    import aims_snaptrade
    from aims_snaptrade import SafeSnapTradeClient
    from aims_snaptrade.secrets import Keyring
    from aims_snaptrade.testing import SnapTradeEmulator, complete_portal_link

    assert aims_snaptrade.__file__.startswith(sys.argv[1]), aims_snaptrade.__file__
    with SnapTradeEmulator() as emu:
        os.environ.update(
            SNAPTRADE_CLIENT_ID=emu.client_id,
            SNAPTRADE_CONSUMER_KEY=emu.consumer_key,
            SNAPTRADE_ENVIRONMENT="sandbox",
            SNAPTRADE_BASE_URL=emu.base_url,
            SNAPTRADE_ENCRYPTION_KEYS=Keyring.generate("v1").export(),
            SNAPTRADE_TRADING_ENABLED="true",
        )
        with SafeSnapTradeClient.from_env() as client:  # every store on its default
            client.grant_consent("user-1", "read", disclosure_version="2026-12", source="wheel-test")
            client.ensure_user("user-1")
            # consent is checked in sandbox as in production (the secret store's file holds it)
            client.grant_consent("user-1", "read", disclosure_version="v1", source="test")
            complete_portal_link(client.connection_portal_url("user-1").redirect_uri, scenario="self_directed")
            account = client.list_accounts("user-1")[0]
            client.get_positions("user-1", account.id)
            client.sync_portfolio("user-1")
    print("service ok")
    """
)


def test_a_service_on_the_default_stores_in_a_read_only_directory_writes_only_its_data_directory(
    installed: Installed, tmp_path: Path
) -> None:
    env = _isolated_env(tmp_path) | {"XDG_DATA_HOME": str(tmp_path / "home" / "data")}
    cwd = tmp_path / "read-only"
    cwd.mkdir()
    (cwd / "service.py").write_text(_SERVICE, encoding="utf-8")
    cwd.chmod(0o555)  # root ignores the mode: the listing below is what proves nothing was written
    try:
        done = subprocess.run(
            [str(installed.python), "service.py", str(installed.site_packages)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        cwd.chmod(0o755)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _tree(cwd) == ["service.py"]
    assert _tree(tmp_path / "tmp") == []
    data = tmp_path / "home" / "data" / "aims-snaptrade"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    written = {p for p in _tree(tmp_path / "home") if not p.endswith(("-wal", "-shm"))}
    assert written == {
        "data",
        "data/aims-snaptrade",
        "data/aims-snaptrade/secrets.db",
        "data/aims-snaptrade/order-intents.db",
        "data/aims-snaptrade/sync-ledger.db",
    }
    for name in ("secrets.db", "order-intents.db", "sync-ledger.db"):
        assert stat.S_IMODE((data / name).stat().st_mode) & 0o077 == 0, name
