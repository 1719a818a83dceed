"""Hostile input, property-based (hypothesis): malformed, oversized, duplicated, non-UTF-8,
control-character and missing parameters at every route of the extension and of the
sandbox. Whatever arrives: never a 5xx, never a row written (beyond the login state a login
start is for), never a value reflected unescaped, and an oversized ``next`` or ``state`` is
refused before any work is done.

Requests are built raw (``QUERY_STRING``, ``PATH_INFO`` and form bodies as bytes), so what
the tests send is exactly what a hostile client can put on the wire, not what a well-behaved
client library would make of it. One app per test function; many requests per app.
"""

from __future__ import annotations

import json
import typing as t
from urllib.parse import (
    parse_qs,
    parse_qsl,
    quote,
    quote_from_bytes,
    unquote_to_bytes,
    urlsplit,
)

import pytest
import responses
import sqlalchemy as sa
import werkzeug.urls  # noqa: F401 - registers the "werkzeug.url_quote" codec error handler
from flask import Flask
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from support import (
    API,
    MAX_CODE_LENGTH,
    MAX_NEXT_LENGTH,
    MAX_STATE_LENGTH,
    OPEN,
    SANDBOX_APP_ID,
    SANDBOX_APP_SECRET,
    TOKEN_PATH,
    USERINFO_PATH,
    add_user,
    answer,
    csrf_token_of,
    link_identity,
    log_in,
    login_with_wechat,
    pending_rows,
    poll,
    rows,
    start_login,
    with_csrf_token_route,
)
from support import SANDBOX_PREFIX as SBX

from flask_wechat_qr import login_state

#: One app per test function, shared by its examples; no example database on disk. 30
#: drawn examples (besides the fixed @example ones) on each of the three databases: the
#: suite must stay inside ten minutes on two cores.
BOUNDED = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


#: Values that must never come back as markup.
MARKERS = (
    '<script>alert("wechat")</script>',
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
)
PAYLOADS = (
    *MARKERS, "", " ", "\x00", "\r\n", "\t", "\x1b[31m", "\x7f", "\u202e", "\ufeff", "\ufffd",
    "javascript:alert(1)", "//evil.example/", "/\\evil.example", "\\\\evil.example",
    "https://evil.example/", "/%2F%2Fevil.example", "/\r\nLocation: https://evil.example/",
    "%", "%zz", "&", "=", "+", "#", "?", "..", "/../../etc/passwd", "${jndi:ldap://x/a}",
    "' OR '1'='1' --", "NULL", "None", "[]", "{}", "0", "-1", "1e309", "张三🐼", "𝕨𝕖𝕔𝕙𝕒𝕥",
    "a" * 129, "/" + "a" * MAX_NEXT_LENGTH,
)
#: Percent sequences no UTF-8 decoder accepts, or that are not percent sequences at all.
BROKEN_ESCAPES = ("%ff%fe", "%ff", "%c3%28", "%e2%28%a1", "%f0%28%8c%bc", "%c0%af", "%ed%a0%80",
                  "%", "%f", "%zz", "%%", "%00", "%0d%0a", "%e2%80%ae", "%2f%2f", "+", "%20")


def _oversized(unit: str, count: int) -> str:
    return unit * count


#: A decoded value a hostile client might mean.
hostile_text = st.one_of(
    st.sampled_from(PAYLOADS),
    st.text(max_size=40),
    st.builds(lambda a, marker, b: a + marker + b, st.text(max_size=8), st.sampled_from(MARKERS),
              st.text(max_size=8)),
    st.builds(_oversized, st.sampled_from(["a", "/", "%", "<", "张", "🐼", "\x00", "/a"]),
              st.integers(10_000, 100_000)),
)


def on_the_wire(raw: bytes) -> str:
    """``raw`` as unencoded request-line bytes (a latin-1 str, as servers pass them on)."""
    return bytes(c for c in raw if 0x21 <= c <= 0x7E or c >= 0x80).decode("latin-1")


#: A raw query component (as it appears on the wire, a latin-1 str of the bytes).
component = st.one_of(
    hostile_text.map(lambda text: quote(text, safe="")),
    hostile_text.map(lambda text: quote(text, safe="/:")),
    st.binary(max_size=24).map(lambda raw: quote_from_bytes(raw, safe="")),
    st.sampled_from(BROKEN_ESCAPES),
    # Bytes sent as they are, not percent-encoded (curl and scripts can): any byte a
    # request line can carry (not controls or spaces: those end it or split it).
    st.binary(min_size=1, max_size=12).map(on_the_wire),
    st.text(max_size=12).map(lambda text: on_the_wire(text.encode("utf-8"))),
)

KEEP = "\x00keep\x00"  # stands for "the valid value", filled in at request time


