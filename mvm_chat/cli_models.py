"""``mvm-chat models``: list the configured catalog; ``models inspect``: a model's architecture.

The shared command-line helpers are imported from ``mvm_chat.cli`` when a command runs (that
module adds this group to ``cli`` as it finishes loading, so importing it at the top would be
an import circle).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import click

from mvm_chat.engines.architecture import KV_DTYPE_BYTES, Architecture

if TYPE_CHECKING:
    from mvm_chat.cli import Context


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@click.pass_context
def models(click_ctx: click.Context, as_json: bool) -> None:
    """List the catalog: tier, engine, health and what is known of each model."""
    if click_ctx.invoked_subcommand is None:
        _list_models(click_ctx.obj, as_json)


def _list_models(ctx: Context, as_json: bool) -> None:
    from mvm_chat.chat.services import build_engines
    from mvm_chat.cli import fail
    from mvm_chat.errors import ConfigError

    settings = ctx.settings
    try:
        engines = build_engines(settings, ctx.plugins().pm)
    except ConfigError as exc:
        fail(f"config error: {exc}")

    async def inspect() -> list[dict[str, Any]]:
        rows = []
        for model in settings.models:
            engine = engines[model.name]
            try:
                await engine.start()
                health = await engine.health()
                info = await engine.model_info()
                healthy, detail = health.ok, health.detail
            except Exception as exc:
                healthy, detail, info = False, f"{type(exc).__name__}: {exc}", {}
            finally:
                await engine.close()
            rows.append(
                {
                    "name": model.name,
                    "tier": model.tier,
                    "engine": model.engine,
                    "healthy": healthy,
                    "detail": detail,
                    "info": info,
                }
            )
        return rows

    rows = asyncio.run(inspect())
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        state = "healthy" if row["healthy"] else f"unhealthy ({row['detail']})"
        facts = ", ".join(f"{k}={v}" for k, v in row["info"].items() if k != "engine")
        click.echo(f"{row['name']}  tier={row['tier']}  engine={row['engine']}  {state}")
        if facts:
            click.echo(f"    {facts}")


@models.command("inspect")
@click.argument("source", metavar="PATH_OR_NAME")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option(
    "--kv-dtype",
    type=click.Choice(sorted(KV_DTYPE_BYTES)),
    default="bf16",
    show_default=True,
    help="The KV cache's element type, for the bytes one token takes.",
)
def inspect_command(source: str, as_json: bool, kv_dtype: str) -> None:
    """A model's architecture and parameters, total and active per token.

    PATH_OR_NAME is a GGUF file, a config.json (or its folder), an SGLang server's root URL,
    builtin:smollm2-135m, or a name in the reference catalog.
    """
    from mvm_chat.cli import fail
    from mvm_chat.engines.inspect import UnreadableSource, architecture_of

    try:
        arch = architecture_of(source)
    except UnreadableSource as exc:
        fail(exc.detail)
    if as_json:
        click.echo(json.dumps(arch.as_json(kv_dtype), indent=2))
        return
    for label, value in describe(arch, kv_dtype):
        click.echo(f"{label:<20}{value}")


def describe(arch: Architecture, kv_dtype: str = "bf16") -> list[tuple[str, str]]:
    """The rows of ``models inspect``'s table."""
    kind = f"MoE, {arch.experts} experts" if arch.is_moe else "dense"
    rows = [
        ("name", arch.name),
        ("architecture", f"{arch.architecture} ({kind})"),
        ("layers", str(arch.layers)),
        ("hidden size", str(arch.hidden_size)),
        ("FFN size", f"{arch.intermediate_size}{' per expert' if arch.is_moe else ''}"),
        ("attention heads", f"{arch.attention_heads} ({arch.kv_heads} KV heads)"),
        ("head size", str(arch.head_dim)),
        ("vocabulary", str(arch.vocab_size)),
        ("context length", str(arch.context_length)),
    ]
    if arch.is_moe:
        rows.append(("experts", f"{arch.experts}, {arch.experts_per_token} per token"))
    share = arch.active_params / arch.total_params if arch.total_params else 1.0
    rows += [
        ("total parameters", f"{arch.total_params:,} ({_short(arch.total_params)})"),
        (
            "active parameters",
            f"{arch.active_params:,} ({_short(arch.active_params)}, {share:.0%} of total)",
        ),
        ("KV cache", f"{arch.kv_bytes_per_token(kv_dtype):,} bytes per token ({kv_dtype})"),
        ("quantization", arch.quantization),
        ("tied embeddings", "yes" if arch.tied_embeddings else "no"),
    ]
    if arch.file_bytes is not None:
        rows.append(("file size", f"{arch.file_bytes:,} bytes ({arch.file_bytes / 2**20:.1f} MiB)"))
    rows.append(("source", arch.source))
    return rows


def _short(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)
