"""``flask wechat-qr``: the extension's command group (registered by ``init_app``).

Subcommands are added to :data:`cli` (``db``, ``check``, ``sandbox``; more can join it with
``@cli.command()`` / ``@cli.group()``). Commands of an ``AppGroup`` run inside the app
context, so they reach the app's runtime. This module is imported by
every ``init_app``: heavy imports (Alembic, the sandbox) happen inside the commands.
"""

from __future__ import annotations

import sys
import typing as t
from urllib.parse import urlsplit

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from .checks import (
    Deployment,
    Finding,
    Findings,
    describe_connection,
    problem,
    run_checks,
    warning,
)
from .runtime import find_runtime
from .sandbox.options import SANDBOX_OPTIONS
from .transactions import database_reason, is_unreachable

if t.TYPE_CHECKING:
    import sqlalchemy as sa
    from werkzeug.local import LocalProxy

    from .id_token import IdTokenSigner
    from .migrations import ForeignKeyStatus
    from .runtime import Runtime
    from .settings import ConnectionSettings

cli = AppGroup("wechat-qr", help="Flask-WeChat-QR: log in with WeChat by QR code.")


@cli.group("db")
def db_group() -> None:
    """The extension's own tables and their migrations (apart from the site's own)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True,
              help="Print the SQL instead of running it (for a DBA to apply).")
@click.option("--ignore-default-bind", is_flag=True,
              help="Your user model is on a bind of its own, and the wechat_qr_* tables on "
                   "the default bind are another app's: make this app's on the user "
                   "model's bind all the same.")
def upgrade_command(revision: str, sql: bool, ignore_default_bind: bool) -> None:
    """Create or upgrade the extension's tables (run at every deploy; safe to repeat)."""
    from alembic.util import CommandError  # Alembic loads only when a command runs

    from . import migrations

    try:
        result = migrations.upgrade(revision=revision, sql=sql, output=sys.stdout,
                                    ignore_default_bind=ignore_default_bind)
    except (migrations.MigrationError, CommandError) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        _raise_if_out_of_reach(exc, " (--sql reads its revision there too)" if sql else "")
        raise
    head = migrations.head_revision()
    target = head if revision == "head" else revision
    past = result.before is not None and migrations.is_past(result.before, target)
    if sql:
        if result.before is not None and (result.before == target or past):
            # Printed from the database's own revision on: nothing, and no one would know why.
            click.echo(f"Flask-WeChat-QR tables: the database is at "
                       f"{_describe(result.before, head)}"
                       f"{f', past {target}' if past else ''} already; no SQL to print"
                       f"{' (an upgrade never goes back)' if past else ''}.", err=True)
        return
    if result.adopted:
        click.echo(f"Flask-WeChat-QR tables: found tables made by create_all that match "
                   f"{head}; recorded them as {head} (head).")
    elif result.changed:
        click.echo(f"Flask-WeChat-QR tables: upgraded from {result.before or '(none)'} to "
                   f"{_describe(result.after, head)}.")
    else:
        click.echo(f"Flask-WeChat-QR tables: already at {_describe(result.after, head)}"
                   f"{f', past {target} (an upgrade never goes back)' if past else ''}; "
                   "nothing to do.")
    if result.foreign_key is not None:
        _echo_foreign_key_change(result.foreign_key)


def _echo_foreign_key_change(status: ForeignKeyStatus) -> None:
    """What the upgrade did about the identities' foreign key to the users, if anything."""
    if status.state == "waiting":
        click.echo(f"Foreign key of the identities to {status.detail}: not yet, that table "
                   "does not exist. Run `flask wechat-qr db upgrade` again after your own "
                   "migrations have created it.")
    elif status.blocked is not None:
        click.echo(f"Foreign key of the identities to {status.detail}: not possible, "
                   f"{status.blocked.reason} (the rest of it: added "
                   f"{', '.join(status.added) or 'nothing'}; {status.filled} identities tied "
                   f"to their users, {status.removed} of deleted users removed). Fix: "
                   f"{status.blocked.fix}.")
    elif status.added or status.filled or status.removed:
        instead = (f" (instead of the one to {', '.join(status.elsewhere)})"
                   if status.elsewhere else "")
        click.echo(f"Foreign key of the identities to {status.detail} (ON DELETE CASCADE): "
                   f"added {', '.join(status.added) or 'nothing'}{instead}; {status.filled} "
                   f"identities tied to their users, {status.removed} of deleted users "
                   "removed.")