@st.composite
def query_plan(draw: st.DrawFn, fields: t.Sequence[str]) -> list[tuple[str, str | None]]:
    """A mutation of a valid query: each field kept, made hostile, dropped, sent twice (in
    either order) or sent bare; plus random extra parameters; maybe shuffled."""
    plan: list[tuple[str, str | None]] = []
    for name in fields:
        choice = draw(st.sampled_from(["keep", "keep", "hostile", "drop", "twice", "bare"]))
        if choice == "keep":
            plan.append((name, KEEP))
        elif choice == "hostile":
            plan.append((name, draw(component)))
        elif choice == "twice":
            first, second = draw(st.permutations([KEEP, draw(component)]))
            plan += [(name, first), (name, second)]
        elif choice == "bare":
            plan.append((name, None))
    extra_keys = st.one_of(st.sampled_from(list(fields) or ["x"]), component)
    plan += draw(st.lists(st.tuples(extra_keys, component), max_size=3))
    if draw(st.booleans()):
        plan = list(draw(st.permutations(plan)))
    return plan


def render_query(plan: t.Sequence[tuple[str, str | None]], valid: t.Mapping[str, str]) -> str:
    """The raw query string of a plan; ``KEEP`` becomes the field's valid value."""
    parts = []
    for key, value in plan:
        if value is None:
            parts.append(key)
            continue
        if value == KEEP:
            value = quote(valid[key], safe="")
        parts.append(f"{key}={value}")
    return "&".join(parts)


def server_args(raw: str) -> dict[str, list[str]] | None:
    """What Werkzeug makes of a raw query string or form body, or ``None`` if it cannot be
    decoded at all (its ``request.args`` would raise)."""
    try:
        text = raw.encode("latin-1").decode()
    except UnicodeDecodeError:
        return None
    found: dict[str, list[str]] = {}
    for key, value in parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote"):
        found.setdefault(key, []).append(value)
    return found


def first(args: dict[str, list[str]] | None, key: str) -> str | None:
    return (args or {}).get(key, [None])[0]


def send(client: t.Any, method: str, path_info: str, query: str = "",
         body: str | None = None, content_type: str | None = None) -> t.Any:
    """A request with exactly these raw bytes (latin-1 strs) as path, query and body."""
    kwargs: dict[str, t.Any] = {
        "environ_overrides": {"PATH_INFO": path_info, "QUERY_STRING": query},
    }
    if body is not None:
        kwargs["data"] = body.encode("latin-1")
        kwargs["content_type"] = content_type or "application/x-www-form-urlencoded"
    return client.open("/", method=method, **kwargs)


# --- what must hold after every request ------------------------------------------------


def row_counts(app: Flask) -> dict[str, int]:
    """Rows in every table of the app's database."""
    db = app.db  # type: ignore[attr-defined]
    with app.app_context(), db.engine.connect() as conn:
        return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table))
                .scalar_one() for table in db.metadata.sorted_tables}


class Watch:
    """Rows and WeChat calls before a request, to compare after it."""

    def __init__(self, app: Flask, api: t.Any = None) -> None:
        self.app = app
        self.api = api
        self.rows = row_counts(app)
        self.calls = len(api.mock.calls) if api is not None else 0

    def changed_tables(self) -> set[str]:
        after = row_counts(self.app)
        return {name for name, count in after.items() if count != self.rows.get(name)}

    def wechat_calls(self) -> list[t.Any]:
        return list(self.api.mock.calls)[self.calls:] if self.api is not None else []


def check(resp: t.Any, watch: Watch, *, may_change: t.Collection[str] = (),
          wechat_calls: int = 0) -> None:
    """Never a 5xx, never an unexpected row, never markup reflected, never an unasked call."""
    body = resp.get_data()
    event(f"HTTP {resp.status_code}")  # --hypothesis-show-statistics: what was reached
    assert resp.status_code < 500, body[:2000]
    for marker in MARKERS:
        assert marker.encode() not in body
        for name, value in resp.headers.items():
            assert marker not in value, (name, value[:200])
    lowered = body.lower()
    assert b'href="javascript:' not in lowered and b"src=\"javascript:" not in lowered
    location = resp.headers.get("Location")
    if location is not None:
        parts = urlsplit(location)
        assert not parts.netloc or location.startswith((OPEN, "http://localhost/")), location
    assert watch.changed_tables() <= set(may_change)
    assert len(watch.wechat_calls()) <= wechat_calls


def connection_segment() -> st.SearchStrategy[str]:
    """A ``<connection>`` path segment as a raw (latin-1) str: mostly the real one, so the
    views are reached, else odd names."""
    odd = st.one_of(
        st.sampled_from(["WeChat", "wechat ", " wechat", "wechat\x00", "wechat\n", "wechat-b",
                         "we%63hat", "..", ".", "a" * 300, "wechat;x=1", "\xff\xfe",
                         "wechat%2f..", "<script>", "微信".encode().decode("latin-1")]),
        component.map(lambda raw: unquote_to_bytes(raw).decode("latin-1")),
    )
    return st.integers(0, 3).flatmap(lambda n: odd if n == 0 else st.just("wechat"))


# --- fixtures: one app per test function, shared by its examples -----------------------------


@pytest.fixture
def site(make_app: t.Callable[..., Flask]) -> Flask:
    """The default site, with a user "alice" who has a password and no WeChat."""
    app = make_app()
    add_user(app, username="alice", password="correct horse")
    return app


def alice(app: Flask) -> int:
    with app.app_context():
        return int(app.db.session.execute(  # type: ignore[attr-defined]
            sa.select(app.User.id).where(app.User.username == "alice")  # type: ignore
        ).scalar_one())


