"""What plugins registered (classifiers, retrievers, policies, skills), called in isolation.

A component that raises is logged with its plugin's name, counted (``/metrics`` and
``/admin/plugins``) and skipped for that turn: a broken plugin never breaks a conversation.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from mvm_chat import redaction
from mvm_chat.errors import ConfigError
from mvm_chat.metrics import Metrics
from mvm_chat.plugins import PluginSet
from mvm_chat.settings import Settings

if TYPE_CHECKING:
    from mvm_chat.chat.services import Services

log = structlog.get_logger(__name__)

KINDS = {
    "intent_classifier": "register_intent_classifiers",
    "retriever": "register_retrievers",
    "escalation_policy": "register_escalation_policies",
    "skill": "register_skills",
    "embedder": "register_embedders",
}


@dataclass(frozen=True, slots=True)
class Component:
    """One registered object and the plugin it came from."""

    plugin: str
    kind: str
    obj: Any

    @property
    def name(self) -> str:
        return str(getattr(self.obj, "name", type(self.obj).__name__))


def resolve_env(value: Any, where: str) -> Any:
    """Replace every ``{env = "VAR"}`` in a plugin's config with that variable's value."""
    import os

    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            if value["env"] not in os.environ:
                raise ConfigError(where, f"environment variable {value['env']} is not set")
            return redaction.remember(os.environ[value["env"]])
        return {k: resolve_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def plugin_config(settings: Settings, plugin: str) -> dict[str, Any]:
    """``[plugins.NAME]`` of the config, secrets read from the environment."""
    raw = settings.plugins.get(plugin, {})
    resolved: dict[str, Any] = resolve_env(raw, f"plugins.{plugin}")
    return resolved


class Registrar:
    """The ``register`` callable handed to one plugin's ``register_*`` hook.

    Besides being called with each object, it carries what a plugin may need to build them:
    ``config`` (its ``[plugins.NAME]`` table), ``settings`` and, inside a running app,
    ``services`` (``None`` in command-line tools such as ``mvm-chat eval``).
    """

    def __init__(
        self,
        plugin: str,
        kind: str,
        sink: list[Component],
        settings: Settings,
        services: Services | None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.plugin = plugin
        self.kind = kind
        self.settings = settings
        self.services = services
        self.config = plugin_config(settings, plugin) if config is None else config
        self._sink = sink

    def __call__(self, obj: Any) -> None:
        self._sink.append(Component(self.plugin, self.kind, obj))


def register_from(
    plugins: PluginSet,
    kind: str,
    settings: Settings,
    services: Services | None = None,
    only: str | None = None,
    config: dict[str, Any] | None = None,
    errors: Counter[str] | None = None,
) -> list[Component]:
    """Call one ``register_*`` hook plugin by plugin; a plugin that raises is skipped."""
    found: list[Component] = []
    hook = getattr(plugins.pm.hook, KINDS[kind])
    for impl in reversed(hook.get_hookimpls()):  # pluggy's call order
        if only is not None and impl.plugin_name != only:
            continue
        register = Registrar(impl.plugin_name, kind, found, settings, services, config)
        try:
            impl.function(register=register)
        except ConfigError:
            raise
        except Exception as exc:
            if errors is not None:
                errors[impl.plugin_name] += 1
            log.error(
                "plugin.register_failed",
                plugin=impl.plugin_name,
                hook=hook.name,
                error=f"{type(exc).__name__}: {exc}",
            )
    return found


@dataclass(slots=True)
class Components:
    """Every registered classifier, retriever, escalation policy, skill and embedder of an app."""

    metrics: Metrics
    items: list[Component] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @classmethod
    def build(
        cls, plugins: PluginSet, settings: Settings, services: Services | None, metrics: Metrics
    ) -> Components:
        """Call every ``register_*`` hook; ``services`` is None outside a running app."""
        components = cls(metrics)
        for kind in KINDS:
            components.items += register_from(
                plugins, kind, settings, services, errors=components.errors
            )
        for plugin, count in components.errors.items():
            metrics.series(metrics.plugin_errors, plugin).inc(count)
        return components

    def of(self, kind: str) -> list[Component]:
        return [c for c in self.items if c.kind == kind]

    async def call(self, component: Component, method: str, *args: Any) -> Any:
        """``component.obj.method(*args)``, awaited if need be; None if it raises."""
        [outcome] = await self.call_all([component], method, *args)
        return outcome

    async def call_all(self, components: list[Component], method: str, *args: Any) -> list[Any]:
        """:meth:`call` on each of ``components``, in order; the awaitables they return are
        awaited together (a task each only when there is more than one to wait for)."""
        outcomes: list[Any] = []
        waiting: list[int] = []
        for component in components:
            try:
                outcome = getattr(component.obj, method)(*args)
            except Exception as exc:
                self._failed(component, method, exc)
                outcome = None
            if inspect.isawaitable(outcome):
                waiting.append(len(outcomes))
            outcomes.append(outcome)
        if len(waiting) == 1:
            [i] = waiting
            outcomes[i] = await self._awaited(components[i], method, outcomes[i])
        elif waiting:
            done = await asyncio.gather(
                *(self._awaited(components[i], method, outcomes[i]) for i in waiting)
            )
            for i, outcome in zip(waiting, done, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _awaited(self, component: Component, method: str, outcome: Awaitable[Any]) -> Any:
        try:
            return await outcome
        except Exception as exc:
            self._failed(component, method, exc)
            return None

    def _failed(self, component: Component, method: str, exc: Exception) -> None:
        self.errors[component.plugin] += 1
        self.metrics.series(self.metrics.plugin_errors, component.plugin).inc()
        log.error(
            "plugin.error",
            plugin=component.plugin,
            component=component.name,
            method=method,
            error=f"{type(exc).__name__}: {exc}",
        )


async def fire(services: Services, hook_name: str, **kwargs: Any) -> None:
    """Call an event hook on every plugin, each in isolation (errors logged and counted)."""
    hook = getattr(services.plugins.pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            outcome = impl.function(**{a: kwargs[a] for a in impl.argnames})
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            services.metrics.series(services.metrics.plugin_errors, impl.plugin_name).inc()
            if services.components is not None:
                services.components.errors[impl.plugin_name] += 1
            log.error(
                "plugin.error",
                plugin=impl.plugin_name,
                hook=hook_name,
                error=f"{type(exc).__name__}: {exc}",
            )


def describe(plugins: PluginSet, components: Components | None) -> list[dict[str, Any]]:
    """Each plugin: where it came from, its hooks, what it registered, its error count."""
    rows: list[dict[str, Any]] = []
    items = components.items if components else []
    engine_kinds: dict[str, list[str]] = {}
    for impl in plugins.pm.hook.register_engines.get_hookimpls():
        kinds = engine_kinds.setdefault(impl.plugin_name, [])
        try:
            impl.function(register=lambda kind, _factory, kinds=kinds: kinds.append(kind))
        except Exception as exc:
            log.error("plugin.register_failed", plugin=impl.plugin_name, error=str(exc))
    errors = components.errors if components else Counter[str]()
    for name, source in plugins.sources.items():
        plugin = plugins.pm.get_plugin(name)
        hooks = sorted(c.name for c in plugins.pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": name,
                "source": source,
                "hooks": hooks,
                "components": [f"engine:{k}" for k in engine_kinds.get(name, [])]
                + [f"{c.kind}:{c.name}" for c in items if c.plugin == name],
                "errors": errors[name],
                "load_error": None,
            }
        )
    for failure in plugins.load_errors:
        rows.append(
            {
                "name": failure.name,
                "source": failure.source,
                "hooks": [],
                "components": [],
                "errors": 1,
                "load_error": failure.error,
            }
        )
    return rows
