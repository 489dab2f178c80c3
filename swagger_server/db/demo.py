"""Demo data for the embedded database: a small shop (``sql/demo.sql``), loaded once.

Only :func:`swagger_server.db.embedded.start_if_needed` calls it (:func:`seed_embedded`), after
starting the embedded server: a configured database (``DATABASE_URL``, ``[POSTGRES]``) is never
altered.

The tables live in the ``public`` schema, which ``[API] SCHEMAS`` exposes by default, so a fresh
checkout answers the README's examples with no configuration. Seeding is idempotent: when any of
the demo's names already exists in ``public`` nothing is done (nor is anything of the user's
ever replaced), except that demo data of an older version (every name present is a demo table
whose comment names an older version) is dropped and loaded anew, so an existing embedded data
directory gets the current schema. ``python -m swagger_server.db.demo DSN`` loads it into
another database on purpose.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import psycopg2

log = logging.getLogger(__name__)

SQL_FILE = Path(__file__).resolve().parent / "sql" / "demo.sql"
# Roles web_anon and web_user, their grants and the RLS policies: applied on every seed (also to
# demo data loaded by an older version), idempotent.
ROLES_FILE = SQL_FILE.with_name("demo_roles.sql")
ROLES = ("web_anon", "web_user")
POLICIES = ("own_orders", "own_order_items", "own_addresses")
TABLES = ("customers", "addresses", "products", "tags", "product_tags", "orders", "order_items",
          "product_sales")
VIEWS = ("product_sales",)
TYPES = ("order_status",)
# Every demo relation's COMMENT: "pgrest demo data" marks the demo's own, VERSION this one.
MARK = "pgrest demo data"
VERSION = "pgrest demo data v2"
_LOCK_KEY = 0x70677265  # pg_advisory_xact_lock key: two starters never seed at once


def seed(dsn: str, schema: str = "public") -> bool:
    """Load the demo into ``schema`` unless one of its names exists there; True if loaded."""
    started = time.monotonic()
    with contextlib.closing(psycopg2.connect(
        dsn, application_name="pgrest demo seed",
        options="-c default_transaction_read_only=off -c statement_timeout=0",
    )) as conn, conn, conn.cursor() as cur:  # one transaction: all of the demo or none of it
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (schema, list(TABLES)),
        )
        relations = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = %s AND t.typname = ANY(%s)",
            (schema, list(TYPES)),
        )
        types = cur.fetchone()[0]
        if (relations or types) and _older_demo(cur, schema):
            _drop_older_demo(cur, schema)
            log.warning("demo data of an older version in %s: dropped, loading the current one",
                        schema)
            relations = types = 0
        if relations or types:
            if relations == len(TABLES) and not _has_roles(cur, schema):
                _add_roles(cur, schema)  # demo data of an older version: roles added
                log.warning("demo roles %s added to %s", ", ".join(ROLES), schema)
            else:
                log.info("demo data: %s already holds demo names; left as it is", schema)
            return False
        cur.execute("CREATE SCHEMA IF NOT EXISTS " + _quote(cur, schema))
        cur.execute("SET LOCAL search_path = " + _quote(cur, schema))
        cur.execute(SQL_FILE.read_text(encoding="utf-8"))
        _add_roles(cur, schema)
        for table in (t for t in TABLES if t not in VIEWS):
            cur.execute("ANALYZE " + _quote(cur, table))
    log.warning("demo data loaded into %s in %.1fs (tables %s)", schema,
                time.monotonic() - started, ", ".join(TABLES))
    return True


def _older_demo(cur: psycopg2.extensions.cursor, schema: str) -> bool:
    """Every demo name present is a demo relation (its comment says so), not of this version."""
    cur.execute(
        "SELECT c.relname::text, coalesce(obj_description(c.oid, 'pg_class'), '') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s)", (schema, list(TABLES)))
    found = cur.fetchall()
    return bool(found) and all(comment.startswith(MARK) for _, comment in found) \
        and any(not comment.startswith(VERSION + " ") for _, comment in found)


def _drop_older_demo(cur: psycopg2.extensions.cursor, schema: str) -> None:
    cur.execute("SET LOCAL search_path = " + _quote(cur, schema))
    for view in VIEWS:
        cur.execute("DROP VIEW IF EXISTS " + _quote(cur, view))
    tables = ", ".join(_quote(cur, t) for t in TABLES if t not in VIEWS)
    cur.execute(f"DROP TABLE IF EXISTS {tables}")
    for name in TYPES:
        cur.execute("DROP TYPE IF EXISTS " + _quote(cur, name))


def _has_roles(cur: psycopg2.extensions.cursor, schema: str) -> bool:
    """Demo roles and policies in place for ``schema`` (roles are the server's, policies the
    database's: a demo loaded by an older version has neither)."""
    cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s) "
                "AND pg_has_role(current_user, rolname, 'MEMBER')", (list(ROLES),))
    roles = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM pg_policies WHERE schemaname = %s AND policyname = ANY(%s)",
                (schema, list(POLICIES)))
    return roles == len(ROLES) and cur.fetchone()[0] == len(POLICIES)


def _add_roles(cur: psycopg2.extensions.cursor, schema: str) -> None:
    cur.execute("SET LOCAL search_path = " + _quote(cur, schema))
    cur.execute(ROLES_FILE.read_text(encoding="utf-8").replace("SCHEMA public",
                                                                "SCHEMA " + _quote(cur, schema)))


def seed_embedded(dsn: str) -> bool:
    """:func:`seed` for the embedded server's start: a failure is logged, never raised."""
    try:
        return seed(dsn)
    except (psycopg2.Error, OSError) as exc:
        log.error("demo data could not be loaded (the service runs without it): %s", exc)
        return False


def _quote(cur: psycopg2.extensions.cursor, name: str) -> str:
    return psycopg2.extensions.quote_ident(name, cur)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if len(sys.argv) != 2:
        sys.exit("usage: python -m swagger_server.db.demo DSN")
    print("loaded" if seed(sys.argv[1]) else "already present")
