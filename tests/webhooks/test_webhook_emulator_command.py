"""``aims-snaptrade emulator --webhook-url``: the standalone emulator sends the same signed webhooks
as the in-process one, redelivers failed deliveries on SnapTrade's schedule (scaled by
``--webhook-retry-scale``), and sends ``USER_DELETED`` after a user is deleted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from snaptrade_client.auth import SnapTradeAuth
from snaptrade_client.client import SnapTrade

from aims_snaptrade.cli.main import main
from aims_snaptrade.webhooks import verify_webhook
from aims_snaptrade.webhooks.verify import SNAPTRADE_RETRY_DELAYS

SCALE = 0.0002  # 30 minutes -> 0.36 s


class Recorder(ThreadingHTTPServer):
    """A receiver answering 503 to the first attempt of each webhook, 200 afterwards."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.attempts: list[tuple[float, int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        event = verify_webhook(dict(self.headers.items()), body, consumer_key=self.server.key)
        with self.server.lock:
            seen = sum(1 for _, _, p in self.server.attempts if p["webhookId"] == event.webhook_id)
            status = 503 if seen == 0 else 200
            self.server.attempts.append((time.monotonic(), status, json.loads(body)))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder("cmd-key-" + uuid.uuid4().hex)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_emulator_command_delivers_redelivers_and_announces_deletions(recorder: Recorder) -> None:
    client_id = f"CMD-{uuid.uuid4().hex[:10]}"
    command = [
        sys.executable, "-m", "aims_snaptrade", "emulator", "--port", "0", "--webhook-url", recorder.url,
        "--webhook-retry-scale", str(SCALE), "--client-id", client_id, "--consumer-key", recorder.key,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        banner = [proc.stdout.readline() for _ in range(3)]
        assert any(f"webhooks -> {recorder.url}" in line for line in banner)
        sdk = SnapTrade(
            host=base_url, auth=SnapTradeAuth.commercial_api_key(consumer_key=recorder.key, client_id=client_id)
        )
        sdk.authentication.register_snap_trade_user(user_id="dana")
        sdk.authentication.delete_snap_trade_user(user_id="dana")
        deadline = time.monotonic() + 30
        while sum(status == 200 for _, status, _ in recorder.attempts) < 2:
            assert time.monotonic() < deadline, recorder.attempts
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    types = [p["eventType"] for _, status, p in recorder.attempts if status == 200]
    assert sorted(types) == ["USER_DELETED", "USER_REGISTERED"]
    for event_type in types:
        tries = [(at, p) for at, _, p in recorder.attempts if p["eventType"] == event_type]
        assert len(tries) == 2
        (first_at, first), (second_at, second) = tries
        assert first == second  # the same payload, webhookId and eventTimestamp
        assert second_at - first_at >= SNAPTRADE_RETRY_DELAYS[0] * SCALE * 0.9  # on the scaled schedule


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--webhook-url", "ftp://example/hooks"], "--webhook-url"),
        (["--webhook-url", "hooks"], "--webhook-url"),
        (["--webhook-retry-scale", "-1"], "--webhook-retry-scale"),
        (["--client-id", "ONLY-ID"], "go together"),
    ],
)
def test_bad_emulator_options_are_refused_before_it_starts(
    args: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", "--port", "0", *args]) == 2
    assert problem in capsys.readouterr().err
