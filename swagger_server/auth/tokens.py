"""Bearer tokens (JWT, RFC 7519) verified with PyJWT against the configured keys.

The algorithm is never taken from the token: the header's ``alg`` must be in the configured
allow-list, and the key material decides the family (an HMAC secret verifies only HS*, public
keys only RS*/PS*/ES*/EdDSA; settings refuse both together). So ``alg: none`` and the HS/RS
confusion (an HS256 token whose "secret" is the RSA public key) are refused before any key is
touched. Refusals raise :class:`InvalidToken` with a fixed description that never holds the
token.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from swagger_server.auth.cache import TokenCache
from swagger_server.auth.errors import InvalidToken
from swagger_server.auth.identity import Identity
from swagger_server.auth.keyset import FileStamp, KeyFileError, KeySet, PublicKey
from swagger_server.auth.settings import AuthSettings, check_auth_settings, is_role_name

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 16384  # far above any real token; bounds the work a junk header can cause
NO_EXP_CACHE_SECONDS = 300.0  # how long a token without exp (if allowed) stays cached
# How often a verification looks (one os.stat) whether JWT_PUBLIC_KEYS changed: a key removed
# from the file stops verifying, cached tokens included, within this time.
KEY_FILE_CHECK_SECONDS = 2.0

# PyJWT's exceptions -> our descriptions. Subclasses first (InvalidSignatureError is a
# DecodeError). PyJWT's own messages are not passed on: fixed text only.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.ImmatureSignatureError, "token not yet valid (nbf or iat in the future)"),
    (jwt_errors.InvalidAudienceError, "wrong audience"),
    (jwt_errors.InvalidIssuerError, "wrong issuer"),
    (jwt_errors.InvalidSignatureError, "bad signature"),
    (jwt_errors.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt_errors.InvalidSubjectError, "the sub claim must be a string"),
    (jwt_errors.InvalidIssuedAtError, "the iat claim must be a number"),
    (jwt_errors.InvalidJTIError, "the jti claim must be a string"),
    (jwt_errors.DecodeError, "malformed token"),
    (jwt_errors.InvalidKeyError, "the key does not fit the token's algorithm"),
)
_MISSING = object()


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        # exc.claim is one of the names we asked for (exp, aud, iss), not token data.
        return f"the {exc.claim} claim is required"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid token"


def plain_json(value: Any) -> bool:
    """Can PostgreSQL's json take these claims? Python's json reads NaN and Infinity, "\\u0000"
    and lone surrogates ("\\ud800"); PostgreSQL refuses all of them (the RLS policy's ``::json``
    would fail: a 500 for the signer's odd token). Iterative: nesting is bounded only by the
    token's size."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not _plain_text(item):
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def _plain_text(text: str) -> bool:
    return "\x00" not in text and not _SURROGATES.search(text)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenVerifier:
    """Verifies bearer tokens and returns who is asking; thread-safe, one per worker."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        cache_size: int = 1000,
        clock: Callable[[], float] = time.time,
        key_check_seconds: float = KEY_FILE_CHECK_SECONDS,
    ) -> None:
        check_auth_settings(settings)  # also for settings built without parse_auth_settings
        if not settings.jwt_enabled:
            raise ValueError("[AUTH]: neither JWT_SECRET nor JWT_PUBLIC_KEYS is set")
        self._settings = settings
        self._algorithms = frozenset(settings.algorithms)
        self._secret = settings.jwt_secret.encode() if settings.jwt_secret else None
        self._path = settings.jwt_public_keys
        self._keys: KeySet | None = KeySet.load(self._path) if self._path else None
        self._failed_stamp: FileStamp | None = None
        self._reload_lock = threading.Lock()
        self._key_check_seconds = key_check_seconds
        self._next_key_check = time.monotonic() + key_check_seconds
        self._clock = clock
        self.cache = TokenCache(cache_size, clock)
        # Tokens that reached signature verification (cache misses); for metrics, not exact
        # under concurrency (an unlocked +=).
        self.signature_checks = 0
        self._options: dict[str, Any] = {
            "require": ["exp"] if settings.require_exp else [],
            # No JWT_AUDIENCE: any aud is accepted, like PostgREST (PyJWT would refuse all).
            "verify_aud": bool(settings.jwt_audience),
            "verify_iss": bool(settings.jwt_issuer),
        }

    # --- the one public operation ---

    def verify(self, token: str) -> Identity:
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise InvalidToken("malformed token")
        if token.count(".") != 2:
            raise InvalidToken("malformed token: expected header.payload.signature")
        if self._path is not None:
            self._check_key_file()  # before the cache: a revoked key's tokens are cached too
        digest = _token_digest(token)
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        generation = self.cache.generation
        claims = self._decode(token)
        role = self._role(claims)  # first: its own, more telling refusal
        if not plain_json(claims):
            raise InvalidToken(
                "malformed token: a claim holds NaN, Infinity, NUL or a lone surrogate")
        identity = Identity(role=role, claims=claims, source="jwt")
        self.cache.put(digest, identity, self._cache_until(claims), generation)
        return identity

    # --- key rotation ---

    def reload_keys(self) -> None:
        """Read JWT_PUBLIC_KEYS again (new kid, removed kid) and forget cached tokens, which
        may have been verified by a key now gone. Raises KeyFileError and keeps the old keys
        if the file is not valid."""
        if self._path is None:
            return
        with self._reload_lock:
            keys = KeySet.load(self._path)
            self._keys = keys
            self._failed_stamp = None
            self.cache.clear()
        log.info("JWT public keys reloaded from %s: %d key(s)", self._path, len(keys))

    def _check_key_file(self) -> None:
        """Revocation: at most every ``key_check_seconds``, reload the keys file if it changed
        (which clears the token cache). Unlocked: two threads may both stat, harmlessly."""
        now = time.monotonic()
        if now < self._next_key_check:
            return
        self._next_key_check = now + self._key_check_seconds
        self._reload_if_changed()

    def _reload_if_changed(self) -> bool:
        """On an unknown kid, and every few seconds (:meth:`_check_key_file`): if the file
        changed since we read it, read it again. A file that fails to parse (caught
        half-written) is not retried until it changes once more; a missing one is ignored."""
        assert self._path is not None and self._keys is not None
        stamp = FileStamp.of(self._path)
        if stamp is None or stamp == self._keys.stamp or stamp == self._failed_stamp:
            return False
        try:
            self.reload_keys()
        except KeyFileError as exc:
            self._failed_stamp = stamp
            log.warning("JWT public keys not reloaded, keeping the old ones: %s", exc)
            return False
        return True

    # --- steps ---

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise InvalidToken("malformed token header")
        if alg.lower() == "none":
            raise InvalidToken("unsigned token (alg none) refused")
        if alg not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            raise InvalidToken(f"algorithm not allowed (allowed: {allowed})")
        keys: list[Any] = (
            [self._secret] if self._secret is not None else self._public_keys(alg, kid)
        )
        self.signature_checks += 1
        last: Exception | None = None
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key=key.key if isinstance(key, PublicKey) else key,
                    algorithms=[alg],  # the allow-listed one, checked above
                    options=self._options,  # type: ignore[arg-type]
                    audience=self._settings.jwt_audience or None,
                    issuer=self._settings.jwt_issuer or None,
                    leeway=self._settings.jwt_leeway,
                )
            except jwt.InvalidSignatureError as exc:
                last = exc  # a token without kid: try the next key that fits
            except jwt.PyJWTError as exc:
                raise InvalidToken(_reason(exc)) from None
        raise InvalidToken(_reason(last) if last else "bad signature")

    def _public_keys(self, alg: str, kid: str | None) -> list[PublicKey]:
        keys = self._keys
        assert keys is not None
        if kid is not None and not keys.has_kid(kid) and self._reload_if_changed():
            keys = self._keys
            assert keys is not None
        if kid is not None and not keys.has_kid(kid):
            raise InvalidToken("unknown key id (kid)")
        candidates = keys.candidates(kid, alg)
        if not candidates:
            raise InvalidToken("no configured key fits the token's algorithm")
        return candidates

    def _role(self, claims: Mapping[str, Any]) -> str:
        value: Any = claims
        for step in self._settings.jwt_role_claim:
            if isinstance(step, int):
                ok = isinstance(value, list) and step < len(value)
            else:
                ok = isinstance(value, dict) and step in value
            value = value[step] if ok else _MISSING
            if value is _MISSING:
                break
        if value is _MISSING or value is None:
            # PostgREST's rule: a valid token without a role claim runs as the anonymous role.
            if self._settings.anonymous_role:
                return self._settings.anonymous_role
            raise InvalidToken("the token has no role claim")
        if not isinstance(value, str) or not is_role_name(value):
            raise InvalidToken("the role claim is not a role name")
        return value

    def _cache_until(self, claims: Mapping[str, Any]) -> float:
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            return float(exp)
        return self._clock() + NO_EXP_CACHE_SECONDS
