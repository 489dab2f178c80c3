"""API keys (hash-only configuration, constant-time comparison of every key) and the
``python -m swagger_server.keys`` command (run as a subprocess, as a user would)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
import sys
import time

import jwt
import pytest

from swagger_server.auth import (
    DEV_JWT_SECRET,
    ApiKeyVerifier,
    AuthSettings,
    InvalidApiKey,
    TokenVerifier,
    parse_auth_settings,
)
from swagger_server.auth import keys as keys_module
from swagger_server.auth.keys import config_line, hash_api_key, new_api_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def verifier_for(*entries: tuple[str, str, str]) -> ApiKeyVerifier:
    """``(name, key, role)`` entries, configured the way an operator would: hashes only."""
    lines = {name: config_line(name, key, role).split(" = ", 1)[1] for name, key, role in entries}
    return ApiKeyVerifier(parse_auth_settings({}, lines).api_keys)


KEYS = [("backend", new_api_key(), "web_user"), ("reports", new_api_key(), "reporting"),
        ("ops", new_api_key(), "ops")]


def test_a_configured_key_gives_its_role_and_name() -> None:
    verifier = verifier_for(*KEYS)
    for name, key, role in KEYS:
        identity = verifier.verify(key)
        assert (identity.role, identity.source) == (role, "api_key")
        assert identity.claims == {"role": role, "api_key": name}


@pytest.mark.parametrize(
    "presented",
    ["wrong", KEYS[0][1][:-1], KEYS[0][1] + "x", KEYS[0][1].upper(), hash_api_key(KEYS[0][1])],
)
def test_a_wrong_key_is_refused_without_echo(presented: str) -> None:
    with pytest.raises(InvalidApiKey) as info:
        verifier_for(*KEYS).verify(presented)
    assert info.value.description == "unknown API key"
    assert presented not in info.value.challenge
    assert info.value.challenge.startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize("presented", ["", "k" * 513])
def test_an_empty_or_huge_key_is_malformed(presented: str) -> None:
    with pytest.raises(InvalidApiKey, match="malformed API key"):
        verifier_for(*KEYS).verify(presented)


@pytest.mark.parametrize("which", [None, 0, 1, 2])
def test_every_configured_key_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, which: int | None
) -> None:
    """Whether the first, the last or no key matches, every configured hash goes through
    hmac.compare_digest: no early exit tells an attacker which key (or whether one) matched."""
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    verifier = verifier_for(*KEYS)
    presented = "not-a-key" if which is None else KEYS[which][1]
    if which is None:
        with pytest.raises(InvalidApiKey):
            verifier.verify(presented)
    else:
        assert verifier.verify(presented).role == KEYS[which][2]
    assert compared == [bytes.fromhex(hash_api_key(key)) for _name, key, _role in KEYS]


def test_new_keys_are_random_and_the_config_holds_only_their_hash() -> None:
    made = {new_api_key() for _ in range(100)}
    assert len(made) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", key) for key in made)
    key = new_api_key()
    line = config_line("backend", key, "web_user")
    assert line == f"backend = {hashlib.sha256(key.encode()).hexdigest()} web_user"
    assert key not in line
    assert key not in repr(parse_auth_settings({}, {"backend": line.split(" = ")[1]}))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("web_user", "expected '<sha256 hex of the key> <role>'"),
        ("abc web_user", "expected '<sha256 hex of the key> <role>'"),
        ("ab" * 32, "expected '<sha256 hex of the key> <role>'"),
        ("ab" * 32 + " web_user extra", "expected '<sha256 hex of the key> <role>'"),
    ],
)
def test_bad_api_key_lines_are_refused_without_echo(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_auth_settings({}, {"backend": value})
    assert str(info.value).startswith("[API_KEYS] backend: ")
    assert value not in str(info.value)


def test_duplicate_api_keys_are_refused() -> None:
    digest = "ab" * 32
    with pytest.raises(ValueError, match="share the same key hash"):
        parse_auth_settings({}, {"a": f"{digest} r1", "b": f"{digest} r2"})
    with pytest.raises(ValueError, match="name"):
        parse_auth_settings({}, {"bad name!": f"{digest} r1"})


# --- the command ---

def run_keys(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "AUTH_JWT_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "swagger_server.keys", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**environ, **(env or {})},
    )


def test_cli_new_prints_a_key_and_the_line_to_paste() -> None:
    done = run_keys("new", "shop_backend", "web_user")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    key = lines[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
    assert "[API_KEYS]" in done.stdout
    line = lines[-1]
    assert line == f"shop_backend = {hash_api_key(key)} web_user"
    # The printed line, pasted into the config, accepts the printed key.
    name, value = line.split(" = ")
    verifier = ApiKeyVerifier(parse_auth_settings({}, {name: value}).api_keys)
    assert verifier.verify(key).role == "web_user"


def test_cli_new_refuses_a_bad_name() -> None:
    done = run_keys("new", "no spaces please", "web_user")
    assert done.returncode == 2
    assert "error: key name" in done.stderr and "Traceback" not in done.stderr


def test_cli_token_prints_a_demo_token_signed_with_the_dev_secret() -> None:
    done = run_keys("token", "--sub", "42", "--role", "web_user")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "DEV_JWT_SECRET" in done.stderr  # says which secret signed it
    identity = TokenVerifier(AuthSettings(jwt_secret=DEV_JWT_SECRET)).verify(token)
    assert identity.role == "web_user"
    assert identity.claims["sub"] == "42"
    assert 3500 < identity.claims["exp"] - time.time() <= 3600


def test_cli_token_with_a_secret_lifetime_audience_and_issuer() -> None:
    secret = "s" * 40
    done = run_keys("token", "--sub", "7", "--role", "web_anon", "--secret", secret,
                    "--exp-minutes", "5", "--aud", "pgrest", "--iss", "me")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="pgrest", issuer="me")
    assert (claims["sub"], claims["role"]) == ("7", "web_anon")
    assert 240 < claims["exp"] - time.time() <= 300
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience="pgrest")
    # The secret may also come from the environment (kept out of `ps`).
    done = run_keys("token", "--sub", "7", "--role", "r", env={"AUTH_JWT_SECRET": secret})
    assert jwt.decode(done.stdout.strip(), secret, algorithms=["HS256"])["role"] == "r"
    assert "DEV_JWT_SECRET" not in done.stderr
