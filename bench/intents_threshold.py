"""How the TF-IDF classifier's C and out-of-scope threshold were chosen, on BANKING77 train only.

    .venv/bin/python bench/intents_threshold.py [--data DIR] [--seeds 3] [--jobs 2]

1. C: 3-fold cross-validation of in-scope accuracy on train.csv for each C.
2. Threshold: pseudo out-of-scope. For each seed, the 77 intents are shuffled; the first K
   (K = 20, 40, 58) are in scope (80% of their rows train, 20% are held out), intents 59-68 are
   unseen out-of-scope queries, and 100 rows of intents 69-77 serve, in a second variant, as
   out-of-scope training rows (as CLINC150 provides). For each threshold t the script reports
   the in-scope cost (accuracy points lost to out-of-scope rejections on held-out rows) and the
   recall of the out-of-scope rows; the 77-intent cross-validation folds add a K = 77 setting.

Rule: the default threshold is the largest t (0.025 steps) whose mean in-scope cost stays at or
below ``--max-cost`` points in every setting. The test split is never read. Results are printed
and written to ``bench/results/intents-threshold-DATE.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvm_chat.intents.dataset import OUT_OF_SCOPE, LabelledText, read_labelled_csv  # noqa: E402
from mvm_chat.intents.tfidf import TfidfIntentModel, TfidfParams  # noqa: E402

THRESHOLDS = [round(t, 3) for t in np.arange(0.0, 0.5001, 0.025)]
KS = (20, 40, 58)


def decide(model: TfidfIntentModel, texts: list[str], t: float) -> np.ndarray:
    """Predicted labels with the model's threshold rule (see TfidfIntentModel.predict)."""
    proba = model.probability_matrix(texts)
    labels = np.array(model.labels, dtype=object)
    best = proba.argmax(axis=1)
    predicted = labels[best]
    rejected = (predicted == OUT_OF_SCOPE) | (proba.max(axis=1) < t)
    return np.where(rejected, OUT_OF_SCOPE, predicted)


def curve(
    model: TfidfIntentModel, held: list[LabelledText], oos: dict[str, list[str]]
) -> dict[str, Any]:
    truth = np.array([r.label for r in held], dtype=object)
    accuracy = [
        float((decide(model, [r.text for r in held], t) == truth).mean()) for t in THRESHOLDS
    ]
    out: dict[str, Any] = {"cost_pp": [100 * (accuracy[0] - a) for a in accuracy]}
    out["accuracy"] = accuracy
    for name, texts in oos.items():
        out[f"recall_{name}"] = [
            float((decide(model, texts, t) == OUT_OF_SCOPE).mean()) if texts else None
            for t in THRESHOLDS
        ]
    return out


def cv_fold(rows: list[LabelledText], fold: int, folds: int, c: float) -> dict[str, Any]:
    held = [r for i, r in enumerate(rows) if i % folds == fold]
    fit = [r for i, r in enumerate(rows) if i % folds != fold]
    model = TfidfIntentModel.train(fit, TfidfParams(c=c))
    return {"c": c, "fold": fold, **curve(model, held, {})}


def pseudo_oos(rows: list[LabelledText], seed: int, k: int, with_oos: bool) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    intents = rng.permutation(sorted({r.label for r in rows}))
    in_scope, unseen, source = set(intents[:k]), set(intents[58:68]), set(intents[68:])
    source_rows = [r for r in rows if r.label in source]
    order = rng.permutation(len(source_rows))
    oos_fit = [source_rows[i] for i in order[:100]]
    oos_same = [source_rows[i].text for i in order[100:]]
    mine = [r for r in rows if r.label in in_scope]
    order = rng.permutation(len(mine))
    cut = int(0.8 * len(mine))
    fit = [mine[i] for i in order[:cut]]
    held = [mine[i] for i in order[cut:]]
    if with_oos:
        fit += [LabelledText(r.text, OUT_OF_SCOPE, r.line) for r in oos_fit]
    model = TfidfIntentModel.train(fit, TfidfParams())
    oos = {"unseen": [r.text for r in rows if r.label in unseen]}
    oos["same_source"] = oos_same if with_oos else []
    return {"seed": seed, "k": k, "with_oos_rows": with_oos, **curve(model, held, oos)}


