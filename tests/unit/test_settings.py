"""Settings: the embedded default, TOML, environment overrides and clear errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from mvm_chat.chat.services import build_engines
from mvm_chat.errors import ConfigError
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import Settings, load_settings
from tests.support import mvm


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.database.url == "sqlite+aiosqlite:///var/mvm_chat.db"
    assert settings.redis.url == ""
    assert settings.tier_names == ["local"]
    [model] = settings.models
    assert (model.name, model.tier, model.engine) == ("smollm2-135m", "local", "llamacpp")
    assert model.path == "builtin:smollm2-135m"


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mvm_chat.toml").write_text("[server]\nport = 9001\n")
    (tmp_path / "env.toml").write_text("[server]\nport = 9002\n")
    (tmp_path / "explicit.toml").write_text("[server]\nport = 9003\n")
    assert load_settings(environ={}).server.port == 9001
    monkeypatch.setenv("MVM_CHAT_CONFIG", str(tmp_path / "env.toml"))
    assert load_settings().server.port == 9002
    assert load_settings(tmp_path / "explicit.toml").server.port == 9003


def test_environment_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nport = 9000\n')
    settings = load_settings(
        config,
        environ={
            "MVM_CHAT_DATABASE_URL": "postgresql+asyncpg://u@h/db",
            "MVM_CHAT_REDIS_URL": "redis://h:6379/1",
            "MVM_CHAT_HOST": "127.0.0.2",
            "MVM_CHAT_PORT": "8100",
        },
    )
    assert settings.database.url == "postgresql+asyncpg://u@h/db"
    assert settings.redis.url == "redis://h:6379/1"
    assert (settings.server.host, settings.server.port) == ("127.0.0.2", 8100)


def test_full_shape_parses(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        """
[[tiers]]
name = "local"
[[tiers]]
name = "api"

[[models]]
name = "smollm2-135m"
tier = "local"
engine = "llamacpp"
path = "builtin:smollm2-135m"

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "FRONTIER_API_KEY"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"

[routing]
baseline_model = "frontier"
[routing.intent_floors]
dispute_charge = "api"

[plugins.some_plugin]
token = { env = "SOME_TOKEN" }
"""
    )
    settings = load_settings(config, environ={})
    frontier = settings.model("frontier")
    assert frontier is not None
    assert frontier.price_output_per_mtok == Decimal("10.00")
    assert settings.routing.intent_floors == {"dispute_charge": "api"}
    assert settings.plugins["some_plugin"]["token"] == {"env": "SOME_TOKEN"}


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\nprot = 1\n", "server.prot"),
        ("[sever]\nport = 1\n", "sever"),
        ('[server]\nport = "eighty"\n', "server.port"),
        ('[[models]]\nname = "m"\ntier = "local"\n', "models[0].engine"),
        ('[[models]]\nname = "m"\ntier = "nowhere"\nengine = "llamacpp"\n', "models[0].tier"),
        ('[routing]\ndefault_tier = "gpu"\n', "routing.default_tier"),
        (
            '[[models]]\nname="m"\ntier="local"\nengine="openai"\nprice_input_per_mtok="x"\n',
            "models[0].price_input_per_mtok",
        ),
        (
            '[[models]]\nname="m"\ntier="local"\nengine="openai"\nprice_input_per_mtok="1"\n',
            "models[0].price_output_per_mtok",
        ),
        (
            '[[models]]\nname="m"\ntier="local"\nengine="llamacpp"\ncpu_hour_usd="-1"\n',
            "models[0].cpu_hour_usd",
        ),
        ('[routing]\nbaseline_model="smollm2-135m"\n', "routing.baseline_model"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert info.value.key == key, str(info.value)


def test_unknown_engine_names_the_key() -> None:
    settings = Settings()
    settings.models[0].engine = "warpdrive"
    with pytest.raises(ConfigError) as info:
        build_engines(settings, load_plugins().pm)
    assert info.value.key == "models[0].engine"
    assert "llamacpp" in str(info.value) and "openai" in str(info.value)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[server]\nprot = 1\n", "server.prot: unknown key"),
        ('[[models]]\nname="m"\ntier="local"\nengine="warpdrive"\n', "models[0].engine"),
        (None, "config file not found"),
        ("not toml [", "not valid TOML"),
        (
            '[[models]]\nname="m"\ntier="local"\nengine="llamacpp"\npath="/no/such.gguf"\n',
            "models[0].path: GGUF file not found",
        ),
        (
            '[[models]]\nname="m"\ntier="local"\nengine="openai"\n'
            'price_input_per_mtok="1"\nprice_output_per_mtok="2"\n',
            "models[0].base_url",
        ),
        (
            '[[models]]\nname="paid"\ntier="local"\nengine="openai"\nbase_url="http://x/v1"\n',
            "models[0].price_input_per_mtok: model 'paid' is a paid API model and has no price",
        ),
    ],
)
def test_serve_stops_with_one_line_and_status_2(
    tmp_path: Path, toml: str | None, expected: str
) -> None:
    config = tmp_path / "bad.toml"
    if toml is not None:
        config.write_text(toml)
    result = mvm(tmp_path, "--config", str(config), "serve", "--port", "1", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "config error" in lines[0]
