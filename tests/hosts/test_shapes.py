"""What only one host shape has: a required column nothing fills, a layout without the
blocks the docs map onto, an app factory that runs many times, a fresh database that only
``flask db upgrade`` builds, a site deployed before it has any WeChat credentials, and
settings read from environment variables that are not set."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from support import (
    ROOT,
    STRONG_KEY,
    error_name,
    find_tags,
    logged_in_user_id,
)

from flask_wechat_qr.errors import ConfigurationError

from .browse import Browser, assert_no_server_error, wechat_login
from .conftest import APPS
from .shapes import BABEL_LAYOUT, FACTORY, MIGRATE, SANDBOX, UUID_KEYS, flask

#: Longest a ``flask`` command of a host may take in a subprocess, in seconds.
COMMAND_TIMEOUT = 60


# --- (a) a required column the default adapter cannot fill --------------------------------


def test_a_required_column_nothing_fills_is_named_at_init_app(tmp_path: Path) -> None:
    """The site as first wired from the README (no ``create_user``): ``users.email`` is NOT
    NULL without a default, so the first WeChat login could only fail. ``init_app`` says so
    before any visitor comes, naming the column and the hook that fills it. (Required
    columns with a default, as host_uuid_keys and host_babel_layout have, start fine: the
    journeys build them.)"""
    from host_required_columns import naive

    with pytest.raises(ConfigurationError) as caught:
        naive.create_app({**SANDBOX, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/a.db"})
    assert "email" in str(caught.value) and "create_user" in str(caught.value)


# --- (d) a layout with no head or title block ---------------------------------------------


def test_the_qr_page_still_refreshes_in_a_layout_without_a_head_block(
        tmp_path: Path, dispose: t.Any) -> None:
    """The docs' override maps ``wechat_qr_head`` onto the layout's ``head`` block, which
    this layout does not have (Jinja drops such a block silently): the embedded QR page
    must still reload itself before its state expires."""
    app = dispose(BABEL_LAYOUT.build(f"sqlite:///{tmp_path}/d.db"))
    page = app.test_client().get("/auth/wechat/qr")
    assert page.status_code == 200
    assert find_tags(page.get_data(as_text=True), "nav")  # in the shop's layout
    refresh = page.headers.get("Refresh", "")
    seconds = refresh.split(";")[0].strip()
    assert seconds.isdigit() and int(seconds) > 0, dict(page.headers)


def test_the_extensions_pages_sit_in_a_layout_without_head_and_title(
        tmp_path: Path, dispose: t.Any) -> None:
    app = dispose(BABEL_LAYOUT.build(f"sqlite:///{tmp_path}/d.db",
                                     WECHAT_QR_ASSOCIATION="ask_binding"))
    browser = Browser(app)
    bind = wechat_login(browser, "lisi")
    error = browser.get("/auth/wechat/callback?state=forged&code=x")
    for page in (bind, error, browser.get("/auth/wechat/qr")):
        html = page.get_data(as_text=True)
        assert 'id="shop-navbar"' in html and "wechat-qr-box" in html, html
    assert 400 <= error.status_code < 500
    assert_no_server_error(browser)


def test_a_spanish_browser_gets_the_shop_in_spanish_and_the_extension_in_english(
        tmp_path: Path, dispose: t.Any) -> None:
    """The extension has no Spanish: its pages fall back to its default, never an error."""
    app = dispose(BABEL_LAYOUT.build(f"sqlite:///{tmp_path}/d.db"))
    browser = Browser(app, language="es-ES,es;q=0.9")
    assert '<html lang="es">' in browser.get("/").get_data(as_text=True)
    qr = browser.get("/auth/wechat/qr")
    assert "Scan the QR code with WeChat on your phone" in qr.get_data(as_text=True)
    page = wechat_login(browser, "jose")
    assert page.status_code == 200 and "José Martín" in page.get_data(as_text=True)
    assert_no_server_error(browser)


# --- (e) an app factory, with the extension created once at module level ------------------


def test_one_module_level_extension_serves_every_app_of_the_factory(
        tmp_path: Path, dispose: t.Any) -> None:
    """A host's own test suite calls ``create_app()`` once per test: each app is whole, and
    one app's WeChat accounts are never another's."""
    import host_factory

    first = dispose(FACTORY.build(f"sqlite:///{tmp_path}/one.db"))
    second = dispose(FACTORY.build(f"sqlite:///{tmp_path}/two.db"))
    for app, person in ((first, "zhangsan"), (second, "lisi")):
        browser = Browser(app)
        assert wechat_login(browser, person).status_code == 200
        profile = browser.get("/users/profile")
        assert profile.status_code == 200
        browser.post("/write", data={"title": "Hello"})
        assert_no_server_error(browser)
    for app, nickname in ((first, "张三🐼"), (second, "李四")):
        with app.app_context():
            [author] = host_factory.db.session.execute(
                host_factory.db.select(host_factory.Author)).scalars().all()
            assert [i.nickname for i in host_factory.wechat.identities_of(author)] == [nickname]
            assert [post.title for post in author.posts] == ["Hello"]


# --- (f) Flask-Migrate, on a fresh database, with the real ``flask`` command ---------------


def run_flask(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """``flask --app host_migrate <args>`` in a shell of its own: the host's environment
    only (none of the test process's WECHAT_QR_* settings), the database in ``tmp_path``."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("WECHAT_QR_", "FLASK_")) and name != "SECRET_KEY"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]),
               DATABASE_URL=f"sqlite:///{tmp_path / 'site.db'}", **environ)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "host_migrate", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)


