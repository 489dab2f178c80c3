"""How a uvicorn-worker process under gunicorn stops: on which signal, how fast, and cleanly.

gunicorn's master stops its workers with SIGTERM (graceful: on its own TERM) or SIGQUIT (quick:
on its own INT or QUIT), and recycles a worker after ``max_requests``. uvicorn-worker 0.4 falls
short on four counts, which :func:`prepare` (called from ``post_worker_init``) mends:

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
from uvicorn.server import Server

GRACE_SHARE = 0.8  # of graceful_timeout, for requests in flight on SIGTERM; the rest is for exit
QUICK_GRACE = 1.0  # seconds for requests in flight on SIGQUIT
ACCEPT_GRACE = 0.2  # seconds for a just-accepted connection to deliver its request at shutdown


class _Server(Server):
    """uvicorn's server, but it stops listening before it closes connections without a request."""

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
    worker.config.app = worker.wsgi
    server = _Server(config=worker.config)
    asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, _quick_exit, worker, server)
    await server.serve(sockets=worker.sockets)
    if not server.started:
        sys.exit(Arbiter.WORKER_BOOT_ERROR)


def _quick_exit(worker: Any, server: Server) -> None:
    worker.config.timeout_graceful_shutdown = QUICK_GRACE
    server.should_exit = True


def _exit_normally(signum: int, frame: object) -> None:
    sys.exit(0)
