"""Helpers shared by the webhook tests: service URLs, signed payloads, a uvicorn subprocess."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REDIS_URL = os.environ.get("AIMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
KEY = "whk-test-consumer-key-" + "7" * 20


def table_for(tmp_path: Path) -> str:
    """A table name derived from a test's tmp_path: fresh per test, stable across reopening."""
    return "t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:20]


def drop_schema(schema: str) -> None:
    """Drop a schema this test session created."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def payload(event_type: str = "CONNECTION_ADDED", *, when: float | None = None, **fields: Any) -> dict[str, Any]:
    """An API-key payload stamped ``when`` (now by default)."""
    stamp = datetime.fromtimestamp(time.time() if when is None else when, UTC).isoformat()
    return {
        "webhookId": str(uuid.uuid4()),
        "clientId": "AIMS-TEST",
        "eventTimestamp": stamp,
        "userId": "alice",
        "eventType": event_type,
        **fields,
    }


def signed(body: Mapping[str, Any], key: str = KEY) -> tuple[dict[str, str], bytes]:
    """Headers and body of a delivery, signed the way SnapTrade's documentation verifies it.

    Written independently of the library (SnapTrade's snippet), so a canonicalisation bug in
    ``sign_webhook`` cannot hide itself.
    """
    import base64
    import hmac
    import json

    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    signature = base64.b64encode(hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()).decode()
    return {"Signature": signature, "Content-Type": "application/json"}, text.encode()


def free_port() -> int:
    """A port nobody listens on right now (bind 0, read it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornProcess:
    """``uvicorn`` serving an app factory in a subprocess on an ephemeral port."""

    def __init__(self, factory: str, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).parent),
        )

    @property
    def url(self) -> str:
        """The receiver's URL."""
        return f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the port accepts connections (or fail with the server's output)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.log_path.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"uvicorn did not start: {self.log_path.read_text(errors='replace')}")

    def stop(self) -> str:
        """Terminate it and return everything it printed."""
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._log.close()
        return self.log_path.read_text(errors="replace")
