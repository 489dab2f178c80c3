"""How Connexion reads and checks request parameters against the spec, made exact and readable.

Two replacements, handed to ``add_api``:

- :class:`RepeatedParameterParser`: a ``style: form, explode: true`` array is a parameter given
  once per value (``?filter=a&filter=b``). Connexion 3.3 joins the repetitions with commas and
  splits the result on commas again, so a value holding a comma (``id.in.(1,2)``) became
  several items, and ``maxItems`` counted commas. Here each repetition is one item, whole.
- :class:`ParameterValidator`: a value the spec rejects is one sentence naming the parameter
  (``limit: must be at least 1, got 0``), not jsonschema's multi-line report, and the problem
  carries RFC 9457 ``invalid-params`` and ``parameter``, like the data API's own 400s.
"""

from __future__ import annotations

from typing import Any

from connexion import validators
from connexion.exceptions import BadRequestProblem
from connexion.uri_parsing import OpenAPIURIParser
from connexion.utils import is_null, is_nullable
from jsonschema import Draft4Validator, ValidationError
from jsonschema.exceptions import best_match

from swagger_server.errors import INVALID_PARAMETER

_FORMATS = Draft4Validator.FORMAT_CHECKER


class RepeatedParameterParser(OpenAPIURIParser):
    """OpenAPI's ``form`` + ``explode`` arrays: one item per repetition, commas kept."""

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
    """Connexion's checks, raising :class:`InvalidParameter` with a clean reason."""

    def validate_query_parameter_list(self, request: Any,
                                      security_params: Any = None) -> set[str]:
        extra = super().validate_query_parameter_list(request, security_params)
        # ``limit.<embed>`` style: a parameter marked ``x-per-embed`` in the spec also comes
        # as ``<name>.<anything>`` (the data API checks what follows the dot); its name may
        # hold a dot itself (``not.or.<embed>``).
        per_embed = tuple(p["name"] + "." for p in self.parameters.get("query", [])
                          if p.get("x-per-embed"))
        extra = {n for n in extra if not n.startswith(per_embed)}
        if extra:
            raise InvalidParameter(*((_name(n), "unknown query parameter") for n in sorted(extra)))
        return extra

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict[str, Any],
                           param_name: str | None = None) -> None:
        name = param.get("name", param_name or "")
        if is_nullable(param) and is_null(value):
            return None
        if value is None:
            if param.get("required"):
                raise InvalidParameter((name, f"required {parameter_type} parameter is missing"))
            return None
        schema = param.get("schema", param)
        error = best_match(Draft4Validator(schema, format_checker=_FORMATS).iter_errors(value))
        if error is not None:
            raise InvalidParameter((name, f"{reason(error)}, got {_shown(error.instance)}"))
        return None


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
