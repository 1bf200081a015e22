"""The tiny MoE: the llamacpp engine generates from it, ``models inspect`` reads it."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mvm_chat.engines.base import ChatMessage, Finished, GenerationRequest, TokenDelta
from mvm_chat.engines.llamacpp import LlamaCppEngine
from mvm_chat.settings import ModelSettings
from tests import tiny_moe
from tests.support import mvm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_moe.write_tiny_moe(tmp_path_factory.mktemp("tiny-moe") / "tiny-moe.gguf")


@pytest.fixture(scope="module")
async def engine(tiny: Path) -> AsyncIterator[LlamaCppEngine]:
    config = ModelSettings(
        name="tiny-moe", tier="local", engine="llamacpp", path=str(tiny), context_length=512
    )
    engine = LlamaCppEngine(config)
    await engine.start()
    yield engine
    await engine.close()


async def test_llamacpp_engine_generates_from_the_tiny_moe(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(
        messages=[ChatMessage("user", "Say something.")], max_tokens=12, temperature=0.0
    )
    deltas: list[TokenDelta] = []
    finished: Finished | None = None
    async for event in engine.stream(request):
        if isinstance(event, TokenDelta):
            deltas.append(event)
        else:
            finished = event
    assert finished is not None
    tokens = sum(d.tokens for d in deltas)
    assert tokens > 0 and "".join(d.text for d in deltas)
    assert finished.usage.completion_tokens == tokens <= 12
    assert finished.usage.prompt_tokens > 0


async def test_llama_cpp_counts_the_parameters_the_file_was_written_with(
    engine: LlamaCppEngine, tiny: Path
) -> None:
    info = await engine.model_info()
    written = sum(math.prod(s) for s in tiny_moe.tensor_shapes(49152).values())
    assert info["architecture"] == "llama" and info["parameters"] == written


def test_models_inspect_reports_eight_experts_two_per_token(tiny: Path, tmp_path: Path) -> None:
    report = json.loads(mvm(tmp_path, "models", "inspect", str(tiny), "--json").stdout)
    assert (report["experts"], report["experts_per_token"], report["moe"]) == (8, 2, True)
    assert report["architecture"] == "llama" and report["layers"] == tiny_moe.LAYERS
    inactive = tiny_moe.LAYERS * 3 * tiny_moe.HIDDEN * tiny_moe.FFN * (8 - 2)
    assert report["total_params"] - report["active_params"] == inactive
    assert report["kv_bytes_per_token"] == tiny_moe.LAYERS * 2 * 16 * 2 * 2


def test_models_inspect_table_of_a_catalog_model(tmp_path: Path) -> None:
    table = mvm(tmp_path, "models", "inspect", "mixtral-8x7b", "--kv-dtype", "fp8").stdout
    rows = dict(line.split(None, 1) for line in table.splitlines() if line.startswith("experts"))
    assert rows == {"experts": "8, 2 per token"}
    assert "65,536 bytes per token (fp8)" in table
    assert "46,702,792,704 (46.70B)" in table and "12,879,925,248 (12.88B, 28% of total)" in table


def test_models_inspect_names_a_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    result = mvm(tmp_path, "models", "inspect", str(missing), check=False)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and lines[0].startswith("mvm-chat: ")
