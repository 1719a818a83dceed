"""Secrets stay secret: every flow, with every logger at DEBUG, and the AppSecret, the
authorization codes, the access tokens and the refresh tokens never appear in a log record,
a page, a response header (Location and the decoded session cookie included) or an error's
text. Also the session cookie's attributes and ``Cache-Control: no-store``.

The only place an authorization code may show is where WeChat itself puts it: the redirect
to the callback (here: the sandbox's poll answer, which the QR page follows). That is the
browser's business, not a leak.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import traceback
import typing as t
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import flask
import pytest
import requests
import responses
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from support import (
    ACCESS_TOKEN,
    API,
    APP_SECRET,
    CODE,
    OPENID,
    REFRESH_TOKEN,
    SANDBOX_APP_ID,
    SANDBOX_APP_SECRET,
    TOKEN_PATH,
    UNIONID,
    USERINFO_PATH,
    Database,
    FakeWeChat,
    LiveServer,
    add_user,
    answer,
    closed_port,
    csrf_token_of,
    finish_login,
    free_port,
    link_identity,
    log_in,
    logged_in_user_id,
    open_qr_page,
    poll,
    with_csrf_token_route,
)
from support import SANDBOX_PREFIX as SBX

from flask_wechat_qr import signals
from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app

LOGGERS = ("", "urllib3", "werkzeug", "flask_wechat_qr")


# --- the witness: everything a secret could leak into ------------------------------------


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Witness:
    """Log records (a root handler at DEBUG, after the loggers' own filters, as a host's
    handler gets them), every response of every recording client, every error a login
    ended with, and any other text (a subprocess's output)."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.responses: list[tuple[str, t.Any]] = []  # (what, response)
        self.errors: list[BaseException] = []
        self.other: list[tuple[str, str]] = []
        self.secrets: dict[str, str] = {}  # value -> what it is
        self.apps: list[Flask] = []
        self.receivers: list[tuple[t.Any, t.Any]] = []

    def secret(self, what: str, value: str | None) -> None:
        assert value, what
        self.secrets[value] = what

    def watch(self, app: Flask) -> Flask:
        """Record ``app``'s responses (its test clients) and the errors logins end with."""
        witness = self

        class RecordingClient(FlaskClient):
            def open(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
                resp = super().open(*args, **kwargs)
                witness.responses.append(
                    (f"{resp.request.method} {resp.request.path}", resp))
                return resp

        app.test_client_class = RecordingClient

        def failed(sender: t.Any, error: BaseException, **kwargs: t.Any) -> None:
            self.errors.append(error)

        def crashed(sender: t.Any, exception: BaseException, **kwargs: t.Any) -> None:
            self.errors.append(exception)

        signals.login_failed.connect(failed, sender=app, weak=False)
        flask.got_request_exception.connect(crashed, sender=app, weak=False)
        self.receivers += [(signals.login_failed, failed), (flask.got_request_exception, crashed)]
        self.apps.append(app)
        return app

    def record_http(self, what: str, resp: requests.Response) -> None:
        """A page fetched over real HTTP (the standalone sandbox's pages)."""
        self.other.append((f"{what} body", resp.content.decode("utf-8", "replace")))
        self.other.extend((f"{what} header {name}", value) for name, value in resp.headers.items())

    def texts(self) -> t.Iterator[tuple[str, str]]:
        """``(where, text)`` of everything seen."""
        formatter = logging.Formatter()
        for record in self.records:
            where = f"log record of {record.name!r}"
            yield where, record.getMessage()
            yield where, str(record.args)
            yield where, str(record.msg)
            if record.exc_info:
                yield where, formatter.formatException(record.exc_info)
            if record.stack_info:
                yield where, record.stack_info
        for what, resp in self.responses:
            yield f"{what} body", resp.get_data().decode("utf-8", "replace")
            for name, value in resp.headers.items():
                yield f"{what} header {name}", value
                if name.lower() == "set-cookie":
                    yield f"{what} session cookie", self._decoded_session(value)
        for error in self.errors:
            yield f"error {type(error).__name__}", str(error)
            yield f"error {type(error).__name__}", repr(error)
            yield f"error {type(error).__name__}", "".join(traceback.format_exception(error))
        yield from self.other

    def _decoded_session(self, set_cookie: str) -> str:
        name, _, rest = set_cookie.partition("=")
        value = rest.split(";", 1)[0]
        for app in self.apps:
            if name == app.config["SESSION_COOKIE_NAME"] and value:
                serializer = app.session_interface.get_signing_serializer(app)  # type: ignore
                return json.dumps(serializer.loads(value), ensure_ascii=False)
        return ""

    def assert_no_secret_anywhere(self) -> None:
        assert self.secrets, "nothing to look for"
        for where, text in self.texts():
            for value, what in self.secrets.items():
                if what == "authorization code" and where.startswith(_CODE_MAY_SHOW):
                    continue  # WeChat's own redirect to the callback
                assert value not in text, f"the {what} leaked into the {where}: {text[:500]!r}"

    def assert_session_cookies_are_guarded(self) -> None:
        """Every session cookie set: HttpOnly and SameSite=Lax (plain http: not Secure)."""
        seen = 0
        for _what, resp in self.responses:
            for value in resp.headers.getlist("Set-Cookie"):
                if value.startswith("session="):
                    seen += 1
                    assert "; HttpOnly" in value and "; SameSite=Lax" in value, value
        assert seen

    def assert_login_pages_are_not_stored(self) -> None:
        for what, resp in self.responses:
            if what.split(" ", 1)[1].startswith("/auth/"):
                assert resp.headers.get("Cache-Control") == "no-store", what


#: Where WeChat itself hands the browser the code: the sandbox's poll answer (the QR page
#: follows its ``redirect``).
_CODE_MAY_SHOW = (f"GET {SBX}/connect/l/qrconnect body", "sandbox poll body")


@pytest.fixture
def witness(caplog: pytest.LogCaptureFixture) -> t.Iterator[Witness]:
    witness = Witness()
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    keep = _Keep(witness.records)
    logging.getLogger().addHandler(keep)
    try:
        yield witness
    finally:
        logging.getLogger().removeHandler(keep)
        for signal, receiver in witness.receivers:
            signal.disconnect(receiver)


def known_secrets(witness: Witness) -> None:
    witness.secret("AppSecret", APP_SECRET)
    witness.secret("authorization code", CODE)
    witness.secret("access token", ACCESS_TOKEN)
    witness.secret("refresh token", REFRESH_TOKEN)


def state_of(resp: t.Any) -> str:
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return parse_qs(urlsplit(resp.headers["Location"]).query)["state"][0]


# --- flows against WeChat's API (mocked with its real answer shapes) ----------------------


def test_a_successful_login_leaks_nothing(make_app: t.Callable[..., Flask], wechat_api: t.Any,
                                          witness: Witness) -> None:
    known_secrets(witness)
    app = witness.watch(make_app())
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    state = state_of(client.get("/auth/wechat/login", query_string={"next": "/account"}))
    resp = finish_login(client, state)
    assert (resp.status_code, resp.headers["Location"]) == (302, "/account")
    assert client.get("/").get_data(as_text=True).startswith("logged in as 1")
    client.get("/auth/wechat/qr")
    witness.assert_no_secret_anywhere()
    witness.assert_session_cookies_are_guarded()
    witness.assert_login_pages_are_not_stored()


@pytest.mark.parametrize("stage", ["token", "userinfo"])
@pytest.mark.parametrize(("errcode", "errmsg"), [
    (40029, "invalid code"),
    (40163, "code been used"),
    (40125, "invalid appsecret, view more at http://t.cn/RAEkdVq"),
    (-1, "system error"),
    (45011, "api minute-quota reach limit mustslower retry next minute"),
])
def test_every_wechat_error_page_leaks_nothing(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, witness: Witness, stage: str,
        errcode: int, errmsg: str) -> None:
    known_secrets(witness)
    app = witness.watch(make_app(WECHAT_QR_HTTP_TIMEOUT=0.1))
    client = app.test_client()
    if stage == "token":
        wechat_api.error(TOKEN_PATH, errcode, errmsg)
    else:
        wechat_api.token()
        wechat_api.error(USERINFO_PATH, errcode, errmsg)
    resp = finish_login(client, state_of(client.get("/auth/wechat/login")))
    if stage == "token" and errcode == 40163:
        # First the page that waits for another request of the login (test_flow), then,
        # its time over (3 x 0.1 s), the "already used" page; neither leaks.
        assert resp.status_code == 200 and "Refresh" in resp.headers
        time.sleep(0.35)
        resp = client.get(resp.headers["Refresh"].partition("url=")[2])
    assert 400 <= resp.status_code < 600 and resp.status_code != 500
    assert f'data-errcode="{errcode}"' in resp.get_data(as_text=True)
    assert witness.errors and logged_in_user_id(client) is None
    assert any(r.name == "flask_wechat_qr" for r in witness.records)  # the capture works
    witness.assert_no_secret_anywhere()
    witness.assert_login_pages_are_not_stored()


def test_a_timeout_leaks_nothing_even_when_the_error_names_the_url(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, witness: Witness) -> None:
    """``requests`` puts the whole URL (AppSecret and code in its query) into the message
    of its connection errors; that text must go nowhere."""
    known_secrets(witness)
    app = witness.watch(make_app())
    client = app.test_client()

    def time_out(request: t.Any) -> t.Any:
        path = request.url.split("api.weixin.qq.com", 1)[1]
        raise requests.ConnectTimeout(
            "HTTPSConnectionPool(host='api.weixin.qq.com', port=443): Max retries exceeded "
            f"with url: {path} (Caused by ConnectTimeoutError(..., 'Connection to "
            "api.weixin.qq.com timed out. (connect timeout=5.0)'))")

    wechat_api.mock.add_callback(responses.GET, API + TOKEN_PATH, callback=time_out)
    resp = finish_login(client, state_of(client.get("/auth/wechat/login")))
    assert resp.status_code == 504
    assert any(APP_SECRET in str(error.__context__) for error in witness.errors), \
        "the test should have put the secret into the transport error"
    witness.assert_no_secret_anywhere()


@pytest.mark.parametrize("answer", ["timeout naming the URL", "errcode", "garbage"])
def test_a_background_profile_refresh_leaks_nothing(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, witness: Witness,
        answer: str) -> None:
    """A returning person's stale profile is read in a background thread with the login's
    access token (docs/association.rst); however WeChat answers, the token goes nowhere."""
    known_secrets(witness)
    app = witness.watch(make_app(WECHAT_QR_PROFILE_REFRESH_AFTER=7 * 24 * 3600))
    wechat_api.token()
    wechat_api.userinfo()
    first = app.test_client()
    assert finish_login(first, state_of(first.get("/auth/wechat/login"))).status_code == 302
    with app.app_context():
        app.db.session.execute(sa.text(  # type: ignore[attr-defined]
            "UPDATE wechat_qr_identity SET profile_refreshed_at = :t, created_at = :t"),
            {"t": datetime.now(UTC) - timedelta(days=8)})
        app.db.session.commit()  # type: ignore[attr-defined]
    wechat_api.mock.reset()
    wechat_api.token()
    if answer == "errcode":
        wechat_api.error(USERINFO_PATH, 40001, "invalid credential, access_token is invalid")
    elif answer == "garbage":
        wechat_api.raw(USERINFO_PATH, b"<html>" + ACCESS_TOKEN.encode() + b"</html>",
                       content_type="text/html")
    else:
        def time_out(request: t.Any) -> t.Any:
            raise requests.ReadTimeout(f"Read timed out: {request.url}")

        wechat_api.mock.add_callback(responses.GET, API + USERINFO_PATH, callback=time_out)
    client = app.test_client()
    resp = finish_login(client, state_of(client.get("/auth/wechat/login")))
    assert resp.status_code == 302
    assert app.extensions["wechat_qr"].refresher.wait(10)
    assert [urlsplit(c.request.url).path for c in wechat_api.mock.calls] == \
        [TOKEN_PATH, USERINFO_PATH]
    assert any("profile refresh of identity" in r.getMessage() for r in witness.records)
    witness.assert_no_secret_anywhere()


def test_a_cancelled_login_leaks_nothing(make_app: t.Callable[..., Flask], wechat_api: t.Any,
                                         witness: Witness) -> None:
    known_secrets(witness)
    app = witness.watch(make_app())
    client = app.test_client()
    state = state_of(client.get("/auth/wechat/login"))
    resp = client.get("/auth/wechat/callback", query_string={"state": state})
    assert resp.status_code == 200 and "cancelled" in resp.get_data(as_text=True)
    assert list(wechat_api.mock.calls) == []
    witness.assert_no_secret_anywhere()
    witness.assert_login_pages_are_not_stored()


@pytest.mark.parametrize("choice", ["create", "bind"])
def test_ask_binding_leaks_nothing(make_app: t.Callable[..., Flask], wechat_api: t.Any,
                                   witness: Witness, choice: str) -> None:
    known_secrets(witness)
    app = witness.watch(with_csrf_token_route(make_app(WECHAT_QR_ASSOCIATION="ask_binding")))
    add_user(app, username="alice", password="correct horse")
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state_of(client.get("/auth/wechat/login")))
    assert resp.headers["Location"] == "/auth/bind"
    assert client.get("/auth/bind").status_code == 200
    token = csrf_token_of(client)
    if choice == "create":
        resp = client.post("/auth/bind", data={"csrf_token": token, "action": "create"})
    else:
        wrong = client.post("/auth/bind", data={
            "csrf_token": token, "action": "bind", "username": "alice", "password": "guess"})
        assert wrong.status_code == 400 and "Wrong username or password" in wrong.get_data(
            as_text=True)
        resp = client.post("/auth/bind", data={
            "csrf_token": token, "action": "bind", "username": "alice",
            "password": "correct horse"})
    assert resp.status_code == 302
    assert logged_in_user_id(client) is not None
    witness.assert_no_secret_anywhere()
    witness.assert_session_cookies_are_guarded()
    witness.assert_login_pages_are_not_stored()


def test_link_and_unlink_leak_nothing(make_app: t.Callable[..., Flask], wechat_api: t.Any,
                                      witness: Witness) -> None:
    known_secrets(witness)
    second_code = "061Zx2Ga1wHdFQ0N8DGa1qXbXe2Zx2GY"
    witness.secret("authorization code", second_code)
    app = witness.watch(with_csrf_token_route(make_app()))
    user_id = add_user(app, username="alice", password="correct horse")
    client = app.test_client()
    log_in(client, user_id)
    wechat_api.token()
    wechat_api.userinfo()
    state = state_of(client.get("/auth/wechat/link", query_string={"next": "/account"}))
    resp = finish_login(client, state, code=second_code)
    assert (resp.status_code, resp.headers["Location"]) == (302, "/account")
    token = csrf_token_of(client)
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": token, "next": "/account"})
    assert (resp.status_code, resp.headers["Location"]) == (302, "/account")
    witness.assert_no_secret_anywhere()
    witness.assert_login_pages_are_not_stored()


# --- over real sockets: urllib3 and the servers' access logs at DEBUG ----------------------


@pytest.mark.parametrize("fault", ["timeout", "refused"])
def test_real_timeouts_and_refusals_leak_nothing(
        make_app: t.Callable[..., Flask], witness: Witness, fault: str) -> None:
    """Real urllib3 (it logs URLs at DEBUG; its errors carry them) and a real server access
    log (the slow server's, which gets the URL with the AppSecret)."""
    known_secrets(witness)

    def run(api_base: str) -> t.Any:
        app = witness.watch(make_app(WECHAT_QR_API_BASE_URL=api_base,
                                     WECHAT_QR_HTTP_TIMEOUT=0.5))
        client = app.test_client()
        return finish_login(client, state_of(client.get("/auth/wechat/login")))

    if fault == "timeout":
        with FakeWeChat("slow") as wechat:
            resp = run(wechat.url)
        assert resp.status_code == 504
        access_log = [r.getMessage() for r in witness.records if r.name == "werkzeug"]
        assert any("secret=[redacted]" in line for line in access_log), access_log
    else:
        with closed_port() as port:
            resp = run(f"http://127.0.0.1:{port}")
        assert resp.status_code == 502
    urllib3_log = [r.getMessage() for r in witness.records if r.name.startswith("urllib3")]
    assert urllib3_log, "urllib3 logged nothing at DEBUG"
    witness.assert_no_secret_anywhere()


# --- the sandbox -----------------------------------------------------------------------


def _sandbox_tokens(db_or_url: t.Any) -> list[tuple[str, str]]:
    engine = sa.create_engine(db_or_url) if isinstance(db_or_url, str) else db_or_url
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(
                "SELECT access_token, refresh_token FROM wechat_qr_sandbox_token"))]
    finally:
        if isinstance(db_or_url, str):
            engine.dispose()