@db_group.command("current")
def current_command() -> None:
    """Show the revision of the extension's tables in this app's database."""
    from . import migrations

    try:
        current = migrations.current_revision()
        unversioned = current is None and migrations.unversioned_tables()
    except SQLAlchemyError as exc:
        _raise_if_out_of_reach(exc)
        raise
    head = migrations.head_revision()
    if unversioned:
        click.echo("Flask-WeChat-QR tables: made by db.create_all(), no revision recorded "
                   "yet (`flask wechat-qr db upgrade` adopts them when they match this "
                   "version).")
    elif current is None:
        click.echo("Flask-WeChat-QR tables: none yet (run `flask wechat-qr db upgrade`).")
    elif current != head:
        click.echo(f"Flask-WeChat-QR tables: {current}; this version needs {head} "
                   "(run `flask wechat-qr db upgrade`).")
    else:
        click.echo(f"Flask-WeChat-QR tables: {_describe(current, head)}.")


@db_group.command("stamp")
@click.argument("revision")
@click.option("--ignore-default-bind", is_flag=True,
              help="Your user model is on a bind of its own, and the wechat_qr_* tables on "
                   "the default bind are another app's: record REVISION on the user "
                   "model's bind all the same.")
def stamp_command(revision: str, ignore_default_bind: bool) -> None:
    """Record REVISION without running it, for tables made outside these migrations."""
    from alembic.util import CommandError

    from . import migrations

    try:
        result = migrations.stamp(revision=revision, ignore_default_bind=ignore_default_bind)
    except (migrations.MigrationError, CommandError) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        _raise_if_out_of_reach(exc)
        raise
    click.echo(f"Flask-WeChat-QR tables: recorded as {result.after} "
               f"(was {result.before or '(none)'}).")


def _raise_if_out_of_reach(error: SQLAlchemyError, note: str = "") -> None:
    """One paragraph, not a traceback, where the database cannot be reached at all (down,
    refusing the account, a wrong host or port): what it said, and what to check."""
    if is_unreachable(error):
        raise click.ClickException(
            f"the database cannot be reached{note}: {database_reason(error)}. Check "
            f"{_WHAT_TO_CHECK}.") from None


#: What to check where the database cannot be reached.
_WHAT_TO_CHECK = ("that the database server is running and reachable from this machine, "
                  "and that SQLALCHEMY_DATABASE_URI's host, port, account, password and "
                  "database name are right")


def _describe(revision: str | None, head: str) -> str:
    return f"{revision} (head)" if revision == head else str(revision)


# --- flask wechat-qr check ------------------------------------------------------------

_CALLBACK_DOMAIN_LABEL = "Authorization callback domain (授权回调域)"
#: The width of the labels of a connection's rows ("Business callback URL:").
_LABEL_WIDTH = 22


