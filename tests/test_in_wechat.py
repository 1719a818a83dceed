"""Logging in from inside WeChat and on phones (issue 16), end to end on the in-app
sandbox: the browser decides the way in, the Official Account's authorization finishes on
the same callback, one person is one account across both apps, snapshot visitors never get
an account, silent logins ask someone new for their profile, the verify file is served."""

from __future__ import annotations

import re
import typing as t
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from support import (
    PAST_THE_REPEAT_WINDOW,
    SAFARI_PHONE,
    SANDBOX_PREFIX,
    TOKEN_PATH,
    WECHAT_PHONE,
    WECHAT_WINDOWS,
    WECOM,
    Clock,
    all_identities,
    all_users,
    answer,
    browser_copy,
    find_tags,
    logged_in_user_id,
    open_qr_page,
    poll,
    recording,
)

from flask_wechat_qr.browsers import Browser, classify
from flask_wechat_qr.sandbox.options import SANDBOX_OA_APP_ID

ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/126.0.0.0 Mobile Safari/537.36")
DESKTOP_CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/126.0.0.0 Safari/537.36")


@pytest.mark.parametrize(("agent", "kind"), [
    (WECHAT_PHONE, Browser.WECHAT_PHONE), (WECHAT_WINDOWS, Browser.WECHAT_DESKTOP),
    (WECOM, Browser.WECOM), (SAFARI_PHONE, Browser.PHONE), (ANDROID_CHROME, Browser.PHONE),
    (DESKTOP_CHROME, Browser.COMPUTER), ("", Browser.COMPUTER), (None, Browser.COMPUTER),
])
def test_browsers_are_told_apart(agent: str | None, kind: Browser) -> None:
    assert classify(agent) is kind


@pytest.fixture
def app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                    WECHAT_QR_OA_VERIFY_FILE="MP_verify_Sandbox42.txt=Sandbox42")


def in_wechat(app: Flask, agent: str = WECHAT_PHONE) -> t.Any:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = agent
    return client


def authorize_location(client: t.Any, path: str = "/auth/wechat/login", **query: str) -> str:
    resp = client.get(path, query_string=query)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return t.cast(str, resp.headers["Location"])


def log_in_inside_wechat(client: t.Any, person: str = "zhangsan", *,
                         path: str = "/auth/wechat/login", **query: str) -> t.Any:
    """Start the login in WeChat's browser, allow on the sandbox's consent sheet as
    ``person``, and follow the redirect back to the callback."""
    location = authorize_location(client, path, **query)
    local = location.removeprefix("http://localhost").split("#")[0]
    consent = client.post(local, data={"action": "allow", "person": person})
    assert consent.status_code == 302, consent.get_data(as_text=True)
    return client.get(consent.headers["Location"].removeprefix("http://localhost"))


def lands_on(done: t.Any) -> str:
    """Where a login's last answer inside WeChat sends the browser: a page that moves on
    by itself (a redirect there would keep WeChat's ``#wechat_redirect``), or a redirect
    to a ``next`` with a fragment of its own."""
    if done.status_code == 302:
        return t.cast(str, done.headers["Location"])
    assert done.status_code == 200, done.get_data(as_text=True)
    moved = re.search(r"window\.top\.location\.href = \"([^\"]*)\";",
                      done.get_data(as_text=True))
    assert moved, done.get_data(as_text=True)
    return moved.group(1)


def test_a_login_inside_wechat_never_lands_on_wechats_fragment(app: Flask) -> None:
    """The Official Account's authorization URL ends with ``#wechat_redirect``, and a
    browser keeps it through redirects that name no fragment: the login landed on
    ``/account#wechat_redirect`` (a hash router's route "wechat_redirect"; found on a
    phone). A ``next`` with a fragment of its own is redirected to as before."""
    done = log_in_inside_wechat(in_wechat(app), next="/account")
    assert done.status_code == 200 and lands_on(done) == "/account"
    done = log_in_inside_wechat(in_wechat(app), next="/#/profile")
    assert done.status_code == 302 and done.headers["Location"] == "/#/profile"


def log_in_by_qr(app: Flask, person: str = "zhangsan") -> t.Any:
    client = app.test_client()
    uuid, _state = open_qr_page(client)
    answer(app.test_client(), uuid, action="allow", person=person)
    return client, client.get(poll(client, uuid)["redirect"].removeprefix("http://localhost"))