def mean_by(results: list[dict[str, Any]], key: str) -> list[float]:
    values = [r[key] for r in results if r[key] is not None and r[key][0] is not None]
    return [float(x) for x in np.mean(np.array(values, dtype=float), axis=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/banking77")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--c", type=float, nargs="+", default=[5.0, 10.0, 20.0, 50.0])
    parser.add_argument("--max-cost", type=float, default=0.5, help="points of accuracy")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    rows = read_labelled_csv(args.data / "train.csv")
    rng = np.random.default_rng(12345)
    rows = [rows[i] for i in rng.permutation(len(rows))]

    tasks: list[Any] = [
        delayed(cv_fold)(rows, f, args.folds, c) for c in args.c for f in range(args.folds)
    ]
    tasks += [
        delayed(pseudo_oos)(rows, 100 + s, k, w)
        for s in range(args.seeds)
        for k in KS
        for w in (False, True)
    ]
    results = Parallel(n_jobs=args.jobs, verbose=5)(tasks)
    cv = [r for r in results if "c" in r]
    sims = [r for r in results if "k" in r]

    print("\n3-fold cross-validated accuracy (train.csv)")
    by_c = {c: float(np.mean([r["accuracy"][0] for r in cv if r["c"] == c])) for c in args.c}
    for c, acc in by_c.items():
        print(f"  C={c:<5g} {acc * 100:.2f}%")
    best_c = max(by_c, key=lambda c: by_c[c])
    default_c = TfidfParams().c

    settings: dict[str, list[dict[str, Any]]] = {
        f"K={k}": [r for r in sims if r["k"] == k and not r["with_oos_rows"]] for k in KS
    }
    settings["K=77 (CV)"] = [r for r in cv if r["c"] == default_c]
    summary: dict[str, Any] = {}
    print(f"\nin-scope cost (accuracy points) and out-of-scope recall, C={default_c:g}")
    print("  t          " + " ".join(f"{t:6.3f}" for t in THRESHOLDS))
    for name, group in settings.items():
        summary[name] = {"cost_pp": mean_by(group, "cost_pp")}
        print(f"  {name:<10} " + " ".join(f"{x:6.2f}" for x in summary[name]["cost_pp"]))
        if "recall_unseen" in group[0]:
            summary[name]["recall_unseen"] = mean_by(group, "recall_unseen")
            print("    recall   " + " ".join(f"{x:6.2f}" for x in summary[name]["recall_unseen"]))
    for k in KS:
        group = [r for r in sims if r["k"] == k and r["with_oos_rows"]]
        name = f"K={k}+oos rows"
        summary[name] = {
            key: mean_by(group, key) for key in ("cost_pp", "recall_unseen", "recall_same_source")
        }
        print(f"  {name:<10} " + " ".join(f"{x:6.2f}" for x in summary[name]["cost_pp"]))
        for key in ("recall_unseen", "recall_same_source"):
            print(f"    {key[7:11]:<8} " + " ".join(f"{x:6.2f}" for x in summary[name][key]))

    allowed = [
        t
        for i, t in enumerate(THRESHOLDS)
        if all(summary[name]["cost_pp"][i] <= args.max_cost for name in settings)
    ]
    chosen = max(allowed)
    print(f"\nbest C by cross-validation: {best_c:g} (default {default_c:g})")
    print(
        f"threshold: largest t with mean in-scope cost <= {args.max_cost} points "
        f"in every setting: {chosen}"
    )

    out = ROOT / "bench" / "results" / f"intents-threshold-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": dt.date.today().isoformat(),
                "thresholds": THRESHOLDS,
                "cv_accuracy": by_c,
                "best_c": best_c,
                "chosen_threshold": chosen,
                "max_cost_pp": args.max_cost,
                "summary": summary,
                "runs": results,
            },
            indent=1,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
