"""Synthetic ledger traffic for benchmarks and demos (``mvm-chat bench seed-ledger``).

Requests arrive uniformly over the last ``days`` days from a few tenants (Zipf-weighted), with
BANKING77-like intent labels (Zipf-weighted, each with its own difficulty). Most start on the
cheapest tier; some are answered from the cache; some escalate one tier up (an ``escalated`` row,
then the answer with the same request id); a few fail and fall back. Every row is priced by
:func:`mvm_chat.ledger.ledger.price`, as real traffic is.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from mvm_chat.engines.base import Usage
from mvm_chat.ledger.ledger import CallRecord, price
from mvm_chat.settings import ModelSettings, RoutingSettings, Settings, TierSettings
from mvm_chat.store.models import new_id

_WORDS = (
    "activate_my_card age_limit apple_pay_or_google_pay atm_support automatic_top_up "
    "balance_not_updated_after_bank_transfer beneficiary_not_allowed cancel_transfer "
    "card_about_to_expire card_acceptance card_arrival card_delivery_estimate card_linking "
    "card_not_working card_payment_fee_charged card_payment_not_recognised "
    "card_payment_wrong_exchange_rate card_swallowed cash_withdrawal_charge "
    "cash_withdrawal_not_recognised change_pin compromised_card contactless_not_working "
    "country_support declined_card_payment declined_cash_withdrawal declined_transfer "
    "direct_debit_payment_not_recognised disposable_card_limits edit_personal_details "
    "exchange_charge exchange_rate exchange_via_app extra_charge_on_statement failed_transfer "
    "fiat_currency_support get_disposable_virtual_card get_physical_card getting_spare_card "
    "getting_virtual_card lost_or_stolen_card lost_or_stolen_phone order_physical_card "
    "passcode_forgotten pending_card_payment pending_cash_withdrawal pending_top_up "
    "pending_transfer pin_blocked receiving_money refund_not_showing_up request_refund "
    "reverted_card_payment supported_cards_and_currencies terminate_account "
    "top_up_by_bank_transfer_charge top_up_by_card_charge top_up_by_cash_or_cheque "
    "top_up_failed top_up_limits top_up_reverted topping_up_by_card transaction_charged_twice "
    "transfer_fee_charged transfer_into_account transfer_not_received_by_recipient "
    "transfer_timing unable_to_verify_identity verify_my_identity verify_source_of_funds "
    "verify_top_up virtual_card_not_working visa_or_mastercard why_verify_identity "
    "wrong_amount_of_cash_received wrong_exchange_rate_for_cash_withdrawal"
)
INTENTS = tuple(_WORDS.split())
TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")

CATALOG = Settings(
    tiers=[TierSettings(name=n) for n in ("local", "gpu", "moe", "api")],
    models=[
        ModelSettings(
            name="smollm2-135m",
            tier="local",
            engine="llamacpp",
            path="builtin:smollm2-135m",
            cpu_hour_usd=Decimal("0.04"),
        ),
        ModelSettings(
            name="phi-4-q4",
            tier="gpu",
            engine="sglang",
            base_url="http://sglang-gpu:30000",
            gpu_hour_usd=Decimal("1.20"),
        ),
        ModelSettings(
            name="mixtral-8x7b",
            tier="moe",
            engine="sglang",
            base_url="http://sglang-moe:30000",
            gpu_hour_usd=Decimal("2.50"),
            gpus=2,
        ),
        ModelSettings(
            name="frontier",
            tier="api",
            engine="openai",
            base_url="https://api.example.com/v1",
            price_input_per_mtok=Decimal("2.50"),
            price_output_per_mtok=Decimal("10.00"),
        ),
    ],
    routing=RoutingSettings(baseline_model="frontier"),
)
"""The catalog used when the configured one has fewer than two tiers with models."""

START_MIX = (0.74, 0.14, 0.05, 0.07)
"""Share of requests that start on each rung of the ladder, cheapest first."""
MEDIAN_LATENCY_MS = (900.0, 350.0, 600.0, 1100.0)
CACHE_HIT = 0.07
ERROR = 0.008
NO_INTENT = 0.04

COLUMNS = (
    "request_id",
    "attempt",
    "tenant_id",
    "api_key_id",
    "conversation_id",
    "message_id",
    "model",
    "engine",
    "tier",
    "intent",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
    "cache",
    "status",
    "cost_usd",
    "baseline_cost_usd",
    "escalation_reason",
    "created_at",
)
"""The ``ledger_entries`` columns of each generated row, in order."""


def catalog(settings: Settings) -> Settings:
    """``settings`` if its models cover at least two tiers, else :data:`CATALOG`."""
    tiers = {model.tier for model in settings.models}
    return settings if len(tiers) >= 2 else CATALOG


@dataclass
class Traffic:
    """A generator of ledger rows (tuples in :data:`COLUMNS` order)."""

    settings: Settings
    tenant_ids: list[str]
    days: int
    now: datetime
    seed: int = 5

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        by_tier: dict[str, list[ModelSettings]] = {}
        for model in self.settings.models:
            by_tier.setdefault(model.tier, []).append(model)
        self.ladder = [by_tier[t] for t in self.settings.tier_names if t in by_tier]
        self.tenant_weights = [1 / (i + 1) ** 0.9 for i in range(len(self.tenant_ids))]
        self.intent_weights = [1 / (i + 1) ** 0.8 for i in range(len(INTENTS))]
        # How hard each intent is for the cheapest tier: its chance to escalate from there.
        self.difficulty = {label: self.rng.betavariate(1.2, 8.0) for label in INTENTS}
        self.start_mix = list(START_MIX[: len(self.ladder)])

    def rows(self, count: int) -> Iterator[tuple[Any, ...]]:
        """``count`` rows, oldest first."""
        span = self.days * 86400.0
        start = self.now - timedelta(seconds=span)
        # About 1.15 rows per request: draw request times for that many, sorted.
        moments = sorted(self.rng.random() * span for _ in range(int(count / 1.1) + 16))
        produced = 0
        conversation = new_id()
        for offset in moments:
            if self.rng.random() < 0.35:
                conversation = new_id()
            for row in self._request(start + timedelta(seconds=offset), conversation):
                yield row
                produced += 1
                if produced == count:
                    return
        while produced < count:  # the draw fell short: top up at the newest moment
            for row in self._request(self.now - timedelta(seconds=1), conversation):
                yield row
                produced += 1
                if produced == count:
                    return

    def _latency_ms(self, rung: int) -> int:
        median = MEDIAN_LATENCY_MS[min(rung, len(MEDIAN_LATENCY_MS) - 1)]
        return max(1, round(self.rng.lognormvariate(math.log(median), 0.55)))

    def _request(self, at: datetime, conversation: str) -> list[tuple[Any, ...]]:
        rng = self.rng
        tenant = rng.choices(self.tenant_ids, self.tenant_weights)[0]
        intent = None if rng.random() < NO_INTENT else rng.choices(INTENTS, self.intent_weights)[0]
        rung = rng.choices(range(len(self.start_mix)), self.start_mix)[0]
        request_id = new_id()
        prompt = 120 + round(rng.lognormvariate(math.log(300), 0.6))
        completion = 10 + round(rng.lognormvariate(math.log(80), 0.7))
        rows: list[tuple[Any, ...]] = []
        reason: str | None = None
        if rng.random() < CACHE_HIT:
            model = rng.choice(self.ladder[rung])
            latency = rng.randint(2, 20)
            rows.append(
                self._row(request_id, 0, tenant, conversation, model, intent, prompt, completion,
                          latency, "hit", "ok", None, at, True)
            )  # fmt: skip
            return rows
        hard = self.difficulty.get(intent or "", 0.1) / (1 + 2 * rung)
        while True:
            model = rng.choice(self.ladder[rung])
            last = rung == len(self.ladder) - 1
            attempt = len(rows)
            if rng.random() < ERROR and not last:
                latency = rng.randint(5000, 30000)
                rows.append(
                    self._row(request_id, attempt, tenant, conversation, model, intent, prompt, 0,
                              latency, "miss", "error", reason, at, False)
                )  # fmt: skip
                reason = "error: upstream timed out"
            elif not last and attempt < 2 and rng.random() < hard:
                latency = self._latency_ms(rung)
                rows.append(
                    self._row(request_id, attempt, tenant, conversation, model, intent, prompt,
                              completion, latency, "miss", "escalated", reason, at, False)
                )  # fmt: skip
                reason = rng.choice(("low answer confidence", "self-check failed", "refusal"))
            else:
                latency = self._latency_ms(rung)
                rows.append(
                    self._row(request_id, attempt, tenant, conversation, model, intent, prompt,
                              completion, latency, "miss", "ok", reason, at, True)
                )  # fmt: skip
                return rows
            at += timedelta(milliseconds=latency)
            rung += 1
            hard /= 2

    def _row(
        self,
        request_id: str,
        attempt: int,
        tenant: str,
        conversation: str,
        model: ModelSettings,
        intent: str | None,
        prompt: int,
        completion: int,
        latency: int,
        cache: str,
        status: str,
        reason: str | None,
        at: datetime,
        counts_baseline: bool,
    ) -> tuple[Any, ...]:
        call = CallRecord(
            request_id=request_id,
            attempt=attempt,
            tenant_id=tenant,
            api_key_id=None,
            conversation_id=conversation,
            model=model,
            usage=Usage(prompt, completion),
            latency_s=latency / 1000,
            ttft_s=None,
            cache=cache,
            status=status,
            intent=intent,
            escalation_reason=reason,
            counts_baseline=counts_baseline,
        )
        cost, baseline = price(self.settings, call)
        ttft = None if status == "error" else max(1, latency // 5)
        message = new_id() if status == "ok" else None
        return (
            request_id, attempt, tenant, None, conversation, message, model.name, model.engine,
            model.tier, intent, prompt, completion, latency, ttft, cache, status, cost, baseline,
            reason, at,
        )  # fmt: skip
