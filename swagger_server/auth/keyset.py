"""The public keys that verify asymmetric JWTs, read from ``[AUTH] JWT_PUBLIC_KEYS``: a PEM public
key, a single JWK, or a JWKS document (``{"keys": [...]}``) whose keys are told apart by ``kid``.

Only public keys are accepted: a symmetric (``oct``) JWK or a private key in this file is refused,
so that no HMAC secret can come in through the asymmetric path (the HS/RS confusion).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PublicKeyObject = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

MIN_RSA_BITS = 2048  # NIST SP 800-131A; smaller keys are factorable with modest means
_EC_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_FROM_JWK = {"RSA": RSAAlgorithm.from_jwk, "EC": ECAlgorithm.from_jwk, "OKP": OKPAlgorithm.from_jwk}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


class KeyFileError(ValueError):
    """The public keys file is missing, unreadable or holds something other than public keys.
    The message names the file and the key's position, never key material."""


@dataclass(frozen=True)
class PublicKey:
    kid: str | None
    key: PublicKeyObject
    algorithms: frozenset[str]  # the JWS algorithms this key may verify

    def fits(self, algorithm: str) -> bool:
        return algorithm in self.algorithms


def _algorithms_for(key: Any, declared: str | None) -> frozenset[str]:
    """What a key of this type can verify, narrowed to the JWK's ``alg`` if it declares one."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} required")
        fitting = _RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_CURVES.get(key.curve.name)
        if alg is None:
            raise ValueError(f"unsupported elliptic curve {key.curve.name}")
        fitting = frozenset({alg})
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        fitting = frozenset({"EdDSA"})
    else:
        raise ValueError("not a public key (RSA, EC or Ed25519/Ed448 expected)")
    if declared is not None:
        if declared not in fitting:
            raise ValueError(f"its alg {declared!r} does not fit its key type")
        return frozenset({declared})
    return fitting


def _from_jwk(jwk: Any) -> PublicKey | None:
    """One JWK as a PublicKey; None for a key not meant for signatures (``use`` = ``enc``)."""
    if not isinstance(jwk, dict):
        raise ValueError("not a JSON object")
    if jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    if kty == "oct":
        raise ValueError("a symmetric (oct) key: HMAC secrets belong in JWT_SECRET")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise ValueError("a private key: publish only the public part")
    if kty not in _FROM_JWK:
        raise ValueError(f"unsupported kty {kty!r} (RSA, EC or OKP expected)")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("its kid is not a string")
    try:
        key = _FROM_JWK[kty](jwk)
    except Exception:  # PyJWT's messages may quote the JWK: keep them out
        raise ValueError(f"not a valid {kty} public key") from None
    return PublicKey(kid=kid, key=key, algorithms=_algorithms_for(key, jwk.get("alg")))


def _from_pem(text: str) -> PublicKey:
    try:
        key = load_pem_public_key(text.encode())
    except ValueError:
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    return PublicKey(kid=None, key=key, algorithms=_algorithms_for(key, None))  # type: ignore[arg-type]


@dataclass(frozen=True)
class FileStamp:
    """What tells a rewritten file from the one we read (mtime alone has coarse resolution)."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


class KeySet:
    """The keys of one file, by ``kid``. Immutable: a reload builds a new KeySet."""

    def __init__(self, keys: list[PublicKey], stamp: FileStamp | None = None) -> None:
        if not keys:
            raise KeyFileError("no signature keys")
        self.keys = tuple(keys)
        self.stamp = stamp
        self._by_kid = {key.kid: key for key in keys if key.kid is not None}

    @classmethod
    def load(cls, path: Path) -> KeySet:
        stamp = FileStamp.of(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: cannot read: {type(exc).__name__}") from None
        return cls(_parse(path, text), stamp)

    def candidates(self, kid: str | None, algorithm: str) -> list[PublicKey]:
        """The keys to try for a token: the one named by ``kid`` (none if unknown), or, for a
        token without ``kid``, every key that fits the algorithm (as PostgREST does)."""
        if kid is not None:
            key = self._by_kid.get(kid)
            return [key] if key is not None and key.fits(algorithm) else []
        return [key for key in self.keys if key.fits(algorithm)]

    def has_kid(self, kid: str) -> bool:
        return kid in self._by_kid

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _parse(path: Path, text: str) -> list[PublicKey]:
    stripped = text.lstrip()
    if stripped.startswith("-----BEGIN"):
        try:
            return [_from_pem(stripped)]
        except ValueError as exc:
            raise KeyFileError(f"{path}: {exc}") from None
    try:
        document = json.loads(text)
    except ValueError:
        raise KeyFileError(
            f"{path}: neither a PEM public key nor a JSON (JWK/JWKS) document"
        ) from None
    if isinstance(document, dict) and "keys" in document:
        jwks = document["keys"]
        if not isinstance(jwks, list):
            raise KeyFileError(f"{path}: 'keys' must be a list of JWKs")
    else:
        jwks = [document]
    keys: list[PublicKey] = []
    kids: set[str] = set()
    for position, jwk in enumerate(jwks):
        try:
            key = _from_jwk(jwk)
        except ValueError as exc:
            raise KeyFileError(f"{path}: key #{position + 1}: {exc}") from None
        if key is None:
            continue
        if key.kid is not None:
            if key.kid in kids:
                raise KeyFileError(f"{path}: key #{position + 1}: kid {key.kid!r} used twice")
            kids.add(key.kid)
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{path}: no signature keys (use 'sig') in the document")
    return keys
