"""Typed settings: one TOML file, then environment overrides (DESIGN section 8)."""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from mvm_chat.errors import ConfigError

DEFAULT_CONFIG_NAME = "mvm_chat.toml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/mvm_chat.db"
ENV_OVERRIDES = {
    "MVM_CHAT_DATABASE_URL": ("database", "url"),
    "MVM_CHAT_REDIS_URL": ("redis", "url"),
    "MVM_CHAT_HOST": ("server", "host"),
    "MVM_CHAT_PORT": ("server", "port"),
}


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


LOOPBACK_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")
"""Browser origins allowed by default: pages served from this machine, any port."""


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1024 * 1024
    log_level: str = "info"
    cors_origins: list[str] = msgspec.field(default_factory=lambda: list(LOOPBACK_ORIGINS))
    """Origins whose browser scripts may call the API (``*`` as the port: any port); ``[]``:
    none."""
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    """``Host`` names served (``*.example.com`` matches subdomains); empty: any, except that
    a connection arriving over loopback must always name a loopback host."""


class LimitsSettings(_Section):
    """Per-key limits (DESIGN section 5); 0 turns a limit off."""

    requests_per_minute: int = 0
    """Requests per API key per minute, all routes together (Redis when configured, shared by
    every process; else, and while Redis fails, counted in each process)."""
    concurrent_streams: int = 0
    """Answers in progress per API key and process (streamed or not, WebSocket turns too)."""
    max_messages: int = 1000
    """Messages in one request's prompt (``messages`` of ``/v1/chat/completions``)."""
    max_message_chars: int = 100_000
    """Characters of one message."""
    websocket_idle_s: float = 600.0
    """Seconds a WebSocket may stay without a frame either way before the server closes it."""


class TenantSettings(_Section):
    """``[tenants.NAME]``: what one tenant may use."""

    allowed_tiers: list[str] = msgspec.field(default_factory=list)
    """Tiers whose models the tenant's turns may use; empty: all of them."""


class DatabaseSettings(_Section):
    url: str = DEFAULT_DATABASE_URL

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class RedisSettings(_Section):
    url: str = ""
    key_prefix: str = "mvm:"
    timeout_s: float = 0.25


class TierSettings(_Section):
    name: str


class ModelSettings(_Section):
    """One entry of the model catalog."""

    name: str
    tier: str
    engine: str
    path: str = ""
    base_url: str = ""
    api_key_env: str = ""
    upstream_model: str = ""
    price_input_per_mtok: Decimal | None = None
    """USD per million prompt tokens; required for ``openai`` (paid API) models."""
    price_output_per_mtok: Decimal | None = None
    """USD per million completion tokens; required for ``openai`` (paid API) models."""
    gpu_hour_usd: Decimal = Decimal(0)
    cpu_hour_usd: Decimal = Decimal(0)
    gpus: int = 1
    max_queue: int = 8
    slo_ms: int = 4000
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    context_length: int = 2048
    threads: int = 0
    max_tokens: int = 256
    temperature: float = 0.2
    metrics_interval_s: float = 5.0
    """``sglang``: seconds between scrapes of the server's ``/metrics``; 0 turns scraping off."""
    architecture: str = ""
    """Self-hosted: a catalog name (``mixtral-8x7b``) or a ``config.json`` / GGUF path; with
    ``gpu`` it lets the capacity planner estimate cost before the model has measured traffic."""
    gpu: str = ""
    """Self-hosted: the GPU it runs on, a name from the planner's table (``h100-80gb``)."""
    quant: str = ""
    """Self-hosted: the weights' quantisation for the planner (bf16, fp8, int8, int4); empty
    means bf16."""
    expert_dump_dir: str = ""
    """``sglang`` MoE: the directory SGLang writes its expert-distribution dumps to
    (``SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR`` on its host), shared with this process."""


class RoutingSettings(_Section):
    default_tier: str = "local"
    baseline_model: str = ""
    max_escalations: int = 2
    calm_turns_to_step_down: int = 3
    intent_floors: dict[str, str] = msgspec.field(default_factory=dict)
    breaker_failures: int = 3
    """Consecutive failed calls that open a model's circuit breaker."""
    breaker_cooldown_s: float = 30.0
    """Seconds an open breaker waits before it lets one trial call through."""


class IntentSettings(_Section):
    order: list[str] = msgspec.field(default_factory=list)
    """Classifier names in priority order: a tie in confidence goes to the earlier one."""


class RetrievalSettings(_Section):
    limit: int = 3
    """Passages added to the prompt, best first, from all retrievers together."""
    min_score: float = 0.0


