"""Plugins on a real server: the docs' tutorial as written, as a file and as a distribution,
and a broken plugin that must not break the chat."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import MODEL_TOML, Server, mvm

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def tutorial_files() -> dict[str, str]:
    """The code blocks of docs/plugins.md marked ``<!-- tutorial: PATH -->``, by path."""
    text = DOCS.read_text()
    blocks = re.findall(r"<!-- tutorial: (\S+) -->\n```\w*\n(.*?)```", text, re.S)
    return {path: code for path, code in blocks}


def _ask(server: Server, key: str, content: str) -> dict:  # type: ignore[type-arg]
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _check_tutorial_behaviour(server: Server) -> None:
    key = server.key("acme")
    hours = _ask(server, key, "When do you open on Sunday?")
    assert hours["choices"][0]["message"]["content"] == "We are open 8:00 to 20:00 every day."
    mvm_ = hours["mvm"]
    assert (mvm_["model"], mvm_["tier"]) == ("skill:hours", "skill")
    assert mvm_["intent"] == {"label": "opening_hours", "confidence": 0.99, "source": "hours"}
    assert mvm_["cost_usd"] == "0.000000"

    complaint = _ask(server, key, "I want to make a complaint about my order.")["mvm"]
    assert (complaint["model"], complaint["tier"]) == ("bigger", "gpu")
    assert complaint["escalations"] == [
        {"from": "local", "to": "gpu", "reason": "complaints go to a bigger model"}
    ]

    plain = _ask(server, key, "Tell me a joke.")["mvm"]
    assert (plain["model"], plain["tier"], plain["escalations"]) == ("smollm2-135m", "local", [])


@pytest.fixture(scope="module")
def tutorial_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tutorial")
    files = tutorial_files()
    assert set(files) == {"plugins/store_hours.py", "mvm_chat.toml"}
    for path, code in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(code)
    return folder


def test_tutorial_plugin_from_a_plugins_folder(tutorial_dir: Path) -> None:
    listed = mvm(tutorial_dir, "--plugins-dir", "plugins", "plugins", "--json")
    assert '"name": "store_hours"' in listed.stdout
    assert "skill:hours" in listed.stdout and "escalation_policy:complaints_up" in listed.stdout
    server = Server(
        tutorial_dir,
        tutorial_files()["mvm_chat.toml"],
        env={"MVM_CHAT_PLUGINS_DIR": str(tutorial_dir / "plugins")},
    )
    server.start()
    try:
        _check_tutorial_behaviour(server)
    finally:
        server.stop()


def test_tutorial_plugin_as_an_installed_distribution(tutorial_dir: Path, tmp_path: Path) -> None:
    package = tmp_path / "mvm-store-hours"
    package.mkdir()
    (package / "mvm_store_hours.py").write_text(tutorial_files()["plugins/store_hours.py"])
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "mvm-store-hours"\nversion = "0.1"\n\n'
        '[project.entry-points.mvm_chat]\nstore_hours = "mvm_store_hours"\n\n'
        '[tool.setuptools]\npy-modules = ["mvm_store_hours"]\n'
    )
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(package),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert list(site.glob("mvm_store_hours-0.1.dist-info/entry_points.txt"))
    server = Server(
        tmp_path / "server", tutorial_files()["mvm_chat.toml"], env={"PYTHONPATH": str(site)}
    )
    server.start()
    try:
        _check_tutorial_behaviour(server)
        admin = server.key("acme", role="admin")
        rows = httpx.get(
            f"{server.url}/admin/plugins", headers={"Authorization": f"Bearer {admin}"}
        ).json()
        row = next(r for r in rows if r["name"] == "store_hours")
        assert row["source"] == "entry point mvm_store_hours"
    finally:
        server.stop()


BROKEN = """
from mvm_chat import hookimpl

class Exploding:
    name = "exploding"

    def classify(self, turn):
        raise RuntimeError("classifier blew up")

    async def retrieve(self, turn, limit):
        raise RuntimeError("retriever blew up")

@hookimpl
def register_intent_classifiers(register):
    register(Exploding())

@hookimpl
def register_retrievers(register):
    register(Exploding())

@hookimpl
def on_turn_complete(turn, result):
    raise RuntimeError("event hook blew up")
