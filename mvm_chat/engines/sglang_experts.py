"""SGLang's expert-distribution recorder, from the client side: start, wait, stop, dump, and the
dump turned into per-layer expert load and imbalance.

Followed: SGLang 0.5.9, read in the PyPI wheel ``sglang-0.5.9-py3-none-any.whl`` (facts only, no
code; see ``docs/configuration.md`` for the file and line of each):

- ``srt/entrypoints/http_server.py``: ``/start_expert_distribution_record``,
  ``/stop_expert_distribution_record`` and ``/dump_expert_distribution_record`` take GET or POST
  without a body and answer 200 with one plain-text line. No counts come back over HTTP.
- ``srt/eplb/expert_distribution.py``: in ``stat`` (and ``stat_approx``) mode the dump is
  ``torch.save`` of ``{"rank", "logical_count", "average_utilization_rate_over_window"}`` to
  ``$SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR/expert_distribution_recorder_{time}.pt`` on the
  *server's* disk, ``logical_count`` an int32 tensor ``[passes, layers, experts]`` (one row per
  forward pass, summed over the ranks; a circular buffer of
  ``--expert-distribution-recorder-buffer-size`` rows, zero rows unused). ``per_pass`` and
  ``per_token`` write per-rank records instead, which this module does not read.
- Without ``--expert-distribution-recorder-mode`` (or ``--enable-eplb``, which sets ``stat``)
  the recorder raises inside the scheduler, which takes the whole server down: so the mode is
  read from ``/server_info`` first and nothing is started when it is off. SGLang only accepts a
  mode on a model with experts, so a mode that is set also says the model is MoE.

Reading the dump therefore needs the directory SGLang writes to (``expert_dump_dir``, a volume
shared with the server); the ``.pt`` file is read without PyTorch (``torch_dump.py``).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from mvm_chat.engines import torch_dump
from mvm_chat.engines.openai_wire import status_problem, transport_error
from mvm_chat.engines.sglang import SglangEngine
from mvm_chat.errors import EngineError, ServiceUnavailable

READABLE_MODES = ("stat", "stat_approx")
"""Recorder modes whose dump holds ``logical_count``."""
DUMP_PREFIX = "expert_distribution_recorder_"
STEPS = ("start", "stop", "dump")
_MOE_NAME = re.compile(
    r"moe|mixtral|deepseekv[23]|dbrx|gptoss|arctic|jamba|llama4|minimax|grok|ernie4_5_moe",
    re.IGNORECASE,
)


class RecorderStepError(EngineError):
    """A step of a recording failed upstream (502); ``step`` names it."""

    def __init__(self, name: str, step: str, problem: str) -> None:
        super().__init__(f"model {name}: expert recorder step {step!r} failed: {problem}")
        self.step = step


def looks_moe(architectures: Any) -> bool:
    """Whether an architecture name from ``/model_info`` is a known sparse-MoE family (used to
    word an answer, never to decide: the recorder mode decides)."""
    names = architectures if isinstance(architectures, list) else [architectures]
    return any(isinstance(n, str) and _MOE_NAME.search(n) for n in names)


def imbalance(load: Sequence[int]) -> float | None:
    """The busiest expert's load over the mean load; None when nothing was routed."""
    total = sum(load)
    if not load or total == 0:
        return None
    return max(load) * len(load) / total


@dataclass(frozen=True, slots=True)
class LayerLoad:
    """One MoE layer: selections per expert and their imbalance."""

    layer: int
    load: tuple[int, ...]
    imbalance: float | None


@dataclass(frozen=True, slots=True)
class ExpertLoad:
    """One recording of a model's expert distribution."""

    model: str
    seconds: int
    layers: tuple[LayerLoad, ...]
    recorded_at: datetime
    recorder_mode: str = "stat"
    forward_passes: int = 0
    """Forward passes in the dump (its non-zero rows)."""
    buffer_size: int = -1
    """SGLang's ``--expert-distribution-recorder-buffer-size``; -1 is unbounded."""
    dump_files: tuple[str, ...] = field(default=())

    @property
    def experts(self) -> int:
        return len(self.layers[0].load) if self.layers else 0

    @property
    def buffer_full(self) -> bool:
        """Whether the circular buffer filled up, so the oldest passes may be overwritten."""
        return self.buffer_size > 0 and self.forward_passes >= self.buffer_size

    @property
    def peak(self) -> int:
        return max((max(layer.load, default=0) for layer in self.layers), default=0)

    def summary(self) -> dict[str, float | None]:
        """Mean and max of the per-layer imbalance, over layers that routed anything."""
        values = [layer.imbalance for layer in self.layers if layer.imbalance is not None]
        if not values:
            return {"mean": None, "max": None}
        return {"mean": math.fsum(values) / len(values), "max": max(values)}

    def as_json(self) -> dict[str, Any]:
        """The body of ``GET /admin/models/{name}/experts``."""
        return {
            "model": self.model,
            "seconds": self.seconds,
            "recorded_at": self.recorded_at.isoformat(),
            "recorder_mode": self.recorder_mode,
            "experts": self.experts,
            "forward_passes": self.forward_passes,
            "buffer_size": self.buffer_size,
            "buffer_full": self.buffer_full,
            "dump_files": list(self.dump_files),
            "layers": [
                {"layer": layer.layer, "load": list(layer.load), "imbalance": layer.imbalance}
                for layer in self.layers
            ],
            "imbalance": self.summary(),
        }