class ChatSettings(_Section):
    system_prompt: str = "You are a helpful, concise customer-service assistant."
    history_messages: int = 20
    cache_ttl_s: int = 3600
    semantic_cache: str = ""
    """The embedder (``register_embedders``) of the semantic response cache; empty: off."""
    semantic_threshold: float = 0.92
    """The cosine similarity at or above which a stored answer serves a new question."""
    semantic_max_entries: int = 10_000
    """Answers kept per conversation state (tenant, system prompt, history, settings)."""


class HandoffSettings(_Section):
    holding_message: str = "I have passed this to a person on our team; they will reply here."


def _default_tiers() -> list[TierSettings]:
    return [TierSettings(name="local")]


def _default_models() -> list[ModelSettings]:
    return [
        ModelSettings(
            name="smollm2-135m", tier="local", engine="llamacpp", path="builtin:smollm2-135m"
        )
    ]


class Settings(_Section):
    """The whole configuration; ``Settings()`` is the embedded default."""

    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    tiers: list[TierSettings] = msgspec.field(default_factory=_default_tiers)
    models: list[ModelSettings] = msgspec.field(default_factory=_default_models)
    routing: RoutingSettings = msgspec.field(default_factory=RoutingSettings)
    chat: ChatSettings = msgspec.field(default_factory=ChatSettings)
    intents: IntentSettings = msgspec.field(default_factory=IntentSettings)
    retrieval: RetrievalSettings = msgspec.field(default_factory=RetrievalSettings)
    handoff: HandoffSettings = msgspec.field(default_factory=HandoffSettings)
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    tenants: dict[str, TenantSettings] = msgspec.field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)

    def model(self, name: str) -> ModelSettings | None:
        """The catalog entry called ``name``, if any."""
        return next((m for m in self.models if m.name == name), None)

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]


_PATH_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN_RE = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_RE = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _dotted(path: str) -> str:
    return path.lstrip(".")


