"""The spec declares the credentials (``components.securitySchemes``: bearer JWT and the
``X-API-Key`` header) so that Swagger UI's Authorize button sends them; Connexion must not decide
anything about them. Connexion 3.3 resolves each declared scheme to a verify function (from
``x-bearerInfoFunc`` / ``x-apikeyInfoFunc``); without one it logs a warning per operation and
drops the scheme, and an operation left with no scheme answers 401 by itself. So each scheme is
mapped to a handler that finds nothing (``NO_VALUE``), and the spec's requirement list ends with
``{}`` (optional): Connexion lets every request through, and swagger_server.auth.request decides
who is asking, in the request's thread, like for any other client.
"""

from __future__ import annotations

from typing import Any

from connexion.security import NO_VALUE, AbstractSecurityHandler


class DeferredCredentials(AbstractSecurityHandler):
    """A declared scheme that Connexion leaves to our code."""

    def get_fn(self, security_scheme: dict[str, Any], required_scopes: Any) -> Any:
        def leave_to_the_app(request: Any) -> object:
            return NO_VALUE

        return leave_to_the_app


SPEC_SECURITY_MAP: dict[str, type[AbstractSecurityHandler]] = {
    "bearer": DeferredCredentials,
    "apiKey": DeferredCredentials,
}
