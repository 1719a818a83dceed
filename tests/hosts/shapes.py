"""The host apps of ``apps/`` as the tests see them: how to build one on a test's database,
where its account page is, and how its own sign-up stores a user (the tests add users as
the site's own registration would)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask
from support import ROOT
from werkzeug.security import generate_password_hash

#: What every host runs with in these tests: the in-app sandbox, no WeChat credentials.
SANDBOX = {"TESTING": True, "WECHAT_QR_SANDBOX": True, "WECHAT_QR_SANDBOX_APP_NAME": "Host"}


def flask(app: Flask, *args: str) -> t.Any:
    """``flask <args>`` for ``app``, in-process (Flask's CLI runner), with Flask-Migrate's
    ``db`` group as the ``flask`` command has it; the click result."""
    from flask.cli import FlaskGroup
    from flask.globals import _cv_app

    outer = _cv_app.get(None)
    try:
        with kept_loggers():
            return app.test_cli_runner().invoke(FlaskGroup(create_app=lambda: app), list(args))
    finally:
        # Click before 8.2 leaves the app context FlaskGroup pushed to list its commands
        # for ``--help`` (its eager option ends the parse before the context would close):
        # in this process every later ``flask`` command would run on this app.
        while _cv_app.get(None) not in (outer, None):
            t.cast(t.Any, _cv_app.get()).pop()


@contextlib.contextmanager
def kept_loggers() -> t.Iterator[None]:
    """Flask-Migrate's generated ``env.py`` calls ``logging.config.fileConfig``, which
    disables every logger made before it: in a test process, later tests would no longer
    see the extension's log (and the root logger gets a stderr handler). Put them back."""
    manager = logging.Logger.manager
    before = {name: logger.disabled for name, logger in manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    root = logging.getLogger()
    root_level, root_handlers = root.level, root.handlers[:]
    try:
        yield
    finally:
        for name, disabled in before.items():
            logging.getLogger(name).disabled = disabled
        root.setLevel(root_level)
        root.handlers[:] = root_handlers


def upgrade_schema(app: Flask) -> None:
    """What a Flask-Migrate site runs at deploy: its own ``flask db upgrade``, then the
    extension's ``flask wechat-qr db upgrade`` (docs/deploying.rst)."""
    for command in (["db", "upgrade"], ["wechat-qr", "db", "upgrade"]):
        result = flask(app, *command)
        assert result.exit_code == 0, (command, result.output, result.exception)


@dataclass(frozen=True)
class Host:
    """One host app: its package under ``apps/`` and what the tests need to know of it."""

    package: str
    #: The name of its user model in the package.
    model: str
    #: The logged-in user's page that lists, links and unlinks WeChat.
    account: str
    #: Whether users can have passwords (and so bind with one).
    passwords: bool = True
    #: The model's column for a user's password (a Werkzeug hash).
    password_column: str = "password_hash"
    #: Whether its users need an e-mail address (a required column with no default).
    email_required: bool = False
    #: Whether its schema comes from migrations (else ``db.create_all()`` in the factory).
    migrated: bool = False

    def build(self, url: str, **config: t.Any) -> Flask:
        app: Flask = self.module().create_app(
            {**SANDBOX, "SQLALCHEMY_DATABASE_URI": url, **config})
        if self.migrated:
            upgrade_schema(app)
        return app

    def module(self) -> t.Any:
        return importlib.import_module(self.package)

    def user_model(self, app: Flask | None = None) -> t.Any:
        return getattr(self.module(), self.model)

    def db(self, app: Flask) -> t.Any:
        return self.module().db

    def sign_up(self, app: Flask, password: str | None = None, **fields: t.Any) -> str:
        """A user made by the site's own registration; its id as Flask-Login has it."""
        if self.email_required and "username" in fields:
            fields.setdefault("email", f"{fields['username']}@example.com")
        if password is not None:
            # A cheap hash: the tests check many logins, not the hash's strength.
            fields[self.password_column] = generate_password_hash(password, "pbkdf2:sha256:1000")
        with app.app_context():
            user = self.user_model(app)(**fields)
            self.db(app).session.add(user)
            self.db(app).session.commit()
            return str(user.get_id())

    def users(self, app: Flask) -> list[dict[str, t.Any]]:
        """Every user row, as a dict of its columns."""
        model = self.user_model(app)
        with app.app_context():
            rows = self.db(app).session.execute(sa.select(model.__table__)).mappings().all()
            return [dict(row) for row in rows]

    def identities(self, app: Flask) -> list[dict[str, t.Any]]:
        table = self.db(app).metadata.tables["wechat_qr_identity"]
        with app.app_context():
            rows = self.db(app).session.execute(sa.select(table)).mappings().all()
            return [dict(row) for row in rows]


REQUIRED_COLUMNS = Host("host_required_columns", "User", account="/account",
                        email_required=True)
UUID_KEYS = Host("host_uuid_keys", "User", account="/me")
NO_PASSWORD = Host("host_no_password", "Member", account="/settings", passwords=False)
BABEL_LAYOUT = Host("host_babel_layout", "Customer", account="/account")
FACTORY = Host("host_factory", "Author", account="/users/profile")
MIGRATE = Host("host_migrate", "User", account="/account", migrated=True)

HOSTS = [REQUIRED_COLUMNS, UUID_KEYS, NO_PASSWORD, BABEL_LAYOUT, FACTORY, MIGRATE]


def small_site(tmp_path: t.Any, name: str, db: t.Any, login_manager: t.Any, model: t.Any,
               **config: t.Any) -> Flask:
    """A small site of one test's own shape on the in-app sandbox: a SQLite file of its
    own, Flask-SQLAlchemy, Flask-Login loading ``model`` by its integer id, and the
    extension with its defaults (``config`` on top)."""
    from flask_wechat_qr import WeChatQR

    app = Flask(name, root_path=str(tmp_path))
    app.config.update({**SANDBOX, "SECRET_KEY": f"{name}-secret-key-of-32-bytes-or-more",
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / (name + '.db')}",
                       **config})
    db.init_app(app)
    login_manager.init_app(app)
    login_manager.user_loader(lambda user_id: db.session.get(model, int(user_id)))
    WeChatQR(app, db=db, user_model=model)
    return app


def nickname_site(tmp_path: t.Any, name: str, **config: t.Any) -> Flask:
    """:func:`small_site` with the smallest user model a site has (an id and WeChat's
    nickname), its tables made: the caller adds its routes."""
    from flask_login import LoginManager, UserMixin
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        nickname = db.Column(db.Unicode(255))

    app = small_site(tmp_path, name, db, LoginManager(), User, **config)
    with app.app_context():
        db.create_all()
    return app


def docs_block(marker: str) -> str:
    """The Python block of docs/hooks.rst that contains ``marker``."""
    import textwrap

    text = (ROOT / "docs" / "hooks.rst").read_text(encoding="utf-8")
    blocks = [textwrap.dedent(block) for block in re.findall(
        r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text, re.M) if marker in block]
    assert len(blocks) == 1, f"{len(blocks)} blocks with {marker!r}"
    return blocks[0]
