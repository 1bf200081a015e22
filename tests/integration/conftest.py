"""Fixtures of the integration tests: the SGLang stand-in server, and the knowledge base's
databases and documents (``test_kb_ingest.py``, ``test_kb_search.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.models import KbChunk, KbDocument
from tests.support import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
SERVED = "smol-gpu"
STANDIN = [sys.executable, "-m", "tests.sglang_standin"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in SGLang server; yields its root URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("sglang-standin") / "standin.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*STANDIN, "--port", str(port), "--served-model-name", SERVED],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/model_info", timeout_s=60, proc=proc, log=log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def script(standin: str) -> Iterator[Any]:
    """``script(faults={...}, num_queue_reqs=..., ...)`` sets the stand-in up for one test."""
    httpx.post(f"{standin}/_standin/reset").raise_for_status()

    def apply(**control: Any) -> None:
        httpx.post(f"{standin}/_standin/control", json=control).raise_for_status()

    yield apply
    httpx.post(f"{standin}/_standin/reset").raise_for_status()


def seen(standin: str, path: str) -> list[dict[str, Any]]:
    """The bodies of the requests the stand-in got on ``path``."""
    requests = httpx.get(f"{standin}/_standin/requests").json()
    return [r["body"] for r in requests if r["path"] == path]


def standin_model(
    standin: str,
    name: str,
    tier: str,
    max_tokens: int | None = 8,
    metrics_interval_s: float = 0,
    **extra: str | int,
) -> str:
    """A ``[[models]]`` table: an ``sglang`` model served by the stand-in (metrics off unless
    ``metrics_interval_s``; ``max_tokens`` None for the default), with ``extra`` settings."""
    settings: dict[str, str | int | float] = {"metrics_interval_s": metrics_interval_s}
    if max_tokens is not None:
        settings["max_tokens"] = max_tokens
    settings.update(extra)
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return (
        f"""
[[models]]
name = "{name}"
tier = "{tier}"
engine = "sglang"
base_url = "{standin}"
upstream_model = "{SERVED}"
"""
        + "\n".join(lines)
        + "\n"
    )


# -- the knowledge base ------------------------------------------------------------------------

KB_BILLING = """# Billing

Everything about paying for your account.

## Refunds

A refund reaches your card within five business days after we approve it.
Refunds for annual plans are prorated.

## Monthly fees

There is no monthly fee for the basic plan. The premium plan costs nine euros.
"""

KB_SECURITY = """# Security

## Passwords

Reset your password from the sign-in page; the link expires after one hour.

## Two-factor authentication

Turn on two-factor authentication in your profile settings.
"""


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def kb_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database: SQLite in ``tmp_path``, or this module's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    upgrade(url)
    return url


@pytest.fixture
async def kb_db(kb_db_url: str) -> AsyncIterator[Database]:
    """The database, its knowledge base emptied (the PostgreSQL one is shared by the module)."""
    database = Database(kb_db_url)
    async with database.transaction() as session:
        await session.execute(delete(KbDocument))
    yield database
    await database.dispose()


@pytest.fixture
def kb_docs(tmp_path: Path) -> Path:
    """A folder ``docs`` of three documents to ingest (``.md``, ``.markdown`` in a subfolder,
    ``.txt``), an image and a hidden file, which are not."""
    folder = tmp_path / "docs"
    (folder / "security").mkdir(parents=True)
    (folder / "billing.md").write_text(KB_BILLING)
    (folder / "security" / "passwords.markdown").write_text(KB_SECURITY)
    (folder / "shipping.txt").write_text(
        "Parcels ship within two days.\n\nInternational parcels take up to three weeks.\n"
    )
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (folder / ".hidden.md").write_text("# Hidden\n\nnot ingested\n")
    return folder


async def kb_count(db: Database, model: type[KbDocument] | type[KbChunk]) -> int:
    """How many rows of ``model`` the knowledge base holds."""
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)
