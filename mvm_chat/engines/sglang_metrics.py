"""SGLang's load, read from its Prometheus ``/metrics``: the snapshot and the background scraper.

Followed: SGLang 0.5.9 (the PyPI wheel ``sglang-0.5.9-py3-none-any.whl``), facts only:

- ``python/sglang/srt/metrics/collector.py`` (``SchedulerMetricsCollector``): the gauges
  ``sglang:num_queue_reqs`` (requests in the waiting queue), ``sglang:num_running_reqs``,
  ``sglang:token_usage`` (share of the KV-cache token pool in use) and ``sglang:gen_throughput``
  (generated tokens per second).
- ``python/sglang/srt/managers/scheduler_metrics_mixin.py``: their labels, ``model_name``,
  ``engine_type``, ``tp_rank``, ``pp_rank``, ``moe_ep_rank`` and, with data parallelism,
  ``dp_rank``: one series per reporting scheduler, so a data-parallel server has several.
- ``python/sglang/srt/utils/common.py`` (``add_prometheus_middleware``): ``GET /metrics`` serves
  the multiprocess registry in the Prometheus text format, and only when the server was launched
  with ``--enable-metrics`` (otherwise the route is a 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog

log = structlog.get_logger(__name__)

QUEUE = "sglang:num_queue_reqs"
RUNNING = "sglang:num_running_reqs"
KV_USAGE = "sglang:token_usage"
THROUGHPUT = "sglang:gen_throughput"
GAUGES = (QUEUE, RUNNING, KV_USAGE, THROUGHPUT)


@dataclass(frozen=True, slots=True)
class SglangLoad:
    """An SGLang server's load at the last good scrape, and this process's own calls to it."""

    num_queue_reqs: int = 0
    """Requests waiting in the server's queue."""
    num_running_reqs: int = 0
    """Requests the server is generating for now (GPU time is shared among them)."""
    token_usage: float = 0.0
    """Share of the KV-cache token pool in use, 0 to 1 (the busiest scheduler's)."""
    gen_throughput: float = 0.0
    """Generated tokens per second, all schedulers together."""
    inflight: int = 0
    """Calls this process has open on the server now."""
    scraped_at: float | None = None
    """Unix time of the last good scrape; None before the first one."""
    stale: bool = True
    """True until a scrape succeeds, and again after one fails (the last values are kept)."""
    detail: str = ""
    """Why the values are stale, when they are."""

    @property
    def queue_depth(self) -> int:
        """Queued plus running requests from the last scrape; this process's own in-flight
        calls are the floor (a scrape can predate them, or fail)."""
        return max(self.inflight, self.num_queue_reqs + self.num_running_reqs)


def parse_metrics(text: str) -> dict[str, float]:
    """The load gauges found in Prometheus exposition ``text``.

    Request counts and throughput are summed over the series (one per scheduler, so per
    data-parallel rank); token usage is the maximum. A gauge with no series is absent from the
    result. Raises ``ValueError`` when ``text`` is not Prometheus exposition text.
    """
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in GAUGES:
                continue
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            if sample.name == KV_USAGE:
                found[sample.name] = max(found.get(sample.name, 0.0), value)
            else:
                found[sample.name] = found.get(sample.name, 0.0) + value
    return found


class MetricsScraper:
    """Reads ``GET url`` every ``interval_s`` seconds in a background task.

    A failed scrape (unreachable, a timeout, an HTTP error, text that does not parse) keeps the
    last values and marks them stale; the next good scrape makes them fresh again.
    """

    def __init__(
        self,
        client: Callable[[], httpx.AsyncClient],
        url: str,
        interval_s: float,
        timeout_s: float,
        name: str,
    ) -> None:
        self._client = client
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.name = name
        self._values: dict[str, float] = {}
        self._scraped_at: float | None = None
        self._detail = "not scraped yet" if interval_s > 0 else "metrics scraping is off"
        self._stale = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (once); a zero or negative interval starts nothing."""
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sglang-metrics:{self.name}")

    async def close(self) -> None:
        """Cancel the background task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self.scrape()
            await asyncio.sleep(self.interval_s)

    async def scrape(self) -> bool:
        """Scrape once; True when the values are fresh."""
        problem = ""
        values: dict[str, float] = {}
        try:
            response = await self._client().get(self.url, timeout=self.timeout_s)
            if response.status_code == 404:
                problem = "/metrics not found (launch SGLang with --enable-metrics)"
            elif response.status_code != 200:
                problem = f"/metrics answered HTTP {response.status_code}"
            else:
                values = parse_metrics(response.text)
        except httpx.TimeoutException:
            problem = f"/metrics did not answer within {self.timeout_s:g}s"
        except httpx.HTTPError as exc:
            problem = f"/metrics unreachable ({type(exc).__name__})"
        except ValueError:
            problem = "/metrics sent text that is not Prometheus exposition"
        if problem:
            if not self._stale or self._detail != problem:
                log.warning("sglang.metrics_stale", model=self.name, detail=problem)
            self._stale, self._detail = True, problem
            return False
        self._values = values
        self._scraped_at = time.time()
        self._stale, self._detail = False, ""
        return True

    def snapshot(self, inflight: int) -> SglangLoad:
        """The last scraped values, with ``inflight`` (this process's open calls)."""
        values = self._values
        return SglangLoad(
            num_queue_reqs=round(values.get(QUEUE, 0.0)),
            num_running_reqs=round(values.get(RUNNING, 0.0)),
            token_usage=values.get(KV_USAGE, 0.0),
            gen_throughput=values.get(THROUGHPUT, 0.0),
            inflight=inflight,
            scraped_at=self._scraped_at,
            stale=self._stale,
            detail=self._detail,
        )
