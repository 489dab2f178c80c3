"""Why a request's credentials were refused: 401 (who are you?) or 403 (not as that role).

Every description here is fixed text chosen by us, never a token, a key or a library's message,
so it is safe in a response's ``detail``, in ``WWW-Authenticate`` and in logs.
"""

from __future__ import annotations


def bearer_challenge(description: str, error: str = "invalid_token") -> str:
    """A ``WWW-Authenticate`` value per RFC 6750 section 3: ``Bearer error="...",
    error_description="..."``. Quotes and backslashes are escaped (quoted-string, RFC 9110
    section 5.6.4); control characters, which no header may carry, become spaces."""
    return f'Bearer error="{_quoted(error)}", error_description="{_quoted(description)}"'


def _quoted(text: str) -> str:
    text = "".join(" " if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text)
    return text.replace("\\", "\\\\").replace('"', '\\"')


class AuthenticationError(Exception):
    """401: the credentials are missing, malformed or not valid. ``description`` is safe to
    show to the client."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header value for the 401 response."""
        return bearer_challenge(self.description)


class CredentialsRequired(AuthenticationError):
    """No credentials, and no anonymous role is configured."""

    def __init__(self) -> None:
        super().__init__("credentials required: send Authorization: Bearer <token> or X-API-Key")


class InvalidToken(AuthenticationError):
    """A bearer token was refused: malformed, bad signature, expired, wrong audience..."""


class InvalidApiKey(AuthenticationError):
    """An ``X-API-Key`` matched no configured key."""


class ForbiddenRole(Exception):
    """403: the credentials are valid but name a role this service must not become (not granted
    to the authenticator, the authenticator itself, a superuser...). Nothing ran as it."""

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"role {role!r} may not be used: {reason}")
        self.role = role
        self.reason = reason
        self.description = str(self)
