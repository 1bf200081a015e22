"""compose.yaml, the configs it mounts from deploy/, and the Dockerfile agree with each other.

Docker is not needed: the files are parsed and checked for what the stack relies on (every host
the app's config names is a service, health checks, GPU profiles and reservations, the SGLang
arguments of the MoE service, the migration before the app). ``docker compose config`` runs
too where the compose plugin is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from mvm_chat.chat.services import build_engines
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DEPLOY_DOC = ROOT / "docs" / "deployment.md"
CONFIGS = sorted((ROOT / "deploy").glob("*.toml"))
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<value>[^}]*))?\}")
HEALTHY = "service_healthy"


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def interpolate(value: str) -> str:
    """``${VAR:-default}`` as compose reads it with none of the variables set."""

    def one(match: re.Match[str]) -> str:
        op, default = match["op"] or "", match["value"] or ""
        assert op in ("", ":-", "-"), f"${{{match['name']}{op}...}} needs the variable set"
        return default

    return VARIABLE.sub(one, value)


def services() -> dict[str, dict[str, Any]]:
    found = load_compose()["services"]
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    assert isinstance(cmd, list), "commands are lists: no shell, no word-splitting surprises"
    return [interpolate(str(part)) for part in cmd]


def flag(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


def app_config_path(env: dict[str, str], app: dict[str, Any]) -> Path:
    """The file on this machine that the container reads as MVM_CHAT_CONFIG."""
    inside = env["MVM_CHAT_CONFIG"]
    for volume in app.get("volumes", []):
        source, target, *mode = str(volume).split(":")
        if inside.startswith(target.rstrip("/") + "/"):
            assert mode == ["ro"], f"config volume {volume} should be read-only"
            return (ROOT / source / inside[len(target) :].lstrip("/")).resolve()
    raise AssertionError(f"MVM_CHAT_CONFIG={inside} is not under a mounted volume")


def app_settings(config: Path | None = None) -> Settings:
    app = services()["app"]
    env = environment(app)
    return load_settings(config or app_config_path(env, app), environ=env)


def test_services_and_health_checks() -> None:
    found = services()
    for name in ("postgres", "redis", "migrate", "app", "sglang-gpu", "sglang-moe"):
        assert name in found, f"service {name} missing"
    for name in ("postgres", "redis", "app", "sglang-gpu", "sglang-moe"):
        check = found[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    assert "pg_isready" in " ".join(found["postgres"]["healthcheck"]["test"])
    assert found["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    # /readyz is 503 while an SGLang tier is down, and the app serves fine then.
    assert "/healthz" in " ".join(found["app"]["healthcheck"]["test"])
    for name in ("sglang-gpu", "sglang-moe"):
        assert "/health" in " ".join(found[name]["healthcheck"]["test"])


def test_migration_runs_before_the_app() -> None:
    found = services()
    migrate, app = found["migrate"], found["app"]
    assert command(migrate)[-3:] == ["mvm-chat", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == HEALTHY
    assert environment(migrate) == environment(app), "migrate must see the app's database"
    depends = app["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == HEALTHY
    assert depends["postgres"]["condition"] == HEALTHY
    assert command(app)[:2] == ["mvm-chat", "serve"] and "0.0.0.0" in command(app)
    assert app["build"] == "." and migrate["image"] == app["image"]
    assert "8000:8000" in [str(p) for p in app["ports"]]


def test_gpu_services_profiles_and_reservations() -> None:
    found = services()
    for name, profile, count in (("sglang-gpu", "gpu", 1), ("sglang-moe", "moe", 2)):
        service = found[name]
        assert service["profiles"] == [profile]
        assert interpolate(service["image"]).startswith("lmsysorg/sglang:")
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert device["count"] == count
        cmd = command(service)
        assert cmd[:3] == ["python3", "-m", "sglang.launch_server"]
        assert flag(cmd, "--host") == "0.0.0.0"
        assert "--enable-metrics" in cmd, "the sglang engine scrapes /metrics for load"
        assert "HF_TOKEN" in service["environment"]
        assert any(str(v).endswith(":/root/.cache/huggingface") for v in service["volumes"])
        assert service.get("shm_size")
    for name in ("postgres", "redis", "migrate", "app"):
        assert "profiles" not in found[name], f"{name} must start without a profile"


def test_moe_service_arguments() -> None:
    cmd = command(services()["sglang-moe"])
    assert "mixtral-8x7b" in flag(cmd, "--model-path").lower()
    assert flag(cmd, "--tp-size") == "2"
    assert flag(cmd, "--ep-size") == "2"
    assert flag(cmd, "--quantization") == "fp8"
    assert flag(cmd, "--expert-distribution-recorder-mode") == "stat"
    assert "--enable-eplb" in cmd and "--enable-metrics" in cmd


def test_app_config_is_in_the_repository_and_loads() -> None:
    app = services()["app"]
    env = environment(app)
    config = app_config_path(env, app)
    assert config.is_file() and ROOT in config.parents
    settings = app_settings()
    assert settings.database.url == env["MVM_CHAT_DATABASE_URL"]
    assert settings.database.url.startswith("postgresql+asyncpg://")
    assert settings.redis.url == env["MVM_CHAT_REDIS_URL"]
    assert settings.tier_names == ["local", "gpu", "moe", "api"]
    engines = {m.tier: m.engine for m in settings.models}
    assert engines == {"local": "llamacpp", "gpu": "sglang", "moe": "sglang", "api": "openai"}
    assert settings.routing.baseline_model


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_deploy_config_is_wired_to_the_stack(config: Path) -> None:
    found = services()
    app = found["app"]
    env = environment(app)
    settings = app_settings(config)
    build_engines(settings, load_plugins().pm)  # every engine kind exists and accepts its entry
    urls = [
        settings.database.url,
        settings.redis.url,
        env["MVM_CHAT_DATABASE_URL"],
        env["MVM_CHAT_REDIS_URL"],
    ]
    urls += [m.base_url for m in settings.models if m.base_url]
    for url in urls:
        host = urlsplit(url).hostname or ""
        if "." in host:  # a public API, reached over TLS
            assert url.startswith("https://"), url
        else:
            assert host in found, f"{url}: no compose service called {host!r}"
    for model in settings.models:
        if model.api_key_env:
            assert model.api_key_env in env, f"{model.api_key_env} is not passed to the app"
        if model.engine != "sglang":
            continue
        url = urlsplit(model.base_url)
        server = found[url.hostname or ""]
        cmd = command(server)
        assert flag(cmd, "--port") == str(url.port)
        assert flag(cmd, "--model-path") == model.upstream_model, "SGLang serves --model-path"
        [device] = server["deploy"]["resources"]["reservations"]["devices"]
        assert model.gpus == device["count"], f"{model.name}: gpus must match the reservation"


def test_every_variable_has_a_default_and_is_documented() -> None:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    names = {m["name"] for m in VARIABLE.finditer(text)}
    assert names, "compose.yaml uses no variables?"
    for match in VARIABLE.finditer(text):
        assert match["op"] in (":-", "-"), f"${{{match['name']}}} has no default"
    for name in sorted(names):
        assert f"`{name}`" in doc, f"{name} is not documented in docs/deployment.md"
    bare = re.findall(r"\$[A-Za-z_]", text.replace("$$", ""))
    assert not bare, "write ${VAR:-default}, not $VAR"


def test_dockerfile_ships_the_migrations_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^COPY migrations ", text, re.M)
    assert "head_revision" in text, "the build checks that the migrations are found"
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert 'CMD ["mvm-chat", "serve", "--host", "0.0.0.0"]' in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("migrations", "mvm_chat", "pyproject.toml", "README.md"):
        assert needed not in ignored


def test_docker_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if plugin.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [
            docker,
            "compose",
            "-f",
            str(COMPOSE),
            "--profile",
            "gpu",
            "--profile",
            "moe",
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
