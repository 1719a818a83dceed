"""Several worker processes: two gunicorn servers of the example app share one database and
SECRET_KEY; a login (and an ask-binding flow) starts on one and finishes on the other.
Nothing a step needs may live in one process's memory. And the quick start's site under
uWSGI as it runs by default: workers forked from a master that built the app."""

from __future__ import annotations

import contextlib
import re
import sys
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support import CSRF, Database, gunicorn, scan_and_allow, uwsgi


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


#: docs/quickstart.rst's app.py (``db.create_all()`` at start-up, nothing disposed), with a
#: page telling which worker answered and which database session it used.
QUICKSTART_SITE = """
import os

import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR, config_from_env

db = SQLAlchemy()
login_manager = LoginManager()


class User(UserMixin, db.Model):
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)
    nickname = db.Column(db.Unicode(255))
    avatar_url = db.Column(db.Text)


@login_manager.user_loader
def load_user(user_id):
    return db.session.get(User, int(user_id))


app = Flask(__name__)
app.config.update(SECRET_KEY=os.environ["SECRET_KEY"],
                  SQLALCHEMY_DATABASE_URI=os.environ["DATABASE_URL"])
app.config.update(config_from_env(os.environ))
db.init_app(app)
login_manager.init_app(app)
wechat = WeChatQR(app, db=db, user_model=User)

with app.app_context():
    db.create_all()


@app.route("/")
def home():
    return {"nickname": current_user.nickname if current_user.is_authenticated else None}


@app.route("/worker")
def worker():
    session = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    return {"worker": os.getpid(), "session": session}
"""


@pytest.mark.skipif(sys.platform == "win32", reason="uWSGI does not run on Windows")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_the_quickstart_site_under_uwsgi_as_it_runs_by_default(
        database: Database, tmp_path: Path) -> None:
    """The workers, forked from the master that ran ``db.create_all()``, each use their own
    database session: sharing the master's, logins failed with 500s (PostgreSQL: "This
    result object does not return rows", "relation ... already exists") or hung."""
    (tmp_path / "quickstart_site.py").write_text(QUICKSTART_SITE)
    env = {"DATABASE_URL": database.url("site"), "SECRET_KEY": "uwsgi-workers-" + "7" * 32,
           "WECHAT_QR_SANDBOX": "true", "WECHAT_QR_SANDBOX_PUBLIC_URL": ""}
    log = tmp_path / "uwsgi.log"
    with uwsgi(env, log, app="quickstart_site:app", path=[tmp_path]) as base:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.get(base + "/worker", timeout=10),
                                    range(24)))
        assert [answer.status_code for answer in answers] == [200] * 24, log.read_text()
        sessions = {answer.json()["worker"]: answer.json()["session"] for answer in answers}
        assert len(set(sessions.values())) == len(sessions), sessions
        with requests.Session() as browser:
            start = browser.get(base + "/auth/wechat/login?next=/", allow_redirects=False,
                                timeout=10)
            poll = scan_and_allow(browser, base, start.headers["Location"].split("#")[0],
                                  "zhangsan")
            done = browser.get(poll["redirect"], allow_redirects=False, timeout=10)
            assert done.status_code == 302 and done.headers["Location"] == "/", done.text
            assert browser.get(base + "/", timeout=10).json() == {"nickname": "张三🐼"}
    assert "Traceback" not in log.read_text()
