"""Acceptance: two uvicorn replicas of the ASGI receiver sharing Redis (and, separately, PostgreSQL)
claims, against SnapTrade's real redelivery schedule on a moved clock.

The test plays SnapTrade: each webhook is delivered at once, then every delivery that did not get
200/201/202/204 is redelivered, unchanged (same signature, same ``eventTimestamp``), 30, 90 and 210
minutes after the event; those times are reached by moving the replicas' clock (a file they read).
Handlers of ``fail-once-*`` users fail their first delivery; handlers of ``hang-once-*`` users hang
on replica A, which is SIGKILLed while it holds their claims and then restarted (a deploy). Every
processed webhook is also replayed on every round (a captured copy, or SnapTrade delivering twice),
and after the window. Expected: each webhook processed exactly once, every replay of a processed one
answered 2xx, every forged or beyond-window one answered 4xx.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from webhook_helpers import POSTGRES_URL, REDIS_URL, UvicornProcess, payload, signed, table_for

from aims_snaptrade.webhooks.verify import DEFAULT_TOLERANCE_SECONDS, SNAPTRADE_RETRY_DELAYS

# Short, so that a killed replica's claims lapse in real time before the 30-minute retry; long enough
# that a live replica's handler on a loaded CI machine finishes inside it (a handler that outlives its
# lease may be processed again by design: the receiver logs it and docs/webhooks.md says so).
LEASE = 5.0
DELIVERED = {200, 201, 202, 204}


def post(url: str, headers: dict[str, str], body: bytes, timeout: float = 20.0) -> int | None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except (urllib.error.URLError, OSError):
        return None  # no answer (a killed replica): undelivered


class Fleet:
    """Two replicas A and B sharing ``dedupe_url``, their clock moved through a file."""

    def __init__(self, tmp_path: Path, key: str, dedupe_url: str) -> None:
        self.tmp_path = tmp_path
        self.clock = tmp_path / "clock-offset"
        self.clock.write_text("0")
        self.env = {
            "WEBHOOK_KEY": key,
            "WEBHOOK_DEDUPE_URL": dedupe_url,
            "WEBHOOK_RECORD": str(tmp_path / "processed.jsonl"),
            "WEBHOOK_CLOCK_FILE": str(self.clock),
            "WEBHOOK_LEASE": str(LEASE),
        }
        self.outputs: list[str] = []
        self.replicas = [self._start(name) for name in ("a", "b")]

    def _start(self, name: str) -> UvicornProcess:
        server = UvicornProcess("webhook_service:create_app", self.env, self.tmp_path / f"{name}-{time.time_ns()}.log")
        server.wait_ready()
        return server

    def move_clock(self, seconds: float) -> None:
        self.clock.write_text(repr(seconds))

    def kill_and_restart_a(self) -> None:
        victim = self.replicas[0]
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)
        self.outputs.append(victim.stop())
        self.replicas[0] = self._start("a")

    def stop(self) -> None:
        self.outputs.extend(server.stop() for server in self.replicas)

    def processed(self) -> list[dict[str, Any]]:
        path = self.tmp_path / "processed.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


@pytest.mark.parametrize("backend", ["redis", "postgresql"])
def test_replicas_process_each_webhook_once_over_snaptrades_redelivery_schedule(
    tmp_path: Path, backend: str, redis_prefix: str, pg_schema: str
) -> None:
    key = "ck-" + secrets.token_urlsafe(24)
    url = (
        f"{REDIS_URL}?prefix={redis_prefix}{tmp_path.name}:"
        if backend == "redis"
        else f"{POSTGRES_URL}?schema={pg_schema}&table={table_for(tmp_path)}"
    )
    fleet = Fleet(tmp_path, key, url)
    event_at = time.time()
    users = ["carol"] * 6 + ["fail-once-dave"] * 4 + ["hang-once-erin"] * 3
    deliveries = [
        signed(payload("ACCOUNT_HOLDINGS_UPDATED", when=event_at, userId=u, accountId=f"acc-{n}"), key)
        for n, u in enumerate(users)
    ]
    ids = [json.loads(body)["webhookId"] for _, body in deliveries]
    delivered: dict[str, int] = {}
    replays: list[int | None] = []
    try:
        with ThreadPoolExecutor(max_workers=len(deliveries) + 2) as pool:
            # The first attempt: hang-once users go to replica A, the others alternate (and every
            # other one is duplicated to both replicas, as a load balancer may).
            futures = []
            for n, ((headers, body), user) in enumerate(zip(deliveries, users, strict=True)):
                targets = [fleet.replicas[0]] if user.startswith("hang") else [fleet.replicas[n % 2]]
                if n % 2 == 0 and not user.startswith("hang"):
                    targets.append(fleet.replicas[(n + 1) % 2])
                futures.append([pool.submit(post, t.url, headers, body) for t in targets])
            hung = [tmp_path / f"hung-{i}" for i, u in zip(ids, users, strict=True) if u.startswith("hang")]
            wait_for(lambda: all(path.exists() for path in hung))
            fleet.kill_and_restart_a()  # SIGKILL while it holds the hang-once claims
            for webhook_id, attempts in zip(ids, futures, strict=True):
                statuses = [f.result() for f in attempts]
                if any(s in DELIVERED for s in statuses):
                    delivered[webhook_id] = 0
        time.sleep(LEASE * 1.5)  # the killed replica's claims lapse (its lease is real time in the store)

        elapsed = 0.0
        for attempt, delay in enumerate(SNAPTRADE_RETRY_DELAYS, start=1):
            elapsed += delay
            fleet.move_clock(elapsed + 30.0 * attempt)  # SnapTrade's retries come a little late
            for n, (headers, body) in enumerate(deliveries):
                replica = fleet.replicas[n % 2]
                status = post(replica.url, headers, body)
                if ids[n] in delivered:
                    replays.append(status)  # a redelivery of a processed webhook
                elif status in DELIVERED:
                    delivered[ids[n]] = attempt

        # Beyond the window, a captured copy of a processed webhook and a forged one: 4xx.
        fleet.move_clock(DEFAULT_TOLERANCE_SECONDS + 60.0)
        late = [post(fleet.replicas[n % 2].url, *d) for n, d in enumerate(deliveries)]
        fleet.move_clock(0.0)
        headers, body = deliveries[0]
        forged = dict(headers, Signature=signed(json.loads(body), "not-the-key")[0]["Signature"])
        tampered = body.replace(b"acc-0", b"acc-9")
        refused = [
            post(fleet.replicas[0].url, forged, body),
            post(fleet.replicas[1].url, headers, tampered),
            post(fleet.replicas[1].url, {"Content-Type": "application/json"}, body),
        ]
    finally:
        fleet.stop()

    done = Counter(d["webhookId"] for d in fleet.processed())
    assert done == Counter(ids)  # every webhook processed, each exactly once
    assert set(delivered) == set(ids)
    assert {delivered[i] for i, u in zip(ids, users, strict=True) if u.startswith("hang")} == {1}
    # A failing handler's delivery is redelivered 30 minutes later and processed then (a duplicated
    # attempt may have reached the other replica after the release, and been processed at once).
    single = [i for n, (i, u) in enumerate(zip(ids, users, strict=True)) if u.startswith("fail") and n % 2]
    assert single and {delivered[i] for i in single} == {1}
    assert replays and all(status in DELIVERED for status in replays)  # late redeliveries of processed: 2xx
    assert all(status is not None and 400 <= status < 500 for status in late + refused)
    for output in fleet.outputs:
        assert key not in output
