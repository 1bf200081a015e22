"""The MoE-aware capacity planner: memory fit, KV capacity, decode ceilings, SGLang arguments.

Every formula here is written out in ``docs/models.md``. The figures are ideal ceilings
(peak bandwidth and FLOP/s, tensor parallelism as perfect aggregation), meant for sizing
and for estimating cost before a model has measured traffic, not as benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from mvm_chat.engines.architecture import KV_DTYPE_BYTES, Architecture
from mvm_chat.engines.gpus import Gpu

QUANT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
"""Bytes per weight, by quantisation."""
QUANTS = tuple(QUANT_BYTES)
TP_SIZES = (1, 2, 4, 8)
"""Tensor-parallel sizes the planner considers (one node of up to eight GPUs)."""
DEFAULT_MEM_FRACTION = 0.88
"""SGLang's ``--mem-fraction-static``: the share of each GPU for weights and the KV pool;
the rest is the runtime reserve (activations, CUDA graphs, NCCL buffers)."""
DEFAULT_CONTEXT = 4096
_QUANT_ARGS = {
    "bf16": (),
    "fp8": ("--quantization", "fp8"),
    "int8": ("--torchao-config", "int8wo"),
    "int4": ("--torchao-config", "int4wo-128"),
}
_KV_ARGS = {"bf16": (), "fp8": ("--kv-cache-dtype", "fp8_e5m2")}
KV_DTYPES = tuple(_KV_ARGS)


class PlanError(ValueError):
    """A plan that cannot be made: ``option`` names the offending input."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRequest:
    """What to plan: a model on a kind of GPU, and the traffic it should carry."""

    architecture: Architecture
    gpu: Gpu
    model_path: str = ""
    """What SGLang loads (``--model-path``): a Hugging Face id or a local folder."""
    gpus: int | None = None
    """None: the fewest GPUs that fit."""
    quant: str = "bf16"
    kv_dtype: str = "bf16"
    context: int = DEFAULT_CONTEXT
    concurrency: int = 1
    gpu_hour_usd: Decimal | None = None
    mem_fraction: float = DEFAULT_MEM_FRACTION


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The planner's answer; :meth:`as_json` is ``mvm-chat plan --json``."""

    request: PlanRequest
    gpus: int
    fits: bool
    min_gpus: int | None
    weights_bytes: int
    kv_bytes_per_token: int
    kv_pool_bytes: int
    max_concurrent_sequences: int
    tp_size: int
    ep_size: int | None
    decode_tokens_per_s_batch1: float
    concurrency: int
    """The batch the concurrency figure is for: the asked concurrency, capped at what fits."""
    decode_tokens_per_s_at_concurrency: float
    compute_bound_batch: int | None
    """The smallest batch at which compute, not memory, bounds decode (None: not within
    the sequences that fit)."""
    experts_touched_per_layer: float
    usd_per_mtok: Decimal | None
    sglang_command: str

    def as_json(self) -> dict[str, Any]:
        req = self.request
        return {
            "model": req.architecture.name,
            "gpu": req.gpu.name,
            "gpus": self.gpus,
            "quant": req.quant,
            "kv_dtype": req.kv_dtype,
            "context": req.context,
            "fits": self.fits,
            "min_gpus": self.min_gpus,
            "weights_bytes": self.weights_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_pool_bytes": self.kv_pool_bytes,
            "max_concurrent_sequences": self.max_concurrent_sequences,
            "tp_size": self.tp_size,
            "ep_size": self.ep_size,
            "total_params": req.architecture.total_params,
            "active_params": req.architecture.active_params,
            "decode_tokens_per_s_batch1": round(self.decode_tokens_per_s_batch1, 2),
            "concurrency": self.concurrency,
            "decode_tokens_per_s_at_concurrency": round(self.decode_tokens_per_s_at_concurrency, 2),
            "compute_bound_batch": self.compute_bound_batch,
            "experts_touched_per_layer": round(self.experts_touched_per_layer, 3),
            "gpu_hour_usd": None if req.gpu_hour_usd is None else str(req.gpu_hour_usd),
            "usd_per_mtok": None if self.usd_per_mtok is None else str(self.usd_per_mtok),
            "sglang_command": self.sglang_command,
        }


def weights_bytes(arch: Architecture, quant: str) -> int:
    """Weight memory: total parameters times bytes per parameter of ``quant``."""
    return math.ceil(arch.total_params * QUANT_BYTES[quant])


