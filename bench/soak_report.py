"""The soak test's figures, targets and table (``bench/soak.py``)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from gateway_load import percentile

RSS_GROWTH_MAX_PCT = 10.0
FD_GROWTH_MAX = 5
"""Open descriptors allowed to grow between the two rest points (no client connected). The
upstream client's idle keep-alive list varies by a few (an idle connection is dropped after
4 s, when the list is next used); SQLAlchemy keeps its 20; a descriptor lost once in 30,000
requests would exceed it. Redis pools keep every connection they ever opened, so a burst of
concurrent Redis commands raises the count for good: that counts against the target."""


def summarise(clients: dict[str, Any], duration_s: float) -> dict[str, dict[str, Any]]:
    """Per kind: counts per phase, and the measured phase's rate, latencies and outcomes."""
    kinds = sorted({k for phase in clients["latency_ms"].values() for k in phase})
    kinds += sorted(set(clients["failures"]) - set(kinds))
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        soak = clients["latency_ms"].get("soak", {}).get(kind, [])
        ttft = clients["ttft_ms"].get("soak", {}).get(kind, [])
        out[kind] = {
            "warmup": len(clients["latency_ms"].get("warmup", {}).get(kind, [])),
            "soak": len(soak),
            "per_s": round(len(soak) / duration_s, 1),
            "latency_ms": {f"p{q}": round(percentile(soak, q), 1) for q in (50, 90, 99)}
            | {"max": round(max(soak, default=float("nan")), 1)},
            "ttft_ms": {f"p{q}": round(percentile(ttft, q), 1) for q in (50, 99)} if ttft else None,
            "failures": dict(clients["failures"].get(kind, {})),
            "cache": dict(clients["cache"].get(kind, {})),
        }
    return out


Sample = dict[str, Any]


def _growth(
    samples: list[Sample], clients: dict[str, Any], warmup_s: float
) -> tuple[Sample, Sample, list[Sample]]:
    """The last sample under load of the warm-up, and of the measured phase."""
    warm_end = clients["started"] + warmup_s
    warm = [s for s in samples if s["phase"] == "warmup" and s["t"] <= warm_end] or [
        s for s in samples if s["phase"] == "warmup"
    ]
    soak = [s for s in samples if s["phase"] == "soak"]
    return warm[-1], soak[-1], soak


def _slope(samples: list[dict[str, Any]]) -> float | None:
    """The least-squares trend of VmRSS over the samples, MiB per minute."""
    if len(samples) < 3:
        return None
    t = [(s["t"] - samples[0]["t"]) / 60 for s in samples]
    fit = statistics.linear_regression(t, [s["rss_kib"] / 1024 for s in samples])
    return round(fit.slope, 3)


