"""Turning a login's outcome into a response (delivery.py): the error pages in words with a
way to try again, the form post of an ID token or an error to the business callback URL,
and the page that posts it."""

from __future__ import annotations

import json
import re
import typing as t

import pytest
import sqlalchemy as sa
from flask import Response
from support import (
    BUSINESS_URL,
    TOKEN_PATH,
    add_user,
    all_identities,
    all_users,
    api_paths,
    bind_page,
    callback_app,
    error_name,
    find_tags,
    finish_login,
    form_post,
    log_in,
    logged_in_user_id,
    login_with_wechat,
    query_pairs,
    raising,
    receiver_keys,
    retry_links,
    start_login,
    table,
    verify,
)

from flask_wechat_qr import LoginCancelled, delivery, signals

# --- error pages: in words, with a way to try again ---------------------------------------


ERRCODES = [
    # errcode, errmsg, status, words on the page (40163, "already used", once the other
    # request of the login had time to end it: test_flow)
    (40029, "invalid code", 400, "expired"),
    (41008, "missing code", 400, "Scan the QR code again"),
    (40125, "invalid appsecret", 502, "tell the site owner"),
    (40013, "invalid appid", 502, "tell the site owner"),
    (-1, "system error", 502, "busy"),
    (45011, "api minute-quota reach limit mustslow down!!", 502, "Wait a minute"),
    (99999, "something new", 502, "Try again"),
]


@pytest.mark.parametrize(("errcode", "errmsg", "status", "words"), ERRCODES)
def test_wechat_errcode_is_a_page_in_words(app: t.Any, client: t.Any, wechat_api: t.Any,
                                           errcode: int, errmsg: str, status: int,
                                           words: str) -> None:
    state = start_login(client, next="/account")
    wechat_api.error(TOKEN_PATH, errcode, errmsg)
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == status
    page = resp.text
    assert words in page
    assert "rid:" not in page
    assert "Traceback" not in page
    retry = retry_links(page)
    assert len(retry) == 1
    assert dict(query_pairs(retry[0])) == {"next": "/account"}
    # Busy (-1) is retried once; nothing else is.
    assert api_paths(wechat_api) == [TOKEN_PATH] * (2 if errcode == -1 else 1)
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None


def test_retry_after_an_error_keeps_the_business_state(make_app: t.Any, wechat_api: t.Any,
                                                       pem: str) -> None:
    app = callback_app(make_app, pem)
    client = app.test_client()
    state = start_login(client, state="biz-1", nonce="n-1")
    wechat_api.error("/sns/oauth2/access_token", 40029, "invalid code")
    page = finish_login(client, state)
    assert page.status_code == 400  # this site's page: the person can try again
    retry = [a["href"] for a in find_tags(page.get_data(as_text=True), "a")
             if "/auth/wechat/login" in (a.get("href") or "")]
    assert retry and all("state=biz-1" in h and "nonce=n-1" in h for h in retry)


def test_try_again_after_the_login_expired_keeps_what_it_kept(
        make_app: t.Any, wechat_api: t.Any, pem: str, clock: t.Any) -> None:
    """A login that expired before WeChat sent the person back (they waited on the consent
    sheet): its page's "Try again" (and "Back") were bare, and the business's ``state`` and
    ``nonce`` and the login's ``next`` were lost (a helper's phone hunt, session 34; the
    business front end then refused the token, its state not matching). The session still
    holds them; the page is the same ``StateError`` as before."""
    app = callback_app(make_app, pem)
    client = app.test_client()
    state = start_login(client, state="biz-late", nonce="n-late")
    plain = make_app().test_client()
    plain_state = start_login(plain, next="/account?tab=资料")
    clock.advance(app.config.get("WECHAT_QR_STATE_TTL", 600) + 1)
    page = finish_login(client, state)
    assert page.status_code == 400 and error_name(page) == "StateError"
    retry = retry_links(page.get_data(as_text=True))
    assert len(retry) == 1
    assert dict(query_pairs(retry[0])) == {"state": "biz-late", "nonce": "n-late"}
    other = finish_login(plain, plain_state)
    assert other.status_code == 400 and error_name(other) == "StateError"
    retry = retry_links(other.get_data(as_text=True))
    assert [dict(query_pairs(link)) for link in retry] == [{"next": "/account?tab=资料"}]
    assert api_paths(wechat_api) == []  # WeChat is never asked for an expired state's code


