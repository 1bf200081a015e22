"""``mvm-chat eval``: measure components on labelled data, e.g. ``eval intents``.

``mvm_chat.cli`` adds this group as it finishes loading, so its helpers are imported when a
command runs (importing them at the top would be an import circle).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from mvm_chat.errors import ConfigError
from mvm_chat.intents.dataset import read_labelled_csv
from mvm_chat.intents.evaluate import IntentReport, evaluate

if TYPE_CHECKING:
    from mvm_chat.cli import Context


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``mvm-chat: message`` on stderr and exit with ``code``."""
    from mvm_chat.cli import fail as cli_fail

    cli_fail(message, code)


@click.group("eval")
def eval_group() -> None:
    """Measure components on labelled data."""


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def print_report(report: IntentReport, extra: dict[str, Any]) -> None:
    """The report as a readable table on stdout."""
    rows = [
        ("classifier", f"{extra['classifier']} (plugin {extra['plugin']})"),
        ("test rows", f"{report.n_test} ({report.n_oos} out of scope)"),
        ("accuracy (in scope)", _percent(report.accuracy)),
        ("macro-F1", f"{report.macro_f1:.4f}"),
        ("out-of-scope recall", _percent(report.oos_recall)),
        ("out-of-scope precision", _percent(report.oos_precision)),
        ("latency p50", f"{report.p50_ms:.2f} ms"),
        ("latency p99", f"{report.p99_ms:.2f} ms"),
        ("set-up (training)", f"{extra['train_s']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
    if report.confused:
        click.echo("\nmost confused (true -> predicted: count)")
        for pair in report.confused:
            click.echo(f"  {pair.true} -> {pair.predicted}: {pair.count}")


def _classifier(
    ctx: Context, plugin: str, train: str, threshold: float | None, cache_dir: str
) -> Any:
    from mvm_chat.chat.components import register_from

    plugins = ctx.plugins()
    if plugins.pm.get_plugin(plugin) is None:
        fail(f"no plugin named {plugin!r} is loaded (loaded: {', '.join(sorted(plugins.sources))})")
    config: dict[str, Any] = {"train": train, "cache_dir": cache_dir}
    if threshold is not None:
        config["threshold"] = threshold
    try:
        found = register_from(
            plugins, "intent_classifier", ctx.settings, only=plugin, config=config
        )
    except ConfigError as exc:
        fail(f"config error: {exc}")
    if not found:
        fail(f"plugin {plugin!r} registered no intent classifier (see the log above)", code=1)
    return found[0].obj


@eval_group.command("intents")
@click.option("--train", required=True, type=click.Path(dir_okay=False), help="Training CSV.")
@click.option("--test", required=True, type=click.Path(dir_okay=False), help="Test CSV.")
@click.option(
    "--classifier",
    "plugin",
    default="tfidf_intents",
    show_default=True,
    help="Plugin whose intent classifier is evaluated.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Out-of-scope confidence threshold (default: the plugin's).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep trained models here (default: a temporary folder, always retrain).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_obj
def eval_intents(
    ctx: Context,
    train: str,
    test: str,
    plugin: str,
    threshold: float | None,
    cache_dir: str | None,
    as_json: bool,
) -> None:
    """Train an intent classifier on TRAIN and score it on TEST.

    CSV columns: text and label (or category); rows labelled out_of_scope (or oos) in TEST count
    towards out-of-scope recall and precision.
    """
    try:
        rows = read_labelled_csv(test)
    except ConfigError as exc:
        fail(f"test data: {exc}")
    with tempfile.TemporaryDirectory(prefix="mvm-eval-") as scratch:
        click.echo(f"setting up {plugin} on {train} ...", err=True)
        start = time.perf_counter()
        classifier = _classifier(ctx, plugin, str(Path(train)), threshold, cache_dir or scratch)
        train_s = time.perf_counter() - start
        click.echo(f"classifying {len(rows)} rows of {test} ...", err=True)
        report = asyncio.run(evaluate(classifier, rows))
    extra = {
        "classifier": str(getattr(classifier, "name", type(classifier).__name__)),
        "plugin": plugin,
        "threshold": threshold if threshold is not None else getattr(classifier, "threshold", None),
        "train_s": round(train_s, 3),
    }
    if as_json:
        click.echo(json.dumps({**report.to_dict(), **extra}))
    else:
        print_report(report, extra)
