"""How Connexion reads and checks request parameters against the spec, made exact and readable.

Two replacements, handed to ``add_api``:

- :class:`RepeatedParameterParser`: a ``style: form, explode: true`` array is a parameter given
  once per value (``?filter=a&filter=b``). Connexion 3.3 joins the repetitions with commas and
  splits the result on commas again, so a value holding a comma (``id.in.(1,2)``) became
  several items, and ``maxItems`` counted commas. Here each repetition is one item, whole.
- :class:`ParameterValidator`: a value the spec rejects is one sentence naming the parameter
  (``limit: must be at least 1, got 0``), not jsonschema's multi-line report, and the problem
  carries RFC 9457 ``invalid-params`` and ``parameter``, like the data API's own 400s.

Both are worked out once per operation, not per request: :class:`_Plan` (the parameters grouped,
their jsonschema validators compiled) and :class:`RequestValidation` (Connexion's validation
middleware, which made a parser and a validator for every request and read the ``Content-Type``
of operations that take no body).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from connexion import validators
from connexion.exceptions import BadRequestProblem
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.operations import AbstractOperation
from connexion.uri_parsing import OpenAPIURIParser
from connexion.utils import is_null, is_nullable
from jsonschema import Draft4Validator, ValidationError
from jsonschema.exceptions import best_match
from starlette.types import Receive, Scope, Send

from swagger_server.errors import INVALID_PARAMETER

_FORMATS = Draft4Validator.FORMAT_CHECKER


class RepeatedParameterParser(OpenAPIURIParser):
    """OpenAPI's ``form`` + ``explode`` arrays: one item per repetition, commas kept.

    Also: the parameters' schemas by name are worked out once per parser, not once per
    parameter given (Connexion's ``param_schemas`` is a property that rebuilds the dict).
    """

    def __init__(self, param_defns: list[dict[str, Any]], body_defn: dict[str, Any]) -> None:
        super().__init__(param_defns, body_defn)
        self._param_schemas = {k: v.get("schema", {}) for k, v in self._param_defns.items()}

    @property
    def param_schemas(self) -> dict[str, Any]:
        return self._param_schemas

    @staticmethod
    def _resolve_param_duplicates(values: Any, param_defn: dict[str, Any], _in: str) -> Any:
        style = param_defn.get("style", OpenAPIURIParser.style_defaults[_in])
        if style == "form" and param_defn.get("explode", True) and isinstance(values, list):
            return list(values)
        return OpenAPIURIParser._resolve_param_duplicates(values, param_defn, _in)

    @staticmethod
    def _split(value: Any, param_defn: dict[str, Any], _in: str) -> Any:
        if isinstance(value, list):  # already one item per repetition
            return value
        return OpenAPIURIParser._split(value, param_defn, _in)


class InvalidParameter(BadRequestProblem):
    """Parameters the spec rejects: one sentence, ``parameter`` and ``invalid-params``."""

    def __init__(self, *invalid: tuple[str, str]) -> None:
        super().__init__(detail="; ".join(f"{name}: {why}" for name, why in invalid))
        self.type = INVALID_PARAMETER
        self.ext = {"parameter": invalid[0][0],
                    "invalid-params": [{"name": name, "reason": why} for name, why in invalid]}


class ParameterValidator(validators.ParameterValidator):
    """Connexion's checks, raising :class:`InvalidParameter` with a clean reason.

    Connexion makes one of these per request, and built a jsonschema validator (with its
    ``referencing`` registry) per parameter given, each time. The spec's parameters do not
    change: what checking them needs is worked out once per operation (:class:`_Plan`,
    compiled validators included) and reused. The checks and their order are Connexion's:
    query parameters in spec order, then path, header, cookie; the first failure answers.
    """

    def __init__(self, parameters: list[dict[str, Any]], uri_parser: Any,
                 strict_validation: bool = False,
                 security_query_params: Any = None) -> None:
        self._plan = _plan_for(parameters)
        self.parameters = self._plan.by_location
        self.uri_parser = uri_parser
        self.strict_validation = strict_validation
        self.security_query_params = set(security_query_params or ())

    def validate_query_parameter_list(self, request: Any,
                                      security_params: Any = None) -> set[str]:
        plan = self._plan
        extra = {n for n in request.query_params
                 if n not in plan.query_names and n not in (security_params or ())}
        # ``limit.<embed>`` style: a parameter marked ``x-per-embed`` in the spec also comes
        # as ``<name>.<anything>`` (the data API checks what follows the dot); its name may
        # hold a dot itself (``not.or.<embed>``).
        extra = {n for n in extra if not n.startswith(plan.per_embed)}
        if extra:
            raise InvalidParameter(*((_name(n), "unknown query parameter") for n in sorted(extra)))
        return extra

    def validate_request(self, request: Any) -> None:
        plan = self._plan
        if self.strict_validation:
            self.validate_query_parameter_list(request, self.security_query_params)
        if plan.query:
            given = request.query_params
            for check in plan.query:
                check.run(given.get(check.name))
        if plan.path:
            given = request.path_params
            for check in plan.path:
                check.run(given.get(check.key))
        if plan.header:
            headers = request.headers
            for check in plan.header:
                check.run(headers.get(check.name))
        if plan.cookie:
            cookies = request.cookies
            for check in plan.cookie:
                check.run(cookies.get(check.name))

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict[str, Any],
                           param_name: str | None = None) -> None:
        _Check(param, parameter_type, param_name).run(value)


class _Check:
    """One parameter of the spec: its name, whether it may be null or absent, its validator."""

    __slots__ = ("key", "kind", "name", "nullable", "required", "validator")

    def __init__(self, param: dict[str, Any], kind: str, name: str | None = None) -> None:
        self.name: str = param.get("name", name or "")
        self.key = self.name.replace("-", "_")  # how Flask/Starlette name a path parameter
        self.kind = kind
        self.required = bool(param.get("required"))
        self.nullable = bool(is_nullable(param))
        self.validator = Draft4Validator(param.get("schema", param), format_checker=_FORMATS)

    def run(self, value: Any) -> None:
        if self.nullable and is_null(value):
            return
        if value is None:
            if self.required:
                raise InvalidParameter((self.name, f"required {self.kind} parameter is missing"))
            return
        error = best_match(self.validator.iter_errors(value))
        if error is not None:
            raise InvalidParameter((self.name, f"{reason(error)}, got {_shown(error.instance)}"))


class _Plan:
    """One operation's parameters, ready to check: grouped by location, validators compiled."""

    def __init__(self, parameters: list[dict[str, Any]]) -> None:
        self.parameters = parameters  # kept alive: its id() is the cache key
        self.count = len(parameters)
        self.by_location: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for p in parameters:
            self.by_location[p["in"]].append(p)
        checks = {where: [_Check(p, where) for p in self.by_location.get(where, ())]
                  for where in ("query", "path", "header", "cookie")}
        self.query, self.path = checks["query"], checks["path"]
        self.header, self.cookie = checks["header"], checks["cookie"]
        self.query_names = frozenset(p["name"] for p in self.by_location.get("query", ()))
        self.per_embed = tuple(p["name"] + "." for p in self.by_location.get("query", ())
                               if p.get("x-per-embed"))

    def is_for(self, parameters: list[dict[str, Any]]) -> bool:
        return self.parameters is parameters and self.count == len(parameters)


# Operation's parameter list (by identity) -> its plan. An operation keeps its list for its
# lifetime; the plan holds the list, so its id() cannot be reused while the entry exists, and
# the length check notices a list Connexion extended (path-level parameters) after the fact.
# Bounded, for processes that build many apps (tests).
_PLANS: dict[int, _Plan] = {}
_MAX_PLANS = 1024


def _plan_for(parameters: list[dict[str, Any]]) -> _Plan:
    plan = _PLANS.get(id(parameters))
    if plan is None or not plan.is_for(parameters):
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[id(parameters)] = _Plan(parameters)
    return plan


def reason(error: ValidationError) -> str:
    """What the schema asks for, in words: never the schema or the traceback-like report."""
    limit = error.validator_value
    by_keyword = {
        "minimum": f"must be at least {limit}",
        "maximum": f"must be at most {limit}",
        "type": f"must be of type {limit}",
        "enum": "must be one of " + ", ".join(str(v) for v in limit) if isinstance(
            limit, list) else "",
        "minLength": f"must be at least {limit} characters long",
        "maxLength": f"must be at most {limit} characters long",
        "minItems": f"must be given at least {limit} times",
        "maxItems": f"may be given at most {limit} times",
        "pattern": f"must match the pattern {limit}",
        "format": f"must be a valid {limit}",
    }
    return by_keyword.get(str(error.validator)) or f"is not valid ({error.validator})"


def _name(name: str) -> str:
    return name if len(name) <= 40 else name[:40] + "..."


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} values"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:40] + "..."


