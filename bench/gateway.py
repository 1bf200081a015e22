"""The gateway benchmark: mvm_chat and LiteLLM's proxy side by side over the same upstream.

    .venv/bin/python bench/gateway.py [--quick] [--skip-litellm] [--concurrency 1,16,64]
                                      [--duration 10] [--rounds 3]
    # or: mvm-chat bench gateway [the same options]

Starts a stand-in OpenAI-compatible upstream (``bench/upstream.py``), mvm_chat (``mvm-chat
serve``, one worker, a fresh Postgres database, its own Redis key prefix, the ledger on, one
``openai``-engine tier) and LiteLLM's proxy (one worker, no database, installed into
``bench/.venv-litellm`` when missing). Drives each with wrk at each concurrency, interleaved
(upstream, mvm_chat, LiteLLM, then again) so that the drift of a shared machine cancels out,
with ``Cache-Control: no-cache`` so every request reaches the upstream; then streams
completions one at a time to time the first token and the gaps between tokens. Prints a table,
writes ``bench/results/gateway-DATE.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway_load import Target, check_once, streaming, wrk
from gateway_report import LITELLM, MVM, UPSTREAM, plot, summarise, table, targets
from gateway_services import (
    LITELLM_MASTER_KEY,
    MvmChat,
    ensure_litellm,
    ensure_wrk,
    gateway_catalog,
    start_litellm,
    start_upstream,
    wrk_version,
)
from processes import (
    MemorySampler,
    Process,
    add_service_options,
    load_average,
    log,
    machine,
    memory_kib,
    source_state,
)

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: 3 s runs, one round, 1 and 16 clients",
    )
    parser.add_argument("--skip-litellm", action="store_true", help="measure without LiteLLM")
    parser.add_argument("--skip-stream", action="store_true", help="no streaming measurement")
    parser.add_argument(
        "--concurrency", default=None, help="comma-separated wrk -c values (default 1,16,64)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (2 cores here)")
    parser.add_argument("--stream-requests", type=int, default=200)
    parser.add_argument("--stream-tokens", type=int, default=16)
    parser.add_argument("--stream-delay-ms", type=float, default=5.0)
    add_service_options(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and PNG")
    parser.add_argument("--tag", default="", help="appended to the result file names")
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = "1,16" if args.quick else "1,16,64"
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.rounds = 1
        args.stream_requests = min(args.stream_requests, 30)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    return args


def _versions(wrk_binary: str, litellm_version: str | None) -> dict[str, str | None]:
    from importlib.metadata import version

    return {
        "mvm_chat": version("mvm-chat"),
        "litellm": litellm_version,
        "wrk": wrk_version(wrk_binary),
    }


def _throughput(
    args: argparse.Namespace, wrk_binary: str, servers: list[Target], mvm_pid: int
) -> tuple[list[dict[str, dict[int, dict[str, Any]]]], int]:
    warm = 1.0 if args.quick else 3.0
    for target in servers:
        log(f"warming up {target.name} ({warm:.0f}s at 16 clients)")
        wrk(wrk_binary, target, 16, warm, args.threads)
    rounds: list[dict[str, dict[int, dict[str, Any]]]] = []
    peak_rss = 0
    for r in range(args.rounds):
        current: dict[str, dict[int, dict[str, Any]]] = {t.name: {} for t in servers}
        for c in args.concurrency:
            for target in servers:
                if target.name == MVM:
                    with MemorySampler(mvm_pid) as sampler:
                        result = wrk(wrk_binary, target, c, args.duration, args.threads)
                    peak_rss = max(peak_rss, sampler.max_rss_kib)
                else:
                    result = wrk(wrk_binary, target, c, args.duration, args.threads)
                result["load_average"] = load_average()
                current[target.name][c] = result
                log(
                    f"round {r + 1}/{args.rounds} c={c:<3} {target.name:<9} "
                    f"{result['rps']:>9,.0f} req/s  p50 {result['latency_us']['p50'] / 1000:7.2f}"
                    f" ms  p99 {result['latency_us']['p99'] / 1000:7.2f} ms"
                    + (f"  ({result['error_count']} errors)" if result["error_count"] else "")
                )
        rounds.append(current)
    return rounds, peak_rss


def _memory(name: str, proc: Process, sampled_kib: int = 0) -> dict[str, Any]:
    figures = memory_kib(proc.popen.pid)
    peak = max(figures.get("VmHWM", 0), sampled_kib)
    return {
        "pid": figures.get("pid"),
        "rss_mib": round(figures.get("VmRSS", 0) / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    load_before = load_average()
    wrk_binary = ensure_wrk()
    litellm: Path | None = None
    litellm_note = "skipped (--skip-litellm)"
    if not args.skip_litellm:
        litellm, litellm_note = ensure_litellm()
        if litellm is None:
            log(f"LiteLLM unavailable: {litellm_note}; measuring mvm_chat and the upstream only")
    processes: list[Process] = []
    mvm: MvmChat | None = None
    with tempfile.TemporaryDirectory(prefix="mvm-bench-gateway-") as folder:
        work = Path(folder)
        try:
            upstream, upstream_url = start_upstream(work, args.stream_tokens, args.stream_delay_ms)
            processes.append(upstream)
            log(f"upstream on {upstream_url}; starting mvm_chat")
            catalog = gateway_catalog(upstream_url)
            mvm = MvmChat(work, catalog, args.postgres, args.redis).start()
            assert mvm.proc is not None
            servers = [
                Target(UPSTREAM, upstream_url, "", "bench", "paced"),
                Target(MVM, mvm.url, mvm.key, "auto", "bench-paced"),
            ]
            if litellm is not None:
                log("starting LiteLLM's proxy")
                lite, lite_url = start_litellm(litellm, work, upstream_url)
                processes.append(lite)
                servers.append(Target(LITELLM, lite_url, LITELLM_MASTER_KEY, "bench", "paced"))
            sample = {t.name: check_once(t) for t in servers}
            log(f"mvm_chat answers: {json.dumps(sample[MVM].get('mvm'))}")
            rounds, peak_rss = _throughput(args, wrk_binary, servers, mvm.proc.popen.pid)
            memory = {MVM: _memory(MVM, mvm.proc, peak_rss)}
            if litellm is not None:
                memory[LITELLM] = _memory(LITELLM, processes[-1])
            mvm_requests = sum(x["requests"] for r in rounds for x in r[MVM].values())
            ledger_rows = mvm.ledger_rows()
            stream = None
            if not args.skip_stream:
                log(f"streaming: {args.stream_requests} requests per server, one at a time")
                stream = streaming(servers, args.stream_requests)
        except BaseException:
            for proc in processes + ([mvm.proc] if mvm and mvm.proc else []):
                if proc.popen.poll() is not None:
                    log(f"{proc.name} exited; its log ends:\n{proc.tail()}")
            raise
        finally:
            if mvm is not None:
                mvm.stop()
            for proc in processes:
                proc.stop()
    summary = summarise(rounds)
    checks = targets(summary, stream, memory)
    return {
        "benchmark": "gateway",
        "date": dt.date.today().isoformat(),
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.time() - started, 1),
        "machine": machine() | {"load_average_before": load_before},
        "source": source_state(),
        "versions": _versions(wrk_binary, None if litellm is None else litellm_note),
        "litellm": "measured" if litellm is not None else litellm_note,
        "settings": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "wrk_threads": args.threads,
            "quick": args.quick,
            "request": servers[1].body(),
            "stream": {
                "requests": args.stream_requests,
                "tokens": args.stream_tokens,
                "delay_ms": args.stream_delay_ms,
            },
            "mvm_chat": "one worker, Postgres ledger, Redis cache (bypassed: Cache-Control: "
            "no-cache), model auto on one openai-engine tier",
            "litellm": "one worker (--num_workers 1), no database, master key",
        },
        "summary": {str(c): v for c, v in summary.items()},
        "rounds": [
            {n: {str(c): x for c, x in runs.items()} for n, runs in r.items()} for r in rounds
        ],
        "streaming": stream,
        "memory": memory,
        "ledger": {"mvm_chat_requests": mvm_requests, "ledger_rows": ledger_rows},
        "targets": checks,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    summary = {int(c): v for c, v in results["summary"].items()}
    text = table(summary, results["streaming"], results["memory"], results["targets"])
    m = results["machine"]
    print(
        f"\ngateway benchmark, {results['date']}: {m['nproc']} cores ({m.get('cpu', '?')}), "
        f"load average {m['load_average_before']} before, {m['load_average']} after; "
        f"LiteLLM: {results['litellm']}\n"
    )
    print(text)
    ledger = results["ledger"]
    print(
        f"\nledger: {ledger['ledger_rows']} rows for {ledger['mvm_chat_requests']} mvm_chat "
        "requests under wrk (plus the warm-up and check requests)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gateway-{results['date']}{'-' + args.tag if args.tag else ''}"
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    title = (
        f"mvm_chat vs LiteLLM proxy vs direct upstream, {results['date']}, "
        f"{m['nproc']} cores, one worker each"
    )
    png = args.out / f"{stem}.png"
    plotted = plot(summary, png, title)
    print(f"\nwrote {json_path}" + (f" and {png}" if plotted else " (no matplotlib: no plot)"))


if __name__ == "__main__":
    main()