def test_a_sandbox_login_in_process_leaks_nothing(make_app: t.Callable[..., Flask],
                                                  witness: Witness) -> None:
    secret = "sandbox-secret-never-to-be-shown"
    witness.secret("AppSecret", secret)
    app = witness.watch(make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID="wxsandboxsecrets01",
                                 WECHAT_QR_APP_SECRET=secret))
    client, phone = app.test_client(), app.test_client()
    uuid, _state = open_qr_page(client)
    answer(phone, uuid, action="allow", person="zhangsan")
    redirect = poll(client, uuid)
    code = parse_qs(urlsplit(redirect["redirect"]).query)["code"][0]
    witness.secret("authorization code", code)
    resp = client.get(redirect["redirect"].split("localhost", 1)[1])
    assert resp.status_code == 302
    assert logged_in_user_id(client) is not None
    with app.app_context():
        tokens = _sandbox_tokens(app.db.engine)  # type: ignore[attr-defined]
    assert tokens
    for access, refresh in tokens:
        witness.secret("access token", access)
        witness.secret("refresh token", refresh)
    witness.assert_no_secret_anywhere()
    witness.assert_session_cookies_are_guarded()
    witness.assert_login_pages_are_not_stored()


def _log_in_through(witness: t.Any, make_app: t.Any, base: str, app_id: str,
                    secret: str) -> None:
    """A whole login of a watched app against the sandbox at ``base``, over real HTTP; the
    code WeChat sends joins the secrets the witness looks for."""
    app = witness.watch(make_app(WECHAT_QR_APP_ID=app_id, WECHAT_QR_APP_SECRET=secret,
                                 WECHAT_QR_OPEN_BASE_URL=base, WECHAT_QR_API_BASE_URL=base))
    client = app.test_client()
    with requests.Session() as http:
        redirect = _answer_over_http(http, witness, base,
                                     client.get("/auth/wechat/login").headers["Location"])
    witness.secret("authorization code", parse_qs(urlsplit(redirect).query)["code"][0])
    assert client.get(redirect.split("localhost", 1)[1]).status_code == 302
    assert logged_in_user_id(client) is not None


