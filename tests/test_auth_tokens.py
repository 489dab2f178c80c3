"""Bearer tokens: every algorithm family with keys generated here, every refusal of issue #7,
JWKS with kid and rotation, the verified-token cache, settings parsing, the challenge header.

No database: verification is pure computation (the role check against the catalog is in
test_auth_context.py, on real PostgreSQL).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from swagger_server.auth import (
    DEV_JWT_SECRET,
    AuthSettings,
    CredentialsRequired,
    InvalidToken,
    KeyFileError,
    TokenVerifier,
    bearer_challenge,
    parse_auth_settings,
)
from swagger_server.auth.settings import parse_role_claim
from tests.threads import run_concurrently

SECRET = "a-test-secret-that-is-long-enough-for-hs512-0123456789abcdefghijk"  # 66 bytes


# --- keys and tokens made here ---

@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def jwk(private_key: Any, kid: str | None = None, **extra: str) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        data["kid"] = kid
    return {**data, **extra}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "42", "role": "web_user", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, alg: str = "HS256", kid: str | None = None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token PyJWT would refuse to make (alg none, a PEM as HMAC secret)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    mac = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def write(tmp_path: Path, content: str | dict[str, Any], name: str = "keys") -> Path:
    path = tmp_path / name
    text = content if isinstance(content, str) else json.dumps(content)
    # Replace, as a deployment would: readers never see a half-written file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def hmac_verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(jwt_secret=SECRET, **settings))


def key_verifier(path: Path, algorithms: tuple[str, ...], **settings: Any) -> TokenVerifier:
    return TokenVerifier(
        AuthSettings(jwt_public_keys=path, jwt_algorithms=algorithms, **settings)
    )


def refused(verifier: TokenVerifier, token: str) -> str:
    """The description of the refusal; asserts that it and the challenge never hold the token
    or any of its parts."""
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    description = info.value.description
    for text in (description, info.value.challenge, str(info.value)):
        for part in [p for p in [token, *token.split(".")] if len(p) > 8]:
            assert part not in text
    assert info.value.challenge.startswith('Bearer error="invalid_token", error_description="')
    return description


@pytest.fixture
def count_signature_checks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Counts PyJWT's real signature verifications (not our own counter)."""
    calls = [0]
    original = jwt.api_jws.PyJWS._verify_signature

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jwt.api_jws.PyJWS, "_verify_signature", counting)
    return lambda: calls[0]


# --- accepted: each algorithm family ---

@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms_verify_with_the_secret(alg: str) -> None:
    verifier = hmac_verifier(jwt_algorithms=(alg,))
    identity = verifier.verify(sign(SECRET, alg))
    assert identity.role == "web_user"
    assert identity.source == "jwt"
    assert identity.claims["sub"] == "42"


@pytest.mark.parametrize("form", ["pem", "jwks"])
@pytest.mark.parametrize(
    ("alg", "key_fixture"),
    [
        ("RS256", "rsa_key"), ("RS512", "rsa_key"), ("PS256", "rsa_key"), ("PS384", "rsa_key"),
        ("ES256", "ec_key"), ("EdDSA", "ed_key"),
    ],
)
def test_public_key_algorithms_verify(
    tmp_path: Path, request: pytest.FixtureRequest, alg: str, key_fixture: str, form: str
) -> None:
    key = request.getfixturevalue(key_fixture)
    content = pem(key) if form == "pem" else {"keys": [jwk(key, kid="k1")]}
    verifier = key_verifier(write(tmp_path, content), (alg,))
    identity = verifier.verify(sign(key, alg, kid="k1" if form == "jwks" else None))
    assert (identity.role, identity.claims["sub"]) == ("web_user", "42")


# --- refused: the list of issue #7 ---

@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "a.b.c.d", "x" * 20000 + ".e30.x",
     "eyJhbGciOiJIUzI1NiJ9.not-base64!.sig", "bm90IGpzb24.e30.c2ln"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert "malformed" in refused(hmac_verifier(), token)


