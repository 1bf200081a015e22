"""Fixtures of the integration tests: the SGLang stand-in server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
SERVED = "smol-gpu"
STANDIN = [sys.executable, "-m", "tests.sglang_standin"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in SGLang server; yields its root URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("sglang-standin") / "standin.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*STANDIN, "--port", str(port), "--served-model-name", SERVED],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/model_info", timeout_s=60, proc=proc, log=log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def script(standin: str) -> Iterator[Any]:
    """``script(faults={...}, num_queue_reqs=..., ...)`` sets the stand-in up for one test."""
    httpx.post(f"{standin}/_standin/reset").raise_for_status()

    def apply(**control: Any) -> None:
        httpx.post(f"{standin}/_standin/control", json=control).raise_for_status()

    yield apply
    httpx.post(f"{standin}/_standin/reset").raise_for_status()


def seen(standin: str, path: str) -> list[dict[str, Any]]:
    """The bodies of the requests the stand-in got on ``path``."""
    requests = httpx.get(f"{standin}/_standin/requests").json()
    return [r["body"] for r in requests if r["path"] == path]


def standin_model(standin: str, name: str, tier: str, max_tokens: int = 8) -> str:
    """A ``[[models]]`` table: an ``sglang`` model served by the stand-in, metrics off."""
    return f"""
[[models]]
name = "{name}"
tier = "{tier}"
engine = "sglang"
base_url = "{standin}"
upstream_model = "{SERVED}"
metrics_interval_s = 0
max_tokens = {max_tokens}
"""
