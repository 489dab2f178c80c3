"""End to end: streamed exports that clients abort or stop reading must not strand the worker.

A worker runs Flask views in 10 threads. Under gunicorn's native ``asgi`` worker, a download
aborted by the client once left its thread blocked for good (10 aborts and the worker answered
nothing more); uvicorn-worker, the default, lets the thread finish and the pool gets its
connection back. A client that keeps its socket open but stops reading is cut after
``EXPORT_STALL_TIMEOUT``; at most ``MAX_EXPORTS`` exports run at once; ``/health/live`` answers
on the event loop even when every request thread is busy.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.pg import TestDatabase
from tests.server import WORKER_APP_NAME, GunicornServer, scratch_database, wait_for

pytestmark = pytest.mark.e2e

THREADS_PER_WORKER = 10
STALL_SECONDS = 3  # EXPORT_STALL_TIMEOUT of these tests
# Cut within this much after the stall timeout; below the export's idle-in-transaction backstop
# (stall timeout + 5 s), so that the backstop cannot pass for the cut.
CUT_MARGIN_SECONDS = 4
DEFAULT_MAX_EXPORTS = 4
ANSWER_SECONDS = 2  # what "the worker still answers" means here


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


def stalled_export(port: int) -> socket.socket:
    """Ask for a ~20 MB NDJSON export with a tiny receive buffer; read the status line only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /tables/big/rows HTTP/1.1\r\nHost: test\r\n"
                 b"Accept: application/x-ndjson\r\n\r\n")
    return sock


def status_of(sock: socket.socket) -> int:
    head = sock.recv(12)  # "HTTP/1.1 200": the client reads this much, then nothing
    assert head.startswith(b"HTTP/1.1 "), head
    return int(head[9:12])


def read_response(sock: socket.socket) -> tuple[str, bytes]:
    """The rest of a small response whose status line was read: (headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    headers = head.decode("latin-1").lower()
    length = int(headers.split("content-length:")[1].split("\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return headers, body


def stalled_backends(dsn: str) -> int:
    """Worker connections idle inside a transaction: exports waiting for their client."""
    with contextlib.closing(psycopg2.connect(dsn, connect_timeout=5)) as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name LIKE %s AND state = 'idle in transaction'",
                    (WORKER_APP_NAME,))
        return int(cur.fetchone()[0])


def answers_at_once(server: GunicornServer, path: str) -> None:
    resp = server.get(path, timeout=ANSWER_SECONDS)  # raises on a worker that does not answer
    assert resp.status == 200, (path, resp.status, resp.body[:300])
    assert resp.elapsed < ANSWER_SECONDS, (path, resp.elapsed)


def does_not_answer(server: GunicornServer, path: str, seconds: float) -> bool:
    try:
        server.get(path, timeout=seconds)
    except TimeoutError:
        return True
    return False


def pool_in_use(server: GunicornServer) -> int | None:
    try:
        return server.get("/pool", timeout=2).json()["in_use"]
    except (OSError, ValueError):
        return None


def test_aborted_downloads_leave_the_worker_serving(export_db: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": export_db, "SERVER_WORKERS": "1",
           "POOL_MAX_SIZE": str(THREADS_PER_WORKER), "API_MAX_EXPORTS": str(THREADS_PER_WORKER)}
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


def test_stalled_exports_are_cut_and_bounded_while_the_worker_answers(
    export_db: str, tmp_path: Path
) -> None:
    """10 clients ask for an export and stop reading: MAX_EXPORTS (4) of them run and stall,
    the others get 503 + Retry-After; the worker answers at once all along, and the stalled
    ones are cut after EXPORT_STALL_TIMEOUT, their connections given back."""
    env = {"DATABASE_URL": export_db, "SERVER_WORKERS": "1",
           "API_EXPORT_STALL_TIMEOUT": str(STALL_SECONDS)}
    with GunicornServer(tmp_path, env) as server:
        socks = [stalled_export(server.port) for _ in range(THREADS_PER_WORKER)]
        statuses = [status_of(sock) for sock in socks]
        assert sorted(statuses) == [200] * DEFAULT_MAX_EXPORTS + [503] * 6, statuses
        assert wait_for(lambda: stalled_backends(export_db) == DEFAULT_MAX_EXPORTS, timeout=5)
        stalled_at = time.monotonic()
        for path in ("/health/live", "/", "/tables/big/rows?limit=2&select=id"):
            answers_at_once(server, path)
        headers, body = read_response(socks[statuses.index(503)])
        assert "retry-after: 5" in headers
        assert "content-type: application/problem+json" in headers
        assert json.loads(body)["type"] == "/problems/too-many-exports"
        # Cut after the stall timeout: the backends leave their transaction, the slots free up.
        cut_within = STALL_SECONDS + CUT_MARGIN_SECONDS
        assert wait_for(lambda: stalled_backends(export_db) == 0, timeout=cut_within)
        assert time.monotonic() - stalled_at < cut_within
        assert wait_for(lambda: pool_in_use(server) == 0, timeout=5), server.stderr()[-2000:]
        assert "response cut" in server.stderr()
        export = server.get("/tables/big/rows?limit=3&select=id",
                            headers={"Accept": "application/x-ndjson"}, timeout=5)
        assert export.status == 200 and export.body.count(b"\n") == 3
        for sock in socks:
            sock.close()


def test_liveness_answers_while_every_request_thread_is_stalled(
    export_db: str, tmp_path: Path
) -> None:
    """MAX_EXPORTS at the thread count: 10 stalled exports hold all 10 request threads (a page
    does not answer), and still /health/live answers at once, and /pool in one of the operators'
    threads (swagger_server/web/admission.py); after the cut the worker serves again."""
    stall = 2 * STALL_SECONDS  # time to show that the threads are all busy before the cut
    env = {"DATABASE_URL": export_db, "SERVER_WORKERS": "1",
           "POOL_MAX_SIZE": str(THREADS_PER_WORKER), "API_MAX_EXPORTS": str(THREADS_PER_WORKER),
           "API_EXPORT_STALL_TIMEOUT": str(stall)}
    with GunicornServer(tmp_path, env) as server:
        socks = [stalled_export(server.port) for _ in range(THREADS_PER_WORKER)]
        assert [status_of(sock) for sock in socks] == [200] * THREADS_PER_WORKER
        assert wait_for(lambda: stalled_backends(export_db) == THREADS_PER_WORKER, timeout=5)
        stalled_at = time.monotonic()
        assert does_not_answer(server, "/tables/big/rows?limit=1", 1.0)  # every thread busy
        answers_at_once(server, "/health/live")
        answers_at_once(server, "/pool")
        assert time.monotonic() - stalled_at < stall  # all of that before the cut
        cut_within = stall + CUT_MARGIN_SECONDS
        assert wait_for(lambda: stalled_backends(export_db) == 0, timeout=cut_within)
        assert time.monotonic() - stalled_at < cut_within
        answers_at_once(server, "/")
        assert wait_for(lambda: pool_in_use(server) == 0, timeout=5), server.stderr()[-2000:]
        for sock in socks:
            sock.close()
