"""How a uvicorn-worker process under gunicorn stops: on which signal, how fast, and cleanly.

gunicorn's master stops its workers with SIGTERM (graceful: on its own TERM) or SIGQUIT (quick:
on its own INT or QUIT), and recycles a worker after ``max_requests``. uvicorn-worker 0.4 (and
uvicorn 0.54 under it) falls short on six counts, which :func:`prepare` (called from
``post_worker_init``) mends:

- SIGQUIT only sets a flag that nothing reads: the worker serves on until the master SIGKILLs
  it after ``graceful_timeout``, its pool never closed. Here SIGQUIT starts uvicorn's shutdown,
  with ``QUICK_GRACE`` seconds for requests in flight.
- After a graceful stop uvicorn re-raises SIGTERM or SIGINT with the default handler back: the
  worker would die by it and skip ``worker_exit``. Here the re-raised signal is a normal exit.
- uvicorn waits for requests in flight without a limit, so a stuck one ends in the master's
  SIGKILL. Here it waits ``GRACE_SHARE`` of ``graceful_timeout``: ``worker_exit`` still runs.
- uvicorn stops listening and, in the same loop iteration, closes every connection that has not
  delivered a request yet, including one accepted a moment earlier whose request is on its way:
  that client gets a reset. With ``max_requests`` every recycle under load dropped a request or
  two (measured). Here connections get ``ACCEPT_GRACE`` to deliver it, and are then served.
- uvicorn counts a request when the last (empty) body message is sent; a client that already
  has its Content-Length bytes may hang up before that, and the request is not counted: 200
  quick requests counted as 52 to 91 (measured), so ``max_requests`` recycled late or never.
  Here the server counts requests its app answered.
- uvloop closes a listening socket's descriptor itself; handed gunicorn's wrapper rather than the
  socket, it closes it a second time, which logs "Error while closing socket [Errno 9] Bad file
  descriptor" at every stop (and a second close of a number may hit another thread's new file).
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import Server

GRACE_SHARE = 0.8  # of graceful_timeout, for requests in flight on SIGTERM; the rest is for exit
QUICK_GRACE = 1.0  # seconds for requests in flight on SIGQUIT
ACCEPT_GRACE = 0.2  # seconds for a just-accepted connection to deliver its request at shutdown


class _Server(Server):
    """uvicorn's server, but it counts requests reliably and stops listening before it closes
    connections without a request."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.requests_answered = 0

    async def on_tick(self, counter: int) -> bool:
        # uvicorn's own count, which max_requests is checked against, misses requests.
        self.server_state.total_requests = self.requests_answered
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # uvicorn closes them again below: closing twice is a no-op
        await asyncio.sleep(ACCEPT_GRACE)
        await super().shutdown(sockets)


def prepare(worker: Any, graceful_timeout: float) -> None:
    """Make a ``uvicorn_worker.UvicornWorker`` stop as described above (``post_worker_init``)."""
    worker.sockets = [getattr(sock, "sock", sock) for sock in worker.sockets]
    worker.config.timeout_graceful_shutdown = graceful_timeout * GRACE_SHARE
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_normally)
    worker._serve = functools.partial(_serve, worker)


async def _serve(worker: Any) -> None:
    """``UvicornWorker._serve`` with our server and our SIGQUIT handler."""
    server = _Server(config=worker.config)
    worker.config.app = _counting(worker.wsgi, server)
    asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, _quick_exit, worker, server)
    await server.serve(sockets=worker.sockets)
    if not server.started:
        sys.exit(Arbiter.WORKER_BOOT_ERROR)


def _counting(app: ASGIApp, server: _Server) -> ASGIApp:
    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                server.requests_answered += 1

    return counted


def _quick_exit(worker: Any, server: Server) -> None:
    worker.config.timeout_graceful_shutdown = QUICK_GRACE
    server.should_exit = True


def _exit_normally(signum: int, frame: object) -> None:
    sys.exit(0)
