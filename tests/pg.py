"""Real PostgreSQL for the tests: TEST_DATABASE_URL, else testcontainers (when a Docker engine
answers), else the embedded server. Never a mock, and never a silent skip: if none of the three
works, the tests that need a database fail with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extensions

from swagger_server.db.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)


@dataclass
class TestDatabase:
    dsn: str
    kind: str  # "TEST_DATABASE_URL", "testcontainers" or "embedded"
    server: EmbeddedPostgres | None = None  # set when the tests own an embedded server

    __test__ = False  # not a test class for pytest

    def connect(self, **kwargs) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, **kwargs)
        conn.autocommit = True
        return conn


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers' own client

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def provide_database(workdir: Path) -> Iterator[TestDatabase]:
    """The session's database, in the standard order of choice."""
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if url:
        yield TestDatabase(dsn=url, kind="TEST_DATABASE_URL")
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield TestDatabase(dsn=container.get_connection_url(), kind="testcontainers")
        return
    with embedded_server(workdir / "pg-session") as db:
        yield db


@contextlib.contextmanager
def embedded_server(data_dir: Path, *, listen_tcp: bool = False, port: int = 5432
                    ) -> Iterator[TestDatabase]:
    """A private embedded server: the tests may stop, restart or kill it."""
    server = EmbeddedPostgres(data_dir, listen_tcp=listen_tcp, port=port)
    dsn = server.start()
    try:
        yield TestDatabase(dsn=dsn, kind="embedded", server=server)
    finally:
        server.stop(mode="immediate")


def create_database(admin: TestDatabase, prefix: str = "t") -> str:
    """A new, empty database on the same server; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with contextlib.closing(admin.connect()) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    params = psycopg2.extensions.parse_dsn(admin.dsn)
    params["dbname"] = name
    return psycopg2.extensions.make_dsn(**params)


def seeded_database(admin: TestDatabase, prefix: str, schema_sql: str) -> str:
    """A new database on the same server with ``schema_sql`` run and analysed; its DSN."""
    dsn = create_database(admin, prefix)
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(schema_sql)
        cur.execute("ANALYZE")
    return dsn