# --- login and the embedded QR page --------------------------------------------------------


@BOUNDED
@example(route="login", segment="wechat", plan=[("next", "%00")])
@example(route="qr", segment="wechat\x00", plan=[("next", KEEP), ("next", "%ff%fe")])
@given(route=st.sampled_from(["login", "qr"]), segment=connection_segment(),
       plan=query_plan(["next"]))
def test_login_and_qr_pages_survive_hostile_queries(
        site: Flask, wechat_api: t.Any, route: str, segment: str,
        plan: list[tuple[str, str | None]]) -> None:
    query = render_query(plan, {"next": "/account?tab=1"})
    watch = Watch(site, wechat_api)
    resp = send(site.test_client(), "GET", f"/auth/{segment}/{route}", query)
    check(resp, watch, may_change={"wechat_qr_login_state"})
    next_value = first(server_args(query), "next")
    if segment == "wechat" and next_value is not None and len(next_value) > MAX_NEXT_LENGTH:
        assert resp.status_code == 400
        assert watch.changed_tables() == set()
    if resp.status_code == 302:
        assert resp.headers["Location"].startswith(OPEN + "/connect/qrconnect?appid=")


@BOUNDED
@given(route=st.sampled_from(["login", "qr", "link"]),
       length=st.integers(MAX_NEXT_LENGTH + 1, 100_000),
       unit=st.sampled_from(["a", "/", "/a", "张", "%", "<"]))
def test_an_oversized_next_is_refused_before_any_state_is_stored(
        site: Flask, wechat_api: t.Any, route: str, length: int, unit: str) -> None:
    client = site.test_client()
    log_in(client, alice(site))
    with client.session_transaction() as sess:
        before = set(sess)
    next_url = ("/" + unit * length)[:length]
    watch = Watch(site, wechat_api)
    resp = send(client, "GET", f"/auth/wechat/{route}", "next=" + quote(next_url, safe=""))
    assert resp.status_code == 400
    check(resp, watch)
    assert watch.changed_tables() == set()
    with client.session_transaction() as sess:
        assert set(sess) == before  # no login state was started


# --- the callback ----------------------------------------------------------------------------


@BOUNDED
@example(plan=[("code", KEEP), ("state", "%00")])
@example(plan=[("state", "%00%ff")])
@example(plan=[("code", KEEP), ("state", KEEP), ("state", "%00")])
@given(plan=query_plan(["code", "state"]))
def test_callback_without_a_valid_state_never_calls_wechat(
        site: Flask, wechat_api: t.Any, plan: list[tuple[str, str | None]]) -> None:
    """No state this browser started (at most another browser's): refused, WeChat not asked."""
    valid = {"code": "0816Ab000aBcdE1xYz3000xyz8z16AbQ", "state": start_login(site.test_client())}
    query = render_query(plan, valid)
    watch = Watch(site, wechat_api)
    resp = send(site.test_client(), "GET", "/auth/wechat/callback", query)
    check(resp, watch)
    assert resp.status_code == 400


@BOUNDED
@given(length=st.integers(MAX_STATE_LENGTH + 1, 100_000),
       unit=st.sampled_from(["a", "Z9", "%", "张"]), with_valid_prefix=st.booleans())
def test_an_oversized_state_is_refused_before_wechat_is_called(
        site: Flask, wechat_api: t.Any, length: int, unit: str, with_valid_prefix: bool) -> None:
    client = site.test_client()
    state = start_login(client)
    oversized = ((state if with_valid_prefix else "") + unit * length)[:length]
    wechat_api.token()
    watch = Watch(site, wechat_api)
    resp = send(client, "GET", "/auth/wechat/callback",
                "code=0816Ab000aBcdE1xYz3000xyz8z16AbQ&state=" + quote(oversized, safe=""))
    assert resp.status_code == 400
    check(resp, watch)
    assert watch.wechat_calls() == []


@BOUNDED
@given(length=st.integers(MAX_CODE_LENGTH + 1, 100_000),
       unit=st.sampled_from(["a", "0816Ab", "%", "张", "\x00"]))
def test_an_oversized_code_is_refused_before_wechat_is_called(
        site: Flask, wechat_refuses_codes: t.Any, length: int, unit: str) -> None:
    """WeChat's codes are 32 characters. Sent on, a huge one gets its front end's HTML 414,
    which would be a 502 "WeChat is not answering" page: refused here instead."""
    client = site.test_client()
    state = start_login(client)
    code = (unit * length)[:length]
    watch = Watch(site, wechat_refuses_codes)
    resp = send(client, "GET", "/auth/wechat/callback",
                f"code={quote(code, safe='')}&state={state}")
    check(resp, watch, may_change={"wechat_qr_login_state"})
    assert resp.status_code == 400
    assert watch.wechat_calls() == []


