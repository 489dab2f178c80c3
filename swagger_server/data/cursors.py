"""Opaque keyset cursors: the last row's order-key values, bound to a table and order, signed.

A cursor is ``base64url(payload) "." base64url(HMAC-SHA256(secret, payload)[:16])`` where the
payload is compact JSON ``{"f": fingerprint, "k": [values as PostgreSQL text or null]}``. The
fingerprint hashes the relation, the resolved order (columns, types, directions, NULLS placement,
tiebreaker included), so a cursor from another table or order is refused, as is any edited byte.
Filters and ``select`` are not part of it: a cursor means "continue after this row".

The secret is ``[API] CURSOR_SECRET``. When empty, it is 32 random bytes made once per start:
the gunicorn master makes it before it forks (:func:`generated_secret`), so all its workers share
it; cursors then do not survive a restart. It is never derived from anything guessable: a key
derived from the DSN let anyone holding a cursor test password guesses offline. Cursors are
integrity-checked, not encrypted: their values are the last row's key, which the client has just
received anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Sequence

_SIGNATURE_BYTES = 16
_MAX_CURSOR_CHARS = 16384  # what decode() accepts
# What the API issues at most: a longer cursor (an order on long values) would make URLs that
# proxies refuse (many stop at about 8 KB); the page then links to the next one by offset.
MAX_ISSUED_CHARS = 4096


class CursorError(ValueError):
    """The cursor is garbled, tampered with or belongs to another table or order."""


RANDOM_KEY_WARNING = (
    "[API] CURSOR_SECRET is not set: pagination cursors are signed with a random key made at "
    "this start, so cursors issued before a restart will be refused (400) after it; set "
    "API_CURSOR_SECRET to a long random string to keep them valid"
)

_generated: bytes | None = None
_generated_lock = threading.Lock()


def generated_secret() -> bytes:
    """This process's random key, made on first use; a forked worker inherits its master's."""
    global _generated
    with _generated_lock:
        if _generated is None:
            _generated = secrets.token_bytes(32)
        return _generated


def secret_for(configured: str) -> bytes:
    """The signing key: ``CURSOR_SECRET`` when set, else this start's random key."""
    return configured.encode("utf-8") if configured else generated_secret()


def fingerprint(parts: Sequence[object]) -> str:
    text = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: bytes) -> bytes:
    # hmac.digest: the same HMAC in one C call (no HMAC object per cursor).
    return hmac.digest(secret, payload, "sha256")[:_SIGNATURE_BYTES]


def encode(secret: bytes, fp: str, values: Sequence[str | None]) -> str:
    payload = json.dumps({"f": fp, "k": list(values)}, separators=(",", ":")).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_sign(secret, payload))}"


def decode(secret: bytes, fp: str, token: str, width: int) -> list[str | None]:
    """The key values of ``token``; raises :class:`CursorError` for anything but our own."""
    if len(token) > _MAX_CURSOR_CHARS or token.count(".") != 1:
        raise CursorError("the cursor is malformed")
    body, signature = token.split(".")
    try:
        payload = _unb64(body)
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        raise CursorError("the cursor is malformed") from None
    if not hmac.compare_digest(given, _sign(secret, payload)):
        raise CursorError("the cursor is invalid (altered, or issued by another deployment)")
    try:
        data = json.loads(payload)
    except ValueError:
        raise CursorError("the cursor is malformed") from None
    if not isinstance(data, dict) or data.get("f") != fp:
        raise CursorError(
            "the cursor belongs to another table or order; "
            "pass the same order as the request that returned it"
        )
    values = data.get("k")
    if (
        not isinstance(values, list)
        or len(values) != width
        or not all(v is None or isinstance(v, str) for v in values)
    ):
        raise CursorError("the cursor is malformed")
    return values