def test_wechat_goes_to_the_official_account_in_wechats_order(app: Flask) -> None:
    for agent in (WECHAT_PHONE, WECHAT_WINDOWS):
        location = authorize_location(in_wechat(app, agent), next="/account")
        assert location.startswith(f"http://localhost{SANDBOX_PREFIX}/connect/oauth2/authorize?")
        assert location.endswith("#wechat_redirect")
        query = urlsplit(location).query
        assert [pair.split("=")[0] for pair in query.split("&")] == [
            "appid", "redirect_uri", "response_type", "scope", "state"]
        params = parse_qs(query)
        assert params["appid"] == [SANDBOX_OA_APP_ID]
        assert params["scope"] == ["snsapi_userinfo"]
        assert params["redirect_uri"] == ["http://localhost/auth/wechat/callback"]
    # The embedded QR page and linking switch the same way.
    assert "/connect/oauth2/authorize?" in authorize_location(in_wechat(app), "/auth/wechat/qr")


def test_a_login_inside_wechat_creates_and_then_finds_the_user(app: Flask) -> None:
    client = in_wechat(app)
    with recording(app, "user_created") as seen:
        done = log_in_inside_wechat(client, next="/account")
    assert lands_on(done) == "/account"
    [user] = all_users(app)
    assert logged_in_user_id(client) == str(user.id)
    assert [name for name, _ in seen] == ["user_created"]
    [identity] = all_identities(app)
    assert (identity.app, identity.connection) == ("official_account", "wechat")
    assert identity.unionid and identity.nickname == "张三🐼"

    again = in_wechat(app)
    assert lands_on(log_in_inside_wechat(again)) == "/"
    assert logged_in_user_id(again) == str(user.id) and len(all_users(app)) == 1


@pytest.mark.parametrize("first", ["qr", "wechat"])
def test_one_person_is_one_account_across_qr_and_wechat(app: Flask, first: str) -> None:
    """Same unionid (both apps on one Open Platform account): the second login of the
    person joins the first one's user, with no association setting."""
    with recording(app, "identity_linked", "user_created") as seen:
        if first == "qr":
            qr_client, _ = log_in_by_qr(app)
            wechat_client = in_wechat(app)
            log_in_inside_wechat(wechat_client)
        else:
            wechat_client = in_wechat(app)
            log_in_inside_wechat(wechat_client)
            qr_client, _ = log_in_by_qr(app)
    [user] = all_users(app)
    assert logged_in_user_id(qr_client) == logged_in_user_id(wechat_client) == str(user.id)
    identities = all_identities(app)
    assert sorted(i.app for i in identities) == ["official_account", "website"]
    assert len({i.openid for i in identities}) == 2  # an openid per app
    assert len({i.unionid for i in identities}) == 1
    assert [(name, kw.get("via")) for name, kw in seen] == [
        ("user_created", None), ("identity_linked", "signup"),
        ("identity_linked", "unionid")]


def test_one_person_one_account_even_in_login_only_mode(make_app: t.Callable[..., Flask]
                                                        ) -> None:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    log_in_by_qr(app, "lisi")
    app.extensions["wechat_qr"] = _with_login_only(app)
    client = in_wechat(app)
    log_in_inside_wechat(client, "lisi")
    [user] = all_users(app)
    assert logged_in_user_id(client) == str(user.id)
    # Someone else, unknown to the site, is refused.
    stranger = in_wechat(app)
    refused = log_in_inside_wechat(stranger, "xiaohua")
    assert refused.status_code == 403 and logged_in_user_id(stranger) is None
    assert len(all_users(app)) == 1


def _with_login_only(app: Flask) -> t.Any:
    from dataclasses import replace

    runtime = app.extensions["wechat_qr"]
    connections = {key: replace(conn, login_only=True)
                   for key, conn in runtime.settings.connections.items()}
    settings = replace(runtime.settings, connections=connections)
    for client in [*runtime.clients.values(), *runtime.official_accounts.values()]:
        client.connection = connections[client.connection.identifier]
    runtime.flow.settings = settings
    return replace(runtime, settings=settings)


def test_without_a_unionid_the_two_apps_are_two_accounts(app: Flask) -> None:
    """wangwu's apps are on no common Open Platform account (no unionid): association
    "off" makes a second user, as the docs say."""
    log_in_by_qr(app, "wangwu")
    log_in_inside_wechat(in_wechat(app), "wangwu")
    assert len(all_users(app)) == 2


