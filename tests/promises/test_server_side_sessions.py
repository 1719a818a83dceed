"""A site on a server-side session store (Flask-Session and the like): the login renews the
session's id, so a planted id is worthless, and WeChat's double redirect still ends as the
first callback did, although the renewal deleted the session that held the login's state."""

from __future__ import annotations

import secrets
import typing as t

from flask import Flask
from flask.sessions import SessionInterface, SessionMixin
from support import CODE, logged_in_user_id
from werkzeug.datastructures import CallbackDict

from .test_cookie_tossing import HTTPS, LOGIN_COOKIE, callback, over_https, start


def with_flask_session(app: Flask) -> Flask:
    """Flask-Session in front of the app's session, on an in-memory store."""
    from cachelib import SimpleCache
    from flask_session import Session

    app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache(),
                      SESSION_USE_SIGNER=False)
    Session(app)
    return app


def test_flask_sessions_id_is_renewed_at_login(make_app: t.Callable[..., Flask],
                                              wechat_api: t.Any) -> None:
    """Before: Flask-Session's ``regenerate`` skipped the session the extension had just
    emptied, and the planted id logged the attacker in as the victim."""
    app = with_flask_session(make_app())
    attacker, victim = app.test_client(), app.test_client()
    attacker.get("/auth/wechat/login")
    planted = attacker.get_cookie("session").value
    victim.set_cookie("session", planted)
    state = start(victim)
    wechat_api.token()
    wechat_api.userinfo()
    done = victim.get("/auth/wechat/callback", query_string={"code": CODE, "state": state},
                      base_url=HTTPS)
    assert done.status_code == 302
    assert victim.get_cookie("session").value != planted
    assert logged_in_user_id(victim) is not None
    assert attacker.get("/").get_data(as_text=True) == "anonymous"


class _StoredSession(CallbackDict[str, t.Any], SessionMixin):
    def __init__(self, initial: dict[str, t.Any] | None = None, sid: str = "") -> None:
        def on_update(session: t.Any) -> None:
            session.modified = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.modified = False


class RegeneratingSessions(SessionInterface):
    """A server-side store whose ``regenerate`` gives a new id and forgets the old one at
    once, as a careful store does."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, t.Any]] = {}

    def open_session(self, app: Flask, request: t.Any) -> _StoredSession:
        sid = request.cookies.get(self.get_cookie_name(app), "")
        if sid in self.store:
            return _StoredSession(dict(self.store[sid]), sid)
        return _StoredSession(sid=secrets.token_urlsafe(16))

    def regenerate(self, session: _StoredSession) -> None:
        self.store.pop(session.sid, None)
        session.sid, session.modified = secrets.token_urlsafe(16), True

    def save_session(self, app: Flask, session: t.Any, response: t.Any) -> None:
        if session:
            self.store[session.sid] = dict(session)
            response.set_cookie(self.get_cookie_name(app), session.sid, httponly=True,
                                secure=True)
        elif session.modified:  # emptied (logged out): gone from the store
            self.store.pop(session.sid, None)


def test_wechats_double_redirect_survives_the_renewed_session(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """The second redirect leaves with the cookie from before the first answer: its session
    is gone from the store. Before: "This login link is no longer valid" (400) after a
    login that had worked. The browser's ``__Host-`` login cookie, recorded with how the
    login ended, says it is the same browser."""
    app = over_https(make_app())
    sessions = app.session_interface = RegeneratingSessions()
    browser = app.test_client()
    state = start(browser, "/auth/wechat/login?next=/welcome")
    before = browser.get_cookie("session").value
    login_cookie = browser.get_cookie(LOGIN_COOKIE).value
    wechat_api.token()
    wechat_api.userinfo()
    first = callback(browser, state)
    assert first.status_code == 302 and first.headers["Location"] == "/welcome"
    assert before not in sessions.store  # the renewal forgot the session with the state
    user = logged_in_user_id(browser)
    # Both cookies as they were before the first answer came.
    browser.set_cookie("session", before, secure=True)
    browser.set_cookie(LOGIN_COOKIE, login_cookie, secure=True)
    second = callback(browser, state)
    assert second.status_code == 302 and second.headers["Location"] == "/welcome"
    assert logged_in_user_id(browser) == user


def test_another_browser_cannot_replay_it(make_app: t.Callable[..., Flask],
                                          wechat_api: t.Any) -> None:
    """Without the browser's own login cookie the repeat proves nothing: the session is
    gone, and a login cookie is a ``__Host-`` one, which no other site can plant."""
    app = over_https(make_app())
    app.session_interface = RegeneratingSessions()
    browser, other = app.test_client(), app.test_client()
    state = start(browser)
    wechat_api.token()
    wechat_api.userinfo()
    assert callback(browser, state).status_code == 302
    other.set_cookie(LOGIN_COOKIE, "x" * 32, secure=True)  # a login cookie of its own
    replay = callback(other, state)
    assert replay.status_code == 400 and logged_in_user_id(other) is None


def test_a_reload_of_the_callback_after_logging_out_logs_nobody_in(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """The login cookie is renewed with the login: a request of this browser after the
    answer (the callback reloaded, Back to it, after logging out) is no longer the browser
    that started it, even within the seconds a repeat is answered."""
    from flask_login import logout_user

    app = over_https(make_app())
    app.session_interface = RegeneratingSessions()
    app.add_url_rule("/logout", "logout", lambda: (logout_user(), "bye")[1])
    browser = app.test_client()
    state = start(browser)
    started_with = browser.get_cookie(LOGIN_COOKIE).value
    wechat_api.token()
    wechat_api.userinfo()
    assert callback(browser, state).status_code == 302
    assert browser.get_cookie(LOGIN_COOKIE).value != started_with
    browser.get("/logout", base_url=HTTPS)
    assert logged_in_user_id(browser) is None
    again = callback(browser, state)
    assert again.status_code == 400 and logged_in_user_id(browser) is None