def test_a_bad_signature_is_refused() -> None:
    verifier = hmac_verifier()
    assert refused(verifier, sign("another-secret-of-enough-length-0123456789")) == "bad signature"
    header, _payload, signature = sign(SECRET).split(".")
    forged = b64(json.dumps(claims(role="admin")).encode())
    assert refused(verifier, f"{header}.{forged}.{signature}") == "bad signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = hand_made({"alg": alg, "typ": "JWT"}, claims(), None)
    assert "alg none" in refused(hmac_verifier(jwt_algorithms=("HS256",)), token)


def test_an_algorithm_outside_the_allow_list_is_refused(tmp_path: Path, rsa_key) -> None:
    assert "algorithm not allowed" in refused(hmac_verifier(), sign(SECRET, "HS384"))
    verifier = key_verifier(write(tmp_path, pem(rsa_key)), ("RS256",))
    assert "algorithm not allowed" in refused(verifier, sign(rsa_key, "RS512"))
    assert "algorithm not allowed" in refused(verifier, sign(rsa_key, "PS256"))


def test_the_hs_rs_confusion_is_refused(tmp_path: Path, rsa_key) -> None:
    """An HS256 token "signed" with the RSA public key PEM as HMAC secret."""
    public_pem = pem(rsa_key)
    verifier = key_verifier(write(tmp_path, public_pem), ("RS256",))
    for secret in (public_pem.encode(), public_pem.strip().encode()):
        token = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), secret)
        assert "algorithm not allowed" in refused(verifier, token)
    # ...and no configuration can open that door: HS* next to public keys, a public key as
    # JWT_SECRET, or an HMAC (oct) key in the public keys file are all refused up front.
    with pytest.raises(ValueError, match="need JWT_SECRET"):
        key_verifier(write(tmp_path, public_pem), ("RS256", "HS256"))
    with pytest.raises(ValueError, match="looks like a PEM or JWK"):
        TokenVerifier(AuthSettings(jwt_secret=public_pem))
    with pytest.raises(ValueError, match="not both"):
        TokenVerifier(AuthSettings(jwt_secret=SECRET, jwt_public_keys=write(tmp_path, public_pem),
                                   jwt_algorithms=("RS256",)))
    oct_jwk = {"kty": "oct", "k": b64(public_pem.encode()), "kid": "x"}
    with pytest.raises(KeyFileError, match="symmetric"):
        key_verifier(write(tmp_path, {"keys": [oct_jwk]}), ("RS256",))


def test_an_expired_token_is_refused_within_the_leeway_accepted() -> None:
    verifier = hmac_verifier(jwt_leeway=30)
    now = int(time.time())
    assert refused(verifier, sign(SECRET, exp=now - 100)) == "token expired"
    assert verifier.verify(sign(SECRET, exp=now - 10)).role == "web_user"
    assert refused(hmac_verifier(jwt_leeway=0), sign(SECRET, exp=now - 10)) == "token expired"


def test_a_token_not_yet_valid_is_refused_within_the_leeway_accepted() -> None:
    verifier = hmac_verifier(jwt_leeway=30)
    now = int(time.time())
    assert "not yet valid" in refused(verifier, sign(SECRET, nbf=now + 100))
    assert "not yet valid" in refused(verifier, sign(SECRET, iat=now + 100))
    assert verifier.verify(sign(SECRET, nbf=now + 10)).role == "web_user"


def test_audience() -> None:
    verifier = hmac_verifier(jwt_audience="pgrest")
    assert refused(verifier, sign(SECRET, aud="another-api")) == "wrong audience"
    assert refused(verifier, sign(SECRET, aud=["a", "b"])) == "wrong audience"
    assert refused(verifier, sign(SECRET)) == "the aud claim is required"
    assert verifier.verify(sign(SECRET, aud=["other", "pgrest"])).role == "web_user"
    # Not configured: any audience, as in PostgREST.
    assert hmac_verifier().verify(sign(SECRET, aud="anything")).role == "web_user"


