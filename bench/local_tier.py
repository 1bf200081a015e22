"""The local tier's efficiency: mvm_chat's tokens/s against raw llama-cpp-python.

    .venv/bin/python bench/local_tier.py [--prompts 20] [--max-tokens 64] [--threads 1]
    # or: mvm-chat bench local-tier [the same options]

The same BANKING77 test questions, the same GGUF (SmolLM2-135M, built in), context, threads
and sampling (temperature 0), through (a) ``mvm-chat serve`` with only the local tier (HTTP,
``POST /v1/chat/completions``, not streamed, cache bypassed, the ledger on Postgres) and (b)
``llama_cpp.Llama.create_chat_completion`` in a process of its own, one request at a time,
interleaved (the order alternating), each prompt ``--repeat`` times per side with the fastest
run kept (a burst of another job on a shared machine only slows a run down). mvm_chat is timed
by its client over HTTP, so its figure includes the whole turn (auth, routing, ledger); raw
llama.cpp is timed around the call alone. Prints a table and writes
``bench/results/local-tier-DATE.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx
from gateway_services import MvmChat
from processes import add_service_options, load_average, log, machine, source_state

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SYSTEM = "You are a helpful, concise customer-service assistant."
# llama.cpp sampling as mvm_chat's llamacpp engine sets it (temperature 0 makes it greedy)
SAMPLING: dict[str, float] = {"top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}

CATALOG = """
[[tiers]]
name = "local"

[[models]]
name = "smollm2-135m"
tier = "local"
engine = "llamacpp"
path = "builtin:smollm2-135m"
context_length = {n_ctx}
threads = {threads}
max_tokens = {max_tokens}
temperature = 0.0

