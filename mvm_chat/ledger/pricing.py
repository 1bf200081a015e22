"""The one place that knows the ledger's arithmetic.

All money is :class:`~decimal.Decimal`, rounded half-even to 9 decimal places (the
``Numeric(18, 9)`` columns) and shown to clients with 6 places.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from mvm_chat.settings import ModelSettings

STORE_QUANTUM = Decimal("0.000000001")
SHOW_QUANTUM = Decimal("0.000001")
MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)


def store(amount: Decimal) -> Decimal:
    """Round an amount as the ledger stores it."""
    return amount.quantize(STORE_QUANTUM, rounding=ROUND_HALF_EVEN)


def show(amount: Decimal) -> str:
    """An amount as a client sees it: a decimal string with 6 places."""
    return str(amount.quantize(SHOW_QUANTUM, rounding=ROUND_HALF_EVEN))


def token_cost(model: ModelSettings, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """What a per-token-priced model charges for a call."""
    return store(
        (
            model.price_input_per_mtok * prompt_tokens
            + model.price_output_per_mtok * completion_tokens
        )
        / MILLION
    )


def time_cost(hour_usd: Decimal, seconds: float, share: Decimal = Decimal(1)) -> Decimal:
    """Hardware time: ``seconds`` of a resource priced at ``hour_usd``, times ``share``."""
    return store(hour_usd * Decimal(str(round(seconds, 6))) * share / SECONDS_PER_HOUR)


def call_cost(
    model: ModelSettings, prompt_tokens: int, completion_tokens: int, wall_s: float
) -> Decimal:
    """What one call cost: tokens for API models, measured time for self-hosted ones."""
    if model.engine == "llamacpp":
        return time_cost(model.cpu_hour_usd, wall_s)
    if model.engine == "sglang":
        return time_cost(model.gpu_hour_usd * model.gpus, wall_s)
    return token_cost(model, prompt_tokens, completion_tokens)
