"""End to end: streamed exports that clients abort must not strand the worker's threads.

A worker runs Flask views in 10 threads. Under gunicorn's native ``asgi`` worker, a download
aborted by the client left its thread blocked for good (10 aborts and the worker answered
nothing more); uvicorn-worker, the default, lets the thread finish and the pool gets its
connection back.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.pg import TestDatabase
from tests.server import GunicornServer, scratch_database, wait_for

pytestmark = pytest.mark.e2e

THREADS_PER_WORKER = 10


@pytest.fixture(scope="module")
def export_db(database: TestDatabase) -> Iterator[str]:
    with scratch_database(database, "exports") as dsn:
        with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE big AS SELECT g AS id, repeat('x', 200) AS payload "
                "FROM generate_series(1, 100000) g"
            )
            cur.execute("ALTER TABLE big ADD PRIMARY KEY (id)")
            conn.commit()
        yield dsn


def start_download(port: int) -> socket.socket:
    """Ask for a ~20 MB NDJSON export, read its first bytes, then stop reading."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /tables/big/rows HTTP/1.1\r\nHost: test\r\n"
                 b"Accept: application/x-ndjson\r\n\r\n")
    assert sock.recv(64).startswith(b"HTTP/1.1 200")
    return sock


def abort(sock: socket.socket) -> None:
    # Linger 0: close with a reset, as a browser tab that is closed mid-download.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def pool_in_use(server: GunicornServer) -> int | None:
    try:
        return server.get("/pool", timeout=2).json()["in_use"]
    except (OSError, ValueError):
        return None


def test_aborted_downloads_leave_the_worker_serving(export_db: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": export_db, "SERVER_WORKERS": "1",
           "POOL_MAX_SIZE": str(THREADS_PER_WORKER)}
    with GunicornServer(tmp_path, env) as server:
        downloads = [start_download(server.port) for _ in range(THREADS_PER_WORKER)]
        time.sleep(1)  # every thread is now blocked on a full socket
        for sock in downloads:
            abort(sock)
        # Every thread and every connection comes back; the worker answers again.
        assert wait_for(lambda: pool_in_use(server) == 0, timeout=20), server.stderr()[-2000:]
        page = server.get("/tables/big/rows?limit=2&select=id", timeout=5)
        assert page.status == 200
        assert [row["id"] for row in page.json()["data"]] == [1, 2]