[routing]
default_tier = "local"
"""


def raw_worker(model: str, n_ctx: int, threads: int) -> None:
    """Answer JSON lines on stdin with raw llama-cpp-python, one JSON line each on stdout."""
    from llama_cpp import Llama

    llama = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, verbose=False)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        out: Any = llama.create_chat_completion(
            messages=request["messages"],
            max_tokens=request["max_tokens"],
            temperature=0.0,
            top_k=int(SAMPLING["top_k"]),
            top_p=SAMPLING["top_p"],
            min_p=SAMPLING["min_p"],
            repeat_penalty=SAMPLING["repeat_penalty"],
        )
        elapsed = time.perf_counter() - started
        reply = {
            "elapsed_s": elapsed,
            "prompt_tokens": out["usage"]["prompt_tokens"],
            "completion_tokens": out["usage"]["completion_tokens"],
            "text": out["choices"][0]["message"]["content"],
        }
        print(json.dumps(reply), flush=True)


class Raw:
    """The raw llama-cpp-python process."""

    def __init__(self, n_ctx: int, threads: int) -> None:
        from mvm_chat.engines.llamacpp import resolve_model_path

        model = str(resolve_model_path("builtin:smollm2-135m"))
        argv = [sys.executable, __file__, "--raw-worker", model, "--n-ctx", str(n_ctx)]
        argv += ["--threads", str(threads)]
        self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the raw llama.cpp worker exited ({self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"messages": messages, "max_tokens": max_tokens}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def ask_mvm(
    client: httpx.Client, mvm: MvmChat, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, Any]:
    body = {
        "model": "smollm2-135m",
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    headers = {"Authorization": f"Bearer {mvm.key}", "Cache-Control": "no-cache"}
    started = time.perf_counter()
    response = client.post(f"{mvm.url}/v1/chat/completions", json=body, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"mvm_chat: HTTP {response.status_code}: {response.text[:500]}")
    out = response.json()
    return {
        "elapsed_s": elapsed,
        "prompt_tokens": out["usage"]["prompt_tokens"],
        "completion_tokens": out["usage"]["completion_tokens"],
        "text": out["choices"][0]["message"]["content"],
    }


def questions(data: Path, count: int) -> list[str]:
    with (data / "test.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // count)  # spread over the intents (the file is sorted by intent)
    return [rows[i * step]["text"] for i in range(count)]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = sum(r["completion_tokens"] for r in runs)
    elapsed = sum(r["elapsed_s"] for r in runs)
    return {
        "requests": len(runs),
        "completion_tokens": tokens,
        "prompt_tokens": sum(r["prompt_tokens"] for r in runs),
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 2),
        "per_request_tokens_per_s_p50": round(
            statistics.median(r["completion_tokens"] / r["elapsed_s"] for r in runs), 2
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    prompts = questions(args.data, args.prompts + args.warmup)
    catalog = CATALOG.format(n_ctx=args.n_ctx, threads=args.threads, max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="mvm-bench-local-") as folder:
        mvm = MvmChat(Path(folder), catalog, args.postgres, args.redis)
        raw: Raw | None = None
        try:
            log("starting mvm_chat with the local tier (loads SmolLM2)")
            mvm.start()
            log("starting raw llama-cpp-python")
            raw = Raw(args.n_ctx, args.threads)
            results: dict[str, list[dict[str, Any]]] = {"mvm_chat": [], "llama_cpp": []}
            with httpx.Client(timeout=300) as client:
                for i, question in enumerate(prompts):
                    messages = [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": question},
                    ]
                    pair: dict[str, dict[str, Any]] = {}
                    for k in range(args.repeat):
                        first = "mvm_chat" if (i + k) % 2 == 0 else "llama_cpp"
                        for side in (first, "llama_cpp" if first == "mvm_chat" else "mvm_chat"):
                            if side == "mvm_chat":
                                reply = ask_mvm(client, mvm, messages, args.max_tokens)
                            else:
                                reply = raw.ask(messages, args.max_tokens)
                            best = pair.setdefault(side, reply | {"times_s": []})
                            best["times_s"].append(round(reply["elapsed_s"], 4))
                            best["elapsed_s"] = min(best["elapsed_s"], reply["elapsed_s"])
                    if i < args.warmup:
                        continue
                    for side, reply in pair.items():
                        results[side].append(reply)
                    log(
                        f"{i + 1 - args.warmup:>3}/{args.prompts} mvm_chat "
                        f"{pair['mvm_chat']['completion_tokens']} tok "
                        f"{pair['mvm_chat']['elapsed_s']:.3f}s, llama_cpp "
                        f"{pair['llama_cpp']['completion_tokens']} tok "
                        f"{pair['llama_cpp']['elapsed_s']:.3f}s"
                    )
        finally:
            if raw is not None:
                raw.stop()
            mvm.stop()
    same = sum(
        a["text"].strip() == b["text"].strip()
        for a, b in zip(results["mvm_chat"], results["llama_cpp"], strict=True)
    )
    summary = {side: summarise(runs) for side, runs in results.items()}
    # each prompt's fastest of --repeat runs per side: a burst of another job on the shared
    # machine only ever slows a run down, so the fastest run is the least disturbed one
    ratio = summary["mvm_chat"]["tokens_per_s"] / summary["llama_cpp"]["tokens_per_s"]
    paired = [
        (a["completion_tokens"] / a["elapsed_s"]) / (b["completion_tokens"] / b["elapsed_s"])
        for a, b in zip(results["mvm_chat"], results["llama_cpp"], strict=True)
        if a["completion_tokens"] and b["completion_tokens"]
    ]
    return {
        "benchmark": "local-tier",
        "date": dt.date.today().isoformat(),
        "machine": machine() | {"load_average_before": load_before},
        "source": source_state(),
        "settings": {
            "model": "builtin:smollm2-135m",
            "n_ctx": args.n_ctx,
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
            "sampling": SAMPLING,
            "prompts": args.prompts,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "system_prompt": SYSTEM,
        },
        "summary": summary,
        "ratio_tokens_per_s": round(ratio, 3),
        "ratio_definition": "total tokens / total seconds, each prompt's fastest of --repeat "
        "runs per side; mvm_chat over llama_cpp",
        "ratio_paired": [round(x, 3) for x in paired],
        "ratio_paired_median": round(statistics.median(paired), 3),
        "identical_answers": same,
        "target": {"limit": 0.95, "met": ratio >= 0.95},
        "requests": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="prompts answered, not counted")
    parser.add_argument("--repeat", type=int, default=3, help="runs per prompt and side")
    parser.add_argument("--max-tokens", type=int, default=64)
    # 1: what mvm_chat's default (threads = 0) gives on 2 cores; with 2 threads on a shared
    # 2-core machine llama.cpp's threads wait on each other and both paths slow down tenfold
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/banking77")
    add_service_options(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="")
    parser.add_argument("--raw-worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        raw_worker(args.raw_worker, args.n_ctx, args.threads)
        return
    results = run(args)
    m, s = results["machine"], results["summary"]
    print(
        f"\nlocal tier, {results['date']}: {m['nproc']} cores ({m.get('cpu', '?')}), load "
        f"average {m['load_average_before']} before, {m['load_average']} after\n"
    )
    print("| path | requests | completion tokens | seconds | tokens/s | per-request p50 tok/s |")
    print("|---|---|---|---|---|---|")
    for side, f in s.items():
        print(
            f"| {side} | {f['requests']} | {f['completion_tokens']} | {f['elapsed_s']:.2f} "
            f"| {f['tokens_per_s']:.1f} | {f['per_request_tokens_per_s_p50']:.1f} |"
        )
    met = "met" if results["target"]["met"] else "NOT met"
    print(
        f"\nmvm_chat / llama-cpp-python tokens/s (each prompt's fastest of "
        f"{results['settings']['repeat']} runs): {results['ratio_tokens_per_s']:.3f} (target "
        f">= 0.95: {met}); median of the per-prompt ratios: {results['ratio_paired_median']:.3f}"
        f"; identical answers: {results['identical_answers']}/{s['mvm_chat']['requests']}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"local-tier-{results['date']}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
