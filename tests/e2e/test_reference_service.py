"""Acceptance: the reference service (examples/service) run as a service runs, end to end.

Two uvicorn replicas of ``examples/service/app.py`` and one Celery worker with its beat
(``examples/service/worker.py``; ``sync_due`` every 2 s), all configured from the environment only:
the stores in PostgreSQL (a schema of this test's own), budgets and the broker in Redis (this
test's own client id, queue and key prefix). The emulator runs as its command (``aims-snaptrade
emulator``, this test's client id and generated consumer key, SnapTrade's default rate limits) and
sends its webhooks to both replicas round-robin, with SnapTrade's redelivery schedule scaled down
1000 times; its ``--journal`` is the record of every request and delivery. Over HTTP, 20 people are
onboarded (consent, portal link), linked through the emulator's portal and the service's return
page, marked by webhooks and synced by the worker, read (accounts and positions), trade (preview,
confirm, place; one placement's answer lost and reconciled), and two are erased (one who traded,
one who did not). The lost answer is lost on the wire: the service reaches the emulator through a
loopback proxy that lets the placement through and drops its answer.

PostgreSQL is made unreachable for the service alone: every store of the service reaches the
shared server through a loopback proxy this test owns and cuts (the shared server keeps serving
everyone else; tests/tcp_cut.py). A private ``initdb`` server would need a non-root user on this
machine; the proxy gives the same failure (connections refused and dropped) without one.

Asserted: no secret (consumer key, user secrets, encryption, audit and confirmation keys, in
their usual encodings) in any log or answer; every webhook processed once; every marked account
synced; readiness true throughout and false while PostgreSQL is unreachable; the audit chain
verifies; the erased people leave no byte in any store. Bounded: every wait has a deadline, and
the whole test a timeout.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.secrets import Keyring
from aims_snaptrade.testing import portal_outcome
from tcp_cut import CuttableProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "examples" / "service"
POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AIMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
USERS = 20
TRADERS = 4


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.2)


class Http:
    """JSON over HTTP to the replicas, every answer kept (they are checked for secrets)."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as failed:
            status, text = failed.code, failed.read().decode()
        with self.lock:
            self.answers.append(text)
        return status, json.loads(text) if text else None


