"""API keys: random, stored only as a hash, compared in constant time, revoked at once.

How a key is checked (``mvm_chat/store/keys.py``): the presented key is hashed with SHA-256 and
the row is found by an indexed equality lookup on ``api_keys.key_hash`` (a bound parameter); the
digest stored in that row is then compared with :func:`hmac.compare_digest`. A lookup by hash
leaks nothing useful through timing (the attacker controls the hash's input, not its prefix),
and the final comparison is constant-time in any case. The lookups here go to the database
(the server's key cache, emptied on every key change, is tested in ``test_key_cache.py``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from mvm_chat.store import keys
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.models import ApiKey

INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "x'; DROP TABLE api_keys; --",
    "mvm_%",
    "%",
    "_",
    "\\",
    '"; SELECT pg_sleep(1); --',
    "' UNION SELECT id, tenant_id, 'x', 'admin', key_hash FROM api_keys --",
    "\x00",
    "mvm_\u2028\u0000'",
]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, db_url)
    database = Database(db_url)
    yield database
    await database.dispose()


def test_keys_carry_32_random_bytes() -> None:
    made = {keys.generate_key() for _ in range(2000)}
    assert len(made) == 2000
    for key in made:
        assert key.startswith(keys.KEY_PREFIX)
        raw = base64.urlsafe_b64decode(key.removeprefix(keys.KEY_PREFIX) + "==")
        assert len(raw) >= 32


async def _create(db: Database, tenant: str = "acme", role: str = "client") -> tuple[str, str]:
    async with db.transaction() as session:
        row, plaintext = await keys.create_key(session, tenant, role)
        return row.id, plaintext


async def test_only_a_hash_of_the_key_is_stored(db: Database) -> None:
    _, plaintext = await _create(db)
    async with db.session() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
    cells = [str(cell) for row in rows for cell in row]
    assert not any(plaintext in cell for cell in cells)
    assert hashlib.sha256(plaintext.encode()).hexdigest() in cells
    # the printed prefix (to tell keys apart) holds 6 of the key's 43 random characters
    assert max(len(c) for c in cells if plaintext.startswith(c)) == 10


async def test_the_stored_digest_is_compared_in_constant_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plaintext = await _create(db)
    compared: list[tuple[Any, Any]] = []
    real = keys.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    principal = await keys.authenticate_in(db, plaintext)
    assert principal is not None and principal.role == "client"
    digest = keys.hash_key(plaintext)
    assert compared == [(digest, digest)]


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)


async def test_sql_metacharacters_in_a_key_match_nothing(db: Database) -> None:
    _, plaintext = await _create(db, role="admin")
    before = await _count(db)
    for attempt in [*INJECTIONS, plaintext + "' OR '1'='1", plaintext[:-1] + "%"]:
        assert await keys.authenticate_in(db, attempt) is None, attempt
    assert await _count(db) == before
    assert await keys.authenticate_in(db, plaintext) is not None


async def test_revocation_holds_from_the_next_lookup(db: Database) -> None:
    key_id, plaintext = await _create(db)
    _, other = await _create(db)
    assert await keys.authenticate_in(db, plaintext) is not None
    async with db.transaction() as session:
        assert await keys.revoke_key(session, plaintext[:10]) == 1
    assert await keys.authenticate_in(db, plaintext) is None
    assert await keys.authenticate_in(db, other) is not None  # only that key
    async with db.transaction() as session:
        assert await keys.revoke_key(session, key_id) == 0  # already revoked