def test_try_again_after_a_long_login_expired_keeps_its_next(make_app: t.Any, wechat_api: t.Any,
                                                            clock: t.Any) -> None:
    """A login whose ``next`` is too long for the cookie parks its data in the table: once
    it expired, its page's "Try again" went to the post-login page (session 34, left
    alone). Its row is there until the purge takes it: the page reads it, and after the
    purge it still answers as before, without the ``next``."""
    app = make_app()
    long_next = "/reports/" + "季度-" * 60 + "?tab=1"
    ttl = app.config.get("WECHAT_QR_STATE_TTL", 600)
    for purged, expected in ((False, [{"next": long_next}]), (True, [{}])):
        client = app.test_client()
        state = start_login(client, next=long_next)
        clock.advance(ttl + 1)
        if purged:
            states = table(app, "wechat_qr_login_state")
            with app.app_context():
                app.db.session.execute(sa.delete(states))  # type: ignore[attr-defined]
                app.db.session.commit()  # type: ignore[attr-defined]
        page = finish_login(client, state)
        assert page.status_code == 400 and error_name(page) == "StateError"
        retry = retry_links(page.get_data(as_text=True))
        assert [dict(query_pairs(link)) for link in retry] == expected
    assert api_paths(wechat_api) == []


# --- to the business callback URL: an ID token or the error, posted -----------------------


def test_a_cancelled_login_is_posted_to_the_callback_url(make_app: t.Any, pem: str) -> None:
    """Like an OAuth error response: the business front end learns the user said no."""
    app = callback_app(make_app, pem)
    client = app.test_client()
    state = start_login(client, state="biz-2")
    resp = client.get("/auth/wechat/callback", query_string={"state": state})
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    post = form_post(resp)
    assert post["action"] == BUSINESS_URL
    assert post["fields"] == {"error": "access_denied",
                              "error_description": "The user cancelled the WeChat login.",
                              "state": "biz-2"}


def test_a_login_only_refusal_is_posted_to_the_callback_url(
    make_app: t.Any, wechat_api: t.Any, pem: str
) -> None:
    app = callback_app(make_app, pem, WECHAT_QR_LOGIN_ONLY=True)
    post = form_post(login_with_wechat(app.test_client(), wechat_api, state="biz-3"))
    assert post["fields"]["error"] == "account_not_linked"
    assert post["fields"]["state"] == "biz-3"
    assert "id_token" not in post["fields"]
    assert all_users(app) == []


def test_refused_create_on_the_bind_page_is_posted_too(make_app: t.Any, wechat_api: t.Any,
                                                        pem: str) -> None:
    app = callback_app(make_app, pem, WECHAT_QR_ASSOCIATION="ask_binding",
                       WECHAT_QR_LOGIN_ONLY=True)
    client = app.test_client()
    assert login_with_wechat(client, wechat_api, state="biz-4").headers["Location"] == \
        "/auth/bind"
    _page, csrf = bind_page(client)
    post = form_post(client.post("/auth/bind", data={"action": "create",
                                                      "csrf_token": csrf}))
    assert post["fields"] == {"error": "account_not_linked",
                              "error_description": "No account of this site is linked to "
                                                   "this WeChat account (login only).",
                              "state": "biz-4"}


def test_ask_binding_delivers_after_the_choice(make_app: t.Any, wechat_api: t.Any,
                                               pem: str) -> None:
    app = callback_app(make_app, pem, WECHAT_QR_ASSOCIATION="ask_binding")
    user_id = add_user(app, username="li", password="correct horse")
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, state="after-bind", nonce="nonce-after-bind")
    assert resp.headers["Location"] == "/auth/bind"
    with client.session_transaction() as sess:  # kept for the delivery after the choice
        assert "after-bind" in json.dumps(dict(sess))
    _page, csrf = bind_page(client)
    wrong = client.post("/auth/bind", data={"action": "bind", "username": "li",
                                            "password": "nope", "csrf_token": csrf})
    assert wrong.status_code == 400
    resp = client.post("/auth/bind", data={"action": "bind", "username": "li",
                                           "password": "correct horse", "csrf_token": csrf})
    post = form_post(resp)
    assert post["fields"]["state"] == "after-bind"
    claims = verify(post["fields"]["id_token"], receiver_keys(client), nonce="nonce-after-bind")
    assert claims["sub"] == str(user_id)
    with client.session_transaction() as sess:  # the business state and nonce are gone
        assert "after-bind" not in json.dumps(dict(sess))