def tp_problem(arch: Architecture, tp: int) -> str | None:
    """Why ``tp`` GPUs cannot split the model's attention evenly, or None if they can."""
    if arch.attention_heads % tp:
        return f"{arch.attention_heads} attention heads do not divide by {tp}"
    if arch.kv_heads % tp and tp % arch.kv_heads:
        return f"{arch.kv_heads} KV heads neither divide by nor divide {tp}"
    return None


def kv_bytes_per_token(arch: Architecture, kv_dtype: str, tp: int) -> int:
    """KV-cache bytes one token takes over all ``tp`` GPUs.

    With more GPUs than KV heads each head is replicated ``tp / kv_heads`` times.
    """
    replicas = tp // arch.kv_heads if tp > arch.kv_heads else 1
    return arch.kv_bytes_per_token(kv_dtype) * replicas


def kv_pool_bytes(req: PlanRequest, gpus: int) -> int:
    """Memory left for the KV cache on ``gpus`` GPUs after weights and the runtime reserve."""
    static = gpus * req.gpu.memory_bytes * req.mem_fraction
    return math.floor(static) - weights_bytes(req.architecture, req.quant)


def max_sequences(req: PlanRequest, gpus: int) -> int:
    """Sequences of ``req.context`` tokens whose KV cache fits on ``gpus`` GPUs."""
    pool = kv_pool_bytes(req, gpus)
    per_sequence = kv_bytes_per_token(req.architecture, req.kv_dtype, gpus) * req.context
    return max(pool // per_sequence, 0)


def fits(req: PlanRequest, gpus: int) -> bool:
    """Whether ``gpus`` GPUs can split the model and hold it with one full-context sequence."""
    return tp_problem(req.architecture, gpus) is None and max_sequences(req, gpus) >= 1


def min_gpus(req: PlanRequest) -> int | None:
    """The fewest GPUs (a tensor-parallel size in :data:`TP_SIZES`) that fit, or None."""
    return next((n for n in TP_SIZES if fits(req, n)), None)


def expert_params(arch: Architecture) -> float:
    """Parameters of one expert in one layer, from the total and active counts."""
    unused = arch.experts - arch.experts_per_token
    if not arch.is_moe or unused <= 0:
        return 0.0
    return (arch.total_params - arch.active_params) / (arch.layers * unused)


def experts_touched(arch: Architecture, batch: int) -> float:
    """Expected distinct experts per layer a decode step of ``batch`` tokens reads.

    With uniform routing each token misses a given expert with probability (1 - k/E),
    so E * (1 - (1 - k/E)^B) experts are touched.
    """
    if not arch.is_moe:
        return 0.0
    e, k = arch.experts, arch.experts_per_token
    return e * (1 - (1 - k / e) ** batch)


def bytes_per_step(req: PlanRequest, gpus: int, batch: int) -> float:
    """Bytes one decode step reads: shared weights, the experts touched, each sequence's KV."""
    arch = req.architecture
    per_expert = expert_params(arch)
    shared = arch.active_params - arch.layers * arch.experts_per_token * per_expert
    weight_params = shared + arch.layers * experts_touched(arch, batch) * per_expert
    kv = kv_bytes_per_token(arch, req.kv_dtype, gpus) * req.context
    return weight_params * QUANT_BYTES[req.quant] + batch * kv


def decode_tokens_per_s(req: PlanRequest, gpus: int, batch: int) -> float:
    """Aggregate decode tokens/s at ``batch``: memory-bound, capped by compute."""
    bandwidth = gpus * req.gpu.bandwidth_bytes_per_s
    memory_bound = batch * bandwidth / bytes_per_step(req, gpus, batch)
    return min(memory_bound, compute_ceiling(req, gpus))


def compute_ceiling(req: PlanRequest, gpus: int) -> float:
    """Tokens/s the GPUs' FLOP/s allow: 2 FLOPs per active parameter per token."""
    return gpus * req.gpu.flops(req.quant) / (2 * req.architecture.active_params)


def compute_bound_batch(req: PlanRequest, gpus: int, limit: int) -> int | None:
    """The smallest batch up to ``limit`` at which compute bounds decode, or None.

    Memory-bound tokens/s rise monotonically with the batch, so a bisection finds it.
    """
    ceiling = compute_ceiling(req, gpus)
    bandwidth = gpus * req.gpu.bandwidth_bytes_per_s

    def compute_bound(batch: int) -> bool:
        return batch * bandwidth / bytes_per_step(req, gpus, batch) >= ceiling

    if limit < 1 or not compute_bound(limit):
        return None
    low, high = 1, limit
    while low < high:
        middle = (low + high) // 2
        if compute_bound(middle):
            high = middle
        else:
            low = middle + 1
    return low


def usd_per_mtok(hour_usd: Decimal, gpus: int, tokens_per_s: float) -> Decimal:
    """Dollars per million output tokens: the GPUs' hourly price over tokens per hour."""
    if tokens_per_s <= 0:
        raise PlanError("tokens_per_s", "must be positive")
    per_second = hour_usd * gpus / Decimal(3600)
    cost = per_second / Decimal(repr(tokens_per_s)) * Decimal(1_000_000)
    return cost.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)


