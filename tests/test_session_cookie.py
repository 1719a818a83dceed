"""The session cookie of a site on Flask's own cookie session, as the extension leaves it:
a cookie Flask's own interface reads, and which reads Flask's (its serializer is built
once, not at every request; its payload compressed with less of zlib's memory), the site's
keys as they are when each request comes."""

from __future__ import annotations

import typing as t

from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface

#: What the read route shows of the written session (Flask's JSON sorts the keys).
ANSWER = "{'at': 1.5, 'nested': [1, '二'], 'next': '/a/page/of/the/site?with=a&query=1'}"


def _with_session_routes(app: Flask) -> Flask:
    @app.route("/__test/session/write")
    def write_session() -> str:
        # Long enough to be compressed, as a login's state with its next page is.
        session["answer"] = {"nested": [1, "二"], "at": 1.5,
                             "next": "/a/page/of/the/site?with=a&query=1"}
        session["state"] = {"pages": ["/a/page/of/the/site"] * 4}
        return "written"

    @app.route("/__test/session/read")
    def read_session() -> str:
        return repr(session.get("answer"))

    return app


def _cookie_set(resp: t.Any) -> str:
    (cookie,) = [value.split(";")[0].partition("=")[2]
                 for value in resp.headers.getlist("Set-Cookie")
                 if value.startswith("session=")]
    return cookie


def test_the_session_cookie_is_one_flasks_own_interface_reads(
        make_app: t.Callable[..., Flask]) -> None:
    """Each reads the other's (a rolling deploy, an app beside it on Flask's own), with
    ``SECRET_KEY_FALLBACKS`` too; a payload worth compressing is compressed, to no more
    than Flask's own length."""
    app = _with_session_routes(make_app(SECRET_KEY_FALLBACKS=["an-older-key-" * 3]))
    ours = app.session_interface
    assert type(ours) is not SecureCookieSessionInterface  # the extension's own
    ours_cookie = _cookie_set(app.test_client().get("/__test/session/write"))
    app.session_interface = SecureCookieSessionInterface()
    flask_cookie = _cookie_set(app.test_client().get("/__test/session/write"))
    assert ours_cookie.startswith(".") and flask_cookie.startswith(".")  # compressed
    assert len(ours_cookie) <= len(flask_cookie)
    for interface, cookie in ((ours, flask_cookie), (SecureCookieSessionInterface(),
                                                     ours_cookie)):
        app.session_interface = interface
        client = app.test_client()
        client.set_cookie("session", cookie)
        assert client.get("/__test/session/read").text == ANSWER


def test_the_session_cookie_follows_the_keys_the_site_has_now(
        make_app: t.Callable[..., Flask]) -> None:
    """A key changed while the site runs (rotated, or by a test): new cookies are signed
    with the new key, and one signed with the old key is read only while it is a
    ``SECRET_KEY_FALLBACKS`` key."""
    app = _with_session_routes(make_app())
    old_key = app.secret_key
    old_cookie = _cookie_set(app.test_client().get("/__test/session/write"))

    app.secret_key = "a-new-key-of-32-bytes-or-more-" * 2
    client = app.test_client()
    client.set_cookie("session", old_cookie)
    assert client.get("/__test/session/read").text == "None"  # the old key is gone
    new_cookie = _cookie_set(app.test_client().get("/__test/session/write"))
    assert new_cookie != old_cookie

    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    for cookie in (old_cookie, new_cookie):
        client = app.test_client()
        client.set_cookie("session", cookie)
        assert client.get("/__test/session/read").text == ANSWER

    flask_with_new_key_only = Flask(__name__)
    flask_with_new_key_only.secret_key = app.secret_key
    serializer = SecureCookieSessionInterface().get_signing_serializer(flask_with_new_key_only)
    assert serializer is not None and "answer" in serializer.loads(new_cookie)