def test_the_token_page_stands_alone(make_app: t.Any, wechat_api: t.Any, pem: str,
                                     tmp_path: t.Any) -> None:
    """Not inside the site's layout (whose scripts could read the token)."""
    app = callback_app(make_app, pem)
    folder = t.cast(str, app.root_path)
    import pathlib

    override = pathlib.Path(folder, "templates", "wechat_qr")
    override.mkdir(parents=True)
    (override / "base.html").write_text(
        '<html><script src="https://analytics.example/x.js"></script>'
        "{% block wechat_qr_content %}{% endblock %}</html>")
    html = form_post(login_with_wechat(app.test_client(), wechat_api))["html"]
    assert "analytics.example" not in html
    assert '<meta name="referrer" content="no-referrer">' in html


def test_errors_of_connections_without_a_callback_url_stay_pages(make_app: t.Any) -> None:
    app = make_app()
    client = app.test_client()
    state = start_login(client, state="ignored")
    page = client.get("/auth/wechat/callback", query_string={"state": state})
    assert page.status_code == 200 and "<form" not in page.get_data(as_text=True)


def test_a_cancelled_link_is_not_posted_to_the_callback_url(make_app: t.Any,
                                                           pem: str) -> None:
    """Linking WeChat from the account page is this site's own business."""
    app = callback_app(make_app, pem)
    user_id = add_user(app, username="wang", password="correct horse")
    client = app.test_client()
    log_in(client, user_id)
    location = client.get("/auth/wechat/link").headers["Location"]
    state = re.search(r"[?&]state=([A-Za-z0-9]+)", location).group(1)
    page = client.get("/auth/wechat/callback", query_string={"state": state})
    assert page.status_code == 200
    assert "<form" not in page.get_data(as_text=True)
    assert "cancelled" in page.get_data(as_text=True)


# --- errors while delivering -------------------------------------------------------------


def test_an_error_while_delivering_keeps_the_logins_next_and_business_state(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    """A login_succeeded receiver's error (or the ID token's) is a page that still knows
    the login: its "try again" keeps next, and a callback URL is told with its state."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/done",
                   WECHAT_QR_ID_TOKEN_SECRET="s" * 40)
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    receiver = raising(LoginCancelled())
    with signals.login_succeeded.connected_to(receiver, sender=app):
        resp = finish_login(client, start_login(client, state="biz-1", nonce="n-1"))
    body = resp.get_data(as_text=True)
    assert 'name="error" value="access_denied"' in body
    assert 'name="state" value="biz-1"' in body
    assert logged_in_user_id(client) is not None  # the login itself stands


# --- page headers --------------------------------------------------------------------------


@pytest.mark.parametrize(("already", "frame_option"), [
    ({}, "SAMEORIGIN"),
    ({"x-frame-options": "DENY"}, "DENY"),
])
def test_page_headers_add_the_policy_and_keep_a_frame_option_already_set(
        already: dict[str, str], frame_option: str) -> None:
    response = Response("page", headers=already)
    delivery.page_headers(response, "'self'")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers.getlist("Content-Security-Policy") == ["frame-ancestors 'self'"]
    assert response.headers.getlist("X-Frame-Options") == [frame_option]


def test_page_headers_leave_a_policy_already_set_whatever_its_case() -> None:
    response = Response("page", headers={"content-security-policy": "frame-ancestors 'none'",
                                         "Cache-Control": "max-age=60"})
    delivery.page_headers(response, "'self'")
    assert response.headers.getlist("Content-Security-Policy") == ["frame-ancestors 'none'"]
    assert "X-Frame-Options" not in response.headers
    assert response.headers.getlist("Cache-Control") == ["no-store"]


def test_public_files_keep_their_caching() -> None:
    response = Response("{}", headers={"Cache-Control": "max-age=3600"})
    delivery.page_headers(response, None, cacheable=True)
    assert response.headers.getlist("Cache-Control") == ["max-age=3600"]
    assert "Content-Security-Policy" not in response.headers