def test_issuer() -> None:
    verifier = hmac_verifier(jwt_issuer="https://login.example.com/")
    assert refused(verifier, sign(SECRET, iss="https://evil.example.com/")) == "wrong issuer"
    assert refused(verifier, sign(SECRET)) == "the iss claim is required"
    assert verifier.verify(sign(SECRET, iss="https://login.example.com/")).role == "web_user"


def test_exp_is_required_unless_configured_otherwise() -> None:
    token = sign(SECRET, exp=None)
    assert refused(hmac_verifier(), token) == "the exp claim is required"
    assert hmac_verifier(require_exp=False).verify(token).role == "web_user"


def test_an_unknown_kid_is_refused(tmp_path: Path, rsa_key) -> None:
    verifier = key_verifier(write(tmp_path, {"keys": [jwk(rsa_key, kid="a")]}), ("RS256",))
    assert refused(verifier, sign(rsa_key, "RS256", kid="zzz")) == "unknown key id (kid)"
    assert verifier.verify(sign(rsa_key, "RS256", kid="a")).role == "web_user"


def test_the_role_claim_path() -> None:
    nested = hmac_verifier(jwt_role_claim=parse_role_claim("app_metadata.role"))
    token = sign(SECRET, role=None, app_metadata={"role": "web_anon"})
    assert nested.verify(token).role == "web_anon"
    listed = hmac_verifier(jwt_role_claim=parse_role_claim("realm_access.roles[1]"))
    token = sign(SECRET, realm_access={"roles": ["offline", "web_user"]})
    assert listed.verify(token).role == "web_user"
    quoted = hmac_verifier(jwt_role_claim=parse_role_claim('"https://x.example/claims".role'))
    assert quoted.verify(sign(SECRET, **{"https://x.example/claims": {"role": "r"}})).role == "r"


def test_a_token_without_role_runs_as_anonymous_or_is_refused() -> None:
    token = sign(SECRET, role=None)
    assert refused(hmac_verifier(), token) == "the token has no role claim"
    assert hmac_verifier(anonymous_role="web_anon").verify(token).role == "web_anon"
    for bad in (42, "", ["web_user"], {"x": 1}, "r" * 64, "web\x00user", " web_user", "a\nb"):
        description = refused(hmac_verifier(), sign(SECRET, role=bad))
        assert description == "the role claim is not a role name"


# --- JWKS: several keys, kid, rotation ---

def test_a_jwks_with_two_keys_selects_by_kid(tmp_path: Path, rsa_key, ec_key) -> None:
    path = write(tmp_path, {"keys": [jwk(rsa_key, kid="rsa-1"), jwk(ec_key, kid="ec-1")]})
    verifier = key_verifier(path, ("RS256", "ES256"))
    assert verifier.verify(sign(rsa_key, "RS256", kid="rsa-1", sub="1")).claims["sub"] == "1"
    assert verifier.verify(sign(ec_key, "ES256", kid="ec-1", sub="2")).claims["sub"] == "2"
    # The kid names a key that did not sign: refused, the other key is not tried.
    assert refused(verifier, sign(ec_key, "ES256", kid="rsa-1")) == (
        "no configured key fits the token's algorithm")
    assert refused(verifier, sign(rsa_key, "RS256", kid="ec-1")) == (
        "no configured key fits the token's algorithm")
    # No kid: every key that fits the algorithm is tried (PostgREST's rule).
    assert verifier.verify(sign(ec_key, "ES256", sub="3")).claims["sub"] == "3"


def test_a_jwk_alg_narrows_what_its_key_verifies(tmp_path: Path, rsa_key) -> None:
    path = write(tmp_path, {"keys": [jwk(rsa_key, kid="a", alg="PS256")]})
    verifier = key_verifier(path, ("RS256", "PS256"))
    assert verifier.verify(sign(rsa_key, "PS256", kid="a")).role == "web_user"
    assert "fits" in refused(verifier, sign(rsa_key, "RS256", kid="a"))


