"""Plugin loading: built-ins, a plugins folder, rejection of hooks that match no hookspec."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mvm_chat.errors import ConfigError
from mvm_chat.plugins import DEFAULT_PLUGINS, engine_factories, load_plugins
from tests.support import mvm

GOOD = '''
from mvm_chat import hookimpl

@hookimpl
def register_engines(register):
    register("echo", lambda config: None)

@hookimpl
def register_commands(cli):
    @cli.command()
    def greet():
        """Say hello."""
        print("hello from a plugin")
'''
TYPO = (
    "from mvm_chat import hookimpl\n\n@hookimpl\ndef on_turn_completed(turn, result):\n    pass\n"
)
BAD_ARG = (
    "from mvm_chat import hookimpl\n\n@hookimpl\ndef on_turn_complete(turn, outcome):\n    pass\n"
)
BROKEN = "import no_such_module_anywhere\n"
BUILTINS = {name.rsplit(".", 1)[-1] for name in DEFAULT_PLUGINS}
INSTALLED = {ep.name for ep in entry_points(group="mvm_chat")}


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "good.py").write_text(GOOD)
    (folder / "typo.py").write_text(TYPO)
    (folder / "badarg.py").write_text(BAD_ARG)
    (folder / "broken.py").write_text(BROKEN)
    return folder


def test_folder_plugins_load_and_bad_ones_are_rejected_by_name(plugins_dir: Path) -> None:
    plugins = load_plugins(plugins_dir)
    assert set(plugins.sources) == BUILTINS | INSTALLED | {"good"}
    errors = {e.name: e.error for e in plugins.load_errors}
    assert set(errors) == {"typo", "badarg", "broken"}
    assert "on_turn_completed" in errors["typo"] and "typo" in errors["typo"]
    assert "on_turn_complete" in errors["badarg"] and "outcome" in errors["badarg"]
    assert "no_such_module_anywhere" in errors["broken"]
    assert plugins.pm.get_plugin("typo") is None
    assert set(engine_factories(plugins.pm)) == {"llamacpp", "openai", "sglang", "echo"}


def test_strict_plugins_refuse_to_load(plugins_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_plugins(plugins_dir, strict=True)
    assert info.value.key.startswith("plugins.")


def test_load_plugins_limits_installed_plugins_but_keeps_builtins(
    plugins_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MVM_CHAT_LOAD_PLUGINS", "good")
    plugins = load_plugins(plugins_dir)
    assert set(plugins.sources) == BUILTINS | {"good"}
    assert plugins.load_errors == []


def test_one_manager_per_call(plugins_dir: Path) -> None:
    assert load_plugins(plugins_dir).pm is not load_plugins(plugins_dir).pm


def test_plugin_commands_with_plugins_dir_option(plugins_dir: Path, tmp_path: Path) -> None:
    result = mvm(tmp_path, "--plugins-dir", str(plugins_dir), "greet")
    assert result.stdout.strip() == "hello from a plugin"
    assert mvm(tmp_path, "--help").returncode == 0