def test_flask_db_upgrade_builds_a_fresh_database(tmp_path: Path, dispose: t.Any) -> None:
    """The deploy of a Flask-Migrate site: ``flask db upgrade`` (the site's history) and
    ``flask wechat-qr db upgrade`` (the extension's), and the site's history stays its own
    (``flask db check`` finds nothing of the extension's to add)."""
    sandbox = {"SECRET_KEY": STRONG_KEY, "WECHAT_QR_SANDBOX": "true"}
    for command in (["db", "upgrade"], ["wechat-qr", "db", "upgrade"], ["db", "check"]):
        done = run_flask(tmp_path, *command, **sandbox)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert "No new upgrade operations detected" in done.stdout + done.stderr

    import host_migrate

    app = dispose(host_migrate.create_app({**SANDBOX, "SQLALCHEMY_DATABASE_URI":
                                           f"sqlite:///{tmp_path / 'site.db'}"}))
    browser = Browser(app)
    assert wechat_login(browser, "zhangsan").status_code == 200
    assert logged_in_user_id(browser.client) == "1"
    assert_no_server_error(browser)


# --- a site deployed before it has WeChat credentials -----------------------------------


def test_flask_commands_run_with_no_wechat_configured(tmp_path: Path) -> None:
    """No AppID, no sandbox, not debug: ``flask`` and its commands still work (the site's
    own migrations, ``--help``; the extension's below)."""
    for command in (["--help"], ["db", "upgrade"]):
        done = run_flask(tmp_path, *command, SECRET_KEY=STRONG_KEY)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        if command == ["--help"]:
            assert "wechat-qr" in done.stdout and "db" in done.stdout


def test_a_site_with_no_wechat_configured_serves_and_answers_503(
        tmp_path: Path, dispose: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    import host_migrate

    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        app = dispose(host_migrate.create_app({
            "SECRET_KEY": STRONG_KEY, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/f.db"}))
    warnings = [r for r in caplog.records
                if r.name.startswith("flask_wechat_qr") and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "WECHAT_QR_APP_ID" in warnings[0].getMessage()
    for command in (["db", "upgrade"], ["wechat-qr", "db", "upgrade"]):
        assert flask(app, *command).exit_code == 0

    browser = Browser(app, language="zh-CN")
    assert browser.get("/").status_code == 200  # the site's own pages
    for path in ("/auth/wechat/login", "/auth/wechat/qr", "/auth/wechat/link"):
        page = browser.get(path)
        assert page.status_code == 503 and page.mimetype == "text/html", path
        html = page.get_data(as_text=True)
        assert error_name(page) and '<html lang="zh-CN">' in html, html  # the extension's page
        assert "微信" in html.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert browser.get("/wechat-sandbox/").status_code == 404  # no simulated WeChat either


# --- settings read from environment variables that are not set -----------------------------


def test_settings_from_unset_environment_variables_mean_the_default(
        tmp_path: Path, dispose: t.Any) -> None:
    """``os.environ.get("WECHAT_QR_...")`` of a variable nobody set is ``None``."""
    unset = {name: os.environ.get(f"UNSET_{name}") for name in (
        "WECHAT_QR_LOGIN_ONLY", "WECHAT_QR_ASSOCIATION", "WECHAT_QR_DEFAULT_LOCALE",
        "WECHAT_QR_PROFILE_SYNC", "WECHAT_QR_URL_PREFIX")}
    app = dispose(UUID_KEYS.build(f"sqlite:///{tmp_path}/b.db", **unset))
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan")  # off, not login only: a new user
    assert page.status_code == 200 and "张三🐼" in page.get_data(as_text=True)
    assert_no_server_error(browser)


# --- the sandbox's own tables on a migrated site ------------------------------------------


def test_a_missing_sandbox_table_is_not_a_bare_500(tmp_path: Path, dispose: t.Any) -> None:
    """A Flask-Migrate site turns the sandbox on but never creates its tables (they are not
    in the extension's migrations, and it never calls ``create_all``): the sandbox either
    works or says which tables are missing, never Flask's bare error page."""
    import host_migrate

    from flask_wechat_qr.sandbox import sandbox_tables

    app = dispose(MIGRATE.build(f"sqlite:///{tmp_path}/f.db", PROPAGATE_EXCEPTIONS=False))
    with app.app_context():
        host_migrate.db.metadata.drop_all(host_migrate.db.engine, tables=sandbox_tables(app))
    browser = Browser(app)
    start = browser.get("/auth/wechat/login", follow=False)
    page = browser.get(start.headers["Location"].split("#")[0])
    if page.status_code != 200:
        assert page.status_code == 503, page.get_data(as_text=True)
        assert "wechat_qr_sandbox" in page.get_data(as_text=True)
