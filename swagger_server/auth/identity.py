"""Who is asking: the outcome of authentication, handed to the request's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["jwt", "api_key", "anonymous"]


@dataclass(frozen=True)
class Identity:
    role: str  # the PostgreSQL role the request runs as (still to be checked against the catalog)
    # The verified claims, exposed to SQL as request.jwt.claims. Shared by every request that
    # presents the same token (the cache): treat as read-only.
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    source: Source = "jwt"
