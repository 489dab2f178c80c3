"""The spec as served at /openapi.json and /openapi.yaml (and read by Swagger UI at /ui/).

Connexion rewrites the spec's ``servers`` on every request to ``[{"url": <root path>}]``: at the
root that is ``[{"url": ""}]``, which Swagger UI shows as an empty server choice. Here the root
is ``/``; behind a proxy that mounts the app under a prefix (an ASGI ``root_path``) it stays the
prefix.
"""

from __future__ import annotations

import typing as t

from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.swagger_ui import SwaggerUIAPI, SwaggerUIMiddleware
from connexion.spec import Specification
from starlette.requests import Request


class _SpecAPI(SwaggerUIAPI):
    def _spec_for_prefix(self, request: Request) -> dict:
        spec = super()._spec_for_prefix(request)  # a copy, made for this request
        spec["servers"] = [{"url": self._base_path_for_prefix(request) or "/"}]
        return spec


class SpecMiddleware(SwaggerUIMiddleware):
    """Connexion's Swagger UI middleware, serving the spec through :class:`_SpecAPI`."""

    def add_api(self, specification: Specification, base_path: str | None = None,
                arguments: dict | None = None, **kwargs: t.Any) -> None:
        api = _SpecAPI(specification, base_path=base_path, arguments=arguments,
                       default=self.default_fn, **kwargs)
        self.router.mount(api.base_path, app=api.router)


def middlewares() -> list[type]:
    """Connexion's middleware stack with the spec served by ours: a new list for each app, since
    ``add_middleware`` inserts into the list it was given."""
    return [SpecMiddleware if m is SwaggerUIMiddleware else m
            for m in ConnexionMiddleware.default_middlewares]