def test_a_snapshot_visitor_never_gets_an_account(app: Flask) -> None:
    client = in_wechat(app)
    with recording(app, "user_created", "identity_linked", "login_failed") as seen:
        page = log_in_inside_wechat(client, "snapshot")
    text = page.get_data(as_text=True)
    assert page.status_code == 403 and 'data-error="SnapshotUser"' in text
    assert "使用完整服务" in text
    assert all_users(app) == [] and all_identities(app) == []
    assert logged_in_user_id(client) is None
    assert [name for name, _ in seen] == ["login_failed"]


def test_a_silent_login_of_someone_new_asks_for_the_profile(make_app: t.Callable[..., Flask]
                                                            ) -> None:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_OA_SCOPE="snsapi_base")
    client = in_wechat(app)
    location = authorize_location(client, next="/account")
    assert parse_qs(urlsplit(location).query)["scope"] == ["snsapi_base"]
    local = location.removeprefix("http://localhost").split("#")[0]
    consent = client.post(local, data={"action": "allow", "person": "lisi"})
    back = client.get(consent.headers["Location"].removeprefix("http://localhost"))
    # Nobody knows this openid: WeChat is asked again, for the profile.
    assert back.status_code == 302
    again = back.headers["Location"]
    assert parse_qs(urlsplit(again).query)["scope"] == ["snsapi_userinfo"]
    assert all_users(app) == []
    consent = client.post(again.removeprefix("http://localhost").split("#")[0],
                          data={"action": "allow", "person": "lisi"})
    done = client.get(consent.headers["Location"].removeprefix("http://localhost"))
    assert lands_on(done) == "/account"
    [user] = all_users(app)
    assert logged_in_user_id(client) == str(user.id)

    # Next time: silent, no consent page, no profile request.
    later = in_wechat(app)
    later.set_cookie("wechat_qr_sandbox_person", "lisi", path=SANDBOX_PREFIX)
    location = authorize_location(later)
    silent = later.get(location.removeprefix("http://localhost").split("#")[0])
    assert silent.status_code == 302 and "code=" in silent.headers["Location"]
    done = later.get(silent.headers["Location"].removeprefix("http://localhost"))
    assert lands_on(done) == "/" and logged_in_user_id(later) == str(user.id)


def test_linking_inside_wechat_uses_the_official_account(app: Flask) -> None:
    qr_client, _ = log_in_by_qr(app, "xiaohua")
    [user] = all_users(app)
    client = in_wechat(app)
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)
        session["_fresh"] = True
    location = authorize_location(client, "/auth/wechat/link")
    assert "/connect/oauth2/authorize?" in location


def test_unlink_removes_the_identity_of_each_app(app: Flask) -> None:
    from support import csrf_token_of, with_csrf_token_route

    with_csrf_token_route(app)
    qr_client, _ = log_in_by_qr(app)
    log_in_inside_wechat(in_wechat(app))
    [user] = all_users(app)
    with app.app_context():
        app.db.session.execute(  # type: ignore[attr-defined]
            sa.update(app.User).values(password_hash="x"))  # type: ignore[attr-defined]
        app.db.session.commit()  # type: ignore[attr-defined]
    with recording(app, "identity_unlinked") as seen:
        resp = qr_client.post("/auth/wechat/unlink",
                              data={"csrf_token": csrf_token_of(qr_client)})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert all_identities(app) == []
    assert len(seen) == 2


def test_wecom_gets_a_clear_page(app: Flask) -> None:
    """It says to copy the page's link: the link is on it (WeCom's browser shows no address
    bar) with the phone page's "Copy link" button, and as a plain link to press and hold
    (where no script runs); no "try again", which was the same page again. The button is
    the script's own: in the markup it showed, dead, where a site's CSS gives buttons a
    display and a CSP blocks the script and the style attributes that hid it
    (Flask-Talisman's default policy), whatever its ``hidden``."""
    resp = in_wechat(app, WECOM).get("/auth/wechat/login", query_string={"next": "/account"})
    text = resp.get_data(as_text=True)
    link = "http://localhost/auth/wechat/login?next=/account"
    assert resp.status_code == 400 and 'data-error="WeComBrowser"' in text
    assert f'readonly value="{link}"' in text
    assert "Try again" not in text
    assert find_tags(text, "button") == [] and 'data-copy-label="Copy link"' in text
    assert [a["href"] for a in find_tags(text, "a")] == [link, "/account"]
    chinese = in_wechat(app, WECOM).get("/auth/wechat/login",
                                        headers={"Accept-Language": "zh-CN"}).text
    assert "复制链接" in chinese and "或长按此链接复制" in chinese
    assert "已复制，请粘贴到微信或浏览器中。" in chinese


