"""Plugin loading: built-in defaults, entry points and a plugins folder (one manager per app)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import structlog

from mvm_chat import hookspecs
from mvm_chat.errors import ConfigError

log = structlog.get_logger(__name__)

DEFAULT_PLUGINS = (
    "mvm_chat.default_plugins.engines",
    "mvm_chat.default_plugins.keyword_intents",
    "mvm_chat.default_plugins.tfidf_intents",
    "mvm_chat.default_plugins.llm_intents",
    "mvm_chat.default_plugins.escalation_policies",
    "mvm_chat.default_plugins.answer_checks",
    "mvm_chat.default_plugins.kb_search",
)
ENTRY_POINT_GROUP = "mvm_chat"


@dataclass(slots=True)
class PluginLoadError:
    name: str
    source: str
    error: str


@dataclass(slots=True)
class PluginSet:
    """A plugin manager and what happened while loading it."""

    pm: pluggy.PluginManager
    sources: dict[str, str] = field(default_factory=dict)
    load_errors: list[PluginLoadError] = field(default_factory=list)


def _allowed(name: str, only: set[str] | None) -> bool:
    return only is None or name in only


def _short(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


def _load_file(path: Path) -> ModuleType:
    module_name = f"mvm_chat_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _check_hook_names(pm: pluggy.PluginManager, name: str) -> None:
    """Reject a plugin whose hook names match no hookspec (a typo would never be called)."""
    for caller in pm.get_hookcallers(pm.get_plugin(name)) or []:
        if caller.spec is None:
            raise pluggy.PluginValidationError(
                pm.get_plugin(name),
                f"plugin {name!r}: hook {caller.name!r} matches no mvm_chat hookspec",
            )


def load_plugins(
    plugins_dir: str | os.PathLike[str] | None = None,
    strict: bool = False,
    only: Iterable[str] | None = None,
) -> PluginSet:
    """A new plugin manager with the built-in, installed and folder plugins registered."""
    pm = pluggy.PluginManager("mvm_chat")
    pm.add_hookspecs(hookspecs)
    plugins = PluginSet(pm)
    env_only = os.environ.get("MVM_CHAT_LOAD_PLUGINS")
    allowed = set(only) if only is not None else None
    if allowed is None and env_only:
        allowed = {n.strip() for n in env_only.split(",") if n.strip()}

    def attempt(name: str, source: str, load: Callable[[], Any], builtin: bool = False) -> None:
        if not builtin and not _allowed(name, allowed):
            return
        try:
            module = load()
            pm.register(module, name=name)
            _check_hook_names(pm, name)
            plugins.sources[name] = source
        except Exception as exc:
            if pm.is_registered(pm.get_plugin(name)):
                pm.unregister(name=name)
            if strict:
                raise ConfigError(f"plugins.{name}", f"failed to load: {exc}") from exc
            error = f"{type(exc).__name__}: {exc}"
            plugins.load_errors.append(PluginLoadError(name, source, error))
            log.error("plugin.load_failed", plugin=name, source=source, error=error)

    for module_name in DEFAULT_PLUGINS:
        attempt(_short(module_name), "builtin", partial(importlib.import_module, module_name), True)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        attempt(ep.name, f"entry point {ep.value}", ep.load)
    folder = plugins_dir or os.environ.get("MVM_CHAT_PLUGINS_DIR")
    if folder:
        for path in sorted(Path(folder).glob("*.py")):
            attempt(path.stem, str(path), partial(_load_file, path))
    pm.check_pending()
    return plugins


def collect(hook: Any, **kwargs: Any) -> list[Any]:
    """Call a ``register_*`` hook and return what the plugins registered, in hook order."""
    found: list[Any] = []
    hook(register=found.append, **kwargs)
    return found


def engine_factories(pm: pluggy.PluginManager) -> dict[str, Callable[..., Any]]:
    """Engine kinds registered through ``register_engines``; the first registration wins."""
    factories: dict[str, Callable[..., Any]] = {}

    def register(kind: str, factory: Callable[..., Any]) -> None:
        factories.setdefault(kind, factory)

    pm.hook.register_engines(register=register)
    return factories