def test_rotation_a_new_kid_is_picked_up_and_a_removed_one_refused(
    tmp_path: Path, rsa_key, other_rsa_key
) -> None:
    path = write(tmp_path, {"keys": [jwk(rsa_key, kid="2025")]})
    verifier = key_verifier(path, ("RS256",))
    old = sign(rsa_key, "RS256", kid="2025")
    new = sign(other_rsa_key, "RS256", kid="2026")
    assert verifier.verify(old).role == "web_user"
    assert refused(verifier, new) == "unknown key id (kid)"

    # The issuer publishes the new key next to the old one: a token with the new kid makes the
    # verifier read the changed file again, no restart.
    write(tmp_path, {"keys": [jwk(rsa_key, kid="2025"), jwk(other_rsa_key, kid="2026")]})
    assert verifier.verify(new).role == "web_user"
    assert verifier.verify(old).role == "web_user"

    # The old key is withdrawn; an explicit reload (e.g. on SIGHUP) also forgets cached tokens.
    write(tmp_path, {"keys": [jwk(other_rsa_key, kid="2026")]})
    verifier.reload_keys()
    assert refused(verifier, old) == "unknown key id (kid)"
    assert verifier.verify(new).role == "web_user"


def test_a_key_removed_from_the_file_stops_verifying_its_tokens_cached_or_not(
    tmp_path: Path, rsa_key, other_rsa_key, count_signature_checks
) -> None:
    """Revocation without a reload call or a restart: before, the file was read again only
    on an unknown kid, so the withdrawn key (and its cached tokens) kept working."""
    path = write(tmp_path, {"keys": [jwk(rsa_key, kid="leaked"), jwk(other_rsa_key, kid="ok")]})
    verifier = TokenVerifier(
        AuthSettings(jwt_public_keys=path, jwt_algorithms=("RS256",)), key_check_seconds=0)
    leaked = sign(rsa_key, "RS256", kid="leaked")
    good = sign(other_rsa_key, "RS256", kid="ok")
    for _ in range(2):
        assert verifier.verify(leaked).role == "web_user"
        assert verifier.verify(good).role == "web_user"
    assert count_signature_checks() == 2  # the second round came from the cache
    write(tmp_path, {"keys": [jwk(other_rsa_key, kid="ok")]})
    assert refused(verifier, leaked) == "unknown key id (kid)"
    assert verifier.verify(good).role == "web_user"
    assert count_signature_checks() == 3  # the cache was cleared with the reload
    # Unchanged file: a stat, no reload (the cache keeps serving).
    assert verifier.verify(good).role == "web_user"
    assert count_signature_checks() == 3


def test_the_key_file_is_looked_at_only_every_few_seconds(tmp_path: Path, rsa_key) -> None:
    path = write(tmp_path, {"keys": [jwk(rsa_key, kid="a")]})
    verifier = TokenVerifier(
        AuthSettings(jwt_public_keys=path, jwt_algorithms=("RS256",)), key_check_seconds=3600)
    token = sign(rsa_key, "RS256", kid="a")
    assert verifier.verify(token).role == "web_user"
    write(tmp_path, {"keys": [jwk(rsa_key, kid="b")]})
    assert verifier.verify(token).role == "web_user"  # the hour has not passed


def test_a_broken_key_file_keeps_the_old_keys(tmp_path: Path, rsa_key, other_rsa_key) -> None:
    path = write(tmp_path, {"keys": [jwk(rsa_key, kid="a")]})
    verifier = key_verifier(path, ("RS256",))
    write(tmp_path, '{"keys": [')  # caught half-written
    assert refused(verifier, sign(other_rsa_key, "RS256", kid="b")) == "unknown key id (kid)"
    assert verifier.verify(sign(rsa_key, "RS256", kid="a")).role == "web_user"
    with pytest.raises(KeyFileError):
        verifier.reload_keys()
    write(tmp_path, {"keys": [jwk(rsa_key, kid="a"), jwk(other_rsa_key, kid="b")]})
    assert verifier.verify(sign(other_rsa_key, "RS256", kid="b")).role == "web_user"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not a key", "neither a PEM public key nor a JSON"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM public key"),
        ({"keys": {}}, "'keys' must be a list"),
        ({"keys": []}, "no signature keys"),
        ({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}]}, "a private key"),
        ({"keys": [{"kty": "XYZ"}]}, "unsupported kty"),
        ({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}, "not a valid RSA public key"),
    ],
)
def test_bad_key_files_are_refused_with_a_clear_message(
    tmp_path: Path, content: Any, message: str
) -> None:
    with pytest.raises(KeyFileError, match=message) as info:
        key_verifier(write(tmp_path, content), ("RS256",))
    assert str(tmp_path) in str(info.value)


