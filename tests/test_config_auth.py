"""[AUTH] and [API_KEYS] in the configuration: environment, file, cross-checks, and the
embedded demo's development auth (never with a configured database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swagger_server.auth.keys import hash_api_key
from swagger_server.auth.settings import DEV_JWT_SECRET, AuthSettings
from swagger_server.config import (
    EMBEDDED_DSN_ENV,
    ConfigError,
    Settings,
    load_settings,
    with_embedded_dsn,
)

SECRET = "a-secret-of-at-least-thirty-two-bytes-0123"


def test_auth_keys_from_the_environment() -> None:
    settings = load_settings(environ={
        "AUTH_JWT_SECRET": SECRET, "AUTH_ANONYMOUS_ROLE": "web_anon",
        "AUTH_ADMIN_ROLES": "ops, dba", "AUTH_JWT_ROLE_CLAIM": "app_metadata.role",
        "AUTH_JWT_LEEWAY": "5", "AUTH_JWT_AUDIENCE": "api"})
    auth = settings.auth
    assert (auth.jwt_secret, auth.anonymous_role, auth.admin_roles) == (
        SECRET, "web_anon", ("ops", "dba"))
    assert auth.jwt_role_claim == ("app_metadata", "role")
    assert (auth.jwt_leeway, auth.jwt_audience) == (5.0, "api")
    assert SECRET not in repr(settings)


def test_api_keys_section(tmp_path: Path) -> None:
    digest = hash_api_key("k" * 43)
    path = tmp_path / "config.ini"
    path.write_text(f"[API_KEYS]\nShop_Backend = {digest} web_user\n", encoding="utf-8")
    keys = load_settings(path=path, environ={}).auth.api_keys
    assert [(k.name, k.digest, k.role) for k in keys] == [("shop_backend", digest, "web_user")]


def test_a_pasted_key_instead_of_its_hash_is_refused_without_echo(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text("[API_KEYS]\nshop = the-key-itself-not-its-hash web_user\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    assert str(info.value).startswith("[API_KEYS] shop: expected '<sha256 hex")
    assert "the-key-itself" not in str(info.value)


@pytest.mark.parametrize(("environ", "message"), [
    ({"AUTH_JWT_SECRET": "short"}, "[AUTH] JWT_SECRET: must be at least 32 bytes"),
    ({"AUTH_JWT_ALGORITHMS": "RS256"}, "[AUTH] JWT_ALGORITHMS: set JWT_SECRET"),
    ({"AUTH_JWT_SECRET": SECRET, "AUTH_JWT_ALGORITHMS": "RS256"}, "need JWT_PUBLIC_KEYS"),
    ({"AUTH_JWT_LEEWAY": "3601"}, "AUTH_JWT_LEEWAY: must be"),
    ({"AUTH_JWT_PUBLIC_KEYS": "/no/such/file"}, "AUTH_JWT_PUBLIC_KEYS: no such file"),
])
def test_bad_auth_settings_stop_the_start(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert message in str(info.value)


def test_the_embedded_database_gets_the_demo_auth_unless_auth_is_configured() -> None:
    env = {EMBEDDED_DSN_ENV: "dbname=x host=/tmp"}
    demo = with_embedded_dsn(Settings(), env).auth
    assert (demo.jwt_secret, demo.anonymous_role) == (DEV_JWT_SECRET, "web_anon")
    kept = with_embedded_dsn(Settings(auth=AuthSettings(admin_roles=("web_user",))), env).auth
    assert kept.jwt_secret == DEV_JWT_SECRET and kept.admin_roles == ("web_user",)
    configured = AuthSettings(jwt_secret=SECRET)
    assert with_embedded_dsn(Settings(auth=configured), env).auth == configured


def test_a_configured_database_never_gets_the_demo_auth() -> None:
    settings = load_settings(environ={"DATABASE_URL": "dbname=shop"})
    assert with_embedded_dsn(settings, {EMBEDDED_DSN_ENV: "dbname=x"}).auth == AuthSettings()
    assert DEV_JWT_SECRET not in repr(settings)


def test_a_bad_public_keys_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    from swagger_server.app import StartupError, create_app

    keys = tmp_path / "keys.pem"
    keys.write_text("not a key", encoding="utf-8")
    settings = load_settings(environ={"DATABASE_URL": "dbname=x",
                                      "AUTH_JWT_PUBLIC_KEYS": str(keys),
                                      "AUTH_JWT_ALGORITHMS": "RS256"})
    with pytest.raises(StartupError) as info:
        create_app(settings)
    assert str(info.value).startswith("[AUTH] JWT_PUBLIC_KEYS: KeyFileError")
    assert "\n" not in str(info.value)
