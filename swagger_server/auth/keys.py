"""API keys for machine clients (``X-API-Key``). The configuration holds only each key's
SHA-256, its name and its role; a presented key is hashed and compared with every configured
hash in constant time, all of them, with no early exit, so timing tells neither whether nor
which key matched. (Comparing hashes also means an attacker cannot steer the compared bytes.)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from swagger_server.auth.errors import InvalidApiKey
from swagger_server.auth.identity import Identity
from swagger_server.auth.settings import ApiKey, parse_role

MAX_KEY_CHARS = 512
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def new_api_key() -> str:
    """A new random key: 32 bytes from the OS CSPRNG, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """What the configuration stores: the key's SHA-256, lower-case hex. A plain hash suffices
    (no salt, no slow KDF): the keys are 256 random bits, not guessable passwords."""
    return hashlib.sha256(key.encode()).hexdigest()


def config_line(name: str, key: str, role: str) -> str:
    """The ``[API_KEYS]`` line for a key."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"key name {name!r}: use letters, digits, '_', '-', '.'")
    role = parse_role(role)
    if any(ch.isspace() for ch in role):
        raise ValueError(f"role {role!r}: no spaces in a role name used with API keys")
    return f"{name} = {hash_api_key(key)} {role}"


class ApiKeyVerifier:
    """Who is asking, from an ``X-API-Key`` header value."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple((bytes.fromhex(key.digest), key) for key in keys)

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, presented: str) -> Identity:
        if not isinstance(presented, str) or not 0 < len(presented) <= MAX_KEY_CHARS:
            raise InvalidApiKey("malformed API key")
        digest = hashlib.sha256(presented.encode()).digest()
        found: ApiKey | None = None
        for expected, key in self._keys:  # every key, always: no early exit
            if hmac.compare_digest(digest, expected):
                found = key
        if found is None:
            raise InvalidApiKey("unknown API key")
        return Identity(
            role=found.role, claims={"role": found.role, "api_key": found.name}, source="api_key"
        )
