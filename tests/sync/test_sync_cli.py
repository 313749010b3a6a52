"""``aims-snaptrade sync`` end to end against the emulator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sync_helpers import client_kwargs, seed

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.cli.main import main
from aims_snaptrade.secrets import SQLiteSecretStore
from aims_snaptrade.testing import SnapTradeEmulator


@pytest.fixture
def env(emu: SnapTradeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    budget = client_kwargs(emu)
    for name, value in {
        "CLIENT_ID": emu.client_id,
        "CONSUMER_KEY": emu.consumer_key,
        "ENVIRONMENT": "sandbox",
        "BASE_URL": emu.base_url,
        "CONSENT_REQUIRED": "false",
        "SECRET_STORE_URL": f"sqlite:///{tmp_path}/secrets.db",
        "SYNC_LEDGER_URL": f"sqlite:///{tmp_path}/sync.db",
        "CUSTOMER_LIMIT": str(budget["customer_limit"]),
        "CUSTOMER_LIMIT_WINDOW": str(budget["customer_limit_window"]),
        "RATE_LIMIT_STORAGE_URL": budget["rate_limit_storage_url"],
    }.items():
        monkeypatch.setenv(f"SNAPTRADE_{name}", value)
    return tmp_path


def test_sync_command_streams_results_and_reports(
    emu: SnapTradeEmulator, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = seed(emu, 6)
    store = SQLiteSecretStore(env / "secrets.db")
    for user in users[:-1]:  # the last user has no secret: its sync fails, the others go on
        store.put(user.user_id, user.user_secret)
    store.close()
    (env / "users.txt").write_text("\n".join(u.user_id for u in users) + "\n\n")
    results = env / "results.jsonl"
    code = main(["sync", "--users", str(env / "users.txt"), "--results", str(results), "--batch-id", "b1"])
    out = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(line["user_id"] for line in lines) == sorted(u.user_id for u in users)
    assert {line["user_id"]: line["status"] for line in lines}[users[-1].user_id] == "failed"
    assert "synced 6/6 users" in out.out and "failed 1" in out.out
    assert "budget" in out.err or "budget" in out.out  # the progress display
    # The same batch again: every synced user is skipped without a request; the failed one is retried.
    emu.journal.clear()
    assert main(["sync", "--users", str(env / "users.txt"), "--batch-id", "b1", "--no-progress"]) == 1
    assert {e.user_id for e in emu.journal} <= {users[-1].user_id}
    # Nothing is due: --due sends nothing but the failed user's retry (it has no secret: no request).
    emu.journal.clear()
    assert main(["sync", "--due", "--no-progress"]) in (0, 1)
    assert len(emu.journal) == 0


@pytest.mark.parametrize(
    "argv",
    [["sync", "--users", "/no/such/file"], ["sync", "--due", "--concurrency", "0"], ["sync"]],
)
def test_sync_command_refuses_bad_usage(env: Path, argv: list[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = int(exit_.code or 0)
    assert code == 2


def test_a_small_batch_reports_its_share_of_the_budget_and_names_who_failed(
    emu: SnapTradeEmulator, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = seed(emu, 3)
    store = SQLiteSecretStore(env / "secrets.db")
    store.put(users[0].user_id, users[0].user_secret)  # the other two have no secret: both fail
    store.close()
    (env / "users.txt").write_text("\n".join(u.user_id for u in users))
    assert main(["sync", "--users", str(env / "users.txt"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    use = int(re.search(r"budget (\d+)%", out).group(1))  # type: ignore[union-attr]
    assert 0 < use <= 100  # a short burst used a small share, not a rate extrapolated from it
    assert "failed users (2):" in out, out
    named = re.findall(r"^  (\S+): (\w+)$", out, flags=re.MULTILINE)
    assert sorted(name for name, _ in named) == sorted(u.user_id for u in users[1:])
    assert all(kind.startswith("SnapTrade") for _, kind in named)


def test_due_lists_its_users_first_so_the_total_is_known(
    emu: SnapTradeEmulator, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = seed(emu, 4)
    store = SQLiteSecretStore(env / "secrets.db")
    for user in users:
        store.put(user.user_id, user.user_secret)
    store.close()
    (env / "users.txt").write_text("\n".join(u.user_id for u in users))
    assert main(["sync", "--users", str(env / "users.txt"), "--no-progress"]) == 0
    capsys.readouterr()
    with SafeSnapTradeClient.from_env() as client:  # two webhook marks make two users due
        for user in users[:2]:
            client.mark_from_webhook(
                {
                    "eventType": "ACCOUNT_HOLDINGS_UPDATED",
                    "userId": user.user_id,
                    "accountId": user.account_ids[0],
                    "details": {"success": True},
                }
            )
    assert main(["sync", "--due", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "synced 2/2 users" in out and "failed 0" in out and "/?" not in out
