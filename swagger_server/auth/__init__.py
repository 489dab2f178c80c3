"""Who is asking: bearer tokens (JWT) and API keys become an :class:`Identity`, whose role the
catalog must allow, and whose role and claims the request's transaction then runs with.

Wired into the request path by :mod:`swagger_server.auth.request` (identity per request, the
role on the request's connection), config.py (``[AUTH]``, ``[API_KEYS]``), errors.py (401/403)
and app.py (install, the spec's schemes, CORS headers). README "Authentication".
"""

from swagger_server.auth.context import Preamble, RoleCatalog, RoleFacts, build_preamble
from swagger_server.auth.errors import (
    AuthenticationError,
    CredentialsRequired,
    ForbiddenRole,
    InvalidApiKey,
    InvalidToken,
    bearer_challenge,
)
from swagger_server.auth.identity import Identity
from swagger_server.auth.keys import ApiKeyVerifier
from swagger_server.auth.keyset import KeyFileError
from swagger_server.auth.settings import (
    DEV_JWT_SECRET,
    ApiKey,
    AuthSettings,
    parse_auth_settings,
)
from swagger_server.auth.tokens import TokenVerifier

__all__ = [
    "DEV_JWT_SECRET",
    "ApiKey",
    "ApiKeyVerifier",
    "AuthSettings",
    "AuthenticationError",
    "CredentialsRequired",
    "ForbiddenRole",
    "Identity",
    "InvalidApiKey",
    "InvalidToken",
    "KeyFileError",
    "Preamble",
    "RoleCatalog",
    "RoleFacts",
    "TokenVerifier",
    "bearer_challenge",
    "build_preamble",
    "parse_auth_settings",
]