@pytest.fixture
def wechat_refuses_codes(wechat_api: t.Any) -> t.Any:
    """WeChat's token endpoint for codes it never issued: 40029; for a URL longer than its
    front end takes, an HTML 414 page (what nginx answers)."""

    def token_endpoint(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        if len(request.url) > 8192:
            return 414, {"Content-Type": "text/html"}, b"<html><body>414 Request-URI Too Large"
        body = '{"errcode":40029,"errmsg":"invalid code, rid: 6731d8f2-1b2c3d4e-5f6a7b8c"}'
        return 200, {"Content-Type": "text/plain"}, body.encode()

    wechat_api.mock.add_callback(responses.GET, API + TOKEN_PATH, callback=token_endpoint)
    return wechat_api


@BOUNDED
@example(plan=[("state", KEEP), ("code", "%00")])
@example(plan=[("state", "%00"), ("state", KEEP), ("code", KEEP)])
@given(plan=query_plan(["code", "state"]))
def test_callback_with_a_valid_state_survives_a_hostile_code_and_extras(
        site: Flask, wechat_refuses_codes: t.Any, plan: list[tuple[str, str | None]]) -> None:
    """The state is this browser's: the code, whatever it is, may go to WeChat, which refuses
    it; the person gets a 4xx page (or "cancelled") and nothing is stored."""
    client = site.test_client()
    valid = {"code": "0816Ab000aBcdE1xYz3000xyz8z16AbQ", "state": start_login(client)}
    query = render_query(plan, valid)
    watch = Watch(site, wechat_refuses_codes)
    resp = send(client, "GET", "/auth/wechat/callback", query)
    check(resp, watch, may_change={"wechat_qr_login_state"}, wechat_calls=1)
    paths = [urlsplit(call.request.url).path for call in watch.wechat_calls()]
    assert paths in ([], [TOKEN_PATH])
    code = first(server_args(query), "code")
    if code is not None and len(code) > MAX_CODE_LENGTH:
        assert paths == [], "an absurd code is refused before WeChat is asked"
    with client.session_transaction() as sess:
        assert "_user_id" not in sess


# --- ask binding ---------------------------------------------------------------------------


CONTENT_TYPES = ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded",
                 "application/x-www-form-urlencoded; charset=latin-1", "multipart/form-data",
                 "multipart/form-data; boundary=x", "text/plain", "application/json")


class Binding(t.NamedTuple):
    app: Flask
    waiting: t.Any  # a browser with a pending binding
    token: str  # its CSRF token
    stranger: t.Any  # a browser with none


@pytest.fixture
def binding(make_app: t.Callable[..., Flask], wechat_api: t.Any) -> Binding:
    app = with_csrf_token_route(make_app(WECHAT_QR_ASSOCIATION="ask_binding",
                                         WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=1_000_000,
                                         WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=1_000_000,
                                         WECHAT_QR_BIND_ATTEMPTS_PER_ACCOUNT=1_000_000))
    add_user(app, username="alice", password="correct horse")
    waiting = app.test_client()
    assert login_with_wechat(waiting, wechat_api).headers["Location"] == "/auth/bind"
    wechat_api.mock.reset()
    return Binding(app, waiting, csrf_token_of(waiting), app.test_client())


def pending_used(app: Flask) -> list[bool]:
    return [row.used for row in pending_rows(app)]


@BOUNDED
@example(method="POST", waiting=True, in_body=True, content_type=CONTENT_TYPES[0],
         plan=[("csrf_token", KEEP), ("action", KEEP), ("username", "alice%00"),
               ("password", KEEP)])
@example(method="POST", waiting=True, in_body=True, content_type=CONTENT_TYPES[0],
         plan=[("csrf_token", KEEP), ("action", KEEP), ("username", KEEP),
               ("password", "%00")])
@example(method="POST", waiting=True, in_body=True, content_type=CONTENT_TYPES[0],
         plan=[("csrf_token", "%00"), ("action", KEEP)])
@given(method=st.sampled_from(["GET", "POST", "POST", "POST"]), waiting=st.booleans(),
       in_body=st.booleans(), content_type=st.sampled_from(CONTENT_TYPES),
       plan=query_plan(["csrf_token", "action", "username", "password"]))
def test_bind_survives_hostile_forms(
        binding: Binding, wechat_api: t.Any, method: str, waiting: bool, in_body: bool,
        content_type: str, plan: list[tuple[str, str | None]]) -> None:
    client = binding.waiting if waiting else binding.stranger
    valid = {"csrf_token": binding.token, "action": "bind", "username": "alice",
             "password": "not the password"}
    raw = render_query(plan, valid)
    # "Create a new account" writes a user: that is the form working, not hostile input.
    assume(first(server_args(raw), "action") != "create")
    watch = Watch(binding.app, wechat_api)
    if method == "POST" and in_body:
        resp = send(client, "POST", "/auth/bind", body=raw, content_type=content_type)
    else:
        resp = send(client, method, "/auth/bind", raw)
    check(resp, watch, may_change={"wechat_qr_bind_attempt"})
    assert resp.status_code in (200, 400, 413)
    if b"Wrong username or password." in resp.get_data():
        event("reached the password check")
    assert pending_used(binding.app) == [False]
    with client.session_transaction() as sess:
        assert "_user_id" not in sess


@BOUNDED
@example(username="alice%00", password="x", extra=[])
@example(username="%00", password="%00", extra=[("username", "alice")])
@given(username=component, password=component,
       extra=st.lists(st.tuples(st.sampled_from(["username", "password", "action", "x"]),
                                component), max_size=2))