def test_wecoms_link_to_copy_is_one_chat_finds_and_none_for_a_business_login(
        make_app: t.Callable[..., Flask]) -> None:
    """The link WeCom's page gives to copy was the URL as Werkzeug decodes it, CJK and
    emoji raw (a chat's link finder stops at them), where the phone page's is
    percent-encoded; and a login for a business callback URL got one too, though it must
    end in the browser that started it (opened in WeChat, its token went where the
    business refused it). A helper's phone hunt, session 34."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    text = in_wechat(app, WECOM).get("/auth/wechat/login",
                                     query_string={"next": "/account?tab=资料&q=😀"}).text
    link = ("http://localhost/auth/wechat/login?next=/account?tab%3D%E8%B5%84%E6%96%99"
            "%26q%3D%F0%9F%98%80")
    assert f'readonly value="{link}"' in text
    business = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                        WECHAT_QR_ID_TOKEN_SECRET="k7V9mQ2xT4rW8yZ1bN6cF3hJ5pL0sD2gA9eU4iO7wR1t")
    resp = in_wechat(business, WECOM).get("/auth/wechat/login",
                                          query_string={"state": "S1", "nonce": "N1"})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and 'data-error="WeComBrowser"' in text
    assert "readonly value=" not in text and "S1" not in text and "N1" not in text


@pytest.mark.parametrize("agent", [SAFARI_PHONE, ANDROID_CHROME])
def test_a_phone_browser_gets_the_phone_page(app: Flask, agent: str) -> None:
    client = in_wechat(app, agent)
    resp = client.get("/auth/wechat/login", query_string={"next": "/account"},
                      headers={"Accept-Language": "zh-CN"})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'data-wechat-qr-page="phone"' in text
    assert "文件传输助手" in text  # the connection has an Official Account: open in WeChat
    page_url = re.search(r'id="wechat-qr-page-url"[^>]*value="([^"]+)"', text).group(1)  # type: ignore[union-attr]
    assert page_url == "http://localhost/auth/wechat/login?next=/account"
    assert find_tags(text, "button") == []  # the script makes its Copy button
    qr_url = re.search(r'href="([^"]+)" data-wechat-qr-choice="qr"', text).group(1)  # type: ignore[union-attr]
    shown = client.get(qr_url.replace("&amp;", "&"))
    assert shown.status_code == 302 and "/connect/qrconnect?" in shown.headers["Location"]


def test_the_qr_page_a_phone_asked_for_falls_back_to_wechats_qr_page(app: Flask) -> None:
    """"Show the QR code anyway" of the embedded QR page: its fallback link ("No QR code
    above?") led back to the phone page, in a circle (found on a phone)."""
    client = in_wechat(app, SAFARI_PHONE)
    page = client.get("/auth/wechat/qr", query_string={"show_qr": "1", "next": "/account"})
    assert page.status_code == 200 and "<iframe" in page.get_data(as_text=True)
    fallback = re.search(r'<a href="(/auth/wechat/login\?[^"]+)"', page.get_data(as_text=True))
    assert fallback, page.get_data(as_text=True)
    shown = client.get(fallback.group(1).replace("&amp;", "&"))
    assert shown.status_code == 302 and "/connect/qrconnect?" in shown.headers["Location"]


def test_the_phone_page_can_be_turned_off(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_MOBILE_PAGE=False)
    resp = in_wechat(app, SAFARI_PHONE).get("/auth/wechat/login")
    assert resp.status_code == 302 and "/connect/qrconnect?" in resp.headers["Location"]


def test_the_phone_page_offers_the_sites_other_logins(make_app: t.Callable[..., Flask]
                                                      ) -> None:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_OTHER_LOGIN_URL="/login/password")
    text = in_wechat(app, SAFARI_PHONE).get("/auth/wechat/login").get_data(as_text=True)
    assert 'href="/login/password" data-wechat-qr-choice="other"' in text
    # with the login's next, as Flask-Login's login_url gives it (found on a phone: the
    # site's own login then ended on "/", not on the page the person was going to)
    text = in_wechat(app, SAFARI_PHONE).get(
        "/auth/wechat/login", query_string={"next": "/account?tab=1"}).get_data(as_text=True)
    assert ('href="/login/password?next=%2Faccount%3Ftab%3D1" data-wechat-qr-choice="other"'
            in text)


