"""The ``mvm-chat`` command: serve, migrate, manage keys, chat from a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

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

    def __init__(
        self,
        config: str | None,
        plugins_dir: str | None,
        strict: bool,
        preloaded: PluginSet | None = None,
    ) -> None:
        self.config = config
        self.plugins_dir = plugins_dir
        self.strict = strict
        self._settings: Settings | None = None
        self._plugins = preloaded

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except ConfigError as exc:
                fail(f"config error: {exc}")
        return self._settings

    def plugins(self) -> PluginSet:
        """The plugins loaded before the command line was parsed; loaded again if strict."""
        if self._plugins is None or self.strict:
            try:
                self._plugins = load_plugins(self.plugins_dir, strict=self.strict)
            except ConfigError as exc:
                fail(f"plugin error: {exc}")
        return self._plugins


pass_context = click.make_pass_decorator(Context)


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn configuration and database failures into one line and an exit status."""
    try:
        yield
    except ConfigError as exc:
        fail(f"config error: {exc}")
    except DatabaseNotMigrated as exc:
        fail(str(exc), code=1)
    except (OSError, SQLAlchemyError) as exc:
        detail = getattr(exc, "orig", None) or exc
        first_line = str(detail).strip().splitlines()[0] if str(detail).strip() else ""
        fail(f"cannot use the database: {type(detail).__name__}: {first_line}", code=1)


def run(coro_fn: Callable[[], Any]) -> Any:
    with database_errors():
        return asyncio.run(coro_fn())


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
    preloaded = ctx.obj if isinstance(ctx.obj, PluginSet) else None
    ctx.obj = Context(config, plugins_dir, strict_plugins, preloaded)


@cli.command()
@click.option("--host", default=None, help="Bind address (default: server.host).")
@click.option("--port", default=None, type=int, help="Port (default: server.port).")
@click.option(
    "--workers",
    default=1,
    type=click.IntRange(1, 64),
    show_default=True,
    help="Worker processes (more than 1 needs Postgres and Redis).",
)
@pass_context
def serve(ctx: Context, host: str | None, port: int | None, workers: int) -> None:
    """Start the HTTP/WebSocket service."""
    import uvicorn

    from mvm_chat.app import FACTORY, create_app, worker_environment
    from mvm_chat.logging import configure_logging

    settings = ctx.settings
    if workers > 1 and (settings.database.is_sqlite or not settings.redis.url):
        fail(
            "--workers > 1 needs Postgres (database.url) and Redis (redis.url): SQLite and "
            "the in-process cache, limits and pub/sub are not shared between processes"
        )
    try:
        app = create_app(settings, ctx.plugins())  # with several workers: only a config check
    except ConfigError as exc:
        fail(f"config error: {exc}")
    configure_logging(settings.server.log_level)
    # Migrations and first-start keys: once, here, never in the workers.
    if settings.database.is_sqlite:
        with database_errors():
            upgrade(settings.database.url)
        run(lambda: _first_start_keys(settings))
    else:
        run(lambda: _check_migrated(settings))
    bind_host, bind_port = host or settings.server.host, port or settings.server.port
    click.echo(f"mvm_chat serving on http://{bind_host}:{bind_port}", err=True)
    options: dict[str, Any] = {
        "host": bind_host,
        "port": bind_port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "ws_max_size": 1024 * 1024,
        "loop": "uvloop",
        "http": "httptools",
        "server_header": False,  # no "server: uvicorn" on every response
    }
    if workers == 1:
        uvicorn.run(app, **options)
        return
    del app
    os.environ.update(worker_environment(ctx.config, ctx.plugins_dir, ctx.strict))
    uvicorn.run(FACTORY, factory=True, workers=workers, **options)


async def _check_migrated(settings: Settings) -> None:
    from mvm_chat.app import check_migrated

    database = Database(settings.database.url)
    try:
        await check_migrated(database)
    finally:
        await database.dispose()


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


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@pass_context
def plugins_command(ctx: Context, as_json: bool) -> None:
    """List plugins: source, hooks, registered components and errors."""
    from mvm_chat.chat.components import Components, describe
    from mvm_chat.metrics import Metrics

    plugins = ctx.plugins()
    try:
        components = Components.build(plugins, ctx.settings, None, Metrics())
    except ConfigError as exc:
        fail(f"config error: {exc}")
    rows = describe(plugins, components)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}  ({row['source']})")
        if row["load_error"]:
            click.echo(f"    failed to load: {row['load_error']}")
            continue
        click.echo(f"    hooks: {', '.join(row['hooks']) or '-'}")
        click.echo(f"    components: {', '.join(row['components']) or '-'}")
        if row["errors"]:
            click.echo(f"    errors: {row['errors']}")


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_context
def db_upgrade(ctx: Context, revision: str) -> None:
    """Migrate the configured database to the newest schema."""
    with database_errors():
        upgrade(ctx.settings.database.url, revision)
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
        with database_errors():
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
    """Console entry point: plugins load first, so that they can add commands."""
    from mvm_chat.logging import configure_logging

    configure_logging("info")
    plugins = load_plugins(_plugins_dir_arg(sys.argv[1:]))
    for impl in plugins.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            click.echo(
                f"mvm-chat: plugin {impl.plugin_name!r} failed to add commands: {exc}", err=True
            )
    cli(obj=plugins)


def _plugins_dir_arg(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--plugins-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--plugins-dir="):
            return arg.split("=", 1)[1]
    return None


from mvm_chat.cli_kb import kb  # noqa: E402

cli.add_command(kb)

from mvm_chat.cli_eval import eval_group  # noqa: E402

cli.add_command(eval_group, name="eval")

from mvm_chat.cli_routing import routing_command  # noqa: E402

eval_group.add_command(routing_command)

from mvm_chat.cli_bench import bench, ledger_group  # noqa: E402

cli.add_command(bench)
cli.add_command(ledger_group)

from mvm_chat.cli_models import models  # noqa: E402

cli.add_command(models)

from mvm_chat.cli_plan import plan_command  # noqa: E402

cli.add_command(plan_command)
