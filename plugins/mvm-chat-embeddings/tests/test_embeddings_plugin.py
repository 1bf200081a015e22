"""The plugin as a distribution: its entry point, and ``mvm-chat eval intents`` with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from conftest import FAR_AWAY, PARAPHRASES, write_csv
from mvm_chat.plugins import load_plugins


def test_the_entry_point_is_discoverable() -> None:
    [entry] = [e for e in entry_points(group="mvm_chat") if e.name == "embeddings"]
    assert entry.value == "mvm_chat_embeddings"
    plugins = load_plugins(only=["embeddings"])
    assert plugins.load_errors == []
    assert plugins.sources["embeddings"].startswith("entry point")


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, mvm_chat_embeddings; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_eval_intents_with_the_embeddings_classifier(train_csv: Path, tmp_path: Path) -> None:
    test_rows = PARAPHRASES + [(text, "oos") for text in FAR_AWAY]
    test_csv = write_csv(tmp_path / "test.csv", test_rows)
    env = {k: v for k, v in os.environ.items() if k != "MVM_CHAT_LOAD_PLUGINS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mvm_chat",
            "eval",
            "intents",
            "--train",
            str(train_csv),
            "--test",
            str(test_csv),
            "--classifier",
            "embeddings",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["classifier"] == "embeddings"
    assert report["accuracy"] == 1.0
    assert report["oos_recall"] == 1.0 and report["oos_precision"] == 1.0
    assert report["p50_ms"] > 0 and report["p99_ms"] >= report["p50_ms"]
    assert 0 <= report["macro_f1"] <= 1
