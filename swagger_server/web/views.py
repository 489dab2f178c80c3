"""Connexion's Flask views with their decorators put together once, at startup.

Why: Connexion 3.3 registers each operation with Flask as a ``FlaskOperation`` whose call
builds a ``FlaskDecorator`` and, inside it, decorates the handler again on every request: the
parameter decorator reads the handler's signature (``inspect.signature``) each time, some 0.1 ms
for the rows handler. Nothing of that depends on the request: the request, its operation and
its context reach the decorators through Connexion's context variables when they run. Here each
view is decorated once; per request there remain the request object (with the operation's URI
parser, as before) and the decorators' own work.

Per request, also left out: three regular expressions on each parameter's name (sanitized once
per name, in a bounded cache: a query parameter's name may come from the client,
``limit.<embed>``); reading the body for an operation that defines none, and parsing uploaded
files of a request without a ``Content-Type`` (both cannot reach the handler); asking whether the
handler is a coroutine function; parsing the query for a handler that takes no query parameter
(the data API's handlers read ``flask.request.args`` themselves, the query validated before).
What the handler receives is Connexion's ``prep_kwargs``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import flask
from connexion.apps.flask import FlaskOperation
from connexion.context import operation
from connexion.decorators import FlaskDecorator
from connexion.decorators.parameter import (
    SyncParameterDecorator,
    inspect_function_arguments,
    prep_kwargs,
    pythonic,
    sanitized,
    unwrap_decorators,
)


class _ParameterDecorator(SyncParameterDecorator):
    """Connexion's, minus reading what an operation cannot take: the body of an operation that
    defines none (Connexion drops it, ``_get_body_argument``) and the uploaded files of a
    request without a ``Content-Type`` (Werkzeug parses none then)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sanitize_fn = functools.lru_cache(maxsize=1024)(
            pythonic if self.sanitize_fn is pythonic else sanitized)

    def _maybe_get_body(self, request: Any, *, arguments: list[str], has_kwargs: bool) -> Any:
        if not operation.is_request_body_defined:
            return None
        return super()._maybe_get_body(request, arguments=arguments, has_kwargs=has_kwargs)

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))

        takes_query: list[bool] = []  # known at the first request, from its operation

        @functools.wraps(function)
        def wrapper(request: Any) -> Any:
            body = self._maybe_get_body(request, arguments=arguments, has_kwargs=has_kwargs)
            files = request.files() if request.environ.get("CONTENT_TYPE") else {}
            if not takes_query:
                takes_query.append(has_kwargs or any(
                    self.sanitize_fn(p["name"]) in arguments
                    for p in operation.parameters if p["in"] == "query"))
            if not takes_query[0]:
                request = _NoQuery(request)
            return function(**prep_kwargs(request, request_body=body, files=files,
                                          arguments=arguments, has_kwargs=has_kwargs,
                                          sanitize=self.sanitize_fn))

        return wrapper


class _NoQuery:
    """What ``prep_kwargs`` reads of a request, for a handler that takes no query parameter:
    the query is not parsed for it, as none of it would be passed (the handler reads
    ``flask.request.args`` itself; the query was validated before the view ran)."""

    __slots__ = ("mimetype", "path_params")
    query_params: dict[str, Any] = {}  # noqa: RUF012 (read only)

    def __init__(self, request: Any) -> None:
        self.path_params = request.path_params
        self.mimetype = request.mimetype


class _DecoratedOnce(FlaskDecorator):
    """Connexion's ``FlaskDecorator``, whose ``decorate`` runs when the view is made."""

    @property
    def _parameter_decorator_cls(self) -> type[SyncParameterDecorator]:
        return _ParameterDecorator

    @property
    def _sync_async_decorator(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Connexion's asks ``iscoroutinefunction`` on every call; the answer is known now."""
        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            if asyncio.iscoroutinefunction(function):
                return super(_DecoratedOnce, self)._sync_async_decorator(function)
            return function

        return decorator

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