"""


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("broken")
    (folder / "plugins").mkdir()
    (folder / "plugins" / "exploding.py").write_text(BROKEN)
    (folder / "plugins" / "typo.py").write_text(
        "from mvm_chat import hookimpl\n\n@hookimpl\ndef on_turn_completed(turn):\n    pass\n"
    )
    server = Server(folder, MODEL_TOML, env={"MVM_CHAT_PLUGINS_DIR": str(folder / "plugins")})
    server.start()
    yield server
    server.stop()


def test_a_raising_plugin_does_not_break_the_chat(broken_server: Server) -> None:
    key = broken_server.key("acme")
    reply = _ask(broken_server, key, "Hello?")
    assert reply["choices"][0]["message"]["content"]
    assert reply["mvm"]["intent"] is None

    admin = broken_server.key("acme", role="admin")
    rows = httpx.get(
        f"{broken_server.url}/admin/plugins", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    by_name = {r["name"]: r for r in rows}
    assert by_name["exploding"]["errors"] >= 3
    assert "intent_classifier:exploding" in by_name["exploding"]["components"]
    assert "on_turn_completed" in by_name["typo"]["load_error"]
    metrics = httpx.get(f"{broken_server.url}/metrics").text
    assert 'mvm_plugin_errors_total{plugin="exploding"}' in metrics
    errors = [
        json.loads(line)
        for line in broken_server.log.read_text().splitlines()
        if line.startswith("{") and "classifier blew up" in line
    ]
    assert errors and errors[0]["plugin"] == "exploding", "the error is logged with its plugin"


def test_passages_from_the_knowledge_base_reach_prompt_reply_and_stored_message(
    tmp_path: Path,
) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("# Lost card\n\nIf your card is lost, freeze it in the app under Cards.\n")
    server = Server(tmp_path / "kb-server", MODEL_TOML)
    mvm(server.workdir, "kb", "add", str(faq), env=server.env)
    server.start()
    try:
        key = server.key("acme")
        reply = _ask(server, key, "I lost my card, what should I do?")
        assert reply["mvm"]["passages"][0]["source"].startswith(str(faq))
        conversation = httpx.get(
            f"{server.url}/v1/conversations/{reply['mvm']['conversation_id']}",
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        assert conversation["messages"][1]["passages"] == reply["mvm"]["passages"]
    finally:
        server.stop()


JUDGE = """
from mvm_chat import Escalation, hookimpl

class Judge:
    name = "judge"
    seen = []

    def after_generation(self, turn, reply_text, confidence):
        if turn.metadata["tier"] == "local":
            assert 0 < confidence <= 1
            return Escalation("gpu", "the small model's answer was not good enough")
        return None

@hookimpl
def register_escalation_policies(register):
    register(Judge())
"""


def test_after_generation_policy_holds_back_and_regenerates_one_tier_up(
    tutorial_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "judge.py").write_text(JUDGE)
    server = Server(
        tmp_path,
        tutorial_files()["mvm_chat.toml"],
        env={"MVM_CHAT_PLUGINS_DIR": str(tmp_path / "plugins")},
    )
    server.start()
    try:
        key = server.key("acme")
        conversation_id = httpx.post(
            f"{server.url}/v1/conversations", json={}, headers={"Authorization": f"Bearer {key}"}
        ).json()["id"]
        with httpx.stream(
            "POST",
            f"{server.url}/v1/conversations/{conversation_id}/messages",
            json={"content": "Tell me about savings accounts.", "stream": True},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        ) as response:
            frames = [
                json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")
            ]
        kinds = [f["type"] for f in frames]
        assert kinds == ["routing", "token", "done"], "the answer is held back, then sent whole"
        mvm_ = frames[-1]["mvm"]
        assert (mvm_["model"], mvm_["tier"]) == ("bigger", "gpu")
        assert mvm_["escalations"] == [
            {"from": "local", "to": "gpu", "reason": "the small model's answer was not good enough"}
        ]
        with sqlite3.connect(server.workdir / "var" / "mvm_chat.db") as db:
            rows = db.execute(
                "SELECT attempt, model, status, escalation_reason, baseline_cost_usd "
                "FROM ledger_entries WHERE conversation_id = ? ORDER BY attempt",
                (conversation_id,),
            ).fetchall()
        assert [r[:3] for r in rows] == [(0, "smollm2-135m", "escalated"), (1, "bigger", "ok")]
        assert rows[0][3] == rows[1][3] == "the small model's answer was not good enough"
    finally:
        server.stop()