def _answer_over_http(http: requests.Session, witness: Witness, base: str,
                      location: str) -> str:
    """The QR page, the phone's Allow and the poll, over real HTTP; the callback URL."""
    page = http.get(location.split("#")[0], timeout=10)
    witness.record_http("sandbox QR page", page)
    uuid = re.search(r'data-uuid="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    witness.record_http("sandbox phone page", http.get(f"{base}/connect/confirm/{uuid}",
                                                       timeout=10))
    witness.record_http("sandbox phone answer", http.post(
        f"{base}/connect/confirm/{uuid}", data={"action": "allow", "person": "xiaohua"},
        timeout=10))
    poll = http.get(f"{base}/connect/l/qrconnect", params={"uuid": uuid}, timeout=10)
    witness.other.append(("sandbox poll body", poll.text))
    return str(poll.json()["redirect"])


def test_the_standalone_sandbox_over_real_http_leaks_nothing(
        make_app: t.Callable[..., Flask], database: Database, witness: Witness) -> None:
    secret = "standalone-secret-never-to-be-shown"
    witness.secret("AppSecret", secret)
    sandbox = create_sandbox_app(
        [SandboxApp("wxstandalone000001", secret, "Standalone", "localhost")],
        database_uri=database.url("sandbox"))
    with LiveServer(sandbox) as server:
        base = server.url
        _log_in_through(witness, make_app, base, "wxstandalone000001", secret)
        with sandbox.app_context():
            tokens = _sandbox_tokens(sandbox.extensions["sqlalchemy"].engine)
    assert tokens, "the sandbox issued no token"
    for access, refresh in tokens:
        witness.secret("access token", access)
        witness.secret("refresh token", refresh)
    assert any(r.name.startswith("urllib3") for r in witness.records)
    assert any(r.name == "werkzeug" for r in witness.records), "no access log captured"
    witness.assert_no_secret_anywhere()


