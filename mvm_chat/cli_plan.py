"""``mvm-chat plan``: what a model needs on a kind of GPU, how fast it decodes, what a token
costs, and the SGLang command that serves it (the formulas are in ``docs/models.md``)."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

import click

from mvm_chat.engines import catalog, gpus, planner
from mvm_chat.engines.inspect import UnreadableSource, architecture_of
from mvm_chat.engines.planner import Plan

GiB = 1024**3


@click.command("plan")
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="A catalog model (see docs/models.md), or a config.json / GGUF path.",
)
@click.option("--gpu", "gpu_name", required=True, help="A GPU from the table (h100-80gb, ...).")
@click.option(
    "--gpus",
    type=int,
    default=None,
    help="Number of GPUs (1, 2, 4, 8; tensor parallel). Default: the fewest that fit.",
)
@click.option("--quant", type=click.Choice(planner.QUANTS), default="bf16", show_default=True)
@click.option("--kv-dtype", type=click.Choice(planner.KV_DTYPES), default="bf16", show_default=True)
@click.option(
    "--context",
    type=int,
    default=planner.DEFAULT_CONTEXT,
    show_default=True,
    help="Tokens per sequence (prompt and answer).",
)
@click.option("--concurrency", type=int, default=1, show_default=True, help="Sequences at once.")
@click.option("--gpu-hour-usd", default=None, help="USD per GPU-hour, for the cost per token.")
@click.option(
    "--mem-fraction",
    type=float,
    default=planner.DEFAULT_MEM_FRACTION,
    show_default=True,
    help="SGLang's --mem-fraction-static: the share of GPU memory for weights and KV cache.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def plan_command(
    model_spec: str,
    gpu_name: str,
    gpus: int | None,
    quant: str,
    kv_dtype: str,
    context: int,
    concurrency: int,
    gpu_hour_usd: str | None,
    mem_fraction: float,
    as_json: bool,
) -> None:
    """Plan serving a model: memory fit, KV capacity, decode ceilings, cost, SGLang command."""
    from mvm_chat.cli import fail

    try:
        architecture = architecture_of(model_spec)
    except UnreadableSource as exc:
        fail(f"--model: {exc}")
    gpu = gpus_table_lookup(gpu_name)
    try:
        price = None if gpu_hour_usd is None else Decimal(gpu_hour_usd)
    except InvalidOperation:
        fail(f"--gpu-hour-usd: {gpu_hour_usd!r} is not a number")
    request = planner.PlanRequest(
        architecture=architecture,
        gpu=gpu,
        model_path=catalog.model_path(model_spec),
        gpus=gpus,
        quant=quant,
        kv_dtype=kv_dtype,
        context=context,
        concurrency=concurrency,
        gpu_hour_usd=price,
        mem_fraction=mem_fraction,
    )
    try:
        result = planner.plan(request)
    except planner.PlanError as exc:
        fail(f"{exc.option}: {exc.problem}")
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        click.echo(render(result))


def gpus_table_lookup(name: str) -> gpus.Gpu:
    from mvm_chat.cli import fail

    found = gpus.gpu(name)
    if found is None:
        fail(f"--gpu: unknown GPU {name!r} (known: {', '.join(gpus.GPUS)})")
    return found


def render(result: Plan) -> str:
    """The plan as a readable table."""
    req, arch = result.request, result.request.architecture
    per_sequence = result.kv_bytes_per_token * req.context
    moe = (
        f"MoE: {arch.experts} experts, {arch.experts_per_token} per token"
        if arch.is_moe
        else "dense"
    )
    plural = "s" if result.gpus > 1 else ""
    fit = (
        f"yes, on {result.gpus} GPU{plural}"
        if result.fits
        else f"NO, not on {result.gpus} GPU{plural}"
    )
    fewest = str(result.min_gpus) if result.min_gpus else f"none up to {planner.TP_SIZES[-1]}"
    parallel = f"tp {result.tp_size}" + (f", ep {result.ep_size}" if result.ep_size else "")
    touched = (
        f"; {result.experts_touched_per_layer:.2f} of {arch.experts} experts read per layer"
        if arch.is_moe
        else ""
    )
    bound = (
        f"from batch {result.compute_bound_batch}"
        if result.compute_bound_batch is not None
        else f"not within the {result.max_concurrent_sequences} sequences that fit"
    )
    cost = (
        f"${result.usd_per_mtok} per million output tokens at ${req.gpu_hour_usd}/GPU-hour"
        if result.usd_per_mtok is not None
        else "give --gpu-hour-usd"
    )
    rows = [
        ("model", f"{arch.name} ({moe})"),
        ("hardware", f"{result.gpus} x {req.gpu.label}, {req.quant} weights, {req.kv_dtype} KV"),
        (
            "parameters",
            f"{arch.total_params / 1e9:.2f} B total, {arch.active_params / 1e9:.2f} B active",
        ),
        ("weights", f"{result.weights_bytes / GiB:.1f} GiB ({result.weights_bytes:,} bytes)"),
        (
            "KV cache",
            f"{result.kv_bytes_per_token:,} bytes/token; {per_sequence / GiB:.2f} GiB "
            f"per {req.context}-token sequence",
        ),
        ("fits", fit),
        ("fewest GPUs", fewest),
        (
            "KV pool",
            f"{max(result.kv_pool_bytes, 0) / GiB:.1f} GiB -> "
            f"{result.max_concurrent_sequences} concurrent sequences",
        ),
        ("parallelism", parallel),
        ("decode, batch 1", f"{result.decode_tokens_per_s_batch1:,.1f} tokens/s (ideal ceiling)"),
        (
            f"decode at {result.concurrency} seq.",
            f"{result.decode_tokens_per_s_at_concurrency:,.1f} tokens/s{touched}",
        ),
        ("compute-bound", bound),
        ("cost", cost),
        ("sglang", result.sglang_command),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