class _ValidationOperation(RequestValidationOperation):
    """Connexion's request validation of one operation, lean when it takes no request body.

    Connexion makes a URI parser and a parameter validator for every request, and reads the
    ``Content-Type`` to check it and the body against the operation's ``requestBody``. Without
    one (every operation of our spec), those checks have nothing to check (``consumes`` is
    empty, the body schema too); parser and validator hold nothing of a request, so they are
    made once. An operation with a request body is validated by Connexion's code unchanged.
    """

    _parameters: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._operation.request_body:
            await super().__call__(scope, receive, send)
            return
        if self._parameters is None:
            operation = self._operation
            parser = operation._uri_parser_class(operation.parameters, operation.body_definition())
            self._parameters = self._validator_map["parameter"](
                operation.parameters, uri_parser=parser, strict_validation=self.strict_validation,
                security_query_params=self.security_query_params)
        self._parameters.validate(scope)
        await self.next_app(scope, receive, send)


class _ValidationAPI(RequestValidationAPI):
    def make_operation(self, operation: AbstractOperation) -> RequestValidationOperation:
        return _ValidationOperation(self.next_app, operation=operation,
                                    strict_validation=self.strict_validation,
                                    validator_map=self.validator_map)


class RequestValidation(RequestValidationMiddleware):
    """Connexion's request validation middleware, with :class:`_ValidationOperation`."""

    api_cls = _ValidationAPI


def middlewares(stack: list[type]) -> list[type]:
    """Connexion's middleware ``stack`` with its request validation replaced by ours."""
    return [RequestValidation if m is RequestValidationMiddleware else m for m in stack]
