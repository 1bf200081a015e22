"""Expert telemetry of SGLang MoE models (admin keys only): record the expert distribution for
N seconds and report per-layer expert load and imbalance; the last result per model is kept in
memory for the dashboard's heatmap (``/admin/experts``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State

from mvm_chat.api.openapi import problems
from mvm_chat.chat.services import Services
from mvm_chat.engines.sglang import SglangEngine
from mvm_chat.engines.sglang_experts import (
    READABLE_MODES,
    ExpertLoad,
    ExpertRecorder,
    RecorderStepError,
    looks_moe,
)
from mvm_chat.errors import (
    Conflict,
    EngineError,
    InvalidInput,
    NotFound,
)

MIN_SECONDS = 1
MAX_SECONDS = 300
STATE_KEY = "expert_telemetry"


@dataclass(slots=True)
class ExpertTelemetry:
    """This process's recordings: the last result per model, and the models being recorded
    (SGLang has one recorder per server: a second start would clear the first's record)."""

    last: dict[str, ExpertLoad] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)


def telemetry_of(state: State) -> ExpertTelemetry:
    """The app's :class:`ExpertTelemetry`, made on first use."""
    found = state.get(STATE_KEY)
    if not isinstance(found, ExpertTelemetry):
        found = ExpertTelemetry()
        state[STATE_KEY] = found
    return found


async def record_experts(
    services: Services, telemetry: ExpertTelemetry, name: str, seconds: int
) -> ExpertLoad:
    """Check that ``name`` is an SGLang MoE model whose dumps this process can read, record
    its expert distribution for ``seconds`` and keep the result as the model's last."""
    model = services.settings.model(name)
    if model is None:
        raise NotFound(f"no model named {name!r}")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InvalidInput("seconds", f"must be between {MIN_SECONDS} and {MAX_SECONDS}")
    engine = services.engines.get(name)
    if model.engine != "sglang" or not isinstance(engine, SglangEngine):
        raise InvalidInput(
            "model",
            f"{name!r} is served by the {model.engine!r} engine; expert telemetry needs an "
            "sglang model that is a mixture of experts",
        )
    try:
        facts = await engine.server_facts()
    except EngineError as exc:
        raise RecorderStepError(name, "server_info", exc.detail) from None
    mode = facts.get("expert_distribution_recorder_mode")
    architecture = facts.get("architectures") or facts.get("model_type") or "unknown"
    if mode is None:
        shown = ", ".join(architecture) if isinstance(architecture, list) else str(architecture)
        why = (
            "its SGLang server was started without --expert-distribution-recorder-mode stat "
            "(or --enable-eplb)"
            if looks_moe(architecture)
            else "it is not a mixture of experts, or its SGLang server was started without "
            "--expert-distribution-recorder-mode stat"
        )
        raise InvalidInput("model", f"{name!r} ({shown}) records no expert distribution: {why}")
    if mode not in READABLE_MODES:
        raise InvalidInput(
            "model",
            f"{name!r} records in {mode!r} mode, whose dump is per-pass records; "
            "start SGLang with --expert-distribution-recorder-mode stat",
        )
    if not model.expert_dump_dir:
        raise InvalidInput(
            "model",
            f"{name!r} has no expert_dump_dir: SGLang writes the record to a file on its own "
            "host; set expert_dump_dir to that directory (SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"
            "), shared with this server",
        )
    folder = Path(model.expert_dump_dir)
    if name in telemetry.busy:
        raise Conflict(f"model {name}: a recording of its expert distribution is under way")
    buffer_size = facts.get("expert_distribution_recorder_buffer_size")
    telemetry.busy.add(name)
    try:
        result = await ExpertRecorder(engine, folder).record(
            seconds, str(mode), buffer_size if isinstance(buffer_size, int) else -1
        )
    finally:
        telemetry.busy.discard(name)
    telemetry.last[name] = result
    return result


class AdminExpertsController(Controller):
    path = "/admin/models"
    tags = ["admin"]

    @get(
        "/{name:str}/experts",
        summary="Record an SGLang MoE model's expert distribution for N seconds",
        responses=problems(409, 502),
        description=(
            "Starts SGLang's expert-distribution recorder, waits `seconds` (1 to 300), stops "
            "it, dumps it and returns per-layer expert load with the imbalance (busiest "
            "expert over the mean). 422 for a model that cannot be recorded, 502 naming the "
            "step that failed upstream."
        ),
    )
    async def record(
        self, services: Services, state: State, name: str, seconds: int = 10
    ) -> dict[str, Any]:
        result = await record_experts(services, telemetry_of(state), name, seconds)
        return result.as_json()

    @get("/{name:str}/experts/last", summary="The last expert-distribution recording kept")
    async def last(self, services: Services, state: State, name: str) -> dict[str, Any]:
        if services.settings.model(name) is None:
            raise NotFound(f"no model named {name!r}")
        found = telemetry_of(state).last.get(name)
        if found is None:
            raise NotFound(f"model {name}: no expert distribution recorded since start-up")
        return found.as_json()
