"""Tenants and API keys; only a SHA-256 hash of each key is stored."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mvm_chat.store.db import Database, driver_sql
from mvm_chat.store.models import ApiKey, Tenant, utcnow

ROLES = ("client", "agent", "admin")
KEY_PREFIX = "mvm_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and role behind a valid key."""

    tenant_id: str
    tenant: str
    key_id: str
    role: str


def generate_key() -> str:
    """A new random key: 32 bytes of entropy, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


async def get_or_create_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        await session.flush()
    return tenant


async def create_key(
    session: AsyncSession, tenant_name: str, role: str, name: str = ""
) -> tuple[ApiKey, str]:
    """Create a key (and its tenant if needed); returns the row and the plaintext key."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    tenant = await get_or_create_tenant(session, tenant_name)
    plaintext = generate_key()
    row = ApiKey(
        tenant_id=tenant.id,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:10],
        role=role,
        name=name,
    )
    session.add(row)
    await session.flush()
    return row, plaintext


_BY_HASH = (
    select(ApiKey.id, ApiKey.tenant_id, Tenant.name, ApiKey.role, ApiKey.key_hash)
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.key_hash == bindparam("digest"), ApiKey.revoked_at.is_(None))
)
"""One indexed lookup (``api_keys.key_hash`` is unique), built once."""


@functools.cache
def _by_hash_sql(dialect: Dialect) -> str:
    return driver_sql(_BY_HASH, dialect)[0]


async def authenticate_in(db: Database, key: str) -> Principal | None:
    """:func:`authenticate` on ``db``: one round trip, and on Postgres straight through
    asyncpg with the statement compiled once."""
    return await principal_by_digest(db, hash_key(key))


async def principal_by_digest(db: Database, digest: str) -> Principal | None:
    """The principal of the key whose :func:`hash_key` is ``digest``, or None."""
    if not db.is_postgres:
        async with db.connect() as conn:
            return await _by_digest(conn, digest)
    async with db.driver() as driver:
        row = await driver.fetchrow(_by_hash_sql(db.engine.dialect), digest)
    return _principal(row, digest)


def _principal(row: Any, digest: str) -> Principal | None:
    if row is None:
        return None
    key_id, tenant_id, tenant_name, role, stored = row
    if not hmac.compare_digest(stored, digest):
        return None
    return Principal(tenant_id, tenant_name, key_id, role)


async def authenticate(session: AsyncSession | AsyncConnection, key: str) -> Principal | None:
    """The principal behind ``key``, or None when it is unknown or revoked."""
    return await _by_digest(session, hash_key(key))


async def _by_digest(session: AsyncSession | AsyncConnection, digest: str) -> Principal | None:
    row = (await session.execute(_BY_HASH, {"digest": digest})).first()
    return _principal(row, digest)


async def revoke_key(session: AsyncSession, key_id_or_prefix: str) -> int:
    """Revoke keys by id or by the printed prefix; returns how many were revoked."""
    rows = (
        await session.scalars(
            select(ApiKey).where(
                (ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix),
                ApiKey.revoked_at.is_(None),
            )
        )
    ).all()
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)


async def count_keys(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)
