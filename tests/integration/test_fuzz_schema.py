"""schemathesis against a real server's own ``/schema``: every operation with the key of its
role, with no key and with a key of the wrong role, and stateful runs along the schema's links.

Every response must be documented (status code, content type, headers) and match its schema,
and none may be a server error. Chats run SmolLM2 with a tiny token budget so that the module
stays quick; ``bench/fuzz.py`` is the same with many more examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.generation import GenerationMode

from tests.schema_fuzz import (
    CHECKS,
    FUZZ_TOML,
    SCHEMA_PATH,
    Keys,
    bearer,
    fuzz,
    links,
    load,
    secured,
    stateful,
)
from tests.support import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("fuzz-server"), FUZZ_TOML).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keys(server: Server) -> Keys:
    return Keys(server)


@pytest.fixture(scope="module")
def schema(server: Server) -> Any:
    return load(server.url)


def test_every_operation_with_the_key_of_its_role(schema: Any, keys: Keys) -> None:
    def call(case: schemathesis.Case) -> Any:
        headers = bearer(keys.right(case.path)) if secured(case) else {}
        return case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

    outcome = fuzz(schema, call, max_examples=25)
    assert not outcome.failures, outcome.report()
    assert len(outcome.examples) == len(list(schema.get_all_operations()))
    # the fuzzing reached past validation: successes on every route that has no path id
    ok = {label for label, counts in outcome.statuses.items() if any(s < 300 for s in counts)}
    assert {"GET /v1/models", "POST /v1/conversations", "POST /v1/chat/completions"} <= ok


def test_without_a_key_every_secured_operation_answers_401(schema: Any) -> None:
    def call(case: schemathesis.Case) -> Any:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        response = case.call_and_validate(checks=CHECKS, timeout=60)
        assert response.status_code == 401 or not secured(case), response.text
        return response

    outcome = fuzz(schema, call, max_examples=3)
    assert not outcome.failures, outcome.report()


def test_a_key_of_the_wrong_role_is_refused_with_403(schema: Any, keys: Keys) -> None:
    def call(case: schemathesis.Case) -> Any:
        if not secured(case):
            return case.call_and_validate(checks=CHECKS, timeout=60)
        headers = bearer(keys.wrong(case.path))
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)
        assert response.status_code == 403, response.text
        return response

    outcome = fuzz(
        schema,
        call,
        max_examples=3,
        skip=lambda label: "/admin/" not in label,
        modes=(GenerationMode.POSITIVE,),  # negative cases may drop the key: 401
    )
    assert not outcome.failures, outcome.report()


def test_stateful_runs_along_the_links(schema: Any, keys: Keys) -> None:
    assert len(links(schema)) >= 6, links(schema)
    outcome = stateful(schema, keys, max_examples=30, steps=6)
    # the links were followed: a conversation made in a scenario was read back
    detail = outcome.statuses.get("GET /v1/conversations/{conversation_id}", {})
    assert detail.get(200), outcome.statuses


def test_the_schema_documents_its_problem_details(server: Server) -> None:
    """Secured operations list 401, 403, 429 and 503; every error is problem+json (readiness
    excepted: its 503 is its own report); the chat routes may answer with server-sent events."""
    raw = httpx.get(server.url + SCHEMA_PATH).json()
    assert raw["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "status",
        "title",
        "detail",
    ]
    for path, item in raw["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, response in op["responses"].items():
                if int(status) >= 400 and path != "/readyz":
                    content = list(response["content"])
                    assert content == ["application/problem+json"], (method, path, status)
            if op.get("security"):
                assert {"401", "403", "429", "503"} <= set(op["responses"]), (method, path)
    for path in ("/v1/chat/completions", "/v1/conversations/{conversation_id}/messages"):
        assert "text/event-stream" in raw["paths"][path]["post"]["responses"]["200"]["content"]