def test_the_password_check_survives_hostile_credentials(
        binding: Binding, wechat_api: t.Any, username: str, password: str,
        extra: list[tuple[str, str]]) -> None:
    """A real form (this session's CSRF token, action=bind) with hostile credentials:
    a wrong-password page, one failed attempt counted, nothing else."""
    raw = render_query([("csrf_token", KEEP), ("action", KEEP), ("username", username),
                        ("password", password), *extra],
                       {"csrf_token": binding.token, "action": "bind"})
    watch = Watch(binding.app, wechat_api)
    resp = send(binding.waiting, "POST", "/auth/bind", body=raw)
    check(resp, watch, may_change={"wechat_qr_bind_attempt"})
    if server_args(raw) is not None and resp.status_code != 413:  # 413: over Flask's limit
        assert resp.status_code == 400
        assert b"Wrong username or password." in resp.get_data()
    assert pending_used(binding.app) == [False]


# --- link and unlink -------------------------------------------------------------------


@BOUNDED
@given(segment=connection_segment(), plan=query_plan(["next"]), logged_in=st.booleans())
def test_link_survives_hostile_queries(
        site: Flask, wechat_api: t.Any, segment: str, plan: list[tuple[str, str | None]],
        logged_in: bool) -> None:
    client = site.test_client()
    if logged_in:
        log_in(client, alice(site))
    query = render_query(plan, {"next": "/account"})
    watch = Watch(site, wechat_api)
    resp = send(client, "GET", f"/auth/{segment}/link", query)
    check(resp, watch, may_change={"wechat_qr_login_state"} if logged_in else ())
    if segment == "wechat" and not logged_in and server_args(query) is not None:
        assert resp.status_code == 401


class Linked(t.NamedTuple):
    app: Flask
    client: t.Any  # logged in as alice, who has a password and a linked WeChat
    token: str


@pytest.fixture
def linked(make_app: t.Callable[..., Flask]) -> Linked:
    app = with_csrf_token_route(make_app())
    user_id = add_user(app, username="alice", password="correct horse")
    link_identity(app, user_id)
    client = app.test_client()
    log_in(client, user_id)
    return Linked(app, client, csrf_token_of(client))


@BOUNDED
@example(segment="wechat", in_body=True, content_type=CONTENT_TYPES[0],
         plan=[("csrf_token", "%00"), ("next", "%00")])
@given(segment=connection_segment(), in_body=st.booleans(),
       content_type=st.sampled_from(CONTENT_TYPES), plan=query_plan(["csrf_token", "next"]))
def test_unlink_survives_hostile_forms(
        linked: Linked, wechat_api: t.Any, segment: str, in_body: bool, content_type: str,
        plan: list[tuple[str, str | None]]) -> None:
    """Never this session's CSRF token (that would be a real unlink): nothing changes."""
    raw = render_query(plan, {"csrf_token": "forged-" + linked.token[::-1], "next": "/account"})
    watch = Watch(linked.app, wechat_api)
    if in_body:
        resp = send(linked.client, "POST", f"/auth/{segment}/unlink", body=raw,
                    content_type=content_type)
    else:
        resp = send(linked.client, "POST", f"/auth/{segment}/unlink", raw)
    check(resp, watch)
    # 308: Werkzeug's canonical URL for a path with doubled slashes.
    assert resp.status_code in (308, 400, 404, 405, 413)