def test_the_phone_page_never_offers_wechats_own_login_as_another_way(
        make_app: t.Callable[..., Flask]) -> None:
    """A site whose only login is WeChat names it as Flask-Login's ``login_view``: "log in
    another way" would lead back to this very page."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    app.login_manager.login_view = "wechat_qr.login"  # type: ignore[attr-defined]
    resp = in_wechat(app, SAFARI_PHONE).get("/auth/wechat/login")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'data-wechat-qr-page="phone"' in text
    assert 'data-wechat-qr-choice="other"' not in text


def test_without_an_official_account_wechat_on_a_phone_is_told_to_use_a_computer(
        make_app: t.Callable[..., Flask]) -> None:
    app = make_app()  # real-looking credentials, no Official Account
    resp = in_wechat(app).get("/auth/wechat/login", headers={"Accept-Language": "en"})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "cannot log you in inside WeChat yet" in text
    # WeChat on a computer scans with the phone: the QR code, as before.
    desktop = in_wechat(app, WECHAT_WINDOWS).get("/auth/wechat/login")
    assert desktop.status_code == 302 and "/connect/qrconnect?" in desktop.headers["Location"]


def test_the_verify_file_is_served_at_the_root(app: Flask) -> None:
    resp = app.test_client().get("/MP_verify_Sandbox42.txt")
    assert resp.status_code == 200 and resp.get_data(as_text=True) == "Sandbox42"
    assert resp.mimetype == "text/plain"
    assert app.test_client().get("/MP_verify_Other.txt").status_code == 404


# --- review of issue 16: repeats, ID tokens, linking, the phone page, the verify file --------


def _silent_app(make_app: t.Callable[..., Flask], **config: t.Any) -> Flask:
    return make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                    WECHAT_QR_OA_SCOPE="snsapi_base", **config)


def _local(url: str) -> str:
    return url.removeprefix("http://localhost").split("#")[0]


def test_wechats_double_redirect_of_a_silent_login_still_asks_for_the_profile(
        make_app: t.Callable[..., Flask]) -> None:
    """WeChat's second redirect (the cookie from before the first answer) of a silent login
    of someone new goes on to ask for the profile too, keeping ``next``: the browser shows
    that one, not a "no longer valid" page."""
    from support import browser_copy

    app = _silent_app(make_app)
    client = in_wechat(app)
    location = authorize_location(client, next="/account")
    consent = client.post(_local(location), data={"action": "allow", "person": "lisi"})
    callback = _local(consent.headers["Location"])
    twin = browser_copy(app, client)
    twin.environ_base["HTTP_USER_AGENT"] = WECHAT_PHONE
    first = client.get(callback)
    second = twin.get(callback)
    for resp in (first, second):
        assert resp.status_code == 302, resp.get_data(as_text=True)
        assert parse_qs(urlsplit(resp.headers["Location"]).query)["scope"] == [
            "snsapi_userinfo"]
    consent = twin.post(_local(second.headers["Location"]),
                        data={"action": "allow", "person": "lisi"})
    done = twin.get(_local(consent.headers["Location"]))
    assert lands_on(done) == "/account"
    [user] = all_users(app)
    assert logged_in_user_id(twin) == str(user.id)


def test_a_reloaded_callback_posts_the_same_id_token_after_a_login_in_wechat(
        make_app: t.Callable[..., Flask]) -> None:
    """One login, one token: the reload of the callback page of an in-WeChat login posts
    the token of that login (its Official Account openid), not one naming the website
    application's openid of the same user."""
    from support import BUSINESS_URL, form_post

    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_CALLBACK_URL=BUSINESS_URL,
                   WECHAT_QR_ID_TOKEN_SECRET="a-shared-secret-of-32-bytes-or-more!")
    log_in_by_qr(app)  # zhangsan's website identity comes first
    client = in_wechat(app)
    location = authorize_location(client, state="biz")
    consent = client.post(_local(location), data={"action": "allow", "person": "zhangsan"})
    callback = _local(consent.headers["Location"])
    first = form_post(client.get(callback))["fields"]
    again = form_post(client.get(callback))["fields"]
    assert again == first