class Process:
    """A subprocess whose output goes to a log file (read back for the secrets check)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self._file = self.log.open("wb")
        self.process = subprocess.Popen(command, env=env, cwd=SERVICE, stdout=self._file, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> str:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._file.close()
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _encodings(secret: str) -> set[str]:
    """A secret and the forms it travels in (base64, hex, URL-escaped)."""
    raw = secret.encode()
    forms = {secret, base64.b64encode(raw).decode(), raw.hex(), urllib.parse.quote(secret, safe="")}
    return {form for form in forms if len(form) >= 8}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:10]
    schema = f"e2e_service_{tag}"
    client_id = f"E2E-{tag}"
    consumer_key = secrets.token_urlsafe(32)
    parts = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
    proxy = CuttableProxy(str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
    user, dbname = parts.get("user") or "postgres", parts.get("dbname") or "test"
    store_url = f"postgresql://{user}@127.0.0.1:{proxy.port}/{dbname}?schema={schema}"
    pg_direct = f"{parts.get('host') or '127.0.0.1'}:{parts.get('port') or 5432}"
    keys = {
        "SNAPTRADE_ENCRYPTION_KEYS": Keyring.generate("v1").export(),
        "SNAPTRADE_AUDIT_KEY": secrets.token_urlsafe(32),
        "SNAPTRADE_CONFIRMATION_KEY": secrets.token_urlsafe(32),
    }
    ports = [_free_port(), _free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    emulator_port = _free_port()
    emulator_proxy = CuttableProxy("127.0.0.1", emulator_port)  # the service's way to SnapTrade
    journal = tmp_path / "emulator-journal.jsonl"
    emulator = Process(
        "emulator",
        [
            sys.executable,
            "-m",
            "aims_snaptrade",
            "emulator",
            "--port",
            str(emulator_port),
            "--client-id",
            client_id,
            "--consumer-key",
            consumer_key,
            *[arg for url in urls for arg in ("--webhook-url", f"{url}/webhooks/snaptrade/")],
            "--webhook-retry-scale",
            "0.001",
            "--journal",
            str(journal),
        ],
        {k: v for k, v in os.environ.items() if not k.startswith("SNAPTRADE_")},
        tmp_path,
    )
    _wait(lambda: _status(f"http://127.0.0.1:{emulator_port}/api/v1/") == 200, 30, "the emulator command")
    queue, prefix = f"e2e-sync-{tag}", f"e2e-{tag}:"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SNAPTRADE_")},
        "SNAPTRADE_CLIENT_ID": client_id,
        "SNAPTRADE_CONSUMER_KEY": consumer_key,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_BASE_URL": f"http://127.0.0.1:{emulator_proxy.port}/api/v1",
        "SNAPTRADE_SECRET_STORE_URL": store_url,
        "SNAPTRADE_CONSENT_STORE_URL": store_url,
        "SNAPTRADE_AUDIT_STORE_URL": store_url,
        "SNAPTRADE_SYNC_LEDGER_URL": store_url,
        "SNAPTRADE_ORDER_INTENT_STORE_URL": store_url,
        "SNAPTRADE_WEBHOOK_DEDUPE_URL": store_url,
        "SNAPTRADE_RATE_LIMIT_STORAGE_URL": REDIS_URL,
        "SNAPTRADE_RATE_LIMIT_MAX_WAIT": "90",  # SnapTrade's 250 a minute: calls queue, none fails
        "SNAPTRADE_TRADING_ENABLED": "true",
        "SNAPTRADE_CELERY_BROKER_URL": REDIS_URL,
        "SNAPTRADE_CELERY_QUEUE": queue,
        "SNAPTRADE_CELERY_KEY_PREFIX": prefix,
        "SNAPTRADE_SYNC_DUE_INTERVAL": "2",  # beat's sync_due every 2 s (60 by default)
        "SNAPTRADE_SYNC_SETTLE_SECONDS": "1",
        "SNAPTRADE_DATA_DIR": str(tmp_path / "data"),
        **keys,
    }
    world = {
        "tag": tag,
        "urls": urls,
        "ports": ports,
        "emulator": emulator,
        "emulator_proxy": emulator_proxy,
        "journal": journal,
        "env": env,
        "proxy": proxy,
        "schema": schema,
        "store_url": store_url,
        "pg_direct": pg_direct,
        "consumer_key": consumer_key,
        "keys": keys,
        "prefix": prefix,
        "client_id": client_id,
        "logs": tmp_path,
    }
    try:
        yield world
    finally:
        emulator.stop()
        emulator_proxy.close()
        proxy.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        r = redis.Redis.from_url(REDIS_URL)
        for pattern in (f"{prefix}*", f"*{client_id}*", f"*{queue}*"):
            for key in r.scan_iter(match=pattern, count=500):
                r.delete(key)
        r.close()


def test_the_reference_service_runs_end_to_end_with_two_replicas(world: dict[str, Any]) -> None:
    env: dict[str, str] = world["env"]
    logs: Path = world["logs"]
    urls: list[str] = world["urls"]
    http = Http()
    replicas = [
        Process(
            f"replica-{i}",
            [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)],
            {**env, "AIMS_SERVICE_PUBLIC_URL": url},
            logs,
        )
        for i, (port, url) in enumerate(zip(world["ports"], urls, strict=True))
    ]
    worker = Process(  # the workers and their beat (one process here; a fleet runs beat once)
        "worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "--beat",
            "--schedule",
            str(logs / "beat-schedule"),
            "--concurrency",
            "2",
            "--pool",
            "prefork",
            "--queues",
            env["SNAPTRADE_CELERY_QUEUE"],
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        {**env, "SNAPTRADE_RETRY_POLICY": "patient"},  # background work may wait for the budget
        logs,
    )
    readiness: list[tuple[float, str, int]] = []
    stop_polling = threading.Event()
    outage: dict[str, float] = {}
    try:
        for replica, url in zip(replicas, urls, strict=True):
            _wait(lambda r=replica, u=url: _probe(r, u) == 200, 60, f"{replica.name} ready")

        def poll() -> None:
            while not stop_polling.is_set():
                for url in urls:
                    readiness.append((time.monotonic(), url, _status(f"{url}/readyz")))
                stop_polling.wait(0.5)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()

        # --- onboard and link 20 people, alternating replicas --------------------------------------
        user_ids = [f"person-{world['tag']}-{n:02d}" for n in range(USERS)]
        for n, user_id in enumerate(user_ids):
            status, link = http("POST", f"{urls[n % 2]}/users/{user_id}/onboard", {"scopes": ["read", "trade"]})
            assert status == 200, link
            # Traders get two accounts with holdings; the others one cash account (fewer calls
            # inside SnapTrade's 250 a minute).
            scenario = "self_directed" if n < TRADERS else "cash_only"
            result, back = portal_outcome(link["portal_url"], scenario=scenario)
            assert result.succeeded and back is not None
            # The person's browser comes back to the service (the other replica, as a balancer might).
            returned = urllib.parse.urlsplit(back)
            status, outcome = http("GET", f"{urls[(n + 1) % 2]}{returned.path}?{returned.query}")
            assert status == 200 and outcome["status"] == "SUCCESS" and outcome["confirmed"], outcome

        # The test's own view of the stores goes straight to the server, not through the proxy.
        direct = env["SNAPTRADE_SECRET_STORE_URL"].replace(f"127.0.0.1:{world['proxy'].port}", world["pg_direct"])
        observer_env = {**env, **{k: direct for k, v in env.items() if v == env["SNAPTRADE_SECRET_STORE_URL"]}}
        with _client(observer_env) as client:
            user_secrets = {u: client.secret_store.get(u) or "" for u in user_ids}
            assert all(user_secrets.values())

            # --- reads over HTTP ----------------------------------------------------------------
            accounts: dict[str, list[dict[str, Any]]] = {}
            for n, user_id in enumerate(user_ids):
                status, found = http("GET", f"{urls[n % 2]}/users/{user_id}/accounts")
                assert status == 200 and found and all(a["positions"] is not None for a in found), found
                assert all(isinstance(p["units"], str) for a in found for p in a["positions"])  # decimal strings
                assert all("net_value" not in a for a in found)  # typed fields only
                accounts[user_id] = found

            # --- webhooks delivered; the worker syncs every marked account --------------------------
            _wait(lambda: _webhooks_settled(world["journal"]), 120, "webhook deliveries to settle")
            ledger = client.sync_ledger

            def all_synced() -> bool:
                for user_id in user_ids:
                    record = ledger.load_user(user_id)
                    if record is None or {a.account_id for a in record.accounts} != {
                        a["id"] for a in accounts[user_id]
                    }:
                        return False
                    if any(
                        a.holdings_synced_at is None
                        or a.holdings_dirty_at is not None
                        or a.activities_dirty_at is not None
                        for a in record.accounts
                    ):
                        return False
                return True

            _wait(all_synced, 150, "every marked account synced by the worker")

            # --- trading: preview, confirm, place; one answer lost on the wire, reconciled -------------
            for n, user_id in enumerate(user_ids[:TRADERS]):
                base = urls[n % 2]
                account_id = accounts[user_id][0]["id"]
                status, preview = http(
                    "POST",
                    f"{base}/users/{user_id}/accounts/{account_id}/orders/preview",
                    {"action": "BUY", "symbol": "AAPL", "units": "1"},
                )
                assert status == 200 and preview["estimated_cost"], preview
                confirmation = preview["confirmation"]
                if n == TRADERS - 1:  # the brokerage takes the order; its answer never comes back
                    world["emulator_proxy"].lose_answer(rb"POST /api/v1/trade/(?!impact|place)")
                status, placed = http(
                    "POST", f"{urls[(n + 1) % 2]}/orders", {"preview": preview, "confirmation": confirmation}
                )
                if n == TRADERS - 1:
                    assert world["emulator_proxy"].lost == 1
                    assert status == 202 and placed["status"] == "unknown", placed
                    status, settled = http("POST", f"{base}/orders/{placed['client_order_id']}/reconcile")
                    assert status == 200 and settled["outcome"] == "placed", settled
                    sent = [
                        e
                        for e in _journal(world["journal"])
                        if e["operation"] == "place_order" and e["user_id"] == user_id
                    ]
                    assert len(sent) == 1 and sent[0]["processed"]  # processed once, never sent again
                else:
                    assert status == 201 and placed["status"] == "placed", placed
                again = http("POST", f"{base}/orders", {"preview": preview, "confirmation": confirmation})
                assert again[0] == 409  # a confirmation places once

            # --- PostgreSQL unreachable: readiness goes false on both replicas, then recovers -------
            outage["start"] = time.monotonic()
            world["proxy"].cut()
            _wait(lambda: all(_status(f"{u}/readyz") == 503 for u in urls), 30, "readiness false without PostgreSQL")
            assert all(_status(f"{u}/livez") == 200 for u in urls)  # alive: no restart for an outage
            world["proxy"].restore()
            _wait(lambda: all(_status(f"{u}/readyz") == 200 for u in urls), 30, "readiness back with PostgreSQL")
            outage["end"] = time.monotonic()

            # --- erasure: one person who never traded, one who did ---------------------------------
            for erased, base in ((user_ids[-1], urls[0]), (user_ids[0], urls[1])):
                status, receipt = http("DELETE", f"{base}/users/{erased}")
                assert status == 200 and receipt["snaptrade"].get("deleted") is not False, receipt
                _wait(lambda: _webhooks_settled(world["journal"]), 60, "webhook deliveries after erasure")
                time.sleep(3.0)  # a beat run and any task queued before the erasure have run by now
                needles = [erased, user_secrets[erased], *(a["id"] for a in accounts[erased])]
                leftovers = _stores_holding(world, needles)
                assert leftovers == [], f"{erased} is still in: {leftovers}"

            # --- the audit chain ------------------------------------------------------------------
            verdict = client.audit_trail.verify()  # type: ignore[union-attr]
            assert verdict.ok, verdict
        stop_polling.set()
        poller.join(5)
    finally:
        stop_polling.set()
        outputs = [replica.stop() for replica in replicas] + [worker.stop()]

    # --- every webhook delivered and processed once -------------------------------------------------
    deliveries = [e for e in _journal(world["journal"]) if e["operation"] == "webhook"]
    sent = {e["webhook_id"] for e in deliveries}
    delivered = {e["webhook_id"] for e in deliveries if e["processed"]}
    assert sent and delivered == sent, f"undelivered webhooks: {sent - delivered}"
    processed = Counter(re.findall(r"webhook processed (\S+) ", "\n".join(outputs[:2])))
    assert set(processed) == sent and set(processed.values()) == {1}, processed.most_common(3)

    # --- readiness: true throughout, except while PostgreSQL was unreachable ----------------------
    before = [s for t, _, s in readiness if t < outage["start"]]
    after = [s for t, _, s in readiness if t > outage["end"] + 1]
    assert before and set(before) == {200}, Counter(before)
    assert set(after) <= {200}, Counter(after)

    # --- no secret anywhere ----------------------------------------------------------------------
    secrets_ = [world["consumer_key"], *world["keys"].values(), *user_secrets.values()]
    haystack = "\n".join(outputs + http.answers)
    found = [form[:6] + "..." for secret in secrets_ for form in _encodings(secret) if form in haystack]
    assert found == [], f"secrets leaked into logs or answers: {found}"


def _journal(path: Path) -> list[dict[str, Any]]:
    """The emulator command's journal (one JSON object per request or delivery attempt)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _webhooks_settled(path: Path) -> bool:
    """Every webhook sent so far was delivered, and none was sent in the last two seconds."""
    deliveries = [e for e in _journal(path) if e["operation"] == "webhook"]
    if not deliveries or time.time() - max(e["time"] for e in deliveries) < 2.0:
        return False
    return {e["webhook_id"] for e in deliveries} == {e["webhook_id"] for e in deliveries if e["processed"]}


