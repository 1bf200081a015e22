"""Intent classifiers side by side on BANKING77, through ``mvm-chat eval intents --json``.

    .venv/bin/python bench/intents.py [--data DIR] [--classifier NAME ...]

Without ``--classifier`` it runs ``tfidf_intents`` and every installed (non built-in) plugin
that registers intent classifiers, e.g. the embeddings plugin. Prints a table and writes
``bench/results/intents-DATE.json`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    """CPU model, core count and memory of this machine."""
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return info


def discover() -> list[str]:
    """``tfidf_intents`` and the installed plugins that implement register_intent_classifiers."""
    sys.path.insert(0, str(ROOT))
    from mvm_chat.plugins import load_plugins

    plugins = load_plugins()
    names = ["tfidf_intents"]
    for impl in plugins.pm.hook.register_intent_classifiers.get_hookimpls():
        if plugins.sources.get(impl.plugin_name) != "builtin" and impl.plugin_name not in names:
            names.append(impl.plugin_name)
    return names


def run(name: str, data: Path) -> dict[str, Any]:
    """One ``mvm-chat eval intents --json`` run; on failure, the error instead of figures."""
    command = [
        sys.executable, "-m", "mvm_chat", "eval", "intents",
        "--train", str(data / "train.csv"), "--test", str(data / "test.csv"),
        "--classifier", name, "--json",
    ]  # fmt: skip
    print(f"running {name} ...", file=sys.stderr, flush=True)
    result = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        command, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return {"plugin": name, "error": result.stderr.strip().splitlines()[-1:]}
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| classifier | accuracy | macro-F1 | p50 ms | p99 ms | training s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['plugin']} | failed: {' '.join(r['error'])} | | | | |")
            continue
        lines.append(
            f"| {r['classifier']} ({r['plugin']}) | {r['accuracy'] * 100:.2f}% "
            f"| {r['macro_f1']:.4f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['train_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/banking77")
    parser.add_argument("--classifier", action="append", help="plugin name (repeatable)")
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        sys.exit(f"BANKING77 not found at {args.data} (give --data DIR)")
    results = [run(name, args.data) for name in (args.classifier or discover())]
    print(table(results))
    today = dt.date.today().isoformat()
    out = ROOT / "bench" / "results" / f"intents-{today}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"date": today, "data": str(args.data), "machine": machine(), "results": results}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
