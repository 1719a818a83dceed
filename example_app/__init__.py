"""A small real site using Flask-WeChat-QR: local accounts plus "Log in with WeChat".

Run it with ``flask --app example_app run`` or ``gunicorn 'example_app:create_app()'``.
Configuration comes from environment variables named like the config keys (see
:mod:`example_app.config`). Every page is in English and Simplified Chinese, by the browser's
language (see :mod:`example_app.i18n`).

At startup it brings the extension's tables up to date with the extension's own migrations
(what ``flask --app example_app wechat-qr db upgrade`` does) and creates its own ``user`` table
(and the sandbox's development tables) with ``create_all``.
"""

from __future__ import annotations

import os
import typing as t

import sqlalchemy as sa
from flask import Flask, Response

from flask_wechat_qr.sandbox import sandbox_tables

from . import (
    business,
    csrf,
    i18n,
    views,
    wechat_feedback,  # noqa: F401  (connects a message to each WeChat action)
    wechat_profiles,  # noqa: F401  (users follow their refreshed WeChat profile)
)
from .config import (
    DEFAULTS,
    OPTIONAL_WECHAT_VARIABLES,
    config_from_env,
    database_uri,
    dev_secret_key,
    wechat_config_state,
)
from .models import LoginFailure, UsedIdToken, User, db, login_manager, wechat

__all__ = ["User", "create_app", "db", "login_manager", "wechat"]


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    """Build the site. Settings: defaults, then environment variables, then ``test_config``."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    env_config, unknown = config_from_env(os.environ)
    app.config.update(env_config)
    if test_config:
        app.config.update(test_config)
    for name in unknown:
        app.logger.warning("Ignoring the environment variable %s: no such setting.", name)

    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = dev_secret_key(app.instance_path, app.logger)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = database_uri(
            app.config.get("DATABASE_URL"), app.instance_path
        )

    db.init_app(app)
    login_manager.init_app(app)
    i18n.init_app(app)

    setup = wechat_config_state(app.config)
    app.extensions["example_app"] = {"wechat_setup": setup}
    if setup.mode == "sandbox":
        app.config["WECHAT_QR_SANDBOX"] = True
        app.logger.warning(
            "WeChat login runs on the built-in SANDBOX (a simulated WeChat): set "
            "WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET for real WeChat."
        )
    # Always: without credentials the extension starts with WeChat login off (a 503 page
    # and a warning naming the keys), so `flask wechat-qr check` and `db upgrade` work.
    wechat.init_app(app)

    app.register_blueprint(views.bp)

    @app.after_request
    def no_framing_by_other_sites(response: Response) -> Response:
        """The site's forms (unlink, account) are not clickjacked from another site; the
        extension's own pages already say so, and their headers are kept."""
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'self'")
        return response
    if setup.enabled:
        app.register_blueprint(business.bp)

    @app.context_processor
    def site_context() -> dict[str, t.Any]:
        return {
            "wechat_setup": setup,
            "optional_wechat_variables": OPTIONAL_WECHAT_VARIABLES,
            "csrf_token": csrf.csrf_token,
        }

    with app.app_context():
        # The site's own tables first (a site's own migrations, run before the extension's):
        # the identities' foreign key to the users needs the user table.
        _create_site_tables(app)
        # The extension's own migrations; safe with several workers starting at once.
        wechat.upgrade_database(app)
        # No pooled connection outlives start-up: a server that forks after building the app
        # (gunicorn --preload) would hand the same one to every worker, and one worker's
        # queries would read another's answers. (An in-memory SQLite database lives only in
        # its one connection.)
        if db.engine.url.database not in (None, "", ":memory:"):
            db.engine.dispose()
    return app


def _create_site_tables(app: Flask) -> None:
    """The site's own tables (and the sandbox's dev-only ones), not the extension's:
    ``create_all`` restricted to them, tolerating another worker creating them at once."""
    tables = [User.__table__, LoginFailure.__table__, UsedIdToken.__table__,
              *sandbox_tables(app)]
    try:
        db.metadata.create_all(db.engine, tables=tables)
    except sa.exc.DatabaseError:
        db.session.rollback()
        db.metadata.create_all(db.engine, tables=tables)
