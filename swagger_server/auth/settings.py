"""The ``[AUTH]`` and ``[API_KEYS]`` settings: a frozen shape and parsers from raw strings.

Each ``parse_*`` function takes the raw text of one key and returns the value or raises
``ValueError(why)``, like the parsers in config.py, so they plug into its ``_KEYS`` table.
:func:`parse_auth_settings` builds the whole object from the two sections and checks the keys
against each other (which algorithms fit which key material).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The development secret, used ONLY with the embedded demo database (scripts/serve without a
# configured database) and as the default of ``python -m swagger_server.keys token``. It is in
# the source code, so anyone can sign tokens with it: never configure it for a real database.
DEV_JWT_SECRET = "pgrest-development-secret-embedded-demo-only-0001"  # noqa: S105

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)
# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_CANONICAL = {name.upper(): name for name in HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS}

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# A role-claim path: keys separated by dots, a key in double quotes may hold dots
# ("https://example.com/claims".role), each key optionally followed by array indexes ([0]).
_PATH_STEP = re.compile(r'(?:"([^"]+)"|([^."\[\]]+))((?:\[\d+\])*)')
_INDEX = re.compile(r"\[(\d+)\]")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

ClaimPath = tuple[str | int, ...]


@dataclass(frozen=True)
class ApiKey:
    name: str  # for logs and request.jwt.claims; never the key itself
    digest: str = field(repr=False)  # lower-case SHA-256 hex of the key
    role: str = ""


@dataclass(frozen=True)
class AuthSettings:
    jwt_secret: str = field(default="", repr=False)
    jwt_public_keys: Path | None = None  # a PEM public key or a JWKS / JWK document
    jwt_algorithms: tuple[str, ...] = ()  # () = HS256 with a secret; required with public keys
    jwt_audience: str = ""  # "" = any audience is accepted (PostgREST's rule)
    jwt_issuer: str = ""  # "" = not checked
    jwt_role_claim: ClaimPath = ("role",)
    jwt_leeway: float = 30.0  # seconds of clock skew allowed on exp, nbf, iat (PostgREST: 30)
    require_exp: bool = True
    anonymous_role: str = ""  # "" = a request without credentials is refused with 401
    admin_roles: tuple[str, ...] = ()
    api_keys: tuple[ApiKey, ...] = ()

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_keys)

    @property
    def enabled(self) -> bool:
        """Any credentials configured: the admin surface then needs an admin role."""
        return self.jwt_enabled or bool(self.api_keys)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The effective allow-list."""
        if self.jwt_algorithms:
            return self.jwt_algorithms
        return ("HS256",) if self.jwt_secret else ()


# --- one parser per key ---

def parse_algorithms(raw: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not names:
        raise ValueError("must name at least one algorithm")
    result = []
    for name in names:
        canonical = _CANONICAL.get(name.upper())
        if canonical is None:
            supported = ", ".join(HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS)
            raise ValueError(f"unsupported algorithm {name!r} (supported: {supported})")
        result.append(canonical)
    return tuple(dict.fromkeys(result))


def parse_role_claim(raw: str) -> ClaimPath:
    """``role``, ``app_metadata.role``, ``realm_access.roles[0]``,
    ``"https://example.com/claims".role`` -> a tuple of keys and indexes."""
    text = raw.strip()
    steps: list[str | int] = []
    pos = 0
    while True:
        match = _PATH_STEP.match(text, pos)
        if match is None:
            raise ValueError(f"not a claim path such as 'role' or 'app_metadata.role': {raw!r}")
        steps.append(match.group(1) or match.group(2).strip())
        steps.extend(int(index) for index in _INDEX.findall(match.group(3)))
        pos = match.end()
        if pos == len(text):
            return tuple(steps)
        if text[pos] != ".":
            raise ValueError(f"not a claim path such as 'role' or 'app_metadata.role': {raw!r}")
        pos += 1


def parse_leeway(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    if not 0 <= value <= 3600:
        raise ValueError(f"must be between 0 and 3600 seconds, got {raw!r}")
    return value


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


MAX_ROLE_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL would silently truncate a longer name


def is_role_name(value: str) -> bool:
    """Could be a PostgreSQL role name: 1 to 63 bytes, no control characters (NUL cannot even
    be sent), no surrounding space. Whether it exists and may be used is the catalog's
    business (context.RoleCatalog), checked per request."""
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): no UTF-8, no role name
        return False
    return (
        0 < size <= MAX_ROLE_BYTES
        and value == value.strip()
        and not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
    )


def parse_role(raw: str) -> str:
    value = raw.strip()
    if not is_role_name(value):
        raise ValueError(f"expected a role name (1 to {MAX_ROLE_BYTES} bytes), got {raw!r}")
    return value


def parse_roles(raw: str) -> tuple[str, ...]:
    return tuple(parse_role(part) for part in raw.split(",") if part.strip())


def parse_path(raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    if not raw.strip():
        raise ValueError("expected the path of a PEM or JWKS file")
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def parse_api_key(name: str, raw: str) -> ApiKey:
    """``[API_KEYS] <name> = <sha256 hex> <role>``."""
    if not _NAME.fullmatch(name.strip()):
        raise ValueError(f"API key name {name!r}: use letters, digits, '_', '-', '.'")
    parts = raw.split()
    if len(parts) != 2 or not _SHA256_HEX.fullmatch(parts[0]):
        # Do not echo the value: someone may have pasted the key itself instead of its hash.
        raise ValueError(
            "expected '<sha256 hex of the key> <role>' "
            "(python -m swagger_server.keys new <name> <role> prints the line)"
        )
    return ApiKey(name=name.strip(), digest=parts[0].lower(), role=parse_role(parts[1]))


# [AUTH] KEY -> (AuthSettings attribute, parser): the rows for config.py's _KEYS table.
AUTH_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "JWT_SECRET": ("jwt_secret", lambda raw: raw.strip()),
    "JWT_PUBLIC_KEYS": ("jwt_public_keys", parse_path),
    "JWT_ALGORITHMS": ("jwt_algorithms", parse_algorithms),
    "JWT_AUDIENCE": ("jwt_audience", lambda raw: raw.strip()),
    "JWT_ISSUER": ("jwt_issuer", lambda raw: raw.strip()),
    "JWT_ROLE_CLAIM": ("jwt_role_claim", parse_role_claim),
    "JWT_LEEWAY": ("jwt_leeway", parse_leeway),
    "JWT_REQUIRE_EXP": ("require_exp", parse_bool),
    "ANONYMOUS_ROLE": ("anonymous_role", lambda raw: parse_role(raw) if raw.strip() else ""),
    "ADMIN_ROLES": ("admin_roles", parse_roles),
}


def parse_auth_settings(
    auth: Mapping[str, str], api_keys: Mapping[str, str] | None = None
) -> AuthSettings:
    """The whole object from the raw ``[AUTH]`` and ``[API_KEYS]`` sections. Raises
    ``ValueError("[AUTH] KEY: why")`` for the first bad key."""
    values: dict[str, object] = {}
    for key, raw in auth.items():
        if key.upper() not in AUTH_KEYS:
            raise ValueError(f"[AUTH] {key}: unknown key")
        attr, parse = AUTH_KEYS[key.upper()]
        try:
            values[attr] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"[AUTH] {key.upper()}: {exc}") from None
    keys = []
    for name, raw in (api_keys or {}).items():
        try:
            keys.append(parse_api_key(name, raw))
        except ValueError as exc:
            raise ValueError(f"[API_KEYS] {name}: {exc}") from None
    settings = AuthSettings(**values, api_keys=tuple(keys))  # type: ignore[arg-type]
    check_auth_settings(settings)
    return settings


