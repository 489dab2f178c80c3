"""The keys that bound what one client can cost (EXPORT_STALL_TIMEOUT, MAX_EXPORTS,
MAX_OFFSET, COUNT_TIMEOUT): defaults, values, and out-of-range values refused at start."""

from __future__ import annotations

import pytest

from swagger_server.config import ConfigError, load_settings


def test_defaults() -> None:
    api = load_settings(path="/dev/null", environ={}).api
    assert (api.export_stall_timeout, api.max_exports, api.max_offset, api.count_timeout) == \
        (30.0, 4, 100_000, 1000)


def test_values_from_the_environment() -> None:
    api = load_settings(path="/dev/null", environ={
        "API_EXPORT_STALL_TIMEOUT": "2.5", "API_MAX_EXPORTS": "10", "API_MAX_OFFSET": "0",
        "API_COUNT_TIMEOUT": "50"}).api
    assert (api.export_stall_timeout, api.max_exports, api.max_offset, api.count_timeout) == \
        (2.5, 10, 0, 50)


@pytest.mark.parametrize(("name", "value"), [
    ("API_EXPORT_STALL_TIMEOUT", "0"),
    ("API_EXPORT_STALL_TIMEOUT", "inf"),
    ("API_EXPORT_STALL_TIMEOUT", "soon"),
    ("API_MAX_EXPORTS", "0"),
    ("API_MAX_EXPORTS", "four"),
    ("API_MAX_OFFSET", "-1"),
    ("API_MAX_OFFSET", str(2**63)),  # beyond PostgreSQL's bigint OFFSET
    ("API_COUNT_TIMEOUT", "0"),
    ("API_COUNT_TIMEOUT", str(2**31)),  # beyond what statement_timeout takes
])
def test_a_bad_value_stops_start_up_naming_its_key(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: "):
        load_settings(path="/dev/null", environ={name: value})
