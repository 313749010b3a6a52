"""The README's key set-up survives a new shell: the key is made once, in an owner-only file, and
every later shell reads the same key through SNAPTRADE_ENCRYPTION_KEYS_FILE, so the quick start
runs again in a fresh shell (a key made per shell would find the stored secret "tampered with").
And the quick start runs the same with consent checked, as production checks it."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aims_snaptrade.testing import SnapTradeEmulator

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block(marker: str) -> str:
    found = re.search(re.escape(marker) + r"\s*```bash\n(.*?)```", README, flags=re.DOTALL)
    assert found, f"README has no bash block after {marker}"
    return found.group(1)


def _quick_start() -> str:
    found = re.search(r"## Quick start for an AIMS service.*?```python\n(.*?)```", README, flags=re.DOTALL)
    assert found
    return found.group(1)


@pytest.fixture
def shell(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "quick_start.py").write_text(_quick_start(), encoding="utf-8")
    with SnapTradeEmulator() as emu:
        env = {
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "SNAPTRADE_ENVIRONMENT": "sandbox",
            "SNAPTRADE_CLIENT_ID": emu.client_id,
            "SNAPTRADE_CONSUMER_KEY": emu.consumer_key,
            "SNAPTRADE_BASE_URL": emu.base_url,
        }

        def run(script: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["bash", "-c", script],
                cwd=tmp_path,
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        yield emu, home, run


def test_the_key_set_up_survives_a_new_shell(shell):
    emu, home, run = shell
    setup = _block("<!-- docs-test: key-setup -->")
    exports = "\n".join(line for line in setup.splitlines() if line.startswith("export "))
    first = run(f"set -e\n{setup}\npython quick_start.py")
    assert first.returncode == 0, first.stderr
    key_file = home / ".config" / "aims-snaptrade" / "encryption-keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    second = run(f"set -e\n{exports}\npython quick_start.py")  # a new shell: only the exports
    assert second.returncode == 0, second.stderr
    assert "tampered" not in second.stderr
    assert emu.journal.count(operation="register_snap_trade_user", status=200) == 1
    again = run(f"set -e\n{setup}")  # running the whole block again never replaces the key
    assert again.returncode == 2 and "exists" in again.stderr
    assert key_file.read_bytes() == key
    assert key.decode().strip() not in first.stdout + first.stderr + second.stdout + second.stderr


def test_a_key_made_per_shell_is_what_the_readme_warns_about(shell):
    _, _, run = shell
    per_shell = 'export SNAPTRADE_ENCRYPTION_KEYS="$(aims-snaptrade generate-key)"\npython quick_start.py'
    assert run(f"set -e\n{per_shell}").returncode == 0
    failed = run(f"set -e\n{per_shell}")
    assert failed.returncode != 0 and "tampered" in failed.stderr


@pytest.mark.parametrize("consent", ["checked", "off"])
def test_the_quick_start_runs_the_same_with_consent_checked_or_off(shell, consent: str):
    emu, _, run = shell
    setup = _block("<!-- docs-test: key-setup -->")
    extra = {"SNAPTRADE_CONSENT_REQUIRED": "false"} if consent == "off" else {}
    done = run(f"set -e\n{setup}\npython quick_start.py\npython quick_start.py", **extra)
    assert done.returncode == 0, done.stderr
    assert emu.journal.count(operation="list_all_user_accounts", status=200) == 2
