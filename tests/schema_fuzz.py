"""Fuzzing a running server from its own OpenAPI schema with schemathesis (shared by
``tests/integration/test_fuzz_schema.py`` and ``bench/fuzz.py``).

Each operation is driven by Hypothesis with schemathesis's case strategies (data that fits the
schema and data that does not) and every response is checked: no server error, a documented
status code, content type and headers, and a body that matches the schema. Failures are
collected per operation, so one run reports them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import MODEL_TOML, Server

SCHEMA_PATH = "/schema/openapi.json"
MAX_TOKENS = 4
"""Generated ``max_tokens`` above this are lowered to it: each chat stays a few tokens long."""
FUZZ_TOML = MODEL_TOML.replace("max_tokens = 48", f"max_tokens = {MAX_TOKENS}")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ROLES = ("client", "admin", "agent")


class Keys:
    """A key of each role, and which one each route is meant for."""

    def __init__(self, server: Server, tenant: str = "fuzz") -> None:
        self.by_role = {role: server.key(tenant, role) for role in ROLES}

    def right(self, path: str) -> str:
        if path.startswith("/admin/handoffs"):
            return self.by_role["agent"]
        return self.by_role["admin" if path.startswith("/admin") else "client"]

    def wrong(self, path: str) -> str:
        """A valid key whose role may not use the route."""
        if path.startswith("/admin/handoffs"):
            return self.by_role["client"]
        return self.by_role["client" if path.startswith("/admin") else "agent"]


def load(url: str) -> Any:
    """The server's schema, as schemathesis sees it."""
    return schemathesis.openapi.from_url(url + SCHEMA_PATH)


def small(case: schemathesis.Case) -> schemathesis.Case:
    """The case with any valid, larger ``max_tokens`` lowered to :data:`MAX_TOKENS`."""
    if isinstance(case.body, dict):
        for name in ("max_tokens", "max_completion_tokens"):
            value = case.body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS:
                case.body[name] = MAX_TOKENS
    return case


def secured(case: schemathesis.Case) -> bool:
    return bool(case.operation.definition.raw.get("security"))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Outcome:
    """What a run over the operations did."""

    examples: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, label: str, status: int) -> None:
        self.examples[label] = self.examples.get(label, 0) + 1
        counts = self.statuses.setdefault(label, {})
        counts[status] = counts.get(status, 0) + 1

    def report(self) -> str:
        return "\n\n".join(f"{label}:\n{text}" for label, text in self.failures.items())


Call = Callable[[schemathesis.Case], Any]
"""Sends a case and validates the response; returns the response."""


def fuzz(
    schema: Any,
    call: Call,
    max_examples: int,
    *,
    derandomize: bool = True,
    shrink: bool = False,
    skip: Callable[[str], bool] = lambda label: False,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    seed: int | None = None,
) -> Outcome:
    """Every operation of ``schema`` with up to ``max_examples`` cases each (schema-valid,
    schema-invalid, and the schema's own examples), through ``call``."""
    outcome = Outcome()
    started = time.monotonic()
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    config = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        if not skip(operation.label):
            _fuzz_one(operation, call, config, outcome, modes, seed)
    outcome.seconds = time.monotonic() - started
    return outcome


def _fuzz_one(
    operation: Any,
    call: Call,
    config: settings,
    outcome: Outcome,
    modes: tuple[GenerationMode, ...],
    seed: int | None,
) -> None:
    label = operation.label
    strategy = st.one_of(
        *(operation.as_strategy(mode) for mode in modes),
        *operation.schema.get_strategies_from_examples(operation),
    )

    @config
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = call(small(case))
        outcome.record(label, response.status_code)

    try:
        (run if seed is None else hypothesis.seed(seed)(run))()
    except Exception as exc:  # a failed check: go on with the next operation, report them all
        outcome.failures[label] = str(exc)[:4000]


def stateful(schema: Any, keys: Keys, max_examples: int, steps: int) -> Outcome:
    """Scenarios along the schema's links (create a conversation, send to it, read it; set a
    budget, read it, delete it), every response checked; raises on the first failure."""
    outcome = Outcome()
    started = time.monotonic()

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            small(case)
            return {"headers": bearer(keys.right(case.path)), "timeout": 60}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            outcome.record(case.operation.label, response.status_code)
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Workflow.run(
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            derandomize=True,  # the same scenarios every run: the links are walked, not by luck
            suppress_health_check=list(HealthCheck),
        )
    )
    outcome.seconds = time.monotonic() - started
    return outcome


def links(schema: Any) -> list[str]:
    """The names of the links the schema declares."""
    return [
        name
        for item in schema.raw_schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
        for response in op.get("responses", {}).values()
        for name in response.get("links", {})
    ]
