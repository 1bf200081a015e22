"""One row of a cost report, and the running sums it is made from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mvm_chat.store.rollups import BUCKET_BOUNDS_MS, BUCKETS, from_nanos


def usd(amount: Decimal) -> str:
    """Money in a report: a decimal string with the ledger's 9 places, never rounded further,
    so that the rows of a report add up to its totals exactly."""
    return f"{amount:.9f}"


def estimate_percentile(histogram: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the latencies counted in ``histogram`` (one count per
    bucket of :data:`BUCKET_BOUNDS_MS`, then the overflow), in ms.

    Linear interpolation inside the bucket that holds the quantile's rank; the overflow bucket
    (60 s or more) has no upper bound and yields its lower bound. None when nothing is counted.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(histogram):
        if count and below + count >= rank:
            lower = 0 if i == 0 else BUCKET_BOUNDS_MS[i - 1]
            if i == len(BUCKET_BOUNDS_MS):
                return float(lower)
            upper = BUCKET_BOUNDS_MS[i]
            return round(lower + (upper - lower) * max(rank - below, 0) / count, 1)
        below += count
    return float(BUCKET_BOUNDS_MS[-1])


@dataclass
class Tally:
    """Running sums of ledger rows, in the rollup's units (money in nano-dollars)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nusd: int = 0
    baseline_cost_nusd: int = 0
    escalated: int = 0
    errors: int = 0
    cache_hits: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Add one aggregate row (labelled like the rollup's sum columns)."""
        self.requests += int(row["requests"] or 0)
        self.prompt_tokens += int(row["prompt_tokens"] or 0)
        self.completion_tokens += int(row["completion_tokens"] or 0)
        self.cost_nusd += int(row["cost_nusd"] or 0)
        self.baseline_cost_nusd += int(row["baseline_cost_nusd"] or 0)
        self.escalated += int(row["escalated"] or 0)
        self.errors += int(row["errors"] or 0)
        self.cache_hits += int(row["cache_hits"] or 0)
        for i, name in enumerate(BUCKETS):
            self.histogram[i] += int(row[name] or 0)

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_nusd += other.cost_nusd
        self.baseline_cost_nusd += other.baseline_cost_nusd
        self.escalated += other.escalated
        self.errors += other.errors
        self.cache_hits += other.cache_hits
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]

    def row(self, key: str | None) -> CostRow:
        n = self.requests
        return CostRow(
            key=key,
            requests=n,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=from_nanos(self.cost_nusd),
            baseline_cost_usd=from_nanos(self.baseline_cost_nusd),
            escalation_rate=round(self.escalated / n, 6) if n else 0.0,
            cache_hit_rate=round(self.cache_hits / n, 6) if n else 0.0,
            p50_ms=estimate_percentile(self.histogram, 0.50),
            p95_ms=estimate_percentile(self.histogram, 0.95),
            escalated=self.escalated,
            errors=self.errors,
            cache_hits=self.cache_hits,
        )


@dataclass(frozen=True)
class CostRow:
    """The sums of a group of ledger rows (``key`` None: the totals, or no intent)."""

    key: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    baseline_cost_usd: Decimal
    escalation_rate: float
    """Share of the calls whose status is ``escalated`` (answered again one tier up)."""
    cache_hit_rate: float
    """Share of the calls answered from the response cache."""
    p50_ms: float | None
    p95_ms: float | None
    escalated: int = 0
    errors: int = 0
    cache_hits: int = 0

    @property
    def savings_usd(self) -> Decimal:
        """What the baseline model would have cost, less what was spent (negative: a loss)."""
        return self.baseline_cost_usd - self.cost_usd

    def as_json(self, with_key: bool = True) -> dict[str, Any]:
        """The row as the admin API shows it (``with_key=False`` for the totals)."""
        body: dict[str, Any] = {"key": self.key} if with_key else {}
        body.update(
            requests=self.requests,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=usd(self.cost_usd),
            baseline_cost_usd=usd(self.baseline_cost_usd),
            savings_usd=usd(self.savings_usd),
            escalation_rate=self.escalation_rate,
            cache_hit_rate=self.cache_hit_rate,
            p50_ms=self.p50_ms,
            p95_ms=self.p95_ms,
        )
        return body
