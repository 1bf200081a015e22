"""Expected cost of a self-hosted call before the model has measured traffic.

Measured calls are priced by GPU time (:mod:`mvm_chat.ledger.pricing`). Before there is any,
the capacity planner's ideal figures stand in: at ``concurrency`` sequences the GPUs decode
``T`` tokens/s in all, so one call's completion holds the GPUs for ``completion / T``
seconds of their time, and its prompt for ``prompt x 2 x active params / FLOP/s`` (prefill is
compute-bound). Both are ceilings of speed, so this is the cost at best, an expectation and
never a bound: budgets keep reserving :func:`~mvm_chat.ledger.pricing.max_call_cost`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

import structlog

from mvm_chat.engines import gpus, planner
from mvm_chat.engines.architecture import Architecture
from mvm_chat.engines.gpus import Gpu
from mvm_chat.engines.inspect import UnreadableSource, architecture_of
from mvm_chat.ledger.pricing import SECONDS_PER_HOUR, store
from mvm_chat.settings import ModelSettings

log = structlog.get_logger(__name__)


def expected_cost(
    model: ModelSettings,
    architecture: Architecture,
    gpu: Gpu,
    prompt_tokens: int,
    completion_tokens: int,
    concurrency: int = 1,
) -> Decimal:
    """What one call of ``model`` should cost on ``model.gpus`` x ``gpu`` at ``concurrency``.

    The KV cache read per step is that of a sequence of ``prompt + completion`` tokens; the
    concurrency is capped at the sequences that fit. Raises :class:`~mvm_chat.engines.planner.
    PlanError` when ``model.gpus`` cannot split the architecture.
    """
    request = planner.PlanRequest(
        architecture=architecture,
        gpu=gpu,
        gpus=model.gpus,
        quant=model.quant or "bf16",
        context=max(prompt_tokens + completion_tokens, 1),
        concurrency=max(concurrency, 1),
    )
    plan = planner.plan(request)
    decode_s = completion_tokens / plan.decode_tokens_per_s_at_concurrency
    prefill_s = prompt_tokens / planner.compute_ceiling(request, plan.gpus)
    gpu_seconds = Decimal(repr(round(decode_s + prefill_s, 9)))
    return store(model.gpu_hour_usd * model.gpus * gpu_seconds / SECONDS_PER_HOUR)


def self_hosted_estimate(
    model: ModelSettings, prompt_tokens: int, completion_tokens: int, concurrency: int = 1
) -> Decimal | None:
    """:func:`expected_cost` for an ``sglang`` model whose settings name its ``architecture``
    and ``gpu``; None for any other model (nothing to estimate from), and for one whose
    architecture file cannot be read or split over its ``gpus`` (logged)."""
    if model.engine != "sglang" or not model.architecture or not model.gpu:
        return None
    gpu = gpus.gpu(model.gpu)
    if gpu is None:
        return None
    try:
        architecture = _architecture(model.architecture)
        return expected_cost(
            model, architecture, gpu, prompt_tokens, completion_tokens, concurrency
        )
    except (UnreadableSource, planner.PlanError) as exc:
        log.warning("estimate.unavailable", model=model.name, problem=str(exc))
        return None


@lru_cache(maxsize=64)
def _architecture(spec: str) -> Architecture:
    return architecture_of(spec)
