"""``models inspect`` of a running SGLang server (the stand-in): what it serves, and how."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mvm_chat.engines.inspect import UnreadableSource, architecture_of
from tests.integration.conftest import ROOT, STANDIN
from tests.support import free_port, mvm, wait_http
from tests.unit.test_inspect import MIXTRAL_CONFIG


def test_standin_model_is_found_in_the_catalog(standin: str, script: Callable[..., None]) -> None:
    arch = architecture_of(standin + "/")
    # stand-in defaults: HuggingFaceTB/SmolLM3-3B, model_type smollm3, context 65536
    assert (arch.architecture, arch.layers, arch.kv_heads, arch.context_length) == (
        "smollm3",
        36,
        4,
        65536,
    )
    assert arch.name == "smol-gpu" and not arch.is_moe
    assert arch.source.startswith(f"{standin} (HuggingFaceTB/SmolLM3-3B; shapes: https://")
    assert arch.total_params == pytest.approx(3.08e9, rel=0.02)


def test_standin_before_the_rename_of_its_info_routes(
    standin: str, script: Callable[..., None]
) -> None:
    script(faults={"model_info": "legacy", "server_info": "legacy"})
    assert architecture_of(standin).layers == 36


def test_standin_that_fails_is_named(standin: str, script: Callable[..., None]) -> None:
    script(faults={"server_info": "status:500"})
    with pytest.raises(UnreadableSource, match=r"/server_info answered HTTP 500"):
        architecture_of(standin)
    script(faults={"model_info": "garbage"})
    with pytest.raises(UnreadableSource, match=r"/model_info did not answer a JSON object"):
        architecture_of(standin)


@pytest.fixture
def local_moe(tmp_path: Path) -> Iterator[str]:
    """A stand-in serving a Mixtral checkpoint from a folder on this machine, in FP8, TP 2."""
    checkpoint = tmp_path / "mixtral-local"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(MIXTRAL_CONFIG))
    port = free_port()
    log = tmp_path / "standin.log"
    args: list[Any] = ["--port", port, "--model-path", checkpoint, "--model-type", "mixtral"]
    args += ["--context-length", 8192, "--quantization", "fp8", "--tp-size", 2, "--ep-size", 2]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*STANDIN, *map(str, args)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/model_info", timeout_s=60, proc=proc, log=log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_local_checkpoint_config_through_the_cli(local_moe: str, tmp_path: Path) -> None:
    report = json.loads(mvm(tmp_path, "models", "inspect", local_moe, "--json").stdout)
    assert (report["experts"], report["experts_per_token"], report["layers"]) == (8, 2, 32)
    assert report["total_params"] == pytest.approx(46.7e9, rel=0.005)
    assert report["active_params"] == pytest.approx(12.9e9, rel=0.005)
    assert (report["context_length"], report["quantization"]) == (8192, "fp8")
    assert report["kv_bytes_per_token"] == 131072
    assert "mixtral-local/config.json" in report["source"]