def test_small_rsa_keys_and_duplicate_kids_are_refused(tmp_path: Path, rsa_key) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(KeyFileError, match="at least 2048"):
        key_verifier(write(tmp_path, pem(small)), ("RS256",))
    with pytest.raises(KeyFileError, match="used twice"):
        key_verifier(write(tmp_path, {"keys": [jwk(rsa_key, kid="a"), jwk(rsa_key, kid="a")]}),
                     ("RS256",))


def test_encryption_keys_in_a_jwks_are_ignored(tmp_path: Path, rsa_key, ec_key) -> None:
    path = write(tmp_path, {"keys": [jwk(ec_key, kid="enc", use="enc"), jwk(rsa_key, kid="s")]})
    verifier = key_verifier(path, ("RS256", "ES256"))
    assert refused(verifier, sign(ec_key, "ES256", kid="enc")) == "unknown key id (kid)"


# --- the cache ---

def test_a_repeated_token_costs_no_signature_check(count_signature_checks) -> None:
    verifier = hmac_verifier()
    token = sign(SECRET)
    for _ in range(5):
        assert verifier.verify(token).role == "web_user"
    assert count_signature_checks() == 1
    assert verifier.cache.stats.hits == 4
    verifier.verify(sign(SECRET, sub="7"))
    assert count_signature_checks() == 2


def test_a_cached_token_is_verified_again_after_its_exp(count_signature_checks) -> None:
    clock = [time.time()]
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET), clock=lambda: clock[0])
    token = sign(SECRET, exp=int(clock[0]) + 600)
    verifier.verify(token)
    verifier.verify(token)
    assert count_signature_checks() == 1
    clock[0] += 601  # the cache's clock passes exp: the entry is dropped, not served
    verifier.verify(token)  # (PyJWT's own clock says still valid)
    assert count_signature_checks() == 2
    assert verifier.cache.stats.expired == 1


def test_a_verification_racing_a_key_reload_is_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rsa_key
) -> None:
    """A token verified with the old keys while another thread reloads them must not land in
    the freshly emptied cache (it may have been signed by the key just withdrawn)."""
    verifier = key_verifier(write(tmp_path, {"keys": [jwk(rsa_key, kid="a")]}), ("RS256",))
    original = verifier._decode

    def decode_then_reload(token: str) -> dict[str, Any]:
        claims = original(token)
        verifier.reload_keys()  # what another thread may do meanwhile
        return claims

    monkeypatch.setattr(verifier, "_decode", decode_then_reload)
    assert verifier.verify(sign(rsa_key, "RS256", kid="a")).role == "web_user"
    assert len(verifier.cache) == 0


def test_refused_tokens_are_not_cached(count_signature_checks) -> None:
    verifier = hmac_verifier()
    token = sign(SECRET, exp=int(time.time()) - 100)
    for _ in range(3):
        refused(verifier, token)
    assert count_signature_checks() == 3
    assert len(verifier.cache) == 0


def test_the_cache_is_bounded(count_signature_checks) -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET), cache_size=2)
    tokens = [sign(SECRET, sub=str(n)) for n in range(3)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier.cache) == 2
    assert verifier.cache.stats.evicted == 1
    verifier.verify(tokens[2])  # still cached
    assert count_signature_checks() == 3
    verifier.verify(tokens[0])  # the least recently used went first
    assert count_signature_checks() == 4


def test_the_cache_is_thread_safe(count_signature_checks) -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET), cache_size=16)
    tokens = [sign(SECRET, sub=str(n)) for n in range(24)]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for round_ in range(50):
                for n, token in enumerate(tokens[round_ % 3::3]):
                    identity = verifier.verify(token)
                    assert identity.claims["sub"] == str(int(round_ % 3 + 3 * n))
        except BaseException as exc:
            with lock:
                errors.append(exc)

    run_concurrently(work, 8)
    assert not errors, errors[:1]
    assert len(verifier.cache) <= 16
    stats = verifier.cache.stats
    assert stats.hits + stats.misses == 8 * 50 * 8


