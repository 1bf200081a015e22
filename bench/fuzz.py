"""The long schemathesis run: ``tests/integration/test_fuzz_schema.py`` with many more examples.

    .venv/bin/python bench/fuzz.py [--examples 200] [--stateful 100] [--steps 10] [--seed N]

Starts ``mvm-chat serve`` on SQLite with SmolLM2 (``max_tokens = 4``), loads its ``/schema``
and fuzzes every operation with the key of its role (``--examples`` cases each: schema-valid,
schema-invalid and the schema's own examples, shrunk on failure), without a key, and with a key
of the wrong role; then runs ``--stateful`` scenarios along the schema's links. Every response
is checked: no server error; status code, content type, headers and body as documented. Prints
a table per operation and the failures, writes ``bench/results/fuzz-DATE.json``, and exits 1
when anything failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import schemathesis  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from tests.schema_fuzz import (  # noqa: E402
    CHECKS,
    FUZZ_TOML,
    Keys,
    Outcome,
    bearer,
    fuzz,
    load,
    secured,
    stateful,
)
from tests.support import Server  # noqa: E402


def run(examples: int, scenarios: int, steps: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mvm-fuzz-") as tmp:
        server = Server(Path(tmp), FUZZ_TOML).start()
        try:
            return _run(server, examples, scenarios, steps, seed)
        finally:
            server.stop()


def _run(server: Server, examples: int, scenarios: int, steps: int, seed: int) -> dict[str, Any]:
    keys = Keys(server)
    schema = load(server.url)

    def right(case: schemathesis.Case) -> Any:
        headers = bearer(keys.right(case.path)) if secured(case) else {}
        return case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)

    def no_key(case: schemathesis.Case) -> Any:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        response = case.call_and_validate(checks=CHECKS, timeout=120)
        assert response.status_code == 401 or not secured(case), response.text
        return response

    def wrong_role(case: schemathesis.Case) -> Any:
        headers = bearer(keys.wrong(case.path))
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)
        assert response.status_code == 403, response.text
        return response

    runs: dict[str, Outcome] = {}
    runs["with its key"] = fuzz(schema, right, examples, derandomize=False, shrink=True, seed=seed)
    few = max(1, examples // 10)
    runs["without a key"] = fuzz(schema, no_key, few, derandomize=False, seed=seed)
    runs["wrong role"] = fuzz(
        schema,
        wrong_role,
        few,
        derandomize=False,
        seed=seed,
        skip=lambda label: "/admin/" not in label,
        modes=(GenerationMode.POSITIVE,),
    )
    try:
        runs["stateful"] = stateful(schema, keys, scenarios, steps)
    except Exception as exc:  # the first failing scenario
        runs["stateful"] = Outcome(failures={"stateful": str(exc)[:4000]})
    return {
        name: {
            "seconds": round(o.seconds, 1),
            "examples": o.examples,
            "statuses": {k: {str(s): n for s, n in v.items()} for k, v in o.statuses.items()},
            "failures": o.failures,
        }
        for name, o in runs.items()
    }


def table(results: dict[str, Any]) -> str:
    lines = [f"{'run / operation':58} {'cases':>6}  statuses"]
    for name, r in results.items():
        total = sum(r["examples"].values())
        lines.append(f"{name:58} {total:>6}  ({r['seconds']} s, {len(r['failures'])} failed)")
        for label, n in sorted(r["examples"].items()):
            statuses = " ".join(f"{s}:{c}" for s, c in sorted(r["statuses"][label].items()))
            lines.append(f"  {label:56} {n:>6}  {statuses}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="cases per operation")
    parser.add_argument("--stateful", type=int, default=100, help="stateful scenarios")
    parser.add_argument("--steps", type=int, default=10, help="steps per scenario at most")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    started = time.monotonic()
    results = run(args.examples, args.stateful, args.steps, seed)
    seconds = time.monotonic() - started
    print(table(results))
    failures = {
        f"{n}: {label}": t for n, r in results.items() for label, t in r["failures"].items()
    }
    for label, text in failures.items():
        print(f"\n--- FAILED {label}\n{text}")
    cases = sum(sum(r["examples"].values()) for r in results.values())
    print(f"\n{cases} cases in {seconds:.0f} s, {len(failures)} failures (seed {seed})")
    record = {
        "date": dt.date.today().isoformat(),
        "seed": seed,
        "examples": args.examples,
        "stateful": args.stateful,
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "cases": cases,
        "results": results,
    }
    out = args.out or ROOT / "bench" / "results" / f"fuzz-{record['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
