"""Several worker processes: two gunicorn servers of the example app share one database and
SECRET_KEY; a login (and an ask-binding flow) starts on one and finishes on the other.
Nothing a step needs may live in one process's memory."""

from __future__ import annotations

import contextlib
import re
import typing as t
from pathlib import Path

import requests
from support import CSRF, Database, gunicorn, scan_and_allow


@contextlib.contextmanager
def two_workers(database: Database, tmp_path: Path, **settings: str) -> t.Iterator[list[str]]:
    env = {"DATABASE_URL": database.url("site"), "SECRET_KEY": "shared-by-all-workers-" + "7" * 16,
           "WECHAT_QR_SANDBOX_PUBLIC_URL": "", "WECHAT_QR_SANDBOX": "true", **settings}
    with gunicorn(env, tmp_path / "a.log") as a, gunicorn(env, tmp_path / "b.log") as b:
        yield [a, b]


def _on(base: str, url: str) -> str:
    """The same URL on another worker (same host, other port)."""
    return re.sub(r"^http://127\.0\.0\.1:\d+", base, url)


def test_login_starts_on_one_worker_and_finishes_on_the_other(
    database: Database, tmp_path: Path
) -> None:
    with two_workers(database, tmp_path) as (a, b), requests.Session() as browser:
        start = browser.get(a + "/auth/wechat/login?next=/account", allow_redirects=False,
                            timeout=5)
        assert start.status_code == 302
        poll = scan_and_allow(browser, b, start.headers["Location"].split("#")[0], "zhangsan")
        assert poll["status"] == "confirmed"
        done = browser.get(_on(b, poll["redirect"]), allow_redirects=False, timeout=10)
        assert done.status_code == 302, done.text
        assert done.headers["Location"] == "/account"
        for base in (a, b):  # both workers know the session
            me = browser.get(base + "/api/me", timeout=5).json()
            assert me["nickname"] == "张三🐼" and len(me["identities"]) == 1


def test_ask_binding_across_workers(database: Database, tmp_path: Path) -> None:
    with two_workers(database, tmp_path, WECHAT_QR_ASSOCIATION="ask_binding") as (a, b), \
            requests.Session() as browser:
        token = CSRF.search(browser.get(a + "/register", timeout=5).text).group(1)
        assert browser.post(a + "/register", timeout=5, data={
            "username": "carol", "password": "carol-password", "csrf_token": token,
        }).status_code == 200
        carol = browser.get(b + "/api/me", timeout=5).json()
        browser.cookies.clear()  # log out: a new visitor in the same browser

        start = browser.get(b + "/auth/wechat/login", allow_redirects=False, timeout=5)
        poll = scan_and_allow(browser, a, start.headers["Location"].split("#")[0], "lisi")
        done = browser.get(_on(a, poll["redirect"]), allow_redirects=False, timeout=10)
        assert done.status_code == 302 and done.headers["Location"] == "/auth/bind"
        page = browser.get(b + "/auth/bind", timeout=5)
        assert page.status_code == 200 and "李四" in page.text
        token = CSRF.search(page.text).group(1)
        bound = browser.post(a + "/auth/bind", allow_redirects=False, timeout=10, data={
            "action": "bind", "username": "carol", "password": "carol-password",
            "csrf_token": token})
        assert bound.status_code == 302, bound.text
        me = browser.get(b + "/api/me", timeout=5).json()
        assert me["id"] == carol["id"] and me["username"] == "carol"
        assert [i["connection"] for i in me["identities"]] == ["wechat"]
