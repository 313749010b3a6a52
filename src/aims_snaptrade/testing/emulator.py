"""The SnapTrade emulator's server: lifecycle, test helpers and the blocking ``run`` entry point.

In-process use (tests, demos)::

    from aims_snaptrade.testing import SnapTradeEmulator

    with SnapTradeEmulator() as emu:
        sdk = SnapTrade(host=emu.base_url, auth=SnapTradeAuth.commercial_api_key(
            consumer_key=emu.consumer_key, client_id=emu.client_id))
        ...

Standalone: ``aims-snaptrade emulator --port 8080`` calls :func:`run`.

The server is aiohttp's low-level server running its own event loop in a daemon thread; HTTP/1.1
keep-alive works for urllib3 pools and aiohttp sessions. :meth:`SnapTradeEmulator.stop` closes the
listening socket and every connection, ends held (fault) answers at once and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import IO, Any

from aiohttp import web

from aims_snaptrade.testing.config import API_PREFIX, ClientCredentials, EmulatorConfig
from aims_snaptrade.testing.faults import FaultInjector
from aims_snaptrade.testing.journal import Journal
from aims_snaptrade.testing.routes import Dispatcher, portal_session_id
from aims_snaptrade.testing.seed import Scenario
from aims_snaptrade.testing.state import EmulatorState
from aims_snaptrade.testing.webhooks import WebhookEmitter

__all__ = ["ConnectedUser", "SnapTradeEmulator", "run"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ConnectedUser:
    """A user made by :meth:`SnapTradeEmulator.create_user` / :meth:`~SnapTradeEmulator.connect`.

    Attributes:
        user_id: SnapTrade user id.
        user_secret: Its secret (kept out of ``repr``).
        authorization_id: The connection made by :meth:`~SnapTradeEmulator.connect`, if any.
        account_ids: Its accounts, in creation order.
        client_id: The key the user belongs to.
    """

    user_id: str
    user_secret: str = dataclasses.field(repr=False)
    authorization_id: str | None = None
    account_ids: tuple[str, ...] = ()
    client_id: str = ""


class SnapTradeEmulator:
    """An HTTP server emulating SnapTrade's API under ``/api/v1`` (see the package documentation).

    Args:
        config: Behaviour; defaults to :class:`EmulatorConfig` ().
        host: Interface to bind (loopback by default).
        port: Port to bind; 0 picks a free one.
        **overrides: Fields of :class:`EmulatorConfig` to replace, e.g. ``seed=7`` or
            ``customer_rate_limit=RateLimit(60, 2.0)``.

    Attributes:
        faults: Fault injection rules (:class:`~aims_snaptrade.testing.faults.FaultInjector`).
        journal: Every request served (:class:`~aims_snaptrade.testing.journal.Journal`).
        state: The in-memory world, for assertions beyond the helpers.
        webhooks: The signed webhooks of its events (:class:`~aims_snaptrade.testing.webhooks.WebhookEmitter`):
            set ``webhooks.urls`` (or ``webhook_urls=``) to receive them.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **overrides: Any
    ) -> None:
        config = config or EmulatorConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.faults = FaultInjector()
        self.journal = Journal(config.journal_size)
        self.state = EmulatorState(config)
        self.webhooks = WebhookEmitter(config, self.journal)
        self.state.on_event = self.webhooks.emit
        self._dispatcher = Dispatcher(config, self.state, self.faults, self.journal)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._lifecycle = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._port is not None

    @property
    def port(self) -> int:
        """The bound port (raises before :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the emulator is not running: call start() or use it as a context manager")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://host:port`` (no API prefix)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://host:port/api/v1``: what to pass as the SDK's ``host``."""
        return self.root_url + API_PREFIX

    def start(self) -> SnapTradeEmulator:
        """Bind and serve in a background thread; returns ``self``. Idempotent."""
        with self._lifecycle:
            if self._port is not None:
                return self
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._serve, args=(loop,), name=f"snaptrade-emulator-{id(self):x}", daemon=True
            )
            thread.start()
            try:
                port = asyncio.run_coroutine_threadsafe(self._astart(), loop).result(_START_TIMEOUT)
            except BaseException:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(_STOP_TIMEOUT)
                raise
            self._loop, self._thread, self._port = loop, thread, port
            self._dispatcher.root_url = self.root_url
            return self

    def stop(self) -> None:
        """Stop serving: close the socket and every connection, end the thread. Idempotent."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(_STOP_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(_STOP_TIMEOUT)
                self._loop = self._thread = None
                self._runner = None
                self._port = None

    def __enter__(self) -> SnapTradeEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"SnapTradeEmulator({where})"

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Cancel whatever is left (connection handlers of aborted clients) before closing.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _astart(self) -> int:
        self._dispatcher.starting()
        server = web.Server(self._dispatcher.handle, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, backlog=1024)
        await site.start()
        self._runner = runner
        await self.webhooks.start()
        return int(runner.addresses[0][1])

    async def _astop(self) -> None:
        self._dispatcher.stopping()
        await self.webhooks.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- credentials ----------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        """Client id of the default (commercial) key."""
        return self.config.default_client.client_id

    @property
    def consumer_key(self) -> str:
        """Consumer key of the default (commercial) key."""
        return self.config.default_client.consumer_key

    @property
    def personal_credentials(self) -> ClientCredentials | None:
        """The first personal key, if the configuration has one."""
        return self.config.personal_client

    def sdk(self, *, personal: bool = False, retries: Any = None, **kwargs: Any) -> Any:
        """An official SDK client (``snaptrade_client.SnapTrade``) wired to this emulator.

        Args:
            personal: Use the personal key instead of the default commercial one.
            retries: urllib3 retry setting of the SDK's pool (``False`` or ``Retry(0)`` to see
                every failure; the SDK default is urllib3's ``Retry(3)``).
            **kwargs: More ``Configuration`` arguments.

        The SDK is imported here, not at module import, because importing it takes most of a second.
        """
        from snaptrade_client.auth import SnapTradeAuth
        from snaptrade_client.client import SnapTrade
        from snaptrade_client.configuration import Configuration

        creds = self.config.personal_client if personal else self.config.default_client
        if creds is None:
            raise RuntimeError("no personal key is configured")
        make = SnapTradeAuth.personal_api_key if creds.personal else SnapTradeAuth.commercial_api_key
        auth = make(consumer_key=creds.consumer_key, client_id=creds.client_id)
        configuration = Configuration(host=self.base_url, auth=auth, **kwargs)
        if retries is not None:
            configuration.retries = retries
        return SnapTrade(configuration=configuration, auth=None)

    # --- test helpers (no HTTP, no rate limits, not journaled) ----------------------------------

    def _client(self, client_id: str | None) -> ClientCredentials:
        client = self.state.client(client_id or self.client_id)
        if client is None:
            raise ValueError(f"unknown client id {client_id!r}")
        return client

    def create_user(self, user_id: str, *, client_id: str | None = None) -> ConnectedUser:
        """Register a user directly (as ``registerSnapTradeUser`` would)."""
        user = self.state.register_user(self._client(client_id), user_id)
        return ConnectedUser(user.user_id, user.secret, client_id=user.client_id)

    def complete_connection(
        self,
        redirect_uri_or_session: str,
        *,
        brokerage: str | None = None,
        scenario: Scenario | str = Scenario.SELF_DIRECTED,
        populating_seconds: float | None = None,
    ) -> str:
        """Finish a Connection Portal flow the way the user would; return the connection id.

        Args:
            redirect_uri_or_session: The ``redirectURI`` (or ``sessionId``) from ``loginSnapTradeUser``.
            brokerage: Brokerage slug (``"ALPACA"``); defaults to the login's ``broker``, else ``SANDBOX``.
            scenario: Sandbox scenario deciding the seeded accounts (see :mod:`.seed`).
            populating_seconds: Override of ``config.populating_seconds`` for this connection.

        A link made with ``reconnect=<connectionId>`` re-enables that connection instead.

        Raises:
            ConnectionPortalError: Failing scenario, unknown, used or expired link.
        """
        auth = self.state.complete_connection(
            portal_session_id(redirect_uri_or_session),
            brokerage=brokerage,
            scenario=scenario,
            populating_seconds=populating_seconds,
        )
        return auth.id

    def connect(
        self,
        user_id: str,
        *,
        scenario: Scenario | str = Scenario.SELF_DIRECTED,
        brokerage: str | None = None,
        connection_type: str = "trade",
        client_id: str | None = None,
        populating_seconds: float | None = None,
    ) -> ConnectedUser:
        """Register ``user_id`` if needed and give it a completed connection in one call.

        Personal keys connect their single implicit user (``user_id`` is then ignored).
        """
        client = self._client(client_id)
        with self.state.lock:
            if client.personal:
                user = self.state.authenticate_user(client, None, None)
            else:
                user = self.state.find_user(client.client_id, user_id) or self.state.register_user(client, user_id)
            session = self.state.create_session(user, {"connectionType": connection_type, "broker": brokerage})
            auth_id = self.complete_connection(
                session.session_id, brokerage=brokerage, scenario=scenario, populating_seconds=populating_seconds
            )
            accounts = tuple(a.id for a in self.state.accounts(user, auth_id))
            return ConnectedUser(user.user_id, user.secret, auth_id, accounts, user.client_id)

    def seed_users(
        self,
        count: int,
        *,
        prefix: str = "user",
        scenario: Scenario | str = Scenario.CASH_ONLY,
        client_id: str | None = None,
    ) -> list[ConnectedUser]:
        """``count`` users ``<prefix>-00000``, ``<prefix>-00001``... each with one completed connection.

        For batch and load tests (portfolio sync of thousands of users); ``cash_only`` keeps each
        user small: one account, a few transactions.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative integer, got {count!r}")
        return [self.connect(f"{prefix}-{i:05d}", scenario=scenario, client_id=client_id) for i in range(count)]

    def disable_connection(self, authorization_id: str) -> None:
        """Break a connection as a brokerage would (reads keep serving stale data; refresh gets 402)."""
        with self.state.lock:
            auth = self.state.get_authorization(authorization_id)
            if not auth.disabled:
                self.state.disable_authorization(auth)

    def set_populating(self, authorization_id: str, seconds: float) -> None:
        """Make a connection's account data answer 425 (code 3012) for ``seconds`` (0 ends it)."""
        self.state.set_ready_at(self.state.get_authorization(authorization_id), seconds)

    def finish_populating(self, authorization_id: str | None = None) -> None:
        """End the 425 window of one connection (or of every connection)."""
        with self.state.lock:
            if authorization_id is not None:
                self.set_populating(authorization_id, 0)
                return
            for auth in self.state.all_authorizations():
                self.state.set_ready_at(auth, 0)

    def reset_rate_limits(self) -> None:
        """Forget every request counted by the customer and account limiters."""
        self._dispatcher.reset_rate_limits()

    def reset(self) -> None:
        """Back to an empty emulator: no users, faults, journal entries or counted requests."""
        self.state.reset()
        self.faults.clear()
        self.webhooks.reset()
        self.journal.clear()
        self.reset_rate_limits()

    @property
    def implemented_operations(self) -> frozenset[str]:
        """SDK operations the emulator serves; the others answer 501."""
        return self._dispatcher.implemented_operations


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be handled in the main thread; the caller stops us otherwise
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    config: EmulatorConfig | None = None,
    out: IO[str] | None = None,
    stop: threading.Event | None = None,
    journal_file: str | None = None,
    **overrides: Any,
) -> int:
    """Serve until SIGINT / SIGTERM (or until ``stop`` is set); the CLI's ``emulator`` command.

    Prints the base URL and the keys the emulator accepts, then blocks. Returns 0 (exit status).

    Args:
        host: Interface to bind.
        port: Port (0 picks a free one; the URL printed tells which).
        config: Behaviour; ``overrides`` replace its fields.
        out: Where to print (stdout by default).
        stop: An event that stops the server when set (for callers not in the main thread).
        journal_file: Append every journal entry (requests and webhook deliveries) to this file as
            a JSON line, for tests and developers outside the emulator's process.
    """
    stream = out if out is not None else sys.stdout
    stop_event = stop or threading.Event()
    emulator = SnapTradeEmulator(config, host=host, port=port, **overrides)
    journal = open(journal_file, "a", encoding="utf-8") if journal_file else None  # noqa: SIM115 - closed below
    if journal is not None:
        emulator.journal.write_to(journal)
    with _stop_on_signals(stop_event), emulator, journal or contextlib.nullcontext():
        print(f"SnapTrade emulator listening on {emulator.base_url}", file=stream)
        for client in emulator.config.clients:
            kind = "personal" if client.personal else "commercial"
            print(f"  {kind:<10} clientId={client.client_id} consumerKey={client.consumer_key}", file=stream)
        for url in emulator.webhooks.urls:
            delays = ", ".join(f"{d:g}" for d in emulator.webhooks.retry_delays)
            print(f"  webhooks -> {url} (redelivered after {delays} s)", file=stream)
        print("Stop with Ctrl+C (SIGINT) or SIGTERM.", file=stream, flush=True)
        while not stop_event.wait(0.2):
            pass
        print("SnapTrade emulator stopped.", file=stream, flush=True)
    return 0