def test_linking_inside_wechat_a_wechat_that_is_someone_elses_is_refused(app: Flask) -> None:
    """zhangsan's WeChat logs in (QR) to one account: linking the same WeChat, by its
    Official Account openid, to another account is refused, as linking its website openid
    would be. Otherwise the person's two apps would log in to two accounts."""
    from support import add_user, error_name, log_in

    log_in_by_qr(app, "zhangsan")
    other = add_user(app, password="secret-pass", username="other")
    client = in_wechat(app)
    log_in(client, other)
    page = log_in_inside_wechat(client, "zhangsan", path="/auth/wechat/link")
    assert page.status_code == 409 and error_name(page) == "AlreadyLinked"
    assert [i.app for i in all_identities(app)] == ["website"]


def test_linking_inside_wechat_another_persons_wechat_is_refused(app: Flask) -> None:
    """One WeChat account per connection per user: an account whose WeChat is xiaohua's
    (by QR) cannot link lisi's WeChat by the Official Account."""
    from support import error_name, log_in

    log_in_by_qr(app, "xiaohua")
    [user] = all_users(app)
    client = in_wechat(app)
    log_in(client, user.id)
    page = log_in_inside_wechat(client, "lisi", path="/auth/wechat/link")
    assert page.status_code == 409 and error_name(page) == "ConnectionAlreadyLinked"
    assert len(all_identities(app)) == 1
    # The same person's WeChat links fine.
    done = log_in_inside_wechat(client, "xiaohua", path="/auth/wechat/link")
    assert lands_on(done) == "/" and len(all_identities(app)) == 2


def test_the_phone_page_of_a_link_never_offers_a_login_link(app: Flask) -> None:
    """Linking on a phone: "open this page in WeChat" must not hand over a login URL (in
    WeChat's browser, without this account's session, it would log in to, or make, another
    account); it offers the page the link was for."""
    from support import add_user, log_in

    user = add_user(app, password="secret-pass", username="someone")
    app.login_manager.login_view = "index"  # type: ignore[attr-defined]  # the site's own login
    login_page = in_wechat(app, SAFARI_PHONE).get("/auth/wechat/login").get_data(as_text=True)
    assert 'data-wechat-qr-choice="other"' in login_page  # offered to someone logging in
    client = in_wechat(app, SAFARI_PHONE)
    log_in(client, user)
    text = client.get("/auth/wechat/link", query_string={"next": "/account"}).get_data(
        as_text=True)
    assert 'data-wechat-qr-page="phone"' in text
    page_url = re.search(r'id="wechat-qr-page-url"[^>]*value="([^"]+)"', text).group(1)  # type: ignore[union-attr]
    assert page_url == "http://localhost/account"
    # A page for someone logged in who links (before: "Log in with WeChat", "This page's
    # link" over the account page's link, and "Log in another way").
    assert "<h1>Link WeChat to your account</h1>" in text
    assert "The link to open in WeChat" in text and 'data-wechat-qr-choice="other"' not in text
    # and it says to log in there the usual way first (found on a phone: "Log in with
    # WeChat" there made a second account)
    assert "Log in to your account there the way you usually do, not with WeChat" in text


def test_two_connections_cannot_serve_two_verify_files_of_one_name(
        make_app: t.Callable[..., Flask]) -> None:
    from support import two_connections

    from flask_wechat_qr import ConfigurationError

    config = two_connections()
    config["WECHAT_QR_CONNECTIONS"][0]["oa_verify_file"] = "MP_verify_Same1.txt=first"
    config["WECHAT_QR_CONNECTIONS"][1]["oa_verify_file"] = "MP_verify_Same1.txt=second"
    with pytest.raises(ConfigurationError, match="oa_verify_file"):
        make_app(**config)


def test_the_phone_pages_script_carries_a_hosts_csp_nonce(app: Flask) -> None:
    """As the QR page's: under a host's nonce-based policy the copy button works."""
    app.jinja_env.globals["csp_nonce"] = lambda: "n0nce-123"
    html = in_wechat(app, SAFARI_PHONE).get("/auth/wechat/login").get_data(as_text=True)
    assert '<script nonce="n0nce-123">' in html


