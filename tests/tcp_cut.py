"""A loopback TCP proxy whose link can be cut and restored: a server made unreachable for one
test without stopping the server that other tests share.

``cut()`` closes every open connection and refuses new ones (the listening port stays bound, so
nothing else can take it); ``restore()`` forwards again. ``lose_answer(pattern)`` lets the next
request matching ``pattern`` through to the server, then drops the server's answer and closes the
client's connection: the request was processed, the answer never arrives (a lost response).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class CuttableProxy:
    """Forward ``127.0.0.1:<port>`` to ``(host, port)`` until cut."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self._lose: re.Pattern[bytes] | None = None
        self._losing: set[socket.socket] = set()  # upstream sockets whose next answer is dropped
        self.lost = 0
        threading.Thread(target=self._accept, daemon=True, name="cuttable-proxy").start()

    def cut(self) -> None:
        """Close every forwarded connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def lose_answer(self, pattern: bytes) -> None:
        """Drop the answer to the next request whose bytes match ``pattern`` (once)."""
        with self._lock:
            self._lose = re.compile(pattern)

    def restore(self) -> None:
        """Forward again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stop listening and close everything."""
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                with self._lock:
                    if source in self._losing:  # the answer to a request that must be lost
                        self._losing.discard(source)
                        self.lost += 1
                        break
                    if self._lose is not None and self._lose.search(chunk):
                        self._lose = None
                        self._losing.add(sink)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)


def proxied(postgres_url: str) -> tuple[CuttableProxy, str]:
    """A proxy in front of the PostgreSQL server of ``postgres_url``, and the URL through it."""
    parts = conninfo_to_dict(postgres_url)
    proxy = CuttableProxy(str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
    return proxy, make_conninfo(postgres_url, host="127.0.0.1", port=str(proxy.port))
