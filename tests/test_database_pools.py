"""A worker forked from the app (uWSGI's default, gunicorn ``--preload``) uses database
connections of its own, not those the app's start-up left in its pools."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from support import Database, in_forked_child, without_python_fork_hooks

from flask_wechat_qr import WeChatQR

#: The database server's id of the session a connection is (one per server connection).
SESSION_ID = {"postgresql": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}


def quickstart_site(url: str) -> tuple[Flask, SQLAlchemy]:
    """docs/quickstart.rst's app: ``db.create_all()`` at start-up, nothing disposed."""
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        nickname = db.Column(db.Unicode(255))

    app = Flask(__name__)
    app.config.update(SECRET_KEY="s" * 64, SQLALCHEMY_DATABASE_URI=url, WECHAT_QR_SANDBOX=True)
    db.init_app(app)
    LoginManager(app)
    WeChatQR(app, db=db, user_model=User)
    with app.app_context():
        db.create_all()
    return app, db


def _session_id(app: Flask, db: SQLAlchemy, backend: str) -> int:
    with app.app_context():
        return int(db.session.execute(sa.text(SESSION_ID[backend])).scalar_one())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_worker_forked_after_start_up_opens_its_own_database_connection(
        database: Database) -> None:
    """Every worker used the master's connection at once: on PostgreSQL 500s ("This result
    object does not return rows", "relation ... already exists") and hung requests."""
    app, db = quickstart_site(database.url("site"))
    master = _session_id(app, db, database.backend)  # its connection back in the pool

    def own_connection() -> bool:
        return _session_id(app, db, database.backend) != master

    assert in_forked_child(own_connection) == 0
    assert _session_id(app, db, database.backend) == master  # the master's lives on
    with app.app_context():
        db.engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_worker_forked_without_any_hook_of_the_extension_opens_its_own_connection(
        database: Database) -> None:
    """A uWSGI worker whose post-fork hook the site replaced after the extension chained
    it (``import uwsgidecorators`` below the app): its requests used the master's
    connection, shared with every other worker."""
    app, db = quickstart_site(database.url("site"))
    master = _session_id(app, db, database.backend)

    @app.route("/session")
    def session_id() -> dict[str, int]:
        return {"id": int(db.session.execute(sa.text(SESSION_ID[database.backend]))
                          .scalar_one())}

    def own_connection() -> bool:
        return bool(app.test_client().get("/session").json["id"] != master)

    assert in_forked_child(own_connection, fork=without_python_fork_hooks) == 0
    assert _session_id(app, db, database.backend) == master  # the master's lives on
    with app.app_context():
        db.engine.dispose()
