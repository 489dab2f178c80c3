"""``python -m swagger_server.keys``: make API keys and demo tokens.

    new <name> <role>     a new random API key and the [API_KEYS] line to paste into config
    token --sub N --role R [--secret S] [--exp-minutes M] [--aud A] [--iss I]
                          a demo HS256 token; the secret defaults to $AUTH_JWT_SECRET, else to
                          DEV_JWT_SECRET, the embedded demo database's development secret
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import jwt

from swagger_server.auth.keys import config_line, new_api_key
from swagger_server.auth.settings import DEV_JWT_SECRET

SECRET_ENV = "AUTH_JWT_SECRET"  # noqa: S105 (a variable name) the env form of [AUTH] JWT_SECRET


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m swagger_server.keys", description="API keys and demo tokens for pgrest."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="print a new API key and its [API_KEYS] line")
    new.add_argument("name", help="a name for the key (letters, digits, _ - .)")
    new.add_argument("role", help="the PostgreSQL role requests with this key run as")
    token = commands.add_parser("token", help="print a demo HS256 token")
    token.add_argument("--sub", required=True, help="the subject, e.g. a customer id")
    token.add_argument("--role", required=True, help="the PostgreSQL role claim")
    token.add_argument(
        "--secret",
        help=f"HMAC secret (default: ${SECRET_ENV}, else the development secret of the "
        "embedded demo database)",
    )
    token.add_argument("--exp-minutes", type=float, default=60.0, help="lifetime (default 60)")
    token.add_argument("--aud", help="audience claim, if JWT_AUDIENCE is configured")
    token.add_argument("--iss", help="issuer claim, if JWT_ISSUER is configured")
    return parser


def _new(args: argparse.Namespace) -> int:
    key = new_api_key()
    line = config_line(args.name, key, args.role)
    print(f"API key for {args.name!r} (shown once; give it to the client, store it nowhere):")
    print(key)
    print()
    print("Paste under [API_KEYS] in config.ini:")
    print(line)
    return 0


def _token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get(SECRET_ENV) or DEV_JWT_SECRET
    if secret == DEV_JWT_SECRET:
        print("(signed with DEV_JWT_SECRET: valid only for the embedded demo database)",
              file=sys.stderr)
    if args.exp_minutes <= 0:
        raise ValueError("--exp-minutes must be positive")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(args.sub),
        "role": args.role,
        "iat": now,
        "exp": now + int(args.exp_minutes * 60),
    }
    if args.aud:
        claims["aud"] = args.aud
    if args.iss:
        claims["iss"] = args.iss
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _new(args) if args.command == "new" else _token(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