def test_the_id_token_of_a_login_in_wechat_says_its_openid_is_the_official_accounts(
        make_app: t.Callable[..., Flask]) -> None:
    """A receiver keeping the openid (to message the person, say) must know which app it
    belongs to: openids are per app."""
    import base64
    import json

    from support import BUSINESS_URL, form_post

    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_CALLBACK_URL=BUSINESS_URL,
                   WECHAT_QR_ID_TOKEN_SECRET="a-shared-secret-of-32-bytes-or-more!")

    def wechat_claim(resp: t.Any) -> dict[str, t.Any]:
        payload = form_post(resp)["fields"]["id_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return t.cast("dict[str, t.Any]", claims["wechat"])

    in_app = wechat_claim(log_in_inside_wechat(in_wechat(app)))
    _client, by_qr = log_in_by_qr(app)
    website = wechat_claim(by_qr)
    openids = {i.app: i.openid for i in all_identities(app)}
    assert in_app["app"] == "official_account"
    assert in_app["openid"] == openids["official_account"]
    assert "app" not in website and website["openid"] == openids["website"]


def test_wechat_asked_for_the_profile_and_sharing_none_ends_the_login(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """A silent token again after asking with snsapi_userinfo: a page, not a redirect loop."""
    app = make_app(WECHAT_QR_OA_APP_ID="wxfedcba9876543210", WECHAT_QR_OA_APP_SECRET="s",
                   WECHAT_QR_OA_SCOPE="snsapi_base")
    client = in_wechat(app)
    state = parse_qs(urlsplit(authorize_location(client)).query)["state"][0]
    wechat_api.token(scope="snsapi_base", unionid=None)
    asked = client.get("/auth/wechat/callback", query_string={"code": "c1", "state": state})
    assert asked.status_code == 302
    again = parse_qs(urlsplit(asked.headers["Location"]).query)
    assert again["scope"] == ["snsapi_userinfo"]
    wechat_api.token(scope="snsapi_base", unionid=None)
    page = client.get("/auth/wechat/callback",
                      query_string={"code": "c2", "state": again["state"][0]})
    assert page.status_code == 403
    assert 'data-error="ProfileNotShared"' in page.get_data(as_text=True)
    assert all_users(app) == [] and all_identities(app) == []


def _silent_login_and_a_copy(make_app: t.Callable[..., Flask]) -> tuple[Flask, t.Any, t.Any, str]:
    """A site asking WeChat silently first, a browser inside WeChat that started a login,
    a copy of its cookie from before the callback, and the login's state."""
    app = make_app(WECHAT_QR_OA_APP_ID="wxfedcba9876543210", WECHAT_QR_OA_APP_SECRET="s",
                   WECHAT_QR_OA_SCOPE="snsapi_base")
    client = in_wechat(app)
    state = parse_qs(urlsplit(authorize_location(client)).query)["state"][0]
    replay = browser_copy(app, client)
    replay.environ_base["HTTP_USER_AGENT"] = WECHAT_PHONE
    return app, client, replay, state


def test_a_silent_login_repeated_late_is_no_longer_valid(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, clock: Clock) -> None:
    """Someone new, asked silently: the first callback goes on to ask for the profile; its
    cookie replayed past the repeat window with a second code is "no longer valid", not a
    second trip to ask for the profile."""
    app, client, replay, state = _silent_login_and_a_copy(make_app)
    wechat_api.token(scope="snsapi_base", unionid=None)
    first = client.get("/auth/wechat/callback", query_string={"code": "c1", "state": state})
    assert parse_qs(urlsplit(first.headers["Location"]).query)["scope"] == ["snsapi_userinfo"]
    clock.advance(PAST_THE_REPEAT_WINDOW)
    late = replay.get("/auth/wechat/callback", query_string={"code": "c2", "state": state})
    assert late.status_code == 400 and 'data-error="StateError"' in late.get_data(as_text=True)
    assert all_users(app) == []


def test_a_failed_silent_login_is_not_taken_on_by_a_second_code(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """A failure uses the state too: after the first callback failed at WeChat, WeChat's
    second redirect with a good silent code does not go on to ask for the profile."""
    app, client, replay, state = _silent_login_and_a_copy(make_app)
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    assert client.get("/auth/wechat/callback",
                      query_string={"code": "bad", "state": state}).status_code == 400
    wechat_api.mock.reset()
    wechat_api.token(scope="snsapi_base", unionid=None)
    second = replay.get("/auth/wechat/callback", query_string={"code": "c2", "state": state})
    assert second.status_code == 400
    assert 'data-error="StateError"' in second.get_data(as_text=True)
    assert all_users(app) == []


def test_the_phone_page_of_a_business_login_offers_no_link_that_cannot_end_here(
        make_app: t.Callable[..., Flask]) -> None:
    """A login for a business callback URL ends where it started: the receiver checks the
    business's ``state`` against what it kept in that browser. The phone page's copied
    link, opened in WeChat's browser or a computer's, logged in (made an account even) and
    posted the token there, where the receiver refused it ("not started here"), and the
    browser that started never heard (found driving the example's /business/ on a phone).
    Nor is the site's own login a way on: it never posts a token. What works stays: the
    QR code, with the business's state and nonce, for another phone to scan."""
    from support import BUSINESS_URL

    business = {"WECHAT_QR_CALLBACK_URL": BUSINESS_URL,
                "WECHAT_QR_ID_TOKEN_SECRET": "a-shared-secret-of-32-bytes-or-more!",
                "WECHAT_QR_OTHER_LOGIN_URL": "/login/password"}
    with_oa = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None,
                       WECHAT_QR_APP_SECRET=None, **business)
    without_oa = make_app(**business)  # real-looking credentials, no Official Account
    for app, agent in ((with_oa, SAFARI_PHONE), (without_oa, SAFARI_PHONE),
                       (without_oa, WECHAT_PHONE)):
        client = in_wechat(app, agent)
        resp = client.get("/auth/wechat/login", query_string={"state": "biz", "nonce": "n1"},
                          headers={"Accept-Language": "en"})
        text = resp.get_data(as_text=True)
        assert resp.status_code == 200 and 'data-wechat-qr-page="phone"' in text, agent
        assert 'id="wechat-qr-page-url"' not in text and "Copy link" not in text, agent
        assert 'data-wechat-qr-choice="other"' not in text, agent
        assert "must end in this browser" in text, agent
        qr_url = re.search(r'href="([^"]+)"[^>]* data-wechat-qr-choice="qr"', text).group(1)  # type: ignore[union-attr]
        assert parse_qs(urlsplit(qr_url.replace("&amp;", "&")).query) == {
            "state": ["biz"], "nonce": ["n1"], "show_qr": ["1"]}, agent
        shown = client.get(qr_url.replace("&amp;", "&"))
        assert shown.status_code == 302 and "/connect/qrconnect?" in shown.headers["Location"]
        chinese = in_wechat(app, agent).get(
            "/auth/wechat/login", query_string={"state": "biz"},
            headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
        assert "必须在此浏览器中完成" in chinese and "must end" not in chinese, agent


@pytest.mark.parametrize("errcode,errmsg,title", [
    (40163, "code been used", "本次微信授权已被使用"),
    (40029, "invalid code", "微信授权已过期"),
    (41008, "missing code", "微信没有返回授权信息"),
])
def test_inside_wechat_a_code_error_asks_for_no_qr_code(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, errcode: int, errmsg: str,
        title: str) -> None:
    """Inside WeChat on a phone there is no QR code to scan: these pages said "scan the QR
    code again" (a helper's hunt, session 34). They say to tap "Try again", which starts
    the login again there; on a computer they still speak of the QR code. (A used code's
    first page waits for another request of the login, and says nothing of QR codes either;
    its words come once that has had its time.)"""
    import time
    from urllib.parse import parse_qs, urlsplit

    from support import error_name, finishing_page

    app = make_app(WECHAT_QR_OA_APP_ID="wxfedcba9876543210", WECHAT_QR_OA_APP_SECRET="s",
                   WECHAT_QR_CODE_USED_WAIT=0, WECHAT_QR_HTTP_TIMEOUT=0.1)

    def callback_page(client: t.Any, code: str, state: str) -> t.Any:
        page = client.get("/auth/wechat/callback", query_string={"code": code, "state": state})
        if errcode == 40163:
            text = page.get_data(as_text=True)
            assert finishing_page(page) and "二维码" not in text and "扫" not in text, text
            time.sleep(0.35)  # the other request's time (3 x 0.1 s) is over
            page = client.get(page.headers["Refresh"].partition("url=")[2])
        return page

    phone = in_wechat(app)
    phone.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    state = parse_qs(urlsplit(authorize_location(phone, next="/account")).query)["state"][0]
    wechat_api.error(TOKEN_PATH, errcode, errmsg)
    page = callback_page(phone, "c1", state)
    text = page.get_data(as_text=True)
    assert page.status_code == 400 and error_name(page)
    assert title in text and "请点击“重试”重新登录" in text
    assert "二维码" not in text and "扫" not in text
    computer = app.test_client()
    computer.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    state = parse_qs(urlsplit(authorize_location(computer)).query)["state"][0]
    wechat_api.error(TOKEN_PATH, errcode, errmsg)
    text = callback_page(computer, "c2", state).get_data(as_text=True)
    assert "扫" in text