def test_the_sandbox_run_as_its_own_process_logs_no_secret(
        make_app: t.Callable[..., Flask], tmp_path: t.Any, witness: Witness) -> None:
    """``python -m flask_wechat_qr.sandbox``: its access log gets every API URL, with the
    AppSecret, the code and the tokens in their queries. Nothing of this process redacts
    that log for it."""
    secret = "subprocess-secret-never-to-be-shown"
    witness.secret("AppSecret", secret)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database_url = f"sqlite:///{tmp_path / 'sandbox-process.db'}"
    output = tmp_path / "sandbox-process.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "flask_wechat_qr.sandbox", "--port", str(port),
             "--app-id", "wxsubprocess000001", "--app-secret", secret,
             "--callback-domain", "localhost", "--database", database_url],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        _log_in_through(witness, make_app, base, "wxsubprocess000001", secret)
    finally:
        process.terminate()
        process.wait(timeout=10)
    tokens = _sandbox_tokens(database_url)
    assert tokens, "the sandbox issued no token"
    for access, refresh in tokens:
        witness.secret("access token", access)
        witness.secret("refresh token", refresh)
    log = output.read_text(encoding="utf-8", errors="replace")
    assert f"GET {TOKEN_PATH}?" in log, log  # its access log was written
    witness.other.append(("sandbox process output", log))
    witness.assert_no_secret_anywhere()


