"""README "Related data (embedding)": each curl example runs against the demo shop (as customer
42 when it sends "$AUTH", else anonymous) and answers what the README shows (``...`` = any
text)."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable

import jwt
import pytest
from starlette.testclient import TestClient

from swagger_server.config import PROJECT_ROOT
from swagger_server.db import demo
from tests.pg import TestDatabase, create_database

SECRET = "test-secret-for-the-readme-embed-tests-0123456789ab"


def examples() -> list[tuple[str, list[str], list[str]]]:
    """(curl line, its headers, expected output lines) of the section's code block."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Related data (embedding)", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    found: list[tuple[str, list[str], list[str]]] = []
    for line in block.splitlines():
        if line.startswith("curl "):
            words = shlex.split(line.split("  #", 1)[0])
            headers = [words[i + 1] for i, w in enumerate(words) if w == "-H"]
            found.append((words[-1], headers, []))
        elif line.startswith("# ") and found:
            found[-1][2].append(line[2:])
    return found


def pattern(lines: list[str], joiner: str) -> re.Pattern[str]:
    """The lines as a regex: ``...`` any text; a JSON output wrapped over lines joins with any
    whitespace (PostgreSQL's json_agg writes ", " between elements)."""
    def literal(text: str) -> str:
        return ".*?".join(re.escape(part) for part in text.split("..."))

    if joiner == "\n":
        return re.compile("\n".join(literal(line) for line in lines), re.DOTALL)
    return re.compile(r"\s*".join(literal(line.strip()).replace(r"\ ", r"\s*")
                                  for line in lines), re.DOTALL)


@pytest.fixture(scope="module")
def shop(database: TestDatabase) -> str:
    dsn = create_database(database, "embedreadme")
    assert demo.seed(dsn) is True
    return dsn


@pytest.fixture
def client(shop: str, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(shop, auth={"jwt_secret": SECRET, "anonymous_role": "web_anon"})


def test_the_section_has_examples() -> None:
    assert len(examples()) >= 9


@pytest.mark.parametrize(("url", "headers", "expected"), examples(),
                         ids=lambda v: v[:70] if isinstance(v, str) else "")
def test_each_readme_example_answers_as_shown(client: TestClient, url: str,
                                              headers: list[str], expected: list[str]) -> None:
    sent: dict[str, str] = {}
    for header in headers:
        if header == "$AUTH":
            now = int(time.time())
            value = jwt.encode({"sub": "42", "role": "web_user", "iat": now, "exp": now + 600},
                               SECRET, algorithm="HS256")
            sent["Authorization"] = f"Bearer {value}"
        else:
            name, _, value = header.partition(": ")
            sent[name] = value
    assert url.startswith("$B/")
    response = client.get(url[2:], headers=sent)
    exported = sent.get("Accept") in ("text/csv", "application/x-ndjson")
    body = response.text.rstrip("\n")
    assert pattern(expected, "\n" if exported else "").fullmatch(body), body[:2000]
