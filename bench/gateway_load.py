"""Load for the gateway benchmark: wrk runs (throughput, latency) and a streaming client."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

LUA = Path(__file__).resolve().parent / "gateway.lua"
PROMPT = "How do I activate my new card?"


@dataclass(frozen=True)
class Target:
    """One server to drive: where, how to authenticate and which model to ask for."""

    name: str
    url: str
    auth: str
    model: str
    stream_model: str

    def body(self, stream: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.stream_model if stream else self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 32,
        }
        if stream:
            body["stream"] = True
        return body

    def headers(self) -> dict[str, str]:
        headers = {"Cache-Control": "no-cache"}
        if self.auth:
            headers["Authorization"] = f"Bearer {self.auth}"
        return headers


def wrk(
    binary: str, target: Target, connections: int, duration_s: float, threads: int
) -> dict[str, Any]:
    """One wrk run; wrk's figures (latencies in microseconds) plus requests/s."""
    env = {
        **os.environ,
        "BENCH_BODY": json.dumps(target.body()),
        "BENCH_AUTH": target.auth,
    }
    argv = [
        binary,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        f"{target.url}/v1/chat/completions",
    ]
    out = subprocess.run(  # noqa: S603 (our own arguments)
        argv, capture_output=True, text=True, env=env, timeout=duration_s + 60, check=False
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no figures:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    errors = sum(result["errors"].values())
    result["error_count"] = errors
    return result


def check_once(target: Target) -> dict[str, Any]:
    """One non-streaming request, to fail early with the server's answer when it is wrong."""
    response = httpx.post(
        f"{target.url}/v1/chat/completions",
        json=target.body(),
        headers=target.headers(),
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return body


@dataclass
class StreamTiming:
    ttft_s: float
    gaps_s: list[float]
    total_s: float
    tokens: int


def stream_once(client: httpx.Client, target: Target) -> StreamTiming:
    """One streamed completion, timestamping each content chunk as it arrives."""
    stamps: list[float] = []
    started = time.perf_counter()
    with client.stream(
        "POST",
        f"{target.url}/v1/chat/completions",
        json=target.body(stream=True),
        headers=target.headers(),
    ) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{target.name}: HTTP {response.status_code}: {response.text}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
    ended = time.perf_counter()
    if not stamps:
        raise RuntimeError(f"{target.name}: the stream had no content")
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return StreamTiming(stamps[0] - started, gaps, ended - started, len(stamps))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def streaming(targets: list[Target], requests: int, warmup: int = 5) -> dict[str, Any]:
    """``requests`` streamed completions per target, one at a time, interleaved (A B A B)."""
    timings: dict[str, list[StreamTiming]] = {t.name: [] for t in targets}
    with httpx.Client(timeout=30) as client:
        for _ in range(warmup):
            for target in targets:
                stream_once(client, target)
        for _ in range(requests):
            for target in targets:
                timings[target.name].append(stream_once(client, target))
    out: dict[str, Any] = {}
    for name, runs in timings.items():
        ttft = [r.ttft_s * 1000 for r in runs]
        gaps = [g * 1000 for r in runs for g in r.gaps_s]
        total = [r.total_s * 1000 for r in runs]
        out[name] = {
            "requests": len(runs),
            "tokens_per_stream": statistics.median(r.tokens for r in runs),
            "ttft_ms": {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99)},
            "inter_token_ms": {
                "mean": statistics.fmean(gaps) if gaps else float("nan"),
                "p50": percentile(gaps, 50),
                "p99": percentile(gaps, 99),
            },
            "total_ms": {"p50": percentile(total, 50), "p99": percentile(total, 99)},
        }
    return out