# --- the session cookie -------------------------------------------------------------------


def _session_cookie(resp: t.Any) -> str:
    (cookie,) = [value for value in resp.headers.getlist("Set-Cookie")
                 if value.startswith("session=")]
    return str(cookie)


def test_the_session_cookie_is_httponly_and_samesite_lax_by_default(
        make_app: t.Callable[..., Flask]) -> None:
    """The login's state lives in the session: Lax keeps the cookie on WeChat's top-level
    redirect back to the callback and off cross-site POSTs (bind, unlink)."""
    app = make_app()
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    cookie = _session_cookie(app.test_client().get("/auth/wechat/login"))
    assert "; HttpOnly" in cookie and "; SameSite=Lax" in cookie
    assert "; Secure" not in cookie  # plain http: a Secure cookie would never come back


@pytest.mark.parametrize("choice", ["Strict", "None"])
def test_a_host_samesite_choice_is_kept(make_app: t.Callable[..., Flask], choice: str) -> None:
    app = make_app(SESSION_COOKIE_SAMESITE=choice, SESSION_COOKIE_SECURE=choice == "None")
    resp = app.test_client().get("/auth/wechat/login", base_url="https://localhost")
    assert f"; SameSite={choice}" in _session_cookie(resp)


def test_the_session_cookie_is_secure_on_https_with_session_cookie_secure(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """An https site sets ``SESSION_COOKIE_SECURE = True`` (the README says so): every
    session cookie of the login, the renewed one after it included, is then Secure."""
    app = make_app(SESSION_COOKIE_SECURE=True, PREFERRED_URL_SCHEME="https")
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    resp = client.get("/auth/wechat/login", base_url="https://localhost")
    cookie = _session_cookie(resp)
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "; SameSite=Lax" in cookie
    assert "redirect_uri=https%3A%2F%2Flocalhost%2Fauth%2Fwechat%2Fcallback" in \
        resp.headers["Location"]
    resp = client.get("/auth/wechat/callback", base_url="https://localhost",
                      query_string={"code": CODE, "state": state_of(resp)})
    assert resp.status_code == 302
    cookie = _session_cookie(resp)
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "; SameSite=Lax" in cookie


def test_the_session_cookie_is_secure_on_https_without_configuration(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """Secure whenever the request came over https (ProxyFix tells Flask behind a proxy),
    even with ``SESSION_COOKIE_SECURE`` left at False; plain http stays usable."""
    app = make_app()
    assert app.config["SESSION_COOKIE_SECURE"] is False
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    resp = client.get("/auth/wechat/login", base_url="https://localhost")
    assert "; Secure" in _session_cookie(resp)
    resp = client.get("/auth/wechat/callback", base_url="https://localhost",
                      query_string={"code": CODE, "state": state_of(resp)})
    assert resp.status_code == 302 and "; Secure" in _session_cookie(resp)
    plain = app.test_client().get("/auth/wechat/login")
    assert "; Secure" not in _session_cookie(plain)


# --- Cache-Control: no-store on every page of the blueprint --------------------------------


def test_every_page_of_the_blueprint_is_no_store(make_app: t.Callable[..., Flask],
                                                 wechat_api: t.Any) -> None:
    app = with_csrf_token_route(make_app(WECHAT_QR_ASSOCIATION="ask_binding"))
    user_id = add_user(app, username="alice", password="correct horse")
    pages: list[tuple[str, t.Any]] = []

    def page(what: str, resp: t.Any) -> t.Any:
        pages.append((what, resp))
        return resp

    visitor = app.test_client()
    page("login", visitor.get("/auth/wechat/login", query_string={"next": "/a"}))
    page("qr page", visitor.get("/auth/wechat/qr"))
    page("unknown connection", visitor.get("/auth/nope/login"))
    page("oversized next", visitor.get("/auth/wechat/login", query_string={"next": "/" * 3000}))
    page("undecodable query", visitor.get("/auth/wechat/login",
                                          environ_overrides={"QUERY_STRING": "next=\xff"}))
    page("callback without state", visitor.get("/auth/wechat/callback"))
    state = state_of(visitor.get("/auth/wechat/login"))
    page("cancelled", visitor.get("/auth/wechat/callback", query_string={"state": state}))
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    page("WeChat error", finish_login(visitor, state_of(visitor.get("/auth/wechat/login"))))
    page("bind without a pending binding", visitor.get("/auth/bind"))
    page("link logged out", visitor.get("/auth/wechat/link"))
    page("unlink logged out", visitor.post("/auth/wechat/unlink"))

    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.userinfo()
    binder = app.test_client()
    page("callback to bind", finish_login(binder, state_of(binder.get("/auth/wechat/login"))))
    page("bind page", binder.get("/auth/bind"))
    token = csrf_token_of(binder)
    page("bind, bad CSRF", binder.post("/auth/bind", data={"action": "bind"}))
    page("bind, wrong password", binder.post("/auth/bind", data={
        "csrf_token": token, "action": "bind", "username": "alice", "password": "x"}))
    page("bind, no choice", binder.post("/auth/bind", data={"csrf_token": token}))
    page("bind, right password", binder.post("/auth/bind", data={
        "csrf_token": token, "action": "bind", "username": "alice",
        "password": "correct horse"}))

    member = app.test_client()
    log_in(member, user_id)
    page("link", member.get("/auth/wechat/link"))
    token = csrf_token_of(member)
    page("unlink, bad CSRF", member.post("/auth/wechat/unlink", data={"csrf_token": "x"}))
    page("unlink", member.post("/auth/wechat/unlink", data={"csrf_token": token}))
    page("unlink, not linked", member.post("/auth/wechat/unlink", data={"csrf_token": token}))
    other = add_user(app, username="bob")  # no password: WeChat is his only way in
    link_identity(app, other, openid=OPENID + "b", unionid=UNIONID + "b")
    lonely = app.test_client()
    log_in(lonely, other)
    token = csrf_token_of(lonely)
    page("unlink, last way in", lonely.post("/auth/wechat/unlink", data={"csrf_token": token}))

    wechat_api.mock.reset()
    wechat_api.token(openid=OPENID + "c", unionid=UNIONID + "c")
    wechat_api.userinfo(openid=OPENID + "c", unionid=UNIONID + "c")
    framed = app.test_client()
    log_in(framed, add_user(app, username="carol", password="pw"))
    state = state_of(framed.get("/auth/wechat/link"))
    page("break-out page", framed.get("/auth/wechat/callback", headers={
        "Sec-Fetch-Dest": "iframe"}, query_string={"code": CODE, "state": state}))

    statuses = {what: resp.status_code for what, resp in pages}
    assert set(statuses.values()) == {200, 302, 400, 401, 404, 409}, statuses
    assert all(status < 500 for status in statuses.values()), statuses
    assert {what: resp.headers.get("Cache-Control") for what, resp in pages} == {
        what: "no-store" for what, _ in pages}


def test_sandbox_answers_carrying_codes_and_tokens_are_no_store(
        make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    client = app.test_client()
    location = client.get("/auth/wechat/login").headers["Location"]
    qr_page = client.get(location.split("localhost", 1)[1].split("#")[0])
    uuid = re.search(r'data-uuid="([^"]+)"', qr_page.get_data(as_text=True)).group(1)  # type: ignore
    answer(client, uuid, action="allow", person="zhangsan")
    polled = client.get(f"{SBX}/connect/l/qrconnect", query_string={"uuid": uuid})
    code = parse_qs(urlsplit(polled.json["redirect"]).query)["code"][0]
    token = client.get(f"{SBX}{TOKEN_PATH}", query_string={
        "appid": SANDBOX_APP_ID, "secret": SANDBOX_APP_SECRET, "code": code,
        "grant_type": "authorization_code"})
    access = json.loads(token.data)
    refreshed = client.get(f"{SBX}/sns/oauth2/refresh_token", query_string={
        "appid": SANDBOX_APP_ID, "grant_type": "refresh_token",
        "refresh_token": access["refresh_token"]})
    for what, resp in [("QR page", qr_page), ("poll", polled), ("token", token),
                       ("refresh", refreshed)]:
        assert resp.headers.get("Cache-Control") == "no-store", what
    image = client.get(f"{SBX}/connect/qrcode/{uuid}.svg")
    assert image.headers["Cache-Control"] == "private, max-age=300"  # an image: kept as is