def test_an_oversized_unlink_form_to_an_unknown_connection_is_no_500(linked: Linked) -> None:
    """A form past Werkzeug's form memory limit, posted to an unknown connection's unlink:
    the 404 page looked for the form's ``next`` and Werkzeug's 413 escaped it, a 500
    (found by the property test above, session 40). The page goes without it."""
    watch = Watch(linked.app)
    body = "next=" + "%F0%9F%90%BC" * 60_000  # 720 KB: over Werkzeug's 500 KB
    resp = linked.client.post("/auth/WeChat/unlink", data=body,
                              content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 404, resp.status_code
    resp = linked.client.post("/auth/WeChat/unlink", data=b"--x\r\nContent-Disposition: "
                              b"form-data; name=\"next\"\r\n\r\n" + b"C" * 600_000,
                              content_type="multipart/form-data; boundary=x")
    assert resp.status_code == 404, resp.status_code
    assert watch.changed_tables() == set()


def test_unlink_with_an_oversized_next_unlinks_nothing(linked: Linked) -> None:
    """Refused early: not "unlinked, then told the request was invalid"."""
    watch = Watch(linked.app)
    resp = linked.client.post("/auth/wechat/unlink", data={
        "csrf_token": linked.token, "next": "/" + "a" * MAX_NEXT_LENGTH})
    assert resp.status_code == 400
    assert watch.changed_tables() == set()
    # The same form with a sane next does unlink (the token was right).
    resp = linked.client.post("/auth/wechat/unlink", data={"csrf_token": linked.token,
                                                           "next": "/account"})
    assert (resp.status_code, resp.headers["Location"]) == (302, "/account")
    assert watch.changed_tables() == {"wechat_qr_identity"}


# --- the sandbox -----------------------------------------------------------------------


def qr_uuid(client: t.Any, location: str) -> str:
    page = client.get(location.split("localhost", 1)[1].split("#")[0])
    assert page.status_code == 200
    return str(page.get_data(as_text=True).split('data-uuid="', 1)[1].split('"', 1)[0])


class Sandbox(t.NamedTuple):
    app: Flask
    client: t.Any
    qrconnect: dict[str, str]  # a valid QR page query
    uuid: str  # a QR code waiting
    access_token: str
    openid: str


@pytest.fixture
def sandbox(make_app: t.Callable[..., Flask]) -> Sandbox:
    """A sandbox app with one QR code waiting and one access token issued."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    client = app.test_client()
    location = client.get("/auth/wechat/login").headers["Location"]
    qrconnect = dict(parse_qsl(urlsplit(location).query))
    uuid = qr_uuid(client, location)
    other = qr_uuid(client, client.get("/auth/wechat/login").headers["Location"])
    answer(client, other, action="allow", person="zhangsan")
    redirect = poll(client, other)
    code = parse_qs(urlsplit(redirect["redirect"]).query)["code"][0]
    token = json.loads(client.get(f"{SBX}{TOKEN_PATH}", query_string={
        "appid": SANDBOX_APP_ID, "secret": SANDBOX_APP_SECRET, "code": code,
        "grant_type": "authorization_code"}).data)
    return Sandbox(app, client, qrconnect, uuid, token["access_token"], token["openid"])


SANDBOX_ROUTES = {
    # route: (method, fields in their valid order)
    "/connect/qrconnect": ("GET", ["appid", "redirect_uri", "response_type", "scope", "state",
                                   "login_type", "self_redirect", "style"]),
    "/connect/l/qrconnect": ("GET", ["uuid"]),
    "/connect/confirm/<uuid>": ("GET", ["x"]),
    "/connect/confirm/<bad-uuid>": ("POST", ["action", "person", "nickname"]),
    "/connect/qrcode/<uuid>.svg": ("GET", ["x"]),
    TOKEN_PATH: ("GET", ["appid", "secret", "code", "grant_type"]),
    "/sns/oauth2/refresh_token": ("GET", ["appid", "grant_type", "refresh_token"]),
    USERINFO_PATH: ("GET", ["access_token", "openid", "lang"]),
    "/sns/auth": ("GET", ["access_token", "openid"]),
}


@st.composite
def sandbox_requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str | None]], str]:
    route = draw(st.sampled_from(sorted(SANDBOX_ROUTES)))
    method, fields = SANDBOX_ROUTES[route]
    segment = draw(st.one_of(st.just(KEEP), connection_segment()))
    return route, method, draw(query_plan(fields)), segment


@BOUNDED
@example(request=("/connect/qrconnect", "GET", [
    ("appid", KEEP), ("redirect_uri", KEEP), ("response_type", KEEP), ("scope", KEEP),
    ("state", "s" * 300)], KEEP), in_body=False)
@example(request=("/connect/qrconnect", "GET", [
    ("appid", KEEP), ("redirect_uri", "http%3A%2F%2Flocalhost%2Fcb%00"), ("response_type", KEEP),
    ("scope", KEEP), ("state", "%00")], KEEP), in_body=False)
@example(request=("/connect/l/qrconnect", "GET", [("uuid", "%00")], KEEP), in_body=False)
@example(request=("/connect/confirm/<uuid>", "GET", [], "\x00"), in_body=False)
@example(request=("/connect/confirm/<bad-uuid>", "POST", [("action", "allow")], "\x00"),
         in_body=True)
@example(request=("/connect/qrcode/<uuid>.svg", "GET", [], "\x00"), in_body=False)
@example(request=(TOKEN_PATH, "GET", [("appid", KEEP), ("secret", KEEP), ("code", "%00"),
                                      ("grant_type", KEEP)], KEEP), in_body=False)
@example(request=(TOKEN_PATH, "GET", [("appid", KEEP), ("secret", "%00"), ("code", KEEP),
                                      ("grant_type", KEEP)], KEEP), in_body=False)
@example(request=("/sns/oauth2/refresh_token", "GET", [
    ("appid", KEEP), ("grant_type", KEEP), ("refresh_token", "%00")], KEEP), in_body=False)
@example(request=(USERINFO_PATH, "GET", [("access_token", "%00"), ("openid", KEEP)], KEEP),
         in_body=False)
@example(request=("/sns/auth", "GET", [("access_token", KEEP), ("openid", "%00")], KEEP),
         in_body=False)
@given(request=sandbox_requests(), in_body=st.booleans())
def test_sandbox_survives_hostile_requests(sandbox: Sandbox, request: t.Any,
                                           in_body: bool) -> None:
    """Pages and API: never a 5xx, nothing stored but (at most) a QR code for a QR page."""
    route, method, plan, segment = request
    valid = {
        **sandbox.qrconnect, "login_type": "jssdk", "self_redirect": "true", "style": "white",
        "uuid": sandbox.uuid, "x": "1", "action": "deny", "person": "zhangsan", "nickname": "x",
        "secret": SANDBOX_APP_SECRET, "code": "0816Ab000aBcdE1xYz3000xyz8z16AbQ",
        "grant_type": "refresh_token" if "refresh" in route else "authorization_code",
        "refresh_token": "not-a-refresh-token", "access_token": sandbox.access_token,
        "openid": sandbox.openid, "lang": "zh_CN",
    }
    raw = render_query(plan, valid)
    if "<uuid>" in route:
        segment = sandbox.uuid if segment == KEEP else segment
    elif "<bad-uuid>" in route:
        # Never the waiting QR code's: an answer to it would (rightly) store a code.
        segment = "expired-" + (segment if segment != KEEP else "x")
    path = SBX + route.replace("<uuid>", segment).replace("<bad-uuid>", segment)
    watch = Watch(sandbox.app)
    if method == "POST" and in_body:
        resp = send(sandbox.client, "POST", path, body=raw)
    else:
        resp = send(sandbox.client, method, path, raw)
    check(resp, watch, may_change={"wechat_qr_sandbox_qr"})
    if route.startswith("/sns/") and resp.status_code == 200:
        answer = json.loads(resp.get_data())
        assert isinstance(answer, dict)


@BOUNDED
@example(plan=[("action", KEEP), ("person", KEEP), ("nickname", "x%00y")], look_first=True,
         content_type=CONTENT_TYPES[0])
@example(plan=[("action", KEEP), ("person", "%00"), ("nickname", KEEP)], look_first=False,
         content_type=CONTENT_TYPES[0])
@given(plan=query_plan(["action", "person", "nickname", "unionid"]), look_first=st.booleans(),
       content_type=st.sampled_from(CONTENT_TYPES))
def test_sandbox_phone_page_survives_hostile_answers(
        sandbox: Sandbox, plan: list[tuple[str, str | None]], look_first: bool,
        content_type: str) -> None:
    """A fresh QR code each time; the phone answers with anything. An "allow" stores a code
    (and a made-up person): that is the page working; nothing else is stored."""
    client = sandbox.client
    uuid = qr_uuid(client, client.get("/auth/wechat/login").headers["Location"])
    if look_first:
        client.get(f"{SBX}/connect/confirm/{uuid}")
    raw = render_query(plan, {"action": "allow", "person": "new", "nickname": "小明 <b>",
                              "unionid": "on"})
    watch = Watch(sandbox.app)
    resp = send(client, "POST", f"{SBX}/connect/confirm/{uuid}", body=raw,
                content_type=content_type)
    check(resp, watch, may_change={"wechat_qr_sandbox_qr", "wechat_qr_sandbox_code",
                                   "wechat_qr_sandbox_person"})
    assert b"<b>" not in resp.get_data()
    status = client.get(f"{SBX}/connect/l/qrconnect", query_string={"uuid": uuid})
    assert status.status_code == 200


# --- anonymous login starts cannot grow the database --------------------------------------


def _parked_rows(app: Flask) -> list[t.Any]:
    return [row for row in rows(app, "wechat_qr_login_state", order_by="key")
            if row.key.startswith("parked:")]


def test_hostile_login_starts_grow_the_database_by_little(make_app: t.Any) -> None:
    """Login starts with a long next (each parked ~4 KiB) from one address, as the audit's
    script sent them (it sent 1,500; ten times the per-address limit is enough to show the
    rest are the same): only a few are kept, the rest go on without their next and park
    nothing; the table grows by well under 100 KiB, and honest logins (short next, other
    addresses) go on."""
    app = make_app()
    # A script keeps no cookie: nothing of an earlier start is forgotten to make room.
    attacker = app.test_client(use_cookies=False)
    attacker.environ_base["REMOTE_ADDR"] = "198.51.100.66"
    long_next = "/search?q=" + "a" * 2000
    statuses = [attacker.get("/auth/wechat/login", query_string={"next": long_next}).status_code
                for _ in range(100)]
    assert statuses.count(302) == 100
    parked = _parked_rows(app)
    assert len(parked) == 10
    assert sum(len(row.key) + len(row.value) for row in parked) < 100 * 1024
    # Short next values park nothing, and other addresses are not held up.
    assert attacker.get("/auth/wechat/login", query_string={"next": "/a"}).status_code == 302
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "203.0.113.20"
    assert other.get("/auth/wechat/login", query_string={"next": long_next}).status_code == 302
    assert len(_parked_rows(app)) == 11


def test_with_every_place_for_long_logins_taken_a_login_goes_on_without_its_next(
        make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """About 1,000 networks' scripts (10 long logins each) fill the site's 10,000 places
    for logins with long data: every long login of the site, from anywhere, was then
    refused (429) for as long as the scripts kept starting them. It now goes on to the
    post-login page, without its next; only data that must come back (a business front
    end's long ``state``) is still refused."""
    monkeypatch.setattr(login_state, "MAX_PARKED_TOTAL", 3)
    long_next = "/search?q=" + "a" * 2000

    def filled(app: Flask) -> Flask:
        for network in range(3):
            script = app.test_client(use_cookies=False)
            script.environ_base["REMOTE_ADDR"] = f"198.51.100.{network + 1}"
            script.get("/auth/wechat/login", query_string={"next": long_next})
        assert len(_parked_rows(app)) == 3
        return app

    app = filled(make_app())
    person = app.test_client()
    person.environ_base["REMOTE_ADDR"] = "203.0.113.20"
    resp = login_with_wechat(person, wechat_api, next=long_next)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert person.get("/").get_data(as_text=True).startswith("logged in as")
    assert len(_parked_rows(app)) == 3

    business = filled(make_app(
        WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
        WECHAT_QR_ID_TOKEN_SECRET="k7V9mQ2xT4rW8yZ1bN6cF3hJ5pL0sD2gA9eU4iO7wR1t"))
    front_end = business.test_client()
    front_end.environ_base["REMOTE_ADDR"] = "203.0.113.20"
    refused = front_end.get("/auth/wechat/login", query_string={"state": "s" * 400})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "600"  # the state's TTL
    assert 'data-error="TooManyLoginsStarted"' in refused.get_data(as_text=True)
    assert len(_parked_rows(business)) == 3


def test_a_burst_of_long_login_starts_parks_no_more_than_the_limit(
        make_app: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of one address were counted before any of a burst was kept: 40 starts at
    once from one address parked up to 23 of the 10 allowed. Every start of a burst held
    at the count until the whole burst is there: none may be kept beyond the limit (the
    others go on without their next)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    limit, burst = 2, 6
    monkeypatch.setattr(login_state, "MAX_PARKED_PER_CLIENT", limit)
    app = make_app()
    arrived = threading.Condition()
    counting: set[int] = set()
    real_count = login_state.LoginStateStore._count

    def count_together(self: t.Any, conn: t.Any, prefix: str) -> int:
        with arrived:
            counting.add(threading.get_ident())
            arrived.notify_all()
            arrived.wait_for(lambda: len(counting) >= burst, timeout=2)
        return real_count(self, conn, prefix)

    monkeypatch.setattr(login_state.LoginStateStore, "_count", count_together)

    def start(_: int) -> int:
        client = app.test_client(use_cookies=False)
        client.environ_base["REMOTE_ADDR"] = "198.51.100.66"
        return client.get("/auth/wechat/login",
                          query_string={"next": "/search?q=" + "a" * 2000}).status_code

    with ThreadPoolExecutor(max_workers=burst) as pool:
        statuses = list(pool.map(start, range(burst), timeout=60))
    assert statuses == [302] * burst
    assert len(counting) == burst  # the whole burst reached the count together
    assert len(_parked_rows(app)) <= limit


def test_one_ipv6_client_is_one_client_whatever_its_address(make_app: t.Any) -> None:
    """An IPv6 client picks any address of its /64 at will: were each counted as a client,
    one script would fill the whole table (10,000 rows: 1,000 /64 addresses' worth) and
    refuse every long login of the site. Its /64 is one client; another /64, and IPv4
    written IPv4-mapped, are counted as before."""
    app = make_app()
    long_next = "/search?q=" + "a" * 2000

    def start(address: str) -> int:
        """How many more logins are parked after one from ``address``."""
        before = len(_parked_rows(app))
        client = app.test_client(use_cookies=False)
        client.environ_base["REMOTE_ADDR"] = address
        resp = client.get("/auth/wechat/login", query_string={"next": long_next})
        assert resp.status_code == 302
        return len(_parked_rows(app)) - before

    parked = [start(f"2001:db8:1:2:{n:x}::{n + 1:x}") for n in range(12)]
    assert parked == [1] * 10 + [0] * 2  # the last two went on without their next
    assert start("2001:db8:1:3::1") == 1
    assert [start("::ffff:198.51.100.8") for _ in range(10)] == [1] * 10
    assert start("198.51.100.8") == 0
    assert len(_parked_rows(app)) == 21


def test_the_extensions_pages_escape_whatever_the_sites_autoescape(
        make_app: t.Any, wechat_api: t.Any, pem: str) -> None:
    """A site that turned Jinja's ``autoescape`` off (after ``init_app``, as a site's own
    set-up does): the bind page showed a WeChat nickname, anyone's to choose, as HTML
    (stored XSS; a helper's hunt, session 34), and the page that posts the ID token a
    business front end's ``state`` as given. The extension's pages escape again; the site's
    own templates keep its choice."""
    from flask import render_template_string
    from support import arrive, ask_app, bind_page, callback_app, form_post

    script = '<img src=x onerror="alert(1)">'
    app = ask_app(make_app)
    app.jinja_env.autoescape = False
    client = app.test_client()
    arrive(client, wechat_api, nickname=script)
    html, _token = bind_page(client)
    assert script not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    with app.test_request_context():
        assert render_template_string("{{ x }}", x=script) == script  # the site's own

    business = callback_app(make_app, pem)
    business.jinja_env.autoescape = False
    state = '"><script>alert(1)</script>'
    posted = form_post(login_with_wechat(business.test_client(), wechat_api, state=state))
    assert posted["fields"]["state"] == state  # the field's value, as an HTML parser reads it
    page = login_with_wechat(business.test_client(), wechat_api, openid="another-openid",
                             state=state).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
