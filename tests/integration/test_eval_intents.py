"""``mvm-chat eval intents``: figures as JSON or a table, out-of-scope rows, BANKING77."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import mvm

BANKING77 = Path(__file__).parents[2] / ".." / "shared" / "datasets" / "banking77"
KEYS = {"accuracy", "macro_f1", "oos_recall", "oos_precision", "p50_ms", "p99_ms"}

TRAIN = {
    "balance": [
        "what is my balance",
        "how much money do i have",
        "show my account balance",
        "check my balance please",
        "how much is left in my account",
    ],
    "transfer": [
        "send money to my friend",
        "transfer fifty euros to john",
        "make a bank transfer",
        "move money to my savings",
        "pay my sister twenty pounds",
    ],
    "card_lost": [
        "i lost my card",
        "my card was stolen",
        "cannot find my bank card",
        "block my missing card",
        "someone took my card",
    ],
}
TEST = [
    ("what's my current balance", "balance"),
    ("how much money is in my account", "balance"),
    ("transfer money to my brother", "transfer"),
    ("send ten euros to anna", "transfer"),
    ("my card is stolen", "card_lost"),
    ("i have lost my bank card", "card_lost"),
]
OOS_TRAIN = ["what is the weather today", "tell me a joke", "play some music"]
OOS_TEST = [("will it rain today weather", "oos"), ("tell me a funny joke", "oos")]


def write(path: Path, rows: list[tuple[str, str]], column: str = "label") -> Path:
    path.write_text("\n".join([f"text,{column}", *(f"{t},{label}" for t, label in rows)]) + "\n")
    return path


def train_rows(with_oos: bool) -> list[tuple[str, str]]:
    rows = [(text, label) for label, texts in TRAIN.items() for text in texts]
    return rows + ([(text, "out_of_scope") for text in OOS_TRAIN] if with_oos else [])


def run_json(cwd: Path, *args: str) -> dict[str, Any]:
    result = mvm(cwd, "eval", "intents", *args, "--json")
    figures: dict[str, Any] = json.loads(result.stdout)  # exactly one JSON object
    return figures


def test_json_figures_without_out_of_scope_rows(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", train_rows(with_oos=False))
    test = write(tmp_path / "test.csv", TEST, column="category")

    figures = run_json(tmp_path, "--train", str(train), "--test", str(test))

    assert set(figures) >= KEYS
    assert figures["accuracy"] == 1.0
    assert figures["macro_f1"] == 1.0
    assert figures["oos_recall"] is None
    assert figures["oos_precision"] is None
    assert figures["n_test"] == len(TEST)
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["confused"] == []
    assert not (tmp_path / "var").exists()  # models go to a temporary folder


def test_json_figures_with_out_of_scope_rows(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", train_rows(with_oos=True))
    test = write(tmp_path / "test.csv", TEST + OOS_TEST)

    figures = run_json(tmp_path, "--train", str(train), "--test", str(test), "--threshold", "0.4")

    assert figures["n_oos"] == len(OOS_TEST)
    assert figures["oos_recall"] == 1.0
    assert figures["oos_precision"] == 1.0
    assert figures["accuracy"] == 1.0
    assert figures["threshold"] == 0.4


def test_a_threshold_of_one_sends_everything_out_of_scope(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", train_rows(with_oos=False))
    test = write(tmp_path / "test.csv", TEST + OOS_TEST)

    figures = run_json(tmp_path, "--train", str(train), "--test", str(test), "--threshold", "1")

    assert figures["accuracy"] == 0.0
    assert figures["oos_recall"] == 1.0
    assert figures["oos_precision"] == pytest.approx(len(OOS_TEST) / (len(TEST) + len(OOS_TEST)))
    assert {"true": "balance", "predicted": "out_of_scope", "count": 2} in figures["confused"]


def test_table_output_and_a_reused_model_cache(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", train_rows(with_oos=False))
    test = write(tmp_path / "test.csv", TEST)
    args = ("--train", str(train), "--test", str(test), "--cache-dir", str(tmp_path / "models"))

    first = mvm(tmp_path, "eval", "intents", *args)
    second = mvm(tmp_path, "eval", "intents", *args)

    assert "accuracy (in scope)     100.00%" in first.stdout
    assert "latency p50" in first.stdout
    assert "intents.tfidf.trained" in first.stderr
    assert "intents.tfidf.loaded" in second.stderr
    assert len(list((tmp_path / "models").glob("*.joblib"))) == 1


def test_malformed_training_data_names_the_file_and_line(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", [*train_rows(with_oos=False), ("bye", "farewell")])
    test = write(tmp_path / "test.csv", TEST)

    result = mvm(
        tmp_path, "eval", "intents", "--train", str(train), "--test", str(test), check=False
    )

    assert result.returncode == 2
    assert f"{train}:17: label 'farewell' has only one example" in result.stderr
    assert result.stdout == ""


def test_an_unknown_classifier_plugin_is_an_error(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", train_rows(with_oos=False))
    test = write(tmp_path / "test.csv", TEST)

    result = mvm(
        tmp_path,
        "eval",
        "intents",
        "--train",
        str(train),
        "--test",
        str(test),
        "--classifier",
        "nonexistent",
        check=False,
    )

    assert result.returncode == 2
    assert "no plugin named 'nonexistent'" in result.stderr


def test_banking77_accuracy_target(tmp_path: Path) -> None:
    if not (BANKING77 / "train.csv").is_file() or not (BANKING77 / "test.csv").is_file():
        pytest.skip(f"BANKING77 is not at {BANKING77.resolve()} (the shared data sets folder)")

    # Training takes about 30 s on two idle cores: more than tests.support.mvm allows when busy.
    result = subprocess.run(
        [sys.executable, "-m", "mvm_chat", "eval", "intents", "--json",
         "--train", str(BANKING77 / "train.csv"), "--test", str(BANKING77 / "test.csv")],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)

    assert figures["n_test"] == 3080
    assert figures["accuracy"] >= 0.91
    assert figures["macro_f1"] >= 0.91