def parallel_sizes(arch: Architecture, gpus: int) -> tuple[int, int | None]:
    """Recommended (tensor, expert) parallel sizes: tp = gpus; for MoE, ep = gpus when the
    experts divide evenly over them (else 1); dense models have no expert parallelism."""
    if not arch.is_moe:
        return gpus, None
    return gpus, gpus if arch.experts % gpus == 0 else 1


def sglang_command(req: PlanRequest, gpus: int) -> str:
    """The ``python -m sglang.launch_server`` command line for this plan."""
    arch = req.architecture
    tp, ep = parallel_sizes(arch, gpus)
    args = ["python", "-m", "sglang.launch_server"]
    args += ["--model-path", req.model_path or arch.name, "--tp-size", str(tp)]
    if ep is not None:
        args += ["--ep-size", str(ep)]
    args += [*_QUANT_ARGS[req.quant], *_KV_ARGS[req.kv_dtype]]
    args += ["--context-length", str(req.context)]
    args += ["--mem-fraction-static", f"{req.mem_fraction:g}", "--enable-metrics"]
    if ep is not None:
        if ep > 1:
            args.append("--enable-eplb")
        args += ["--expert-distribution-recorder-mode", "stat"]
    return " ".join(args)


def plan(req: PlanRequest) -> Plan:
    """Plan ``req``; raises :class:`PlanError` naming the option for impossible requests."""
    _check(req)
    arch = req.architecture
    fewest = min_gpus(req)
    gpus = req.gpus or fewest or TP_SIZES[-1]
    problem = tp_problem(arch, gpus)
    if problem is not None:
        usable = [n for n in TP_SIZES if tp_problem(arch, n) is None]
        raise PlanError(
            "--gpus",
            f"{arch.name} cannot be split over {gpus} GPUs ({problem}); "
            f"use one of {', '.join(map(str, usable))}",
        )
    sequences = max_sequences(req, gpus)
    batch = min(req.concurrency, sequences) if sequences >= 1 else req.concurrency
    at_batch = decode_tokens_per_s(req, gpus, batch)
    tp, ep = parallel_sizes(arch, gpus)
    return Plan(
        request=req,
        gpus=gpus,
        fits=sequences >= 1,
        min_gpus=fewest,
        weights_bytes=weights_bytes(arch, req.quant),
        kv_bytes_per_token=kv_bytes_per_token(arch, req.kv_dtype, gpus),
        kv_pool_bytes=kv_pool_bytes(req, gpus),
        max_concurrent_sequences=sequences,
        tp_size=tp,
        ep_size=ep,
        decode_tokens_per_s_batch1=decode_tokens_per_s(req, gpus, 1),
        concurrency=batch,
        decode_tokens_per_s_at_concurrency=at_batch,
        compute_bound_batch=compute_bound_batch(req, gpus, sequences),
        experts_touched_per_layer=experts_touched(arch, batch),
        usd_per_mtok=None
        if req.gpu_hour_usd is None
        else usd_per_mtok(req.gpu_hour_usd, gpus, at_batch),
        sglang_command=sglang_command(req, gpus),
    )


def _check(req: PlanRequest) -> None:
    if req.quant not in QUANT_BYTES:
        raise PlanError("--quant", f"unknown {req.quant!r}; known: {', '.join(QUANTS)}")
    if req.kv_dtype not in _KV_ARGS or req.kv_dtype not in KV_DTYPE_BYTES:
        raise PlanError("--kv-dtype", f"unknown {req.kv_dtype!r}; known: {', '.join(KV_DTYPES)}")
    if req.gpus is not None and req.gpus not in TP_SIZES:
        raise PlanError("--gpus", f"must be one of {', '.join(map(str, TP_SIZES))}")
    if req.context < 1:
        raise PlanError("--context", "must be at least 1")
    if req.concurrency < 1:
        raise PlanError("--concurrency", "must be at least 1")
    if req.gpu_hour_usd is not None and (not req.gpu_hour_usd.is_finite() or req.gpu_hour_usd < 0):
        raise PlanError("--gpu-hour-usd", "must be a price >= 0")
    if not 0 < req.mem_fraction < 1:
        raise PlanError("--mem-fraction", "must be between 0 and 1")