def _validate_base_url(_ctx: click.Context, _param: click.Parameter,
                       value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise click.BadParameter(f"{value!r} has an invalid port.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"{value!r} is not an http(s) URL; give the site's public address, e.g. "
            "https://www.example.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise click.BadParameter(
            f"{value!r} must be the site's address only (no query, fragment or user name).")
    return value.strip()


@cli.command("check")
@click.option("--base-url", metavar="URL", callback=_validate_base_url,
              help="The site's public address as visitors reach it, e.g. "
                   "https://www.example.com (with a path if the site lives under one). "
                   "Default: SERVER_NAME with PREFERRED_URL_SCHEME and APPLICATION_ROOT.")
@click.option("--callback-domain", metavar="DOMAIN",
              help="The authorization callback domain (授权回调域) entered on the WeChat Open "
                   "Platform, to compare with the redirect URI's host.")
@click.option("--live", is_flag=True,
              help="Also ask WeChat (needs the network): load each connection's QR page, "
                   "exchange a made-up code with its AppID and AppSecret, check that this "
                   "server reaches WeChat's hosts and that its clock is right; each step "
                   "bounded by WECHAT_QR_HTTP_TIMEOUT.")
def check_command(base_url: str | None, callback_domain: str | None, live: bool) -> None:
    """Check the WeChat login settings before registering or deploying.

    Lists every connection (AppSecret masked), the exact redirect URI this site sends to
    WeChat and the authorization callback domain (授权回调域) to register for it on the WeChat
    Open Platform: a bare host, no scheme, no port. Then flags what would make WeChat logins
    fail or unsafe: a port in the redirect URI; http or a localhost address in production; a
    missing, weak or well-known SECRET_KEY; an AppID that is not 'wx' and 16 hexadecimal
    digits; the sandbox's AppID or AppSecret sent to WeChat; a business callback URL
    (WECHAT_QR_CALLBACK_URL, where the ID token is POSTed) that this app would answer with
    405; a --callback-domain with a scheme, port or path, or that is not the redirect URI's
    host; a route of the app that answers one of the extension's URLs instead of it; a
    database it cannot reach, or the extension's tables missing or behind; in production,
    a SQLite file outside WAL mode.

    "Production" means DEBUG (flask --debug, FLASK_DEBUG) and TESTING both off, and no
    sandbox: a sandbox (WECHAT_QR_SANDBOX, or a standalone one) is a development set-up,
    warned about rather than refused. The redirect URI is built with the app's own url_for
    at the public base URL: --base-url, else SERVER_NAME (a SERVER_NAME always wins over
    --base-url's host, as it does for every request). With neither, the redirect URI
    depends on the host each request arrives with (behind a proxy, what ProxyFix passes
    on), so it cannot be known here: that is a warning, not a problem.

    With --live it also asks WeChat, where the settings cannot tell: whether WeChat shows
    the QR page for the AppID and redirect URI (or says "redirect_uri 参数错误", 10003;
    "Scope参数错误或没有Scope权限", 10005; an unknown AppID), whether the AppID and AppSecret
    match (a made-up code gets 40029 when they do, 40125 for a wrong AppSecret, 40013 for
    an unknown AppID), whether this server reaches WeChat's hosts, and whether its clock
    agrees with WeChat's; the same for each Official Account. It calls the addresses of
    WECHAT_QR_OPEN_BASE_URL and WECHAT_QR_API_BASE_URL: WeChat, or a standalone sandbox.

    Exit status: 0 when no problem was found (warnings allowed), 1 when one was, 2 for a
    usage error.
    """
    app = t.cast("LocalProxy[Flask]", current_app)._get_current_object()
    runtime = find_runtime(app)
    if runtime is None:
        raise click.ClickException("WeChatQR is not set up on this app: call WeChatQR(app, "
                                   "db=db, user_model=User) or wechat.init_app(app).")
    deployment = Deployment.of(app, runtime.settings, base_url, callback_domain)
    _echo_site(app, deployment)
    database_findings = (_schema_findings(app) + _foreign_key_findings(app)
                         + _journal_mode_findings(app, deployment)
                         + _mysql_findings(app))
    for conn in runtime.settings.connections.values():
        _echo_connection(deployment, conn, runtime.id_tokens)
    live_findings = _echo_live_checks(deployment, runtime) if live else ()
    findings = Findings(run_checks(deployment).found + database_findings + live_findings)
    _echo_findings(findings)
    if findings.problems:
        click.get_current_context().exit(1)


def _echo_site(app: Flask, deployment: Deployment) -> None:
    settings = deployment.settings
    click.echo(f"Flask-WeChat-QR check of app {app.name!r}, {_mode(app, deployment)}")
    if deployment.base_url:
        click.echo(f"Public base URL: {deployment.base_url} (from {deployment.base_url_source})")
    else:
        click.echo("Public base URL: unknown (no --base-url, no SERVER_NAME)")
    if settings.sandbox:
        click.echo(f"Sandbox: on, mounted at {settings.sandbox_prefix} (logins go to the "
                   "simulated WeChat)")
    else:
        click.echo(f"Sandbox: off; QR page {settings.open_base_url}, API "
                   f"{settings.api_base_url}")


def _schema_findings(app: Flask) -> tuple[Finding, ...]:
    """The extension's tables: none, some, or behind this version's revision are problems
    (every login, or the ones that need what is missing, would be a 500)."""
    import sqlalchemy as sa

    from . import migrations

    try:
        status = migrations.schema_status(app)
        moved_to = migrations.left_on_the_default_bind(app)
    except sa.exc.SQLAlchemyError:
        return ()  # the foreign key's finding says the database cannot be read
    upgrade = "run `flask wechat-qr db upgrade` (after your own migrations)"
    if moved_to is not None:
        return (problem(
            f"the extension's tables live with your user table, on the bind {moved_to!r}, "
            "whose database has no linked WeChat account yet, while the default bind's has "
            "some, tied to no user table there or to one named as yours (earlier development "
            "versions, or this site before its users moved, put this site's there): if they "
            "are this site's, they are not read, and each of their "
            "people gets a new account at the next login",
            migrations.left_behind_fix(moved_to)),)
    if not status.present:
        return (problem("the extension's tables are not in the database: every WeChat login "
                        "fails (a 500)", f"{upgrade}, or db.create_all() where your site "
                        "makes its tables so"),)
    head = migrations.head_revision()
    if status.revision is not None and status.revision != head:
        # Behind first: the tables a later revision makes are missing as they should be.
        if not migrations.is_known_revision(status.revision):
            return (problem(
                f"the extension's tables are at revision {status.revision}, which this "
                f"version of Flask-WeChat-QR does not know (it ends at {head}): a newer "
                "version made them", "install the version that made them, or a newer one"),)
        return (problem(f"the extension's tables are at revision {status.revision}, and this "
                        f"version needs {head}", "run `flask wechat-qr db upgrade`"),)
    if status.missing_columns:
        # At this version's revision or none, yet lacking its columns: tables an earlier
        # version made with db.create_all() (adopted, or stamped past their changes).
        return (problem(
            f"the extension's tables lack {', '.join(status.missing_columns)}: an earlier "
            "version made them (db.create_all() adds no column to a table that exists), and "
            "every login that reads them fails", "record the revision they were made at: "
            f"`flask wechat-qr db stamp {status.made_at or 'REVISION'}`"
            + (" (the revision they look like)" if status.made_at else "")
            + ", then run `flask wechat-qr db upgrade` (docs: deploying, 'Database tables "
            "and migrations')"),)
    if status.missing:
        return (problem(
            f"the extension's tables lack {', '.join(status.missing)} (a db.create_all() that "
            "stopped partway, or a table dropped since): the logins that need it fail (a "
            "500)", "mend what stopped it (its error says), then make the missing ones: "
            "db.create_all() (e.g. in `flask shell`) makes only the tables that do not exist, "
            "and leaves the others as they are"),)
    return ()


def _foreign_key_findings(app: Flask) -> tuple[Finding, ...]:
    """Whether the identities' foreign key to the users is in the database (said in a
    line); a problem when it should be and is not."""
    import sqlalchemy as sa

    from . import migrations

    upgrade = "run `flask wechat-qr db upgrade` (after your own migrations)"
    try:
        status = migrations.foreign_key_status(app)
    except sa.exc.SQLAlchemyError as exc:
        reason = database_reason(exc)
        if is_unreachable(exc):
            return (problem(f"the database cannot be reached ({reason}): every WeChat login "
                            "ends on the page that says so (503)",
                            f"check {_WHAT_TO_CHECK}; then run the check again"),)
        return (warning(f"the database could not be read to check the identities' foreign "
                        f"key to your users ({reason})",
                        "check SQLALCHEMY_DATABASE_URI and run the check again"),)
    if status.state == "off":
        click.echo(f"Identities' foreign key to your users: off ({status.detail}); a user "
                   "deleted behind the ORM leaves identities until their next login")
        return ()
    if status.state == "waiting":
        if "table" in status.missing:  # no tables of the extension yet: nothing to lose
            click.echo(f"Identities' foreign key to your users: {status.detail}, once "
                       "`flask wechat-qr db upgrade` has made the extension's tables")
            return ()
        click.echo(f"Identities' foreign key to your users: {status.detail}, not in the "
                   "database yet")
        return (problem(f"the identities have no foreign key to {status.detail} yet (its "
                        "table does not exist): a user deleted behind the ORM would hand "
                        "their WeChat login to the next user given the same id", upgrade),)
    click.echo(f"Identities' foreign key to your users: {status.detail}, "
               + (f"not possible ({status.blocked.reason})" if status.blocked
                  else "ON DELETE CASCADE")
               + (f"; missing: {', '.join(status.missing)}" if status.missing else ""))
    findings = []
    if status.blocked is not None:
        findings.append(warning(
            f"the identities have no foreign key to {status.detail}: {status.blocked.reason}; "
            "deleting a user through the ORM still deletes their WeChat identities, one "
            "deleted with raw SQL leaves them for the next user given the same id",
            status.blocked.fix))
    if not status.missing:
        return tuple(findings)
    elsewhere = (f"; the one there refers to {', '.join(status.elsewhere)}"
                 if status.elsewhere else "")
    return (*findings, problem(
        f"the database lacks part of the identities' foreign key to {status.detail} "
        f"({', '.join(status.missing)}{elsewhere}): a user deleted behind the ORM could hand "
        "their WeChat login to the next user given the same id", upgrade))


def _journal_mode_findings(app: Flask, deployment: Deployment) -> tuple[Finding, ...]:
    """A SQLite file in its default rollback journal makes every login's commit wait for
    the disk twice and block the others: under real traffic logins queue (a warning in
    production). Only reads the mode (``PRAGMA journal_mode`` without a value changes
    nothing); a database that cannot be opened is the foreign key's finding to report."""
    import sqlalchemy as sa

    from . import migrations

    runtime = find_runtime(app)
    if runtime is None or not deployment.production_checks:
        return ()
    engine = migrations.engine_for(runtime)
    if engine.dialect.name != "sqlite" or _in_memory(engine.url):
        return ()
    try:
        with engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    except sa.exc.SQLAlchemyError:
        return ()
    if str(mode).lower() == "wal":
        return ()
    return (warning(
        f"the extension's database is the SQLite file {engine.url.database} in journal mode "
        f"{mode}, not WAL: each login commits once, each commit waits for the disk twice "
        "and holds off every other writer, so with several threads or workers logins queue "
        "(8 browsers at once: callback p99 1.17 s, against 0.30 s in WAL mode)",
        "turn on SQLite's write-ahead log where your app creates its engine (PRAGMA "
        "journal_mode=WAL, synchronous=NORMAL and busy_timeout in a connect listener, as "
        "the docs' Deploying > 'SQLite with several threads' shows), or use PostgreSQL; the "
        "extension never changes your database's settings"),)


#: MariaDB's and MySQL's storage engines that roll a transaction back.
TRANSACTIONAL_ENGINES = frozenset({"innodb", "ndbcluster", "rocksdb", "tokudb"})


def _mysql_findings(app: Flask) -> tuple[Finding, ...]:
    """MariaDB and MySQL: a connection whose character set cannot carry every WeChat
    nickname, and a user table whose nickname column cannot hold one (warnings: they lose
    their emoji, in latin1 their Chinese), and identities whose openids compare without case
    (a problem: two people whose openids differ only in case would be one account; tables
    from before migration 0006), and tables of the extension in a storage engine without
    transactions (a problem: a server whose default engine is still MyISAM made them so).
    Only reads."""
    import sqlalchemy as sa

    from . import migrations
    from .adapter import model_column
    from .column_types import MYSQL_DIALECTS
    from .storable import narrow_column
    from .user_key import storage_engine

    runtime = find_runtime(app)
    if runtime is None:
        return ()
    engine = migrations.engine_for(runtime)
    if engine.dialect.name not in MYSQL_DIALECTS:
        return ()
    try:
        with engine.connect() as connection:
            charset, collation = connection.execute(sa.text(
                "SELECT LOWER(@@character_set_client), (SELECT collation_name FROM "
                "information_schema.columns WHERE table_schema = DATABASE() AND "
                "table_name = 'wechat_qr_identity' AND column_name = 'openid')")).one()
            nickname = model_column(getattr(runtime.adapter, "user_model", None), "nickname")
            narrow = narrow_column(connection, nickname) if nickname is not None else None
            engines = {table: storage_engine(connection, table)
                       for table in sorted(runtime.models.tables, key=lambda t: t.name)}
            wait_timeout = connection.exec_driver_sql("SELECT @@wait_timeout").scalar()
    except sa.exc.SQLAlchemyError:
        return ()  # the foreign key's finding says the database cannot be read
    findings: list[Finding] = []
    without = [table for table, kind in engines.items()
               if kind is not None and kind.lower() not in TRANSACTIONAL_ENGINES]
    if without:
        quote = engine.dialect.identifier_preparer.format_table
        kinds = sorted({str(engines[table]) for table in without})
        findings.append(problem(
            f"the extension's tables {', '.join(table.name for table in without)} are "
            f"{' and '.join(kinds)} tables, which have no transactions: a login that fails "
            "halfway keeps what it wrote (e.g. a user without their WeChat identity, when "
            "two first logins of one person meet)",
            "; ".join(f"ALTER TABLE {quote(table)} ENGINE=InnoDB" for table in without)
            + " (and set default_storage_engine=InnoDB on the server)"))
    findings += _idle_connection_findings(engine, int(wait_timeout or 0))
    if charset != "utf8mb4":
        findings.append(warning(
            f"the database connection's character set is {charset}: WeChat nicknames are "
            "stored without the characters it cannot carry (emoji; in latin1 anything "
            "Chinese)", "add ?charset=utf8mb4 to SQLALCHEMY_DATABASE_URI"))
    if narrow is not None:
        what, fix = narrow
        findings.append(warning(what, f"{fix}; users made before keep what was stored "
                                "(docs: Deploying, 'MariaDB and MySQL')"))
    if collation is not None and not str(collation).endswith("_bin"):
        findings.append(problem(
            f"the identities' openids compare without case (collation {collation}): two "
            "people whose openids differ only in case would be one account",
            "run `flask wechat-qr db upgrade` (migration 0006 makes them exact); where the "
            "tables are at 0006 already (db.create_all() made them before it, or an earlier "
            "0006 ran, which did not change them), `flask wechat-qr db stamp 0005` first, so "
            "that 0006 runs again"))
    return tuple(findings)


def _idle_connection_findings(engine: sa.Engine, wait_timeout: int) -> list[Finding]:
    """MariaDB and MySQL close a connection idle for ``wait_timeout`` seconds: a pool that
    keeps one longer, and does not test it before use (``pool_pre_ping``), hands the first
    request after a quiet spell a dead connection. In a login's callback that is a 500 after
    WeChat's code was spent (the person scans again)."""
    from sqlalchemy.pool import NullPool, StaticPool

    pool = engine.pool
    if isinstance(pool, (NullPool, StaticPool)):
        return []  # keeps no idle connection / is the host's own single connection
    # SQLAlchemy keeps the pool's settings in these attributes (no public accessor).
    recycle = int(getattr(pool, "_recycle", -1))
    if getattr(pool, "_pre_ping", False) or wait_timeout <= 0 or 0 <= recycle < wait_timeout:
        return []
    kept = f"for {recycle} s (pool_recycle)" if recycle >= 0 else "for ever (no pool_recycle)"
    return [warning(
        f"the database server closes connections idle for {wait_timeout} s (wait_timeout) and "
        f"the pool keeps them {kept}, unchecked: the first login after a quiet spell fails "
        "(\"MySQL server has gone away\", a 500 after WeChat's code is spent: the person "
        "scans again)",
        "set SQLALCHEMY_ENGINE_OPTIONS = {\"pool_pre_ping\": True} (or a pool_recycle "
        f"under {wait_timeout})")]


def _in_memory(url: sa.URL) -> bool:
    """Whether a SQLite URL is a database in memory (no file, no disk to wait for)."""
    database = url.database or ""
    return (database in ("", ":memory:") or database.startswith("file::memory:")
            or url.query.get("mode") == "memory")


def _mode(app: Flask, deployment: Deployment) -> str:
    if app.testing:
        return "testing (TESTING on: production checks skipped)"
    if app.debug:
        return "development (DEBUG on: production checks skipped)"
    if deployment.simulated:
        return "development (DEBUG and TESTING off, but a sandbox: production checks skipped)"
    return "production (DEBUG and TESTING off)"


def _echo_connection(deployment: Deployment, conn: ConnectionSettings,
                     id_tokens: IdTokenSigner | None) -> None:
    click.echo("")
    click.echo(f"Connection {conn.identifier!r}")
    for label, value in describe_connection(deployment, conn, id_tokens):
        click.echo(f"  {label + ':':<{_LABEL_WIDTH}} {value}")
    click.echo(f"  {_CALLBACK_DOMAIN_LABEL}: {_domain_to_enter(deployment)}")


def _echo_live_checks(deployment: Deployment, runtime: Runtime) -> tuple[Finding, ...]:
    """What ``--live`` saw, listed as the connections are; what it found, to list with the
    other findings."""
    from .live_checks import run_live_checks  # requests and sockets only when asked for

    report = run_live_checks(deployment, runtime)
    if report.skipped:
        click.echo("")
        click.echo(f"Live checks: skipped; {report.skipped}")
    for section in report.sections:
        click.echo("")
        click.echo(section.title)
        for label, value in section.rows:
            click.echo(f"  {label + ':':<{_LABEL_WIDTH}} {value}")
    return report.findings


def _domain_to_enter(deployment: Deployment) -> str:
    """The authorization callback domain to register, said so that it is copied bare."""
    domain = deployment.callback_domain_to_enter
    if domain is None:
        return ("unknown: the bare host visitors use (e.g. www.example.com; no scheme, no "
                "port), known with --base-url or SERVER_NAME")
    if deployment.simulated:
        return f"{domain} (the sandbox takes the host the browser uses; no registration)"
    return f"{domain} (enter exactly this on open.weixin.qq.com: no scheme, no port, no path)"


def _echo_findings(findings: Findings) -> None:
    """Problems first, then warnings, each with its fix; then the count."""
    if findings.found:
        click.echo("")
    for finding in [*findings.problems, *findings.warnings]:
        where = f" [{finding.connection}]" if finding.connection else ""
        click.echo(f"{finding.kind.upper()}{where}: {finding.what}. Fix: {finding.fix}.")
    counts = [_plural(len(findings.problems), "problem") if findings.problems
              else "no problems"]
    if findings.warnings:
        counts.append(_plural(len(findings.warnings), "warning"))
    advice = "; fix the problems before registering or deploying." if findings.problems else "."
    click.echo("")
    click.echo(f"Summary: {', '.join(counts)}{advice}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- flask wechat-qr sandbox ----------------------------------------------------------


def _sandbox_options(command: t.Callable[..., None]) -> t.Callable[..., None]:
    for option in reversed(SANDBOX_OPTIONS):
        command = click.option(option.flag, default=option.default, type=option.type,
                               show_default=option.default is not None,
                               help=option.help)(command)
    return command


@cli.command("sandbox", with_appcontext=False)
@_sandbox_options
def sandbox_command(**options: t.Any) -> None:
    """Run the simulated WeChat Open Platform on its own port.

    The same server as `python -m flask_wechat_qr.sandbox`. Point WECHAT_QR_OPEN_BASE_URL
    and WECHAT_QR_API_BASE_URL at the address it prints and use its AppID and AppSecret.
    Stop it with Ctrl-C.
    """
    from .sandbox.__main__ import SandboxSetupError, serve

    try:
        serve(**options, echo=click.echo)
    except SandboxSetupError as error:
        raise click.ClickException(str(error)) from None