def _config_error(exc: msgspec.ValidationError) -> ConfigError:
    match = _PATH_RE.match(str(exc))
    msg, path = (match["msg"], match["path"] or "") if match else (str(exc), "")
    key = _dotted(path)
    for regex, problem in ((_UNKNOWN_RE, "unknown key"), (_MISSING_RE, "missing required key")):
        found = regex.search(msg)
        if found:
            key = f"{key}.{found['field']}" if key else found["field"]
            return ConfigError(key, problem)
    return ConfigError(key or "config", msg[0].lower() + msg[1:] if msg else "invalid")


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: ``explicit``, else ``MVM_CHAT_CONFIG``, else ``./mvm_chat.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MVM_CHAT_CONFIG")
    if env:
        return Path(env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def _apply_env(raw: dict[str, Any], environ: dict[str, str] | os._Environ[str]) -> None:
    for var, (section, key) in ENV_OVERRIDES.items():
        value = environ.get(var)
        if value is None or value == "":
            continue
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(section, "must be a table")
        if key == "port":
            if not value.isdigit():
                raise ConfigError(f"{var} (server.port)", f"expected an integer, got {value!r}")
            table[key] = int(value)
        else:
            table[key] = value


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming the bad key."""
    environ = os.environ if environ is None else environ
    file = find_config_file(path)
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(file), "config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), f"not valid TOML ({exc})") from None
    _apply_env(raw, environ)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise _config_error(exc) from None
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Cross-field checks that the types alone cannot express."""
    tiers = settings.tier_names
    if not tiers:
        raise ConfigError("tiers", "at least one tier is required")
    if "human" in tiers[:-1]:
        raise ConfigError("tiers", '"human" can only be the last tier')
    if len(set(tiers)) != len(tiers):
        raise ConfigError("tiers", "tier names must be unique")
    if not settings.models:
        raise ConfigError("models", "at least one model is required")
    seen: set[str] = set()
    for i, model in enumerate(settings.models):
        where = f"models[{i}]"
        if model.name in seen:
            raise ConfigError(f"{where}.name", f"duplicate model name {model.name!r}")
        seen.add(model.name)
        if model.name == "auto":
            raise ConfigError(f"{where}.name", '"auto" is reserved for routing')
        if model.tier not in tiers:
            raise ConfigError(f"{where}.tier", f"unknown tier {model.tier!r} (tiers: {tiers})")
        if not 1 <= model.max_tokens <= 32768:
            raise ConfigError(f"{where}.max_tokens", "must be between 1 and 32768")
        _validate_prices(model, where)
        _validate_hardware(model, where)
    if not 0 < settings.chat.semantic_threshold <= 1:
        raise ConfigError("chat.semantic_threshold", "must be above 0 and at most 1")
    if settings.chat.semantic_max_entries < 1:
        raise ConfigError("chat.semantic_max_entries", "must be at least 1")
    if settings.routing.default_tier not in tiers:
        raise ConfigError("routing.default_tier", f"unknown tier {settings.routing.default_tier!r}")
    for label, tier in settings.routing.intent_floors.items():
        if tier not in tiers:
            raise ConfigError(f"routing.intent_floors.{label}", f"unknown tier {tier!r}")
    baseline = settings.routing.baseline_model
    if baseline:
        found = settings.model(baseline)
        if found is None:
            raise ConfigError("routing.baseline_model", f"unknown model {baseline!r}")
        if found.price_input_per_mtok is None or found.price_output_per_mtok is None:
            raise ConfigError(
                "routing.baseline_model",
                f"model {baseline!r} has no per-token prices to measure savings against",
            )
    if not 0 < settings.server.port < 65536:
        raise ConfigError("server.port", "must be between 1 and 65535")
    if settings.server.max_body_bytes < 1024:
        raise ConfigError("server.max_body_bytes", "must be at least 1024")
    _validate_limits(settings.limits)
    for name, tenant in settings.tenants.items():
        for tier in tenant.allowed_tiers:
            if tier not in tiers:
                raise ConfigError(f"tenants.{name}.allowed_tiers", f"unknown tier {tier!r}")
        if tenant.allowed_tiers and not any(
            m.tier in tenant.allowed_tiers for m in settings.models
        ):
            raise ConfigError(f"tenants.{name}.allowed_tiers", "no model is on these tiers")


def _validate_limits(limits: LimitsSettings) -> None:
    for key in ("requests_per_minute", "concurrent_streams"):
        if getattr(limits, key) < 0:
            raise ConfigError(f"limits.{key}", "must be 0 (off) or more")
    for key in ("max_messages", "max_message_chars"):
        if getattr(limits, key) < 1:
            raise ConfigError(f"limits.{key}", "must be at least 1")
    if limits.websocket_idle_s <= 0:
        raise ConfigError("limits.websocket_idle_s", "must be more than 0")


PAID_ENGINES = ("openai",)
"""Engines whose calls are billed per token by someone else: they must be priced."""


def _validate_prices(model: ModelSettings, where: str) -> None:
    for key in ("price_input_per_mtok", "price_output_per_mtok", "gpu_hour_usd", "cpu_hour_usd"):
        value = getattr(model, key)
        if value is not None and (not value.is_finite() or value < 0):
            raise ConfigError(f"{where}.{key}", f"model {model.name!r}: must be a price >= 0")
        if value is None and key.startswith("price_") and model.engine in PAID_ENGINES:
            raise ConfigError(
                f"{where}.{key}",
                f"model {model.name!r} is a paid API model and has no price "
                '(USD per million tokens, a decimal string; "0" if it is free)',
            )
    if model.gpus < 1:
        raise ConfigError(f"{where}.gpus", "must be at least 1")


def _validate_hardware(model: ModelSettings, where: str) -> None:
    """``architecture``, ``gpu`` and ``quant`` name things the capacity planner knows."""
    from mvm_chat.engines import catalog, gpus, planner

    if model.gpu and gpus.gpu(model.gpu) is None:
        known = ", ".join(gpus.GPUS)
        raise ConfigError(f"{where}.gpu", f"unknown GPU {model.gpu!r} (known: {known})")
    if model.quant and model.quant not in planner.QUANTS:
        known = ", ".join(planner.QUANTS)
        raise ConfigError(f"{where}.quant", f"unknown quantisation {model.quant!r} ({known})")
    if not model.architecture:
        return
    if model.gpus not in planner.TP_SIZES:
        sizes = ", ".join(map(str, planner.TP_SIZES))
        raise ConfigError(f"{where}.gpus", f"the capacity planner covers {sizes} GPUs")
    arch = catalog.reference(model.architecture)
    if arch is None:
        path = Path(model.architecture).expanduser()
        if not (path.is_file() or (path / "config.json").is_file()):
            raise ConfigError(
                f"{where}.architecture",
                f"{model.architecture!r} is neither a catalog model "
                f"({', '.join(catalog.names())}) nor a config.json or GGUF file",
            )
        return
    problem = planner.tp_problem(arch, model.gpus)
    if problem is not None:
        raise ConfigError(f"{where}.gpus", f"{model.gpus} GPUs cannot serve {arch.name}: {problem}")
