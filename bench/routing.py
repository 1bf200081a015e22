"""Answer-based escalation measured: BANKING77 test questions through ``mvm-chat eval routing
--generate`` with the TF-IDF classifier and the answer checks on.

    .venv/bin/python bench/routing.py [--limit N] [--data DIR]

The local tier is SmolLM2-135M (llama.cpp, CPU). The tier above it is SGLang's protocol served
by the stand-in under ``tests/`` (no GPU here): what is measured is how much of the traffic the
local tier keeps and why the rest leaves it, not the quality of the tier above. Prints a table
and writes ``bench/results/routing-DATE.json`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intents import machine

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[[tiers]]
name = "local"
[[tiers]]
name = "gpu"

[[models]]
name = "smollm2-135m"
tier = "local"
engine = "llamacpp"
path = "builtin:smollm2-135m"
max_tokens = 64
temperature = 0.0

[[models]]
name = "gpu-model"
tier = "gpu"
engine = "sglang"
base_url = "http://127.0.0.1:{port}"
gpu_hour_usd = "2.50"

[[models]]
name = "frontier"
tier = "gpu"
engine = "openai"
base_url = "http://127.0.0.1:9/v1"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"

[routing]
baseline_model = "frontier"

[plugins.tfidf_intents]
train = "{train}"
cache_dir = "{cache}"

[plugins.answer_checks]
min_mean_logprob = {min_mean}
min_token_logprob = {min_token}
self_check = true
self_check_min_yes = {min_yes}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/banking77")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--min-mean-logprob", type=float, default=-1.2)
    parser.add_argument("--min-token-logprob", type=float, default=-8.0)
    parser.add_argument("--self-check-min-yes", type=float, default=0.5)
    args = parser.parse_args()
    port = free_port()
    standin = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "tests.sglang_standin", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with tempfile.TemporaryDirectory(prefix="mvm-bench-routing-") as folder:
            work = Path(folder)
            with (args.data / "test.csv").open(newline="") as handle:
                rows = list(csv.DictReader(handle))[: args.limit]
            with (work / "traffic.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text"])
                writer.writerows([r["text"]] for r in rows)
            (work / "mvm_chat.toml").write_text(
                CONFIG.format(
                    port=port,
                    train=args.data / "train.csv",
                    cache=ROOT / "var" / "models",
                    min_mean=args.min_mean_logprob,
                    min_token=args.min_token_logprob,
                    min_yes=args.self_check_min_yes,
                )
            )
            started = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mvm_chat",
                    "eval",
                    "routing",
                    "--traffic",
                    "traffic.csv",
                    "--generate",
                    "--json",
                ],
                cwd=work,
                capture_output=True,
                text=True,
                check=True,
            )
            seconds = time.perf_counter() - started
    finally:
        standin.terminate()
    report: dict[str, Any] = json.loads(result.stdout)
    record = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "seconds": seconds,
        "settings": vars(args) | {"data": str(args.data)},
        "report": report,
    }
    out = ROOT / "bench" / "results" / f"routing-{record['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"{report['messages']} messages in {seconds:.0f} s")
    print(f"answered on the local tier: {report['local_share'] * 100:.1f}%")
    for tier, row in report["tiers"].items():
        print(f"  {tier:<8} {row['count']:>5}  {row['share'] * 100:5.1f}%")
    print("escalation reasons (grouped):")
    grouped: dict[str, int] = {}
    for reason, count in report["escalation_reasons"].items():
        key = reason.split(" (")[0]
        grouped[key] = grouped.get(key, 0) + count
    for reason, count in sorted(grouped.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>5}  {reason}")
    print(
        f"cost ${report['cost_usd']}  baseline ${report['baseline_cost_usd']}  "
        f"savings ${report['savings_usd']}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
