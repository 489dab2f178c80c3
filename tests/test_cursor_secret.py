"""The key that signs cursors (issue 6, item 12): ``CURSOR_SECRET``, else random per start, never
derived from the DSN (a cursor would let anyone test password guesses offline)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from swagger_server.config import PROJECT_ROOT
from swagger_server.data import cursors
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

SCHEMA = """
CREATE TABLE t (id integer PRIMARY KEY);
INSERT INTO t SELECT generate_series(1, 10);
"""
# What the cursor of the first page of t ordered by its key is bound to.
FINGERPRINT = cursors.fingerprint(["public", "t", [["id", "integer", False, False]]])


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "cursor_key", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn) as client:  # no CURSOR_SECRET
        yield client


def issued_cursor(client: TestClient) -> str:
    r = client.get("/tables/t/rows", params={"limit": 3})
    assert r.status_code == 200, r.text
    return r.json()["next_cursor"]


def dsn_derived_keys(dsn: str) -> list[bytes]:
    """Keys an attacker who guesses the DSN (password included) could compute."""
    return [
        hashlib.sha256(b"pgrest cursor v1\0" + dsn.encode("utf-8")).digest(),  # the old default
        hashlib.sha256(dsn.encode("utf-8")).digest(),
        dsn.encode("utf-8"),
    ]


def test_a_cursor_does_not_verify_under_a_key_derived_from_the_dsn(
    client: TestClient, dsn: str
) -> None:
    cursor = issued_cursor(client)
    assert cursors.decode(cursors.secret_for(""), FINGERPRINT, cursor, 1) == ["3"]
    for key in dsn_derived_keys(dsn):
        with pytest.raises(cursors.CursorError, match="altered"):
            cursors.decode(key, FINGERPRINT, cursor, 1)


def test_without_cursor_secret_the_key_is_random_and_made_once_per_process(dsn: str) -> None:
    assert cursors.secret_for("") == cursors.secret_for("")  # every app of this process
    assert len(cursors.secret_for("")) == 32
    assert cursors.secret_for("") not in dsn_derived_keys(dsn)
    # Another process (another start) makes another key.
    code = "from swagger_server.data import cursors; print(cursors.secret_for('').hex())"
    others = {
        subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True,
                       capture_output=True, text=True).stdout.strip()
        for _ in range(2)
    }
    assert len(others) == 2 and cursors.secret_for("").hex() not in others


def test_a_configured_secret_is_the_key(dsn: str) -> None:
    assert cursors.secret_for("s3cret") == b"s3cret"
    with app_client(dsn, api={"cursor_secret": "s3cret"}) as client:
        cursor = issued_cursor(client)
    assert cursors.decode(b"s3cret", FINGERPRINT, cursor, 1) == ["3"]
    with pytest.raises(cursors.CursorError):
        cursors.decode(cursors.secret_for(""), FINGERPRINT, cursor, 1)
