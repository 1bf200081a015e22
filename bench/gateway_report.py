"""Figures of the gateway benchmark: the summary over rounds, the targets, the table, the plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

UPSTREAM, MVM, LITELLM = "upstream", "mvm_chat", "litellm"


def _ms(us: float) -> float:
    return round(us / 1000, 3)


def summarise(rounds: list[dict[str, dict[int, dict[str, Any]]]]) -> dict[int, dict[str, Any]]:
    """Per concurrency: each target's median requests/s, p50 and p99 over the rounds; added
    latency against the direct upstream in the same round; the mvm_chat / LiteLLM ratio."""
    concurrencies = sorted({c for r in rounds for runs in r.values() for c in runs})
    summary: dict[int, dict[str, Any]] = {}
    for c in concurrencies:
        entry: dict[str, Any] = {}
        for name in (UPSTREAM, MVM, LITELLM):
            runs = [r[name][c] for r in rounds if name in r and c in r[name]]
            if not runs:
                continue
            figures: dict[str, Any] = {
                "rps": [x["rps"] for x in runs],
                "p50_ms": [_ms(x["latency_us"]["p50"]) for x in runs],
                "p99_ms": [_ms(x["latency_us"]["p99"]) for x in runs],
                "errors": sum(x["error_count"] for x in runs),
            }
            for key in ("rps", "p50_ms", "p99_ms"):
                figures[f"{key}_median"] = round(statistics.median(figures[key]), 3)
            if name != UPSTREAM and UPSTREAM in entry:
                base = entry[UPSTREAM]
                for q in ("p50_ms", "p99_ms"):
                    added = [g - u for g, u in zip(figures[q], base[q], strict=True)]
                    figures[f"added_{q}"] = [round(a, 3) for a in added]
                    figures[f"added_{q}_median"] = round(statistics.median(added), 3)
            entry[name] = figures
        if MVM in entry and LITELLM in entry:
            # a round in which LiteLLM completed no request within the run has no ratio
            ratios = [
                round(m / lite, 2) if lite > 0 else None
                for m, lite in zip(entry[MVM]["rps"], entry[LITELLM]["rps"], strict=True)
            ]
            measured = [x for x in ratios if x is not None]
            entry["ratio_mvm_over_litellm"] = ratios
            entry["ratio_median"] = round(statistics.median(measured), 2) if measured else None
        summary[c] = entry
    return summary


def targets(
    summary: dict[int, dict[str, Any]],
    stream: dict[str, Any] | None,
    memory: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """The issue's targets: the measured value, the limit and whether it is met (None: not
    measured in this run)."""

    def check(value: float | None, limit: float, at_least: bool = False) -> dict[str, Any]:
        if value is None:
            return {"value": None, "limit": limit, "met": None}
        met = value >= limit if at_least else value <= limit
        return {"value": round(value, 3), "limit": limit, "met": met}

    one = summary.get(1, {}).get(MVM, {})
    sixteen = summary.get(16, {})
    ttft = None
    if stream and MVM in stream and UPSTREAM in stream:
        ttft = stream[MVM]["ttft_ms"]["p50"] - stream[UPSTREAM]["ttft_ms"]["p50"]
    rss = memory.get(MVM, {}).get("peak_rss_mib")
    return {
        "throughput_c16_ratio_vs_litellm": check(sixteen.get("ratio_median"), 15, at_least=True),
        "added_latency_c1_p50_ms": check(one.get("added_p50_ms_median"), 1.5),
        "added_latency_c1_p99_ms": check(one.get("added_p99_ms_median"), 10),
        "stream_ttft_added_p50_ms": check(ttft, 2),
        "worker_rss_mib": check(rss, 300),
    }


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def table(
    summary: dict[int, dict[str, Any]],
    stream: dict[str, Any] | None,
    memory: dict[str, Any],
    checks: dict[str, dict[str, Any]],
) -> str:
    """The side-by-side table, as Markdown (medians over the rounds)."""
    lines = [
        "| clients | server | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| mvm_chat / LiteLLM (per round) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, entry in summary.items():
        for name in (UPSTREAM, MVM, LITELLM):
            if name not in entry:
                continue
            f = entry[name]
            ratio = ""
            if name == MVM and entry.get("ratio_median") is not None:
                per_round = ", ".join(_fmt(x, ".1f") for x in entry["ratio_mvm_over_litellm"])
                ratio = f"**{entry['ratio_median']:.1f}x** ({per_round})"
            errors = f" ({f['errors']} errors)" if f["errors"] else ""
            lines.append(
                f"| {c} | {name}{errors} | {f['rps_median']:,.0f} | {f['p50_ms_median']:.2f} "
                f"| {f['p99_ms_median']:.2f} | {_fmt(f.get('added_p50_ms_median'))} "
                f"| {_fmt(f.get('added_p99_ms_median'))} | {ratio} |"
            )
    out = ["\n".join(lines)]
    if stream:
        rows = [
            "| streaming, one client | TTFT p50 ms | TTFT p99 ms | inter-token p50 ms "
            "| inter-token p99 ms | TTFT added p50 ms | inter-token added p50 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        base = stream.get(UPSTREAM)
        for name, s in stream.items():
            added_ttft = added_gap = None
            if base is not None and name != UPSTREAM:
                added_ttft = s["ttft_ms"]["p50"] - base["ttft_ms"]["p50"]
                added_gap = s["inter_token_ms"]["p50"] - base["inter_token_ms"]["p50"]
            rows.append(
                f"| {name} | {s['ttft_ms']['p50']:.2f} | {s['ttft_ms']['p99']:.2f} "
                f"| {s['inter_token_ms']['p50']:.2f} | {s['inter_token_ms']['p99']:.2f} "
                f"| {_fmt(added_ttft)} | {_fmt(added_gap)} |"
            )
        out.append("\n".join(rows))
    if memory:
        rows = ["| server | peak RSS MiB under load (VmHWM) | RSS MiB after |", "|---|---|---|"]
        for name, m in memory.items():
            rows.append(f"| {name} | {m['peak_rss_mib']:.0f} | {m['rss_mib']:.0f} |")
        out.append("\n".join(rows))
    rows = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for name, t in checks.items():
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        rows.append(f"| {name} | {_fmt(t['value'])} | {t['limit']} | {met} |")
    out.append("\n".join(rows))
    return "\n\n".join(out)


def plot(summary: dict[int, dict[str, Any]], path: Path, title: str) -> bool:
    """Throughput and p50 latency per concurrency for each server; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    concurrencies = list(summary)
    names = [n for n in (UPSTREAM, MVM, LITELLM) if any(n in e for e in summary.values())]
    fig, (ax_rps, ax_p50) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(concurrencies))]
        rps = [summary[c].get(name, {}).get("rps_median", 0) for c in concurrencies]
        p50 = [summary[c].get(name, {}).get("p50_ms_median", 0) for c in concurrencies]
        ax_rps.bar(xs, rps, width, label=name)
        ax_p50.bar(xs, p50, width, label=name)
    for ax, label in ((ax_rps, "requests/s (log)"), (ax_p50, "p50 latency, ms (log)")):
        ticks = [f"{c} client{'s' if c > 1 else ''}" for c in concurrencies]
        ax.set_xticks(range(len(concurrencies)), ticks)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    ax_p50.legend(loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
