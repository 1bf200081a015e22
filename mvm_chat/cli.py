"""The ``mvm-chat`` command: serve, migrate, manage keys, chat from a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from mvm_chat.errors import ConfigError, DatabaseNotMigrated
from mvm_chat.plugins import PluginSet, load_plugins
from mvm_chat.settings import Settings, load_settings
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.keys import ROLES, count_keys, create_key, revoke_key


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"mvm-chat: {message}", err=True)
    sys.exit(code)


class Context:
    """What the group's options resolve to, shared by every command."""

    def __init__(self, config: str | None, plugins_dir: str | None, strict: bool) -> None:
        self.config = config
        self.plugins_dir = plugins_dir
        self.strict = strict
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except ConfigError as exc:
                fail(f"config error: {exc}")
        return self._settings

    def plugins(self) -> PluginSet:
        try:
            return load_plugins(self.plugins_dir, strict=self.strict)
        except ConfigError as exc:
            fail(f"plugin error: {exc}")


pass_context = click.make_pass_decorator(Context)


def run(coro_fn: Callable[[], Any]) -> Any:
    try:
        return asyncio.run(coro_fn())
    except ConfigError as exc:
        fail(f"config error: {exc}")


@click.group()
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="MVM_CHAT_CONFIG",
    help="TOML config file (default: ./mvm_chat.toml if present, else built-in).",
)
@click.option(
    "--plugins-dir",
    type=click.Path(file_okay=False),
    envvar="MVM_CHAT_PLUGINS_DIR",
    help="Load every *.py in this folder as a plugin.",
)
@click.option("--strict-plugins", is_flag=True, help="Refuse to start if a plugin fails to load.")
@click.version_option(package_name="mvm-chat")
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, plugins_dir: str | None, strict_plugins: bool
) -> None:
    """mvm_chat: answer every message with the minimum viable model."""
    ctx.obj = Context(config, plugins_dir, strict_plugins)


@cli.command()
@click.option("--host", default=None, help="Bind address (default: server.host).")
@click.option("--port", default=None, type=int, help="Port (default: server.port).")
@pass_context
def serve(ctx: Context, host: str | None, port: int | None) -> None:
    """Start the HTTP/WebSocket service."""
    import uvicorn

    from mvm_chat.app import create_app
    from mvm_chat.logging import configure_logging

    settings = ctx.settings
    try:
        app = create_app(settings, ctx.plugins())
    except ConfigError as exc:
        fail(f"config error: {exc}")
    configure_logging(settings.server.log_level)
    if settings.database.is_sqlite:
        upgrade(settings.database.url)
        run(lambda: _first_start_keys(settings))
    else:
        _require_migrated(settings)
    bind_host, bind_port = host or settings.server.host, port or settings.server.port
    click.echo(f"mvm_chat serving on http://{bind_host}:{bind_port}", err=True)
    uvicorn.run(
        app,
        host=bind_host,
        port=bind_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws_max_size=1024 * 1024,
    )


def _require_migrated(settings: Settings) -> None:
    from mvm_chat.app import check_migrated

    async def check() -> None:
        database = Database(settings.database.url)
        try:
            await check_migrated(database)
        finally:
            await database.dispose()

    try:
        run(check)
    except DatabaseNotMigrated as exc:
        fail(str(exc), code=1)
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", code=1)


async def _first_start_keys(settings: Settings) -> None:
    """On an empty embedded database: tenant ``default`` with a client and an admin key."""
    db = Database(settings.database.url)
    try:
        async with db.transaction() as session:
            if await count_keys(session):
                return
            _, client_key = await create_key(session, "default", "client", "first start")
            _, admin_key = await create_key(session, "default", "admin", "first start")
    finally:
        await db.dispose()
    click.echo(
        "First start: created tenant 'default'. These keys are shown once; keep them.\n"
        f"  client key: {client_key}\n"
        f"  admin key:  {admin_key}\n"
        "More with: mvm-chat keys create --tenant NAME --role client|agent|admin",
        err=True,
    )


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_context
def db_upgrade(ctx: Context, revision: str) -> None:
    """Migrate the configured database to the newest schema."""
    url = ctx.settings.database.url
    try:
        upgrade(url, revision)
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", code=1)
    click.echo(f"database migrated to {revision}")


@cli.group()
def keys() -> None:
    """API keys and tenants."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name (created if needed).")
@click.option("--role", type=click.Choice(ROLES), default="client", show_default=True)
@click.option("--name", default="", help="A label for the key.")
@pass_context
def keys_create(ctx: Context, tenant: str, role: str, name: str) -> None:
    """Create a key; it is printed once, as the last line."""
    settings = ctx.settings

    async def create() -> tuple[str, str]:
        database = Database(settings.database.url)
        try:
            async with database.transaction() as session:
                row, plaintext = await create_key(session, tenant, role, name)
                return row.prefix, plaintext
        finally:
            await database.dispose()

    if settings.database.is_sqlite:
        upgrade(settings.database.url)
    prefix, plaintext = run(create)
    click.echo(f"Created a {role} key for tenant {tenant!r} (prefix {prefix}). Shown once:")
    click.echo(plaintext)


@keys.command("revoke")
@click.argument("key_id_or_prefix")
@pass_context
def keys_revoke(ctx: Context, key_id_or_prefix: str) -> None:
    """Revoke a key by its id or printed prefix; it stops working at once."""
    settings = ctx.settings

    async def revoke() -> int:
        database = Database(settings.database.url)
        try:
            async with database.transaction() as session:
                return await revoke_key(session, key_id_or_prefix)
        finally:
            await database.dispose()

    count = run(revoke)
    if not count:
        fail(f"no active key matches {key_id_or_prefix!r}", code=1)
    click.echo(f"revoked {count} key(s)")


@cli.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, envvar="MVM_CHAT_URL")
@click.option("--key", envvar="MVM_CHAT_KEY", required=True, help="Client key (or MVM_CHAT_KEY).")
@click.option("--conversation", default=None, help="Continue this conversation id.")
@click.option("--model", default="auto", show_default=True)
def chat(url: str, key: str, conversation: str | None, model: str) -> None:
    """Chat with a running server over its WebSocket."""
    from mvm_chat.client import ChatClient, ClientError

    try:
        ChatClient(url, key, model).repl(conversation)
    except ClientError as exc:
        fail(str(exc), code=1)


def main() -> None:
    """Console entry point."""
    plugins_cli_hook()
    cli()


def plugins_cli_hook() -> None:
    """Let plugins add commands (``register_commands``) before the group runs."""
    with contextlib.suppress(ConfigError):
        load_plugins().pm.hook.register_commands(cli=cli)