def figures(
    samples: list[dict[str, Any]],
    clients: dict[str, Any],
    warmup_s: float,
    before: dict[str, Any],
    quiet: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Memory, descriptors and Postgres connections: under load at the end of the warm-up and
    at the end, and at rest after each."""
    warm, end, soak = _growth(samples, clients, warmup_s)
    return {
        "memory": {
            "idle_before_mib": round(before["rss_kib"] / 1024, 1),
            "warmup_end_mib": round(warm["rss_kib"] / 1024, 1),
            "end_mib": round(end["rss_kib"] / 1024, 1),
            "growth_pct": round((end["rss_kib"] / warm["rss_kib"] - 1) * 100, 2),
            "soak_max_mib": round(max(s["rss_kib"] for s in soak) / 1024, 1),
            "soak_slope_mib_per_min": _slope(soak),
            "peak_hwm_mib": round(end["hwm_kib"] / 1024, 1),
            "quiet_after_warmup_mib": round(quiet["after_warmup"]["rss_kib"] / 1024, 1),
            "quiet_end_mib": round(quiet["end"]["rss_kib"] / 1024, 1),
        },
        "fds": {
            "idle_before": before["fds"],
            "quiet_after_warmup": quiet["after_warmup"]["fds"],
            "quiet_end": quiet["end"]["fds"],
            "quiet_growth": quiet["end"]["fds"] - quiet["after_warmup"]["fds"],
            "under_load_warmup_end": warm["fds"],
            "under_load_end": end["fds"],
            "under_load_range": [min(s["fds"] for s in soak), max(s["fds"] for s in soak)],
            "quiet_after_warmup_by_kind": quiet["after_warmup"]["fds_by_kind"],
            "quiet_end_by_kind": quiet["end"]["fds_by_kind"],
        },
        "pg_connections": {
            "quiet_after_warmup": quiet["after_warmup"]["pg_connections"],
            "quiet_end": quiet["end"]["pg_connections"],
            "under_load_max": max(s["pg_connections"] for s in soak),
        },
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    causes: dict[str, int] = {}
    for row in report["summary"].values():
        for cause, n in row["failures"].items():
            causes[cause] = causes.get(cause, 0) + n
    other = sum(n for c, n in causes.items() if c not in ("5xx", "transport"))
    mem, fds, ledger = report["memory"], report["fds"], report["ledger"]
    return [
        {"target": "responses 5xx", "measured": causes.get("5xx", 0), "met": "5xx" not in causes},
        {"target": "transport errors", "measured": causes.get("transport", 0),
         "met": "transport" not in causes},
        {"target": "other failures (4xx, error frames, cut streams)", "measured": other,
         "met": other == 0},
        {"target": f"RSS growth after warm-up < {RSS_GROWTH_MAX_PCT:.0f}%",
         "measured": f"{mem['growth_pct']:+.1f}%", "met": mem["growth_pct"] < RSS_GROWTH_MAX_PCT},
        {"target": f"open fds at rest, growth <= +{FD_GROWTH_MAX}",
         "measured": f"{fds['quiet_growth']:+d}", "met": fds["quiet_growth"] <= FD_GROWTH_MAX},
        {"target": "one ledger row per completed reply", "measured":
         f"{ledger['ledger_rows']} rows / {ledger['completed_replies']} replies",
         "met": ledger["consistent"]},
    ]  # fmt: skip


def table(report: dict[str, Any]) -> str:
    lines = [
        "| kind | warm-up | measured | per s | p50 ms | p90 ms | p99 ms | max ms | TTFT p50/p99 ms"
        " | failures | cache hit/miss/bypass (whole run) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in report["summary"].items():
        lat, ttft, cache = r["latency_ms"], r["ttft_ms"], r["cache"]
        first = f"{ttft['p50']} / {ttft['p99']}" if ttft else ""
        hits = "/".join(str(cache.get(c, 0)) for c in ("hit", "miss", "bypass")) if cache else ""
        failed = ", ".join(f"{c} {n}" for c, n in r["failures"].items()) or "0"
        lines.append(
            f"| {kind} | {r['warmup']:,} | {r['soak']:,} | {r['per_s']} | {lat['p50']} | "
            f"{lat['p90']} | {lat['p99']} | {lat['max']} | {first} | {failed} | {hits} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
        for t in report["targets"]
    ]
    return "\n".join(lines)


def server_log(path: Path) -> dict[str, Any]:
    """The server's log lines by level, and its first distinct warnings and errors."""
    levels: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            levels["unparsed"] += 1
            continue
        level = str(event.get("level", "?"))
        levels[level] += 1
        if level in ("warning", "error", "critical") and len(examples) < 10:
            examples.setdefault(str(event.get("event")), line[:400])
    return {"levels": dict(levels), "examples": list(examples.values())}


def text(report: dict[str, Any]) -> str:
    """The run's header, table and the figures under it."""
    m, mem, fds, pg = report["machine"], report["memory"], report["fds"], report["pg_connections"]
    run = report["settings"]
    lines = [
        f"soak, {report['date']}: {m['nproc']} cores ({m.get('cpu', '?')}), load average "
        f"{m['load_average_before']} before, {m['load_average']} after; {run['clients']} "
        f"clients, {run['warmup']:.0f} s warm-up, {run['measured_s']:.0f} s measured",
        "",
        table(report),
        "",
        f"VmRSS {mem['idle_before_mib']} MiB idle, {mem['warmup_end_mib']} at the end of the "
        f"warm-up, {mem['end_mib']} at the end ({mem['growth_pct']:+.1f}%), max "
        f"{mem['soak_max_mib']}, trend {mem['soak_slope_mib_per_min']} MiB/min",
        f"open fds at rest {fds['quiet_after_warmup']} -> {fds['quiet_end']}, under load "
        f"{fds['under_load_warmup_end']} -> {fds['under_load_end']} (range "
        f"{fds['under_load_range']})",
        f"open fds at rest by kind {fds['quiet_after_warmup_by_kind']} -> "
        f"{fds['quiet_end_by_kind']}",
        f"Postgres connections at rest {pg['quiet_after_warmup']} -> {pg['quiet_end']}, "
        f"under load at most {pg['under_load_max']}",
        f"ledger: {json.dumps(report['ledger'])}",
        f"server log: {report['server_log']['levels']}",
    ]
    lines += [f"  logged: {event}" for event in report["server_log"]["examples"]]
    lines += [f"  failure: {example}" for example in report["failure_examples"]]
    return "\n".join(lines)
