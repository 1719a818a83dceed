"""A site on Flask-Limiter (its quick start: ``default_limits=["200 per day", "50 per
hour"]`` per route and address, in memory): the sandbox's QR page asks for the phone's
answer once a second, and the sandbox takes itself out of the limits (before, the login
stopped after 50 seconds of QR page). A 429 on the extension's own pages loses nothing,
and ``flask wechat-qr check`` does not take a used-up limit for a members-only rule."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import host_factory as host
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from support import CSRF, answer, logged_in_user_id, poll

from .browse import Browser, wechat_login
from .shapes import SANDBOX, flask


def site(tmp_path: Path, **config: t.Any) -> Flask:
    return host.create_app({**SANDBOX, "SQLALCHEMY_DATABASE_URI":
                            f"sqlite:///{tmp_path / 'blog.db'}", **config})


def quick_start(app: Flask) -> Limiter:
    """Flask-Limiter's quick start, on the whole site."""
    return Limiter(get_remote_address, app=app, default_limits=["200 per day", "50 per hour"],
                   storage_uri="memory://")


def test_the_qr_pages_polling_is_not_the_sites_traffic(tmp_path: Path) -> None:
    """A QR page open for two minutes (120 polls), then the phone allows: the login ends
    logged in. Before: the 51st poll was Flask-Limiter's 429 and the QR page never learnt
    of the phone's answer."""
    app = site(tmp_path)
    quick_start(app)
    browser = Browser(app)
    start = browser.get("/auth/wechat/login", follow=False)
    qr_page = browser.get(start.headers["Location"].split("#")[0])
    [uuid] = re.findall(r'data-uuid="([^"]+)"', qr_page.get_data(as_text=True))
    statuses = [browser.client.get("/wechat-sandbox/connect/l/qrconnect",
                                   query_string={"uuid": uuid}).status_code
                for _ in range(120)]
    assert answer(app.test_client(), uuid, action="allow",
                  person="zhangsan").status_code == 200
    assert set(statuses) == {200}
    page = browser.get(poll(browser.client, uuid)["redirect"])
    assert page.status_code == 200 and "张三" in page.get_data(as_text=True)
    assert logged_in_user_id(browser.client) is not None
    # The host's own pages are still limited.
    assert {browser.client.get("/auth/wechat/login").status_code for _ in range(60)} >= {429}


def test_the_hosts_own_limit_on_the_sandbox_stays(tmp_path: Path) -> None:
    """A host that limits the sandbox's blueprint on purpose keeps its limit (the sandbox
    exempts itself only where the host said nothing of it); a limiter kept in the old
    shape (the object itself under ``"limiter"``) is found too."""
    app = site(tmp_path)
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://")
    limiter.limit("2 per hour")(app.blueprints["wechat_qr_sandbox"])
    app.extensions["limiter"] = limiter  # Flask-Limiter 1 and 2 kept it so
    client = app.test_client()
    statuses = [client.get("/wechat-sandbox/connect/l/qrconnect",
                           query_string={"uuid": "x"}).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]


def test_another_librarys_limiter_is_left_alone(tmp_path: Path) -> None:
    """An object of the site's own under ``app.extensions["limiter"]`` with an ``exempt``
    of its own is not handed the sandbox's blueprint (it could raise: every sandbox page a
    500)."""
    class OwnLimiter:
        def exempt(self, view: t.Any) -> t.Any:
            raise AssertionError("called with the sandbox's blueprint")

    app = site(tmp_path)
    app.extensions["limiter"] = OwnLimiter()
    assert app.test_client().get("/wechat-sandbox/connect/l/qrconnect",
                                 query_string={"uuid": "x"}).status_code == 200


def test_one_login_is_two_requests_of_the_extension(tmp_path: Path) -> None:
    """docs/deploying.rst's count: the sandbox out of the limits, a login is the button's URL and
    the callback, then the site's own page; a shared limit of three is spent by one."""
    app = site(tmp_path)
    Limiter(get_remote_address, app=app, application_limits=["3 per hour"],
            storage_uri="memory://")
    browser = Browser(app)
    assert wechat_login(browser).status_code == 200
    assert [path.split("?")[0] for _m, path, _s in browser.seen] == [
        "/auth/wechat/login", "/wechat-sandbox/connect/qrconnect", "/auth/wechat/callback", "/"]
    assert browser.client.get("/auth/wechat/login").status_code == 429


def test_a_429_on_the_bind_form_keeps_the_pending_binding(tmp_path: Path) -> None:
    """Flask-Limiter refuses the bind page's form: its 429 (not a server error), and the
    "bind or create" choice still waits; sent again once the limit allows, it logs in."""
    app = site(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding")
    limiter = quick_start(app)
    limiter.limit("1 per hour")(app.blueprints["wechat_qr"])
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    assert browser.seen[-1][1] == "/auth/bind"
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    form = {"csrf_token": token, "action": "create"}
    refused = browser.post("/auth/bind", data=form)
    assert refused.status_code == 429 and logged_in_user_id(browser.client) is None
    limiter.reset()
    done = browser.post("/auth/bind", data=form)
    assert done.status_code == 200 and "李四" in done.get_data(as_text=True)
    assert logged_in_user_id(browser.client) is not None
    assert browser.errors() == []


def test_the_check_does_not_take_a_used_up_limit_for_a_members_only_rule(
        tmp_path: Path) -> None:
    """``flask wechat-qr check`` runs the site's ``before_request`` hooks, Flask-Limiter's
    among them, on each login page. Before: once the limit was used up (a second run here,
    the 51st in an hour with the quick start's limits in a shared store), it reported every
    login page as withheld by a members-only hook, with the wrong fix, and exited 1."""
    app = site(tmp_path)
    Limiter(get_remote_address, app=app, default_limits=["1 per hour"], storage_uri="memory://")
    for _run in range(2):
        result = flask(app, "wechat-qr", "check")
        assert "429" not in result.output and result.exit_code == 0, result.output