def layer_loads(counts: Sequence[Sequence[int]]) -> tuple[LayerLoad, ...]:
    """Per-layer loads of a ``[layers, experts]`` count matrix."""
    return tuple(
        LayerLoad(i, tuple(int(c) for c in row), imbalance(row)) for i, row in enumerate(counts)
    )


def dump_files(folder: Path) -> set[Path]:
    """The stat-mode dump files in ``folder`` (per-rank detail files end in ``_{rank}``)."""
    return {
        p
        for p in folder.glob(f"{DUMP_PREFIX}*.pt")
        if p.stem.removeprefix(DUMP_PREFIX).count("_") == 0
    }


def read_dumps(paths: Sequence[Path]) -> tuple[list[list[int]], int]:
    """The ``[layers, experts]`` counts summed over ``paths`` and over their passes, and the
    number of passes (non-zero rows). Blocking: call it in a thread."""
    total: list[int] = []
    shape: tuple[int, int] | None = None
    passes = 0
    for path in paths:
        data = torch_dump.load(path)
        counts = data.get("logical_count") if isinstance(data, dict) else None
        if not isinstance(counts, torch_dump.Tensor) or len(counts.shape) not in (2, 3):
            raise torch_dump.DumpFormatError(
                f"{path.name} has no logical_count of [passes, layers, experts]"
            )
        rows, layers, experts = (1, *counts.shape) if len(counts.shape) == 2 else counts.shape
        if shape not in (None, (layers, experts)):
            raise torch_dump.DumpFormatError(f"{path.name} has another shape than the others")
        shape, cells = (layers, experts), layers * experts
        total = total or [0] * cells
        flat = counts.flat
        if len(counts.shape) == 3:  # a [layers, experts] total says nothing of its passes
            passes += sum(flat[r * cells : (r + 1) * cells].count(0) < cells for r in range(rows))
        total = [t + sum(flat[j::cells]) for j, t in enumerate(total)]
    if shape is None:
        raise torch_dump.DumpFormatError("no dump file")
    layers, experts = shape
    return [total[i * experts : (i + 1) * experts] for i in range(layers)], passes


class ExpertRecorder:
    """Records one SGLang model's expert distribution (see the module's docstring)."""

    def __init__(self, engine: SglangEngine, dump_dir: Path) -> None:
        self.engine = engine
        self.dump_dir = dump_dir
        self.name = engine.config.name

    async def call(self, step: str) -> None:
        """``POST /{step}_expert_distribution_record``; anything but a 200 is an error."""
        url = f"{self.engine.root_url}/{step}_expert_distribution_record"
        try:
            response = await self.engine.client.post(url)
        except httpx.HTTPError as exc:
            raise RecorderStepError(
                self.name, step, transport_error(self.name, exc).detail
            ) from None
        if response.status_code != 200:
            raise RecorderStepError(self.name, step, status_problem(self.name, response))

    async def record(self, seconds: int, mode: str, buffer_size: int) -> ExpertLoad:
        """Start, wait ``seconds`` (the event loop stays free), stop, dump and read the dump.
        The recorder is stopped even when the wait is cancelled."""
        if not await asyncio.to_thread(self.dump_dir.is_dir):
            raise ServiceUnavailable(
                f"model {self.name}: expert_dump_dir {self.dump_dir} is not a directory here"
            )
        before = await asyncio.to_thread(dump_files, self.dump_dir)
        await self.call("start")
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.shield(self.call("stop"))
        await self.call("dump")
        recorded_at = datetime.now(UTC)
        new = sorted(await asyncio.to_thread(dump_files, self.dump_dir) - before)
        if not new:
            raise RecorderStepError(
                self.name,
                "dump",
                f"SGLang answered, but no new {DUMP_PREFIX}*.pt file appeared in "
                f"{self.dump_dir}: expert_dump_dir must be the directory that "
                "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR names on the SGLang host",
            )
        try:
            counts, passes = await asyncio.to_thread(read_dumps, new)
        except (torch_dump.DumpFormatError, OSError) as exc:
            problem = f"unreadable dump file ({exc})"
            raise RecorderStepError(self.name, "dump", problem) from None
        return ExpertLoad(
            model=self.name,
            seconds=seconds,
            layers=layer_loads(counts),
            recorded_at=recorded_at,
            recorder_mode=mode,
            forward_passes=passes,
            buffer_size=buffer_size,
            dump_files=tuple(p.name for p in new),
        )
