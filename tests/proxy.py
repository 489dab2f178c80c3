"""A small threaded TCP proxy for fault injection between the service and PostgreSQL.

It listens on ``127.0.0.1:<free port>`` and forwards each connection to the database, over TCP
or a Unix socket (the embedded server's ``host=/dir port=5432`` means ``/dir/.s.PGSQL.5432``).
While it runs, a test can:

- ``latency = 0.3``: delay every forwarded chunk, in both directions, by that many seconds;
- ``cut()``: close every current connection (both ends see EOF at once);
- ``mode = "refuse"``: reset new connections as soon as they arrive;
- ``mode = "blackhole"``: accept new connections and never answer (a dropped route);
- ``freeze()`` / ``thaw()``: stop forwarding on current connections without closing them;
- read ``sends_total``: the chunks clients sent to the server, i.e. their round trips.

Every thread it starts is joined by ``stop()`` (or leaving the ``with`` block).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Literal

import psycopg2.extensions

Mode = Literal["forward", "refuse", "blackhole"]
Upstream = tuple[str, int] | str  # (host, port) for TCP, or the path of a Unix socket
_CHUNK = 65536
_POLL = 0.05  # how often blocked threads look at the stop flag


def upstream_from_dsn(dsn: str) -> Upstream:
    """Where a libpq DSN (URL or key=value) connects: ``(host, port)`` or a socket path."""
    params = psycopg2.extensions.parse_dsn(dsn)
    host = (params.get("host") or "").split(",")[0] or "localhost"
    port = int((params.get("port") or "5432").split(",")[0])
    if host.startswith("/"):
        return str(Path(host) / f".s.PGSQL.{port}")
    return (params.get("hostaddr") or host, port)


def dsn_via(dsn: str, port: int, host: str = "127.0.0.1") -> str:
    """The same DSN (user, database, options), but connecting to ``host:port`` over TCP."""
    params = psycopg2.extensions.parse_dsn(dsn)
    params.pop("hostaddr", None)
    params.update(host=host, port=str(port))
    return psycopg2.extensions.make_dsn(**params)


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: the peer sees 'connection reset'."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    """One proxied connection: the client's socket, the upstream socket and two pumps."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._pumps_left = 2
        self.threads = [
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True,
                             name="proxy-up"),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True,
                             name="proxy-down"),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def shutdown(self) -> None:
        """Wake both pumps and send EOF both ways; the last pump out closes the sockets."""
        self.closing.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool = False) -> None:
        try:
            while not self.closing.is_set():
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    break
                if not data:
                    break
                if to_server:
                    self.proxy.count_send()
                if not self.proxy._wait_to_forward(self.closing):
                    break
                try:
                    dst.sendall(data)
                except OSError:
                    break
        finally:
            self.shutdown()
            with self._lock:
                self._pumps_left -= 1
                last = self._pumps_left == 0
            if last:
                for sock in (self.client, self.upstream):
                    with contextlib.suppress(OSError):
                        sock.close()
                self.proxy._forget(self)


class FaultProxy:
    """``with FaultProxy(upstream_from_dsn(dsn)) as proxy: ... dsn_via(dsn, proxy.port)``."""

    def __init__(self, upstream: Upstream, *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.mode: Mode = "forward"
        self.latency = 0.0  # seconds added before forwarding each chunk
        self.accepted_total = 0
        # Chunks the clients sent to the server: one per round trip (a client waits for the
        # answer before it sends again), so a test can count round trips.
        self.sends_total = 0
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._held: list[socket.socket] = []  # blackholed connections
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._threads: list[threading.Thread] = []

    def count_send(self) -> None:
        with self._lock:
            self.sends_total += 1

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(128)
        listener.settimeout(_POLL)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"proxy-accept-{self.port}")
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and join every thread."""
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        self.thaw()
        self.cut()
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
        for thread in threads:
            thread.join(timeout=5)
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            raise RuntimeError(f"proxy threads still running after stop: {alive}")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def active(self) -> int:
        """Connections currently forwarded (not counting blackholed ones)."""
        with self._lock:
            return len(self._pairs)

    def cut(self) -> int:
        """Close every current connection, forwarded or blackholed; returns how many."""
        with self._lock:
            pairs = list(self._pairs)
            held, self._held = self._held, []
        for pair in pairs:
            pair.shutdown()
        for sock in held:
            _reset(sock)
        return len(pairs) + len(held)

    def freeze(self) -> None:
        """Current connections stay open but nothing more is forwarded (a silent network)."""
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def forward(self) -> None:
        """Back to normal: forward new connections, no latency, nothing frozen."""
        self.mode = "forward"
        self.latency = 0.0
        self.thaw()

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(_POLL)
                continue
            client.settimeout(None)
            with self._lock:
                self.accepted_total += 1
            mode = self.mode
            if mode == "refuse":
                _reset(client)
            elif mode == "blackhole":
                with self._lock:
                    self._held.append(client)
            else:
                self._connect_upstream(client)

    def _connect_upstream(self, client: socket.socket) -> None:
        family = socket.AF_UNIX if isinstance(self.upstream, str) else socket.AF_INET
        upstream = socket.socket(family, socket.SOCK_STREAM)
        try:
            upstream.settimeout(5)
            upstream.connect(self.upstream)
            upstream.settimeout(None)
        except OSError:
            upstream.close()
            _reset(client)  # the database is not there: the client sees a reset, at once
            return
        for sock in (client, upstream):
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(self, client, upstream)
        with self._lock:
            self._pairs.add(pair)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.extend(pair.threads)
        pair.start()

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def _wait_to_forward(self, closing: threading.Event) -> bool:
        """Apply latency and freezing; False when the connection is closing meanwhile."""
        latency = self.latency
        if latency > 0 and closing.wait(latency):
            return False
        while self._frozen.is_set():
            if closing.wait(_POLL) or self._stop.is_set():
                return False
        return not closing.is_set()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.proxy HOST UPSTREAM``: forward ``HOST:<free port>`` to UPSTREAM (a
    socket path or ``host:port``), print the port, run until stdin closes. The network
    namespace tests run it inside their namespace."""
    import sys

    host, upstream = (argv if argv is not None else sys.argv[1:])[:2]
    target: Upstream = upstream
    if not upstream.startswith("/"):
        name, _, port = upstream.rpartition(":")
        target = (name, int(port))
    with FaultProxy(target, host=host) as proxy:
        print(proxy.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
