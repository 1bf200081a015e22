"""Every hook, and each of its arguments, is documented in docs/plugins.md."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mvm_chat import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
HOOKS = [
    (name, fn)
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "mvm_chat_spec")
]


def test_there_are_hooks() -> None:
    assert {name for name, _ in HOOKS} >= {"register_engines", "on_turn_complete", "startup"}


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=[name for name, _ in HOOKS])
def test_hook_is_documented(name: str, fn: object) -> None:
    text = DOCS.read_text()
    assert f"`{name}" in text or f"{name}(" in text, f"{name} missing from docs/plugins.md"
    for arg in inspect.signature(fn).parameters:  # type: ignore[arg-type]
        assert arg in text, f"argument {arg} of {name} missing from docs/plugins.md"