def check_auth_settings(settings: AuthSettings) -> None:
    """The keys that must agree with each other. One kind of key material only: an HMAC secret
    and public keys together would invite the HS/RS confusion (a token "signed" with the public
    key as HMAC secret), so the two are exclusive and each admits only its own algorithms."""
    if settings.jwt_secret and settings.jwt_public_keys:
        raise ValueError(
            "[AUTH] JWT_SECRET: set either JWT_SECRET (HS*) or JWT_PUBLIC_KEYS "
            "(RS*, PS*, ES*, EdDSA), not both"
        )
    algorithms = settings.algorithms
    if settings.jwt_secret:
        wrong = [alg for alg in algorithms if alg not in HMAC_ALGORITHMS]
        if wrong:
            raise ValueError(
                f"[AUTH] JWT_ALGORITHMS: {', '.join(wrong)} need JWT_PUBLIC_KEYS; "
                "with JWT_SECRET only HS256, HS384, HS512 apply"
            )
        if settings.jwt_secret.lstrip().startswith(("-----BEGIN", "{")):
            raise ValueError(
                "[AUTH] JWT_SECRET: looks like a PEM or JWK key; public keys go in "
                "JWT_PUBLIC_KEYS (a public key used as HMAC secret is the HS/RS confusion)"
            )
        need = max(_HMAC_MIN_BYTES[alg] for alg in algorithms)
        if len(settings.jwt_secret.encode()) < need:
            raise ValueError(
                f"[AUTH] JWT_SECRET: must be at least {need} bytes for "
                f"{', '.join(algorithms)} (RFC 7518 3.2)"
            )
    elif settings.jwt_public_keys:
        if not settings.jwt_algorithms:
            raise ValueError(
                "[AUTH] JWT_ALGORITHMS: required with JWT_PUBLIC_KEYS, e.g. RS256 or ES256"
            )
        wrong = [alg for alg in algorithms if alg not in PUBLIC_KEY_ALGORITHMS]
        if wrong:
            raise ValueError(
                f"[AUTH] JWT_ALGORITHMS: {', '.join(wrong)} need JWT_SECRET; "
                "with JWT_PUBLIC_KEYS only RS*, PS*, ES*, EdDSA apply"
            )
    elif settings.jwt_algorithms:
        raise ValueError("[AUTH] JWT_ALGORITHMS: set JWT_SECRET or JWT_PUBLIC_KEYS as well")
    names = [key.name.lower() for key in settings.api_keys]
    if len(set(names)) != len(names):
        raise ValueError("[API_KEYS]: two keys with the same name")
    digests = [key.digest for key in settings.api_keys]
    if len(set(digests)) != len(digests):
        raise ValueError("[API_KEYS]: two names share the same key hash")
