"""Putting the simulated WeChat somewhere: inside a host app, or as a site of its own."""

from __future__ import annotations

import os
import typing as t

import sqlalchemy as sa
from flask import Flask

from . import images, webauth  # noqa: F401  (their routes join the blueprint)
from .models import sandbox_models_for
from .views import EXTENSION_KEY, SandboxApp, SandboxRuntime, blueprint

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


def sandbox_tables(app: Flask) -> list[sa.Table]:
    """The sandbox's own (development-only) tables in ``app``; none without the sandbox.
    They are not among the extension's migrations: the sandbox creates them on its first
    request where missing (or a host with
    ``db.metadata.create_all(db.engine, tables=sandbox_tables(app))``; they are on the
    bind of the extension's tables, the user model's, ``db.engines["users"]`` for a user
    model with ``__bind_key__ = "users"``)."""
    runtime: SandboxRuntime | None = app.extensions.get(EXTENSION_KEY)
    if runtime is None:
        return []
    return runtime.models.tables


def install_sandbox(
    app: Flask,
    db: SQLAlchemy,
    apps: t.Iterable[SandboxApp],
    *,
    url_prefix: str = "",
    public_url: str | None = None,
    image_origin: str | None = None,
    bind_key: str | None = None,
) -> SandboxRuntime:
    """Register the sandbox blueprint on ``app``, its tables on ``db`` (on the
    Flask-SQLAlchemy bind ``bind_key``; ``None``: the default bind); ``image_origin``:
    where avatar URLs point (the simulated image host; ``None``: ``data:`` URIs)."""
    runtime = SandboxRuntime(db=db, models=sandbox_models_for(db, bind_key),
                             apps={sandbox_app.app_id: sandbox_app for sandbox_app in apps},
                             public_url=public_url, image_origin=image_origin)
    app.extensions[EXTENSION_KEY] = runtime
    app.register_blueprint(blueprint, url_prefix=url_prefix or None)
    return runtime


def create_sandbox_app(
    apps: t.Iterable[SandboxApp],
    *,
    database_uri: str = "sqlite:///wechat-qr-sandbox.db",
    public_url: str | None = None,
) -> Flask:
    """The sandbox alone, as its own site (open and API base URL: its root). A SQLite file
    of its own is kept in WAL mode (:func:`_sqlite_in_wal`); a relative path is in the
    folder the command runs in, where the person starting it looks (Flask-SQLAlchemy puts
    it in the app's instance folder, which is ours to choose)."""
    from flask_sqlalchemy import SQLAlchemy

    app = Flask(__name__, instance_path=os.getcwd())
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri
    db = SQLAlchemy(app)
    install_sandbox(app, db, apps, public_url=public_url).standalone = True
    with app.app_context():
        _sqlite_in_wal(db.engine)
        db.create_all()
    return app


def _sqlite_in_wal(engine: sa.Engine) -> None:
    """Put the standalone sandbox's SQLite file in WAL mode, ``synchronous=NORMAL``: every
    phone's and browser's poll reads it, and in SQLite's default rollback-journal mode a
    write's commit waits until no connection reads, so with a few dozen browsers polling a
    confirmation or a new QR code waited out SQLite's busy timeout (5 s) and answered 500
    "database is locked". The file is the standalone sandbox's (a stand-in for WeChat),
    so its mode is the sandbox's to choose; the in-app sandbox, on the host's database,
    changes nothing there."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return

    @sa.event.listens_for(engine, "connect")
    def wal(dbapi_connection: t.Any, _record: t.Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
