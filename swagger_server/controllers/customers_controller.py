"""``GET /customers/{id}/summary``: the example of a hand-written endpoint (README, "Add an
endpoint"). It reads the demo data (customers, orders) of the embedded database."""

from __future__ import annotations

import psycopg2.errors
from flask import Response, jsonify

from swagger_server import errors
from swagger_server.db import get_db
from swagger_server.errors import ApiProblem

SUMMARY_SQL = """
    SELECT c.name, count(o.id), coalesce(sum(o.total), 0), max(o.ordered_at)
    FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
    WHERE c.id = %s
    GROUP BY c.id
"""


def summary(id: str) -> Response:
    # Connexion has checked id against the spec's pattern (digits) already: else a 400.
    customer_id = int(id)
    with get_db().cursor() as cur:
        try:
            cur.execute(SUMMARY_SQL, (customer_id,))  # values only as bound parameters
        except psycopg2.errors.UndefinedTable:
            raise ApiProblem(404, "Not Found", "This database has no demo tables (customers, "
                             "orders); they come with the embedded database.",
                             type=errors.NOT_FOUND) from None
        row = cur.fetchone()
    if row is None:
        raise ApiProblem(404, "Not Found", f"No customer with id {customer_id}",
                         type=errors.NOT_FOUND)
    name, orders, total_spent, last_order_at = row
    # total_spent is a Decimal: jsonify writes it with every digit (json_provider.py).
    return jsonify(id=customer_id, name=name, orders=orders, total_spent=total_spent,
                   last_order_at=last_order_at)
