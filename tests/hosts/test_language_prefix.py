"""A site with every page under ``/<lang_code>/``, written as Flask's docs write it
("Internationalized Blueprint URLs"): the blueprint's URL defaults read ``g.lang_code``,
which only its own URL value preprocessor sets, and Flask-Login's ``login_view`` is one of
its pages. Building that view's URL on the extension's pages raised ``AttributeError``, not
the ``BuildError`` the extension took as "cannot be built here" (a helper's host hunt,
session 34)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask import Blueprint, Flask, g
from support import SAFARI_PHONE, error_name

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import flask, nickname_site


def language_site(tmp_path: Path, *, app_level: bool = False) -> Flask:
    """The docs' blueprint variant; ``app_level``: the docs' other variant, the app's own
    URL processors (``g.lang_code`` set on every page, to ``zh`` where the URL has none)."""
    app = nickname_site(tmp_path, "language_site")
    main = Blueprint("main", __name__, url_prefix="/<lang_code>")
    processors: Blueprint | Flask = app if app_level else main

    @processors.url_defaults
    def add_language_code(endpoint: str, values: dict[str, object]) -> None:
        if app_level and not app.url_map.is_endpoint_expecting(endpoint, "lang_code"):
            return
        values.setdefault("lang_code", g.lang_code)

    @processors.url_value_preprocessor
    def pull_lang_code(endpoint: str | None, values: dict[str, object] | None) -> None:
        g.lang_code = (values or {}).pop("lang_code", "zh")

    @main.route("/")
    def index() -> str:
        return f"<p>home ({g.lang_code})</p>"

    app.register_blueprint(main)
    app.login_manager.login_view = "main.index"  # type: ignore[attr-defined]
    return app


def test_the_login_pages_that_offer_the_sites_login_answer_without_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The phone's page, linking while logged out and the bind page with nothing pending
    were 500s; they are the extension's pages, with no link to the site's login where it
    cannot be built there (the log says why, with the traceback), and ``flask wechat-qr
    check`` says so too (it ended on the same ``AttributeError``, with no report)."""
    app = language_site(tmp_path)
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        phone = app.test_client().get("/auth/wechat/login",
                                      headers={"User-Agent": SAFARI_PHONE})
    assert phone.status_code == 200
    assert "/zh/" not in phone.get_data(as_text=True)
    [record] = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is AttributeError
    link = app.test_client().get("/auth/wechat/link")
    assert link.status_code == 401 and error_name(link) == "NotLoggedIn"
    bind = app.test_client().get("/auth/bind")
    assert bind.status_code == 400 and error_name(bind) == "BindingExpired"
    browser = Browser(app)
    wechat_login(browser, "lisi")
    assert_no_server_error(browser)
    assert browser.client.get("/zh/").get_data(as_text=True) == "<p>home (zh)</p>"

    check = flask(app, "wechat-qr", "check")
    assert check.exception is None or isinstance(check.exception, SystemExit), check.output
    assert "login_view 'main.index' cannot be built here" in check.output, check.output
    assert "g.get(\"lang_code\"" in check.output


def test_a_sites_own_unauthorized_handler_that_fails_is_its_own_error(tmp_path: Path) -> None:
    """Only the login view's URL is passed by where it cannot be built: the site's own
    ``unauthorized_handler`` failing stays its error (its 500, with its traceback)."""
    app = language_site(tmp_path)

    @app.login_manager.unauthorized_handler  # type: ignore[attr-defined]
    def unauthorized() -> str:
        raise RuntimeError("the site's own mistake")

    with pytest.raises(RuntimeError, match="the site's own mistake"):
        app.test_client().get("/auth/wechat/link")  # TESTING: raised, not a 500 page


def test_the_app_level_variant_is_not_reported(tmp_path: Path) -> None:
    """With the app's own URL processors every page sets ``g.lang_code``, the extension's
    too: the login view builds there, and the check, which runs them on the link page as
    Flask would, reports no view that works (a guard against a false report: it passed
    before the session's change too, the processors' ``g`` left over from another check)."""
    app = language_site(tmp_path, app_level=True)
    link = app.test_client().get("/auth/wechat/link")
    assert link.status_code == 302 and link.headers["Location"].startswith("/zh/?next=")
    check = flask(app, "wechat-qr", "check")
    assert check.exception is None or isinstance(check.exception, SystemExit), check.output
    assert "login_view" not in check.output, check.output
