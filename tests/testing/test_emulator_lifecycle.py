"""Starting and stopping: no thread, socket or port left behind; keep-alive; the blocking ``run``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import aiohttp
import pytest
import urllib3

from aims_snaptrade.testing import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CONSUMER_KEY,
    ClientCredentials,
    EmulatorConfig,
    Fault,
    RateLimit,
    SnapTradeEmulator,
)
from aims_snaptrade.testing.emulator import run


def _port_closed(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_stop_leaves_no_thread_and_closes_the_port() -> None:
    before = set(threading.enumerate())
    emu = SnapTradeEmulator().start()
    assert emu.running
    assert emu.base_url == f"http://127.0.0.1:{emu.port}/api/v1"
    port = emu.port
    pool = urllib3.PoolManager(retries=False)
    assert pool.request("GET", emu.base_url + "/").status == 200  # leaves a keep-alive connection open
    emu.stop()
    assert not emu.running
    assert set(threading.enumerate()) == before
    assert _port_closed(port)
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", f"http://127.0.0.1:{port}/api/v1/")
    emu.stop()  # idempotent


def test_context_manager_and_restart() -> None:
    with SnapTradeEmulator() as emu:
        first = emu.port
        assert emu.start() is emu  # idempotent while running
    assert _port_closed(first)
    with pytest.raises(RuntimeError):
        _ = emu.base_url
    emu.start()
    try:
        assert urllib3.PoolManager().request("GET", emu.base_url + "/").status == 200
    finally:
        emu.stop()


def test_stop_does_not_wait_for_held_answers() -> None:
    emu = SnapTradeEmulator().start()
    emu.faults.add(Fault.timeout(hold=30.0), operation="check", times=None)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            urllib3.PoolManager(retries=False).request("GET", emu.base_url + "/", timeout=20.0)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=client)
    caller.start()
    deadline = time.monotonic() + 5
    while emu.faults.rules[0].fired == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    emu.stop()
    assert time.perf_counter() - started < 2.0
    caller.join(5)
    assert not caller.is_alive()
    assert errors and isinstance(errors[0], urllib3.exceptions.HTTPError)


def test_urllib3_pool_reuses_one_connection(emu: SnapTradeEmulator) -> None:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", emu.port, maxsize=1, retries=False)
    for _ in range(20):
        assert pool.request("GET", "/api/v1/").status == 200
    assert pool.num_connections == 1
    assert pool.num_requests == 20


def test_aiohttp_session_reuses_connections(emu: SnapTradeEmulator) -> None:
    created = 0

    async def on_create(*_: Any) -> None:
        nonlocal created
        created += 1

    async def scenario() -> None:
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(on_create)
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:

            async def one() -> int:
                async with session.get(emu.base_url + "/") as response:
                    await response.read()
                    return response.status

            statuses = await asyncio.gather(*(one() for _ in range(40)))
        assert statuses == [200] * 40

    asyncio.run(scenario())
    assert created <= 2


def test_run_serves_until_sigterm() -> None:
    code = "from aims_snaptrade.testing.emulator import run; raise SystemExit(run(port=0))"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("SnapTrade emulator listening on http://127.0.0.1:")
        base_url = first.rsplit(" ", 1)[1].strip()
        banner = "".join(process.stdout.readline() for _ in range(3))
        assert f"clientId={DEFAULT_CLIENT_ID}" in banner
        assert f"consumerKey={DEFAULT_CONSUMER_KEY}" in banner
        assert urllib3.PoolManager().request("GET", base_url + "/").status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        port = int(base_url.split(":")[2].split("/")[0])
        assert _port_closed(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery to a child is POSIX-only")
def test_run_stops_on_sigint() -> None:
    code = "from aims_snaptrade.testing.emulator import run; raise SystemExit(run(port=0))"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        process.stdout.readline()
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_in_a_thread_stops_on_its_event() -> None:
    import io

    out = io.StringIO()
    stop = threading.Event()
    worker = threading.Thread(target=run, kwargs={"port": 0, "out": out, "stop": stop, "seed": 3})
    worker.start()
    deadline = time.monotonic() + 5
    while "listening" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "listening on http://127.0.0.1:" in out.getvalue()
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert "stopped" in out.getvalue()


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(clients=())
    with pytest.raises(ValueError):
        EmulatorConfig(clients=(ClientCredentials("a", "k1"), ClientCredentials("a", "k2")))
    with pytest.raises(ValueError):
        RateLimit(0, 1.0)
    with pytest.raises(ValueError):
        RateLimit(1, 0)
    with pytest.raises(TypeError):
        SnapTradeEmulator(not_a_field=1)
    assert "k1" not in repr(ClientCredentials("a", "k1"))


def test_importing_the_package_does_not_start_the_server_machinery() -> None:
    code = (
        "import sys, aims_snaptrade.testing as t; "
        "assert 'aims_snaptrade.testing.emulator' not in sys.modules; "
        "assert 'aims_snaptrade.testing.routes' not in sys.modules; "
        "t.SnapTradeEmulator; assert 'aims_snaptrade.testing.emulator' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_faults_still_delay_after_a_restart() -> None:
    emu = SnapTradeEmulator()
    with emu:
        pass
    with emu:
        emu.faults.add(Fault.latency(0.2), operation="check")
        started = time.perf_counter()
        assert urllib3.PoolManager().request("GET", emu.base_url + "/").status == 200
        assert time.perf_counter() - started >= 0.2
