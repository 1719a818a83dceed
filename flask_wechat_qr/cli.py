"""``flask wechat-qr``: the extension's command group (registered by ``init_app``).

Subcommands are added to :data:`cli` (``db`` now; more groups can join it with
``@cli.command()`` / ``@cli.group()``). Commands of an ``AppGroup`` run inside the app
context, so they reach ``current_app.extensions["wechat_qr"]``.
"""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

cli = AppGroup("wechat-qr", help="Flask-WeChat-QR: log in with WeChat by QR code.")


@cli.group("db")
def db_group() -> None:
    """The extension's own tables and their migrations (apart from the site's own)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True,
              help="Print the SQL instead of running it (for a DBA to apply).")
def upgrade_command(revision: str, sql: bool) -> None:
    """Create or upgrade the extension's tables (run at every deploy; safe to repeat)."""
    from alembic.util import CommandError  # Alembic loads only when a command runs

    from . import migrations

    try:
        result = migrations.upgrade(revision=revision, sql=sql, output=sys.stdout)
    except (migrations.MigrationError, CommandError) as exc:
        raise click.ClickException(str(exc)) from None
    if sql:
        return
    head = migrations.head_revision()
    if result.adopted:
        click.echo(f"Flask-WeChat-QR tables: found tables made by create_all that match "
                   f"{head}; recorded them as {head} (head).")
    elif result.changed:
        click.echo(f"Flask-WeChat-QR tables: upgraded from {result.before or '(none)'} to "
                   f"{_describe(result.after, head)}.")
    else:
        click.echo(f"Flask-WeChat-QR tables: already at {_describe(result.after, head)}; "
                   "nothing to do.")


@db_group.command("current")
def current_command() -> None:
    """Show the revision of the extension's tables in this app's database."""
    from . import migrations

    current = migrations.current_revision()
    head = migrations.head_revision()
    if current is None:
        click.echo("Flask-WeChat-QR tables: none yet (run `flask wechat-qr db upgrade`).")
    elif current != head:
        click.echo(f"Flask-WeChat-QR tables: {current}; this version needs {head} "
                   "(run `flask wechat-qr db upgrade`).")
    else:
        click.echo(f"Flask-WeChat-QR tables: {_describe(current, head)}.")


@db_group.command("stamp")
@click.argument("revision")
def stamp_command(revision: str) -> None:
    """Record REVISION without running it, for tables made outside these migrations."""
    from alembic.util import CommandError

    from . import migrations

    try:
        result = migrations.stamp(revision=revision)
    except CommandError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Flask-WeChat-QR tables: recorded as {result.after} "
               f"(was {result.before or '(none)'}).")


def _describe(revision: str | None, head: str) -> str:
    return f"{revision} (head)" if revision == head else str(revision)
