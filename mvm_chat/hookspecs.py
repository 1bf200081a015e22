"""The hooks a plugin may implement; each is documented in ``docs/plugins.md``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import pluggy

from mvm_chat.types import Escalation, Turn

hookspec = pluggy.HookspecMarker("mvm_chat")


@hookspec
def register_intent_classifiers(register: Callable[[Any], None]) -> None:
    """Register intent classifiers: objects with ``name`` and ``classify(turn)``."""


@hookspec
def register_retrievers(register: Callable[[Any], None]) -> None:
    """Register retrievers: objects with ``name`` and ``retrieve(turn, limit)``."""


@hookspec
def register_escalation_policies(register: Callable[[Any], None]) -> None:
    """Register escalation policies with ``before_generation`` / ``after_generation``."""


@hookspec
def register_skills(register: Callable[[Any], None]) -> None:
    """Register skills: objects with ``name``, ``intents`` and ``handle(turn)``."""


@hookspec
def register_embedders(register: Callable[[Any], None]) -> None:
    """Register text embedders: objects with ``name`` and a blocking ``embed(texts)``."""


@hookspec
def register_engines(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register engine kinds: ``register(kind, factory)``, ``factory(model_config) -> Engine``."""


@hookspec
def register_routes(register: Callable[[Any], None]) -> None:
    """Register extra Litestar route handlers or routers."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``mvm-chat`` click group."""


@hookspec
def on_turn_complete(turn: Turn, result: Any) -> None:
    """Called after a turn's answer and ledger rows are stored."""


@hookspec
def on_escalation(turn: Turn, escalation: Escalation) -> None:
    """Called when a turn moves to another tier, model or a human."""


@hookspec
def on_budget_threshold(tenant: str, spent_usd: Any, budget_usd: Any) -> None:
    """Called when a tenant's monthly spend crosses 50, 80 or 100% of its budget."""


@hookspec
def startup(app: Any) -> None:
    """Called once when the application starts."""


@hookspec
def shutdown(app: Any) -> None:
    """Called once when the application stops."""