def _client(env: dict[str, str]) -> SafeSnapTradeClient:
    """A client over the service's stores, built from the service's environment."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return SafeSnapTradeClient.from_env()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as failed:
        return failed.code
    except OSError:
        return 0


def _probe(process: Process, url: str) -> int:
    assert process.alive(), process.log.read_text(errors="replace")[-4000:]
    return _status(f"{url}/readyz")


def _stores_holding(world: dict[str, Any], needles: list[str]) -> list[str]:
    """Every PostgreSQL table of the service and every Redis key of this test holding a needle."""
    found = []
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (world["schema"],)
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(f'SELECT t::text FROM "{world["schema"]}"."{table}" t').fetchall()
            text = "\n".join(row[0] for row in rows)
            found += [f"postgres {table}" for needle in needles if needle in text]
    r = redis.Redis.from_url(REDIS_URL)
    try:
        for pattern in (f"{world['prefix']}*", f"*{world['client_id']}*"):
            for key in r.scan_iter(match=pattern, count=500):
                name = key.decode(errors="replace")
                kind = r.type(key).decode()
                value = {
                    "string": lambda k: r.get(k) or b"",
                    "hash": lambda k: b"".join(a + b for a, b in r.hgetall(k).items()),
                    "list": lambda k: b"".join(r.lrange(k, 0, -1)),
                    "set": lambda k: b"".join(r.smembers(k)),
                    "zset": lambda k: b"".join(r.zrange(k, 0, -1)),
                }.get(kind, lambda k: b"")(key)
                text = name + value.decode(errors="replace")
                found += [f"redis {name}" for needle in needles if needle in text]
    finally:
        r.close()
    return found
