"""Connexion's Flask views with their decorators put together once, at startup.

Why: Connexion 3.3 registers each operation with Flask as a ``FlaskOperation`` whose call
builds a ``FlaskDecorator`` and, inside it, decorates the handler again on every request: the
parameter decorator reads the handler's signature (``inspect.signature``) each time, some 0.1 ms
for the rows handler. Nothing of that depends on the request: the request, its operation and
its context reach the decorators through Connexion's context variables when they run. Here each
view is decorated once; per request there remain the request object (with the operation's URI
parser, as before) and the decorators' own work.

Parameter names are also sanitized once per name (Connexion runs three regular expressions on
each parameter's name per request); the cache is bounded, since a query parameter's name may
come from the client (``limit.<embed>``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flask
from connexion.apps.flask import FlaskOperation
from connexion.decorators import FlaskDecorator
from connexion.decorators.parameter import SyncParameterDecorator, pythonic, sanitized


class _ParameterDecorator(SyncParameterDecorator):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sanitize_fn = functools.lru_cache(maxsize=1024)(
            pythonic if self.sanitize_fn is pythonic else sanitized)


class _DecoratedOnce(FlaskDecorator):
    """Connexion's ``FlaskDecorator``, whose ``decorate`` runs when the view is made."""

    @property
    def _parameter_decorator_cls(self) -> type[SyncParameterDecorator]:
        return _ParameterDecorator

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        decorated = self.decorate(function)

        @functools.wraps(function)
        def view(*args: Any, **kwargs: Any) -> Any:
            # As Connexion's wrapper: the path arguments Flask passes are read from the request.
            return decorated(self.framework.get_request(uri_parser=self.uri_parser))

        return view


def decorate_once(app: flask.Flask) -> int:
    """Replace every Connexion operation view of ``app`` by one decorated once; how many."""
    replaced = 0
    for endpoint, view in list(app.view_functions.items()):
        if isinstance(view, FlaskOperation):
            app.view_functions[endpoint] = _DecoratedOnce(
                pythonic_params=view.pythonic_params, jsonifier=view.jsonifier)(view._fn)
            replaced += 1
    return replaced
