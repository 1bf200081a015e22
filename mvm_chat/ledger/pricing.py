"""The one place that knows the ledger's arithmetic.

All money is :class:`~decimal.Decimal`, rounded half-even to 9 decimal places (the
``Numeric(18, 9)`` columns) once per call, and shown to clients with 6 places. Sums are
taken over the stored (rounded) amounts, so every total equals the sum of its ledger rows.

- API models (``openai``): prompt and completion tokens times their per-million prices.
- Self-hosted GPU models (``sglang``): measured GPU time, the call's wall time divided by
  the number of requests the server was running meanwhile (sampled from
  ``sglang:num_running_reqs``), times ``gpu_hour_usd`` times ``gpus``.
- Local CPU models (``llamacpp``): wall time times ``cpu_hour_usd`` (default 0).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

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
    """What a per-token-priced model charges for a call (an unset price counts as 0)."""
    price_in = model.price_input_per_mtok or Decimal(0)
    price_out = model.price_output_per_mtok or Decimal(0)
    return store((price_in * prompt_tokens + price_out * completion_tokens) / MILLION)


def time_cost(hour_usd: Decimal, seconds: float, share: Decimal = Decimal(1)) -> Decimal:
    """Hardware time: ``seconds`` of a resource priced at ``hour_usd``, times ``share``."""
    return store(hour_usd * Decimal(str(round(seconds, 6))) * share / SECONDS_PER_HOUR)


def gpu_share(running_requests: float) -> Decimal:
    """This call's share of the GPUs: one over the requests the server was running (>= 1)."""
    running = Decimal(str(round(max(running_requests, 1.0), 3)))
    return Decimal(1) / running


def call_cost(
    model: ModelSettings,
    prompt_tokens: int,
    completion_tokens: int,
    wall_s: float,
    running_requests: float = 1.0,
) -> Decimal:
    """What one call cost: tokens for API models, measured time for self-hosted ones.

    ``running_requests``: for ``sglang``, how many requests the server ran during the call
    (this one included), so that concurrent calls split the GPU time between them.
    """
    if model.engine == "llamacpp":
        return time_cost(model.cpu_hour_usd, wall_s)
    if model.engine == "sglang":
        return time_cost(model.gpu_hour_usd * model.gpus, wall_s, gpu_share(running_requests))
    return token_cost(model, prompt_tokens, completion_tokens)


def max_call_cost(model: ModelSettings, prompt_tokens: int, max_tokens: int) -> Decimal:
    """The most one call can cost, rounded up (what a budget reserves before the call).

    API models: ``prompt_tokens`` (pass a generous estimate) at the input price plus
    ``max_tokens`` at the output price. Self-hosted models: ``timeout_s`` of the whole
    hardware (``gpu_hour_usd`` x ``gpus`` for ``sglang``, ``cpu_hour_usd`` for ``llamacpp``).
    The capacity planner's estimate (:mod:`mvm_chat.ledger.estimates`) is not used here: it
    prices the call at the GPUs' ideal speed, so it is what a call should cost, not the most
    it can (a slow or crowded server takes longer, up to the timeout).
    """
    if model.engine in ("llamacpp", "sglang"):
        hour = model.cpu_hour_usd if model.engine == "llamacpp" else model.gpu_hour_usd * model.gpus
        worst = hour * Decimal(str(model.timeout_s)) / SECONDS_PER_HOUR
    else:
        price_in = model.price_input_per_mtok or Decimal(0)
        price_out = model.price_output_per_mtok or Decimal(0)
        worst = (price_in * prompt_tokens + price_out * max_tokens) / MILLION
    return worst.quantize(STORE_QUANTUM, rounding=ROUND_CEILING)