# --- the challenge header ---

def test_the_challenge_header_escapes_quotes_and_backslashes() -> None:
    assert bearer_challenge("token expired") == (
        'Bearer error="invalid_token", error_description="token expired"')
    assert bearer_challenge('say "hi" \\ bye\r\n') == (
        'Bearer error="invalid_token", error_description="say \\"hi\\" \\\\ bye  "')
    assert bearer_challenge("x", error="insufficient_scope").startswith(
        'Bearer error="insufficient_scope"')
    assert CredentialsRequired().challenge == (
        'Bearer error="invalid_token", error_description="credentials required: '
        'send Authorization: Bearer <token> or X-API-Key"')


# --- settings ---

def test_parse_auth_settings_reads_both_sections(tmp_path: Path, rsa_key) -> None:
    path = write(tmp_path, pem(rsa_key), "key.pem")
    settings = parse_auth_settings(
        {"JWT_PUBLIC_KEYS": str(path), "JWT_ALGORITHMS": "rs256, es256", "JWT_AUDIENCE": "api",
         "JWT_ROLE_CLAIM": "app_metadata.role", "JWT_LEEWAY": "5", "JWT_REQUIRE_EXP": "false",
         "ANONYMOUS_ROLE": "web_anon", "ADMIN_ROLES": "ops, dba"},
        {"backend": "AB" * 32 + " web_user"},
    )
    assert settings.jwt_algorithms == ("RS256", "ES256")
    assert settings.jwt_role_claim == ("app_metadata", "role")
    assert (settings.jwt_leeway, settings.require_exp) == (5.0, False)
    assert settings.admin_roles == ("ops", "dba")
    assert settings.api_keys[0].digest == "ab" * 32 and settings.api_keys[0].role == "web_user"
    assert settings.enabled and settings.jwt_enabled
    defaults = parse_auth_settings({"JWT_SECRET": DEV_JWT_SECRET})
    assert defaults.algorithms == ("HS256",) and defaults.jwt_role_claim == ("role",)
    assert not parse_auth_settings({}).enabled
    assert SECRET not in repr(AuthSettings(jwt_secret=SECRET))


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"JWT_SECRT": "x"}, r"\[AUTH\] JWT_SECRT: unknown key"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHMS": "HS256, XS1"}, "unsupported algorithm 'XS1'"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHMS": "none"}, "unsupported algorithm 'none'"),
        ({"JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"JWT_SECRET": "x" * 40, "JWT_ALGORITHMS": "HS512"}, "at least 64 bytes"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHMS": "RS256"}, "need JWT_PUBLIC_KEYS"),
        ({"JWT_ALGORITHMS": "HS256"}, "set JWT_SECRET or JWT_PUBLIC_KEYS"),
        ({"JWT_PUBLIC_KEYS": "/nonexistent/keys.json"}, "no such file"),
        ({"JWT_ROLE_CLAIM": "a..b"}, "not a claim path"),
        ({"JWT_ROLE_CLAIM": "a[x]"}, "not a claim path"),
        ({"JWT_LEEWAY": "soon"}, "expected a number of seconds"),
        ({"JWT_LEEWAY": "-1"}, "between 0 and 3600"),
        ({"JWT_REQUIRE_EXP": "maybe"}, "expected true or false"),
    ],
)
def test_bad_auth_settings_are_refused_with_the_key_named(
    auth: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_auth_settings(auth)


def test_public_keys_need_an_explicit_allow_list(tmp_path: Path, rsa_key) -> None:
    path = write(tmp_path, pem(rsa_key), "key.pem")
    with pytest.raises(ValueError, match="JWT_ALGORITHMS: required with JWT_PUBLIC_KEYS"):
        parse_auth_settings({"JWT_PUBLIC_KEYS": str(path)})
