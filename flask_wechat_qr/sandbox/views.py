"""The simulated WeChat Open Platform: the QR pages a browser sees, the confirmation page
a phone sees, and the ``/sns/*`` API the extension calls, with WeChat's semantics (codes
single-use and valid 5 minutes, errors as HTTP 200 ``text/plain`` JSON). The Official
Account's web authorization page (inside WeChat) is in :mod:`.webauth`.

All state is in the database, so any worker process can answer any step.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import typing as t
import weakref
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import i18n
from ..browsers import classify
from ..i18n import LazyText
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..purge import BATCH_SIZE, delete_expired
from ..redact import redact_http_debug_logs
from ..storable import storable
from ..transactions import database_reason, end_reads, is_unreachable
from ..urls import hostname_of, is_loopback_host
from . import network
from .models import SandboxModels, add_missing_columns
from .qr import qr_svg
from .users import (
    PEOPLE,
    PEOPLE_BY_KEY,
    PLACEHOLDER_AVATAR,
    SandboxPerson,
    avatar_for,
    is_snapshot,
    openid_for,
    unionid_for,
)

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.engine import CursorResult

EXTENSION_KEY = "wechat_qr_sandbox"

log = logging.getLogger(__name__)
#: The views of WeChat's API (``/sns/*``), which answer in WeChat's JSON, errors too.
API_ENDPOINTS = frozenset({"access_token", "refresh_token", "userinfo", "auth_check"})
QR_TTL = 300
#: Statuses of a QR code nobody has answered yet.
OPEN_STATUSES = ("waiting", "scanned")
CODE_TTL = 300
ACCESS_TOKEN_TTL = 7200
REFRESH_TOKEN_TTL = 30 * 24 * 3600
#: How long the sandbox remembers that a person authorized an Official Account (WeChat keeps
#: it until the person revokes it; a month of development is plenty).
CONSENT_TTL = 30 * 24 * 3600
#: Seconds between two purges of expired rows by one process, and how long rows stay after
#: they expired (a page still open can say "expired" rather than "unknown").
PURGE_INTERVAL = 60
KEPT_AFTER_EXPIRY = 3600
REDIRECT_ORDER = ["appid", "redirect_uri", "response_type", "scope", "state"]
JSSDK_ORDER = ["appid", "scope", "redirect_uri", "state", "login_type"]
#: The kinds of application on the simulated Open Platform, and the scopes each may ask.
WEBSITE = "website"
OFFICIAL_ACCOUNT = "official_account"
SCOPES = {WEBSITE: ("snsapi_login",), OFFICIAL_ACCOUNT: ("snsapi_base", "snsapi_userinfo")}

blueprint = Blueprint("wechat_qr_sandbox", __name__, template_folder="../templates")
# Another site's pages, not the host's API: out of an APIFlask site's OpenAPI spec (see
# the extension's blueprint).
blueprint.enable_openapi = False  # type: ignore[attr-defined]
# The API takes the AppSecret, codes and tokens in query strings, which a server's access
# log writes out (``python -m flask_wechat_qr.sandbox`` included): mask them there.
blueprint.record_once(lambda _setup: redact_http_debug_logs())


@blueprint.url_value_preprocessor
def outside_the_hosts_protections(_endpoint: str | None, _values: t.Any) -> None:
    """The simulated WeChat stands for another site. Its forms (the phone's Allow, the fast
    login, an avatar change) carry no token of the host's: Flask-WTF's ``CSRFProtect``
    checks every POST of the app before any blueprint's own hook, and only its ``exempt``
    lets a blueprint out. Nor are its requests the site's traffic: Flask-Limiter's quick
    start (50 an hour per route and address) refused the QR page's once-a-second check
    after 50 seconds, and the login stopped there. URL value preprocessors run before both
    checks, whichever extension the host set up first."""
    extensions = current_app.extensions
    exempt = getattr(extensions.get("csrf"), "exempt", None)
    if callable(exempt):
        exempt(blueprint)
    for limiter in _flask_limiters(extensions.get("limiter")):
        _out_of_limits(limiter)


def _flask_limiters(found: t.Any) -> list[t.Any]:
    """Flask-Limiter's limiters of the app (version 3 and later keep a set of them under
    ``"limiter"``, earlier ones the limiter); another library's object under that name is
    left alone."""
    found = found if isinstance(found, (set, frozenset, list, tuple)) else [found]
    return [item for item in found
            if type(item).__module__.split(".", 1)[0] == "flask_limiter"]


#: The limiters the sandbox has looked at: each once (a limiter's own tables are not
#: written while other requests read them), under the lock.
_limiters_seen: weakref.WeakSet[t.Any] = weakref.WeakSet()
_limiters_lock = threading.Lock()


def _out_of_limits(limiter: t.Any) -> None:
    """Exempt the sandbox from ``limiter``, unless the host gave its blueprint limits or an
    exemption of its own (those stay as the host set them)."""
    with _limiters_lock:
        if limiter in _limiters_seen:
            return
        _limiters_seen.add(limiter)
        manager = getattr(limiter, "limit_manager", None)
        configured = (blueprint.name in (getattr(manager, "_blueprint_limits", None) or {})
                      or blueprint.name in (getattr(manager, "_blueprint_exemptions", None)
                                            or {}))
        if not configured:
            limiter.exempt(blueprint)


# WeChat's pages speak the language of WeChat's ``lang`` parameter (the QR page) or of the
# browser, never the host's choice: the sandbox stands for another site.
@blueprint.before_request
def choose_locale() -> None:
    i18n.set_request_locale(i18n.browser_locale() or i18n.default_locale())


i18n.register_template_globals(blueprint)


@blueprint.after_request
def no_store(response: Response) -> Response:
    """Its pages and answers carry QR ids, codes and tokens: no cache may keep them."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@dataclass(frozen=True)
class SandboxApp:
    """An application on the simulated Open Platform: a website application (QR login) or,
    with ``kind="official_account"``, an Official Account (服务号, web authorization inside
    WeChat). All belong to one Open Platform account: one person, one unionid."""

    app_id: str
    app_secret: str = field(repr=False)
    #: shown on its pages; a lazy text (a built-in default name) in each page's language
    name: str | LazyText
    #: the reviewed "authorization callback domain" (an Official Account's "web
    #: authorization domain"); ``None``: this site's own host
    callback_domain: str | None = None
    #: ``"website"`` or ``"official_account"``
    kind: str = WEBSITE

    def __post_init__(self) -> None:
        if self.kind not in SCOPES:
            raise ValueError(f"SandboxApp kind: {self.kind!r} is not one of {sorted(SCOPES)}")


@dataclass
class SandboxRuntime:
    db: SQLAlchemy
    models: SandboxModels
    apps: dict[str, SandboxApp]
    public_url: str | None = None
    #: the origin of the simulated image host in avatar URLs (reached in-process by the
    #: extension's downloader); ``None``: avatars are ``data:`` URIs
    image_origin: str | None = None
    #: when this process next deletes what has expired
    next_purge: float = 0.0
    #: whether this process has made sure the sandbox's tables exist
    tables_ready: bool = False
    #: a site of its own (:func:`~.mount.create_sandbox_app`), not mounted in a host app:
    #: its address for phones is its own ``--public-url``
    standalone: bool = False


def sandbox_runtime() -> SandboxRuntime:
    return t.cast(SandboxRuntime, current_app.extensions[EXTENSION_KEY])


def lookup_key(value: str | None) -> str:
    """A lookup key from the request; ``""`` (no row's) for one holding NUL, which
    PostgreSQL refuses in a query (a 500 instead of WeChat's "invalid" answer)."""
    return value if value and "\x00" not in value else ""


def _rid() -> str:
    return f"rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def wechat_json(payload: dict[str, t.Any]) -> Response:
    """What WeChat sends: UTF-8 JSON labelled ``text/plain`` with no charset, HTTP 200."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    response = Response(body, status=200)
    response.headers["Content-Type"] = "text/plain"
    return response


def wechat_error(errcode: int, errmsg: str) -> Response:
    return wechat_json({"errcode": errcode, "errmsg": f"{errmsg}, {_rid()}"})


# --- the pages a desktop browser sees -------------------------------------------------


def page_error(title: str, detail: str, errcode: int | None = None,
               status: int = 400) -> tuple[str, int]:
    return render_template("wechat_qr/sandbox/error.html", title=title, detail=detail,
                           errcode=errcode), status


@blueprint.errorhandler(sa.exc.DBAPIError)
@blueprint.errorhandler(sa.exc.TimeoutError)
def database_out_of_reach(error: Exception) -> Response | tuple[str, int]:
    """The sandbox keeps its tables in the site's database (in a host app, the host's):
    with that database down, its pages said nothing but Flask's 500. The API answers as
    WeChat does when it is busy (errcode -1, which the extension tries once more and then
    calls "WeChat is not answering"), the QR page's check a 503 its script words, the
    pages a 503 in words. Any other database error is raised again."""
    if not is_unreachable(error):
        raise error
    log.warning("the WeChat sandbox cannot reach its database: %s", database_reason(error))
    endpoint = (request.endpoint or "").rpartition(".")[2]
    if endpoint in API_ENDPOINTS:
        return wechat_error(-1, "system error")
    if endpoint == "poll":
        response = _poll_answer({"status": "unavailable"})
        response.status_code = 503
        return response
    return page_error(_("The sandbox cannot reach its database"),
                      _("The simulated WeChat keeps its QR codes in a database that does "
                        "not answer, or has no connection free: this site's "
                        "(SQLALCHEMY_DATABASE_URI), or the standalone sandbox's "
                        "(--database). Check it, then reload this page."), status=503)


@blueprint.before_request
def create_missing_tables() -> None:
    """The sandbox's tables are development-only: not in the extension's migrations nor in
    a host's. They are made here, on first use, where missing (a Flask-Migrate site never
    runs ``db.create_all()``)."""
    runtime = sandbox_runtime()
    if not runtime.tables_ready:
        # The host's reads of this request give their connection back first: with one
        # connection a worker (pool_size=1) the tables' own waited for it, and failed.
        end_reads(runtime.db)
        tables, engine = runtime.models.tables, runtime.models.engine(runtime.db)
        runtime.db.metadatas[runtime.models.bind_key].create_all(engine, tables=tables,
                                                                 checkfirst=True)
        add_missing_columns(engine, tables)
        runtime.tables_ready = True


@blueprint.before_request
def refuse_undecodable_query() -> tuple[str, int] | None:
    """Raw non-UTF-8 bytes in the query make Werkzeug's ``request.args`` raise: a 400."""
    try:
        request.query_string.decode()
    except UnicodeDecodeError:
        return page_error(_("Invalid request"), _("The query string is not UTF-8."))
    return None


@blueprint.route("/")
def index() -> str:
    sandbox = sandbox_runtime()
    avatars = {person.key: avatar_path(sandbox, person) for person in PEOPLE}
    # Avatars change only where profiles point at the image host (an image origin): with
    # data: URIs in them, the button changed nothing a login shows.
    return render_template("wechat_qr/sandbox/index.html", apps=sandbox.apps.values(),
                           people=PEOPLE, avatars=avatars,
                           avatars_change=sandbox.image_origin is not None)


def headimgurl(sandbox: SandboxRuntime, person: SandboxPerson) -> str:
    """The person's avatar URL, as ``/sns/userinfo`` gives it: on the image host where it
    is on (``http://`` and the 46 px thumbnail for the person whose profile has an
    old-style URL), else a ``data:`` URI; WeChat's grey one for the placeholder profile."""
    if person.avatar == "placeholder":
        return PLACEHOLDER_AVATAR
    origin = sandbox.image_origin
    if origin is None:
        return avatar_for(person.nickname)
    if person.avatar == "http":
        return origin.replace("https://", "http://", 1) + avatar_path(sandbox, person, "46")
    return origin + avatar_path(sandbox, person)


def avatar_version(sandbox: SandboxRuntime, person_key: str) -> int:
    """How many times the person changed their avatar (see :mod:`.images`), plus one."""
    row = sandbox.db.session.get(sandbox.models.Avatar, lookup_key(person_key))
    return int(row.version) if row is not None else 1


def avatar_path(sandbox: SandboxRuntime, person: SandboxPerson, size: str = "132") -> str:
    """The path of the person's current avatar on the sandbox's image host."""
    return url_for("wechat_qr_sandbox.avatar_image", person_key=person.key,
                   version=avatar_version(sandbox, person.key), size=size)


@blueprint.route("/connect/qrconnect")
def qrconnect() -> t.Any:
    """WeChat's QR page (full-page redirect mode, or the ``wxLogin.js`` iframe)."""
    sandbox = sandbox_runtime()
    keys = [key for key, _value in parse_qsl(request.query_string.decode("latin-1"),
                                             keep_blank_values=True)]
    args = request.args
    if args.get("lang") in ("cn", "en"):  # as on WeChat: else the browser's language
        i18n.set_request_locale("zh_CN" if args["lang"] == "cn" else "en")
    jssdk = args.get("login_type") == "jssdk"
    app = sandbox.apps.get(args.get("appid", ""))
    if app is None:
        return page_error(_("Invalid appid"),
                           _("The appid is not a website application of this Open Platform."))
    expected = JSSDK_ORDER if jssdk else REDIRECT_ORDER
    problem = (order_problem(keys, expected)
               or scope_problem(app, args.get("scope"), WEBSITE)
               or (None if jssdk else response_type_problem(args.get("response_type")))
               or redirect_uri_problem(app, args.get("redirect_uri", ""))
               or state_problem(args.get("state")))
    if problem is not None:
        return problem
    redirect_uri, state = args.get("redirect_uri", ""), args.get("state")

    now = time.time()
    purge_now_and_then(sandbox, now)
    qr_session = sandbox.models.QRSession(
        uuid=secrets.token_urlsafe(12), app_id=app.app_id, redirect_uri=redirect_uri,
        state=state, status="waiting", created_at=now, expires_at=now + QR_TTL)
    sandbox.db.session.add(qr_session)
    sandbox.db.session.commit()
    confirm_path = url_for(".confirm", uuid=qr_session.uuid)
    on_phone = classify(request.headers.get("User-Agent")).on_phone
    loopback = is_loopback_host(urlsplit(_public_base()).hostname or "")
    page = Response(render_template(
        "wechat_qr/sandbox/qrconnect.html",
        app=app, qr=qr_session, jssdk=jssdk,
        self_redirect=args.get("self_redirect") == "true",
        style=args.get("style", "black"),
        stylelite=args.get("stylelite") == "1",
        # wxLogin.js v3's fast_login=0: no desktop-WeChat fast login on this page; nor on
        # a phone, where WeChat for PC is not (the page says what works there instead).
        fast_login=args.get("fast_login") != "0" and not on_phone,
        on_phone=on_phone,
        people=PEOPLE,
        confirm_url=_confirm_url(qr_session.uuid),
        confirm_path=confirm_path,
        loopback=loopback,
        network_url=_network_url(sandbox.standalone) if loopback else None,
        standalone=sandbox.standalone,
        lifetime=QR_TTL,
    ))
    # WeChat's QR page may be framed by any site (wxLogin.js): a host's site-wide
    # X-Frame-Options (set after this, on every response) must not blank the sandbox's copy.
    # Browsers follow frame-ancestors where a page has both.
    page.headers["Content-Security-Policy"] = "frame-ancestors *"
    return page


def order_problem(keys: list[str], expected: list[str]) -> tuple[str, int] | None:
    """WeChat matches its authorization URLs with a strict pattern: the parameters in its
    order (more may follow)."""
    if keys[: len(expected)] == expected:
        return None
    return page_error(
        _("Wrong Scope parameter or no Scope permission (parameter order)"),
        _("WeChat matches this URL strictly: expected the parameters %(expected)s in that "
          "order, got %(got)s.", expected=", ".join(expected), got=", ".join(keys) or _("none")),
    )


def scope_problem(app: SandboxApp, scope: str | None, page_kind: str) -> tuple[str, int] | None:
    """An application on the other kind's page, or a scope its kind does not have: WeChat's
    10005 page (an Official Account's AppID on qrconnect, a website's on oauth2/authorize)."""
    if app.kind == page_kind and scope in SCOPES[app.kind]:
        return None
    if page_kind == WEBSITE:
        return page_error(
            _("Wrong Scope parameter or no Scope permission"),
            _("Website applications use response_type=code and scope=snsapi_login; an "
              "Official Account's AppID logs in on /connect/oauth2/authorize."), errcode=10005)
    return page_error(
        _("This Official Account does not have these scopes"),
        _("Web authorization is for an Official Account's AppID with scope snsapi_base or "
          "snsapi_userinfo; a website application's AppID logs in on /connect/qrconnect."),
        errcode=10005)


def response_type_problem(response_type: str | None) -> tuple[str, int] | None:
    if response_type == "code":
        return None
    return page_error(_("Wrong Scope parameter or no Scope permission"),
                       _("WeChat's authorization URLs take response_type=code."))


def redirect_uri_problem(app: SandboxApp, redirect_uri: str) -> tuple[str, int] | None:
    """WeChat's 10003: the redirect URI is not on the registered callback domain."""
    # Parsed as a browser will follow it: a backslash is "/" in http(s) URLs, so the host
    # of http://evil<backslash>@site/ is evil; and no user name (WeChat takes none either).
    parts = urlsplit(redirect_uri.replace("\\", "/"))
    domain = app.callback_domain or hostname_of(request.host)
    if (parts.scheme not in ("http", "https") or parts.hostname != domain or "#" in redirect_uri
            or "@" in parts.netloc or not redirect_uri.isprintable()):
        return page_error(
            _("Wrong redirect_uri parameter"),
            _("The redirect_uri host must be the registered authorization callback domain "
              "%(domain)s (10003).", domain=repr(domain)), errcode=10003)
    return None


def state_problem(state: str | None) -> tuple[str, int] | None:
    if state is not None and (len(state.encode()) > 128 or not state.isprintable()):
        return page_error(_("Wrong state parameter"),
                           _("WeChat takes a state of at most 128 bytes, e.g. [a-zA-Z0-9]{32}."))
    return None


@blueprint.route("/connect/qrcode/<uuid>.svg")
def qrcode_image(uuid: str) -> Response:
    sandbox = sandbox_runtime()
    if sandbox.db.session.get(sandbox.models.QRSession, lookup_key(uuid)) is None:
        abort(404)
    svg = qr_svg(_confirm_url(uuid))
    return Response(svg, content_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=300"})


def _poll_answer(payload: dict[str, t.Any]) -> Response:
    """The poll's JSON, read by the QR page's script: of this shape whatever JSON provider
    the host app set (``jsonify`` would follow one that wraps or renames)."""
    return Response(json.dumps(payload), mimetype="application/json")


@blueprint.route("/connect/l/qrconnect")
def poll() -> Response:
    """The desktop page asks whether the phone has answered (WeChat long-polls here)."""
    sandbox = sandbox_runtime()
    qr_session = sandbox.db.session.get(sandbox.models.QRSession,
                                        lookup_key(request.args.get("uuid")))
    status = _status(qr_session, time.time())
    payload: dict[str, t.Any] = {"status": status}
    if qr_session is None:  # unknown: "expired"
        return _poll_answer(payload)
    if status == "confirmed":
        payload["redirect"] = with_query(qr_session.redirect_uri,
                                          [("code", qr_session.code), ("state", qr_session.state)])
    elif status == "denied":
        payload["redirect"] = with_query(qr_session.redirect_uri, [("state", qr_session.state)])
    return _poll_answer(payload)


# --- the page a phone sees ------------------------------------------------------------


@blueprint.route("/connect/confirm/<uuid>", methods=["GET", "POST"])
def confirm(uuid: str) -> t.Any:
    """"<app> wants to log in with your WeChat": pick a simulated person, Allow or Deny."""
    sandbox = sandbox_runtime()
    qr_session = sandbox.db.session.get(sandbox.models.QRSession, lookup_key(uuid))
    now = time.time()
    status = _status(qr_session, now)
    if qr_session is None or status == "expired":
        return _confirm_page("expired", None), 410
    app = sandbox.apps.get(qr_session.app_id)
    if status not in OPEN_STATUSES:
        return _confirm_page("used", app), 409

    if request.method == "GET":
        if qr_session.status == "waiting":
            qr_session.status = "scanned"
            sandbox.db.session.commit()
        return _confirm_page(None, app)

    if request.form.get("action") != "allow":
        outcome, values = "denied", {"status": "denied"}
    else:
        person_key = chosen_person(sandbox, request.form)
        if person_key is None:
            return _confirm_page(None, app, _("Choose a person or type a nickname."),
                                 chosen=request.form.get("person")), 400
        code = new_code(sandbox, qr_session.app_id, person_key, "snsapi_login", now)
        outcome, values = "allowed", {"status": "confirmed", "code": code}
    if not _answer_qr_session(sandbox, uuid, values):
        return _confirm_page("used", app), 409
    return _confirm_page(outcome, app)


def _confirm_page(outcome: str | None, app: SandboxApp | None,
                  problem: str | None = None, chosen: str | None = None) -> str:
    """The phone's page, every variable given (a host's ``StrictUndefined`` refuses a
    missing one); ``chosen``: the person the form sent (kept checked with its problem: the
    first person checked again made the next Allow log in as them), else the first."""
    people = [*PEOPLE, *made_up_people(sandbox_runtime())] if outcome is None else []
    keys = [person.key for person in people]
    if chosen not in (*keys, "new"):
        chosen = keys[0] if keys else None
    return render_template("wechat_qr/sandbox/confirm.html", outcome=outcome, app=app,
                           people=people, problem=problem, chosen=chosen)


@blueprint.route("/connect/qrconnect/fast_login/<uuid>", methods=["POST"])
def fast_login(uuid: str) -> t.Any:
    """Desktop WeChat's "fast login" (快速登录, WeChat for Windows 3.9.11+ / Mac 4.0+): the
    person logged in to WeChat on this computer confirms there, with no phone; the page then
    goes to the redirect URI (the form targets the top window unless ``self_redirect``)."""
    sandbox = sandbox_runtime()
    qr_session = sandbox.db.session.get(sandbox.models.QRSession, lookup_key(uuid))
    now = time.time()
    status = _status(qr_session, now)
    if qr_session is None or status == "expired":
        return page_error(_("QR code expired"),
                          _("Refresh the QR code on your computer and scan again."), status=410)
    person_key = request.form.get("person", "")
    if status not in OPEN_STATUSES or person_key not in PEOPLE_BY_KEY:
        return page_error(_("Already answered"), _(
            "This QR code was already answered. Refresh it on your computer to log in again."))
    code = new_code(sandbox, qr_session.app_id, person_key, "snsapi_login", now)
    if not _answer_qr_session(sandbox, uuid, {"status": "confirmed", "code": code}):
        return page_error(_("Already answered"), _(
            "This QR code was already answered. Refresh it on your computer to log in again."))
    return redirect(with_query(qr_session.redirect_uri, [("code", code),
                                                        ("state", qr_session.state)]))


def new_code(sandbox: SandboxRuntime, app_id: str, person_key: str, scope: str,
             now: float) -> str:
    """A new authorization code (single use, 5 minutes), added to the session."""
    code = secrets.token_urlsafe(24)
    sandbox.db.session.add(sandbox.models.Code(code=code, app_id=app_id, person_key=person_key,
                                               scope=scope, created_at=now))
    return code


def _answer_qr_session(sandbox: SandboxRuntime, uuid: str, values: dict[str, str]) -> bool:
    """Record the one answer a QR code gets, whichever worker gets it first (commits); False
    when it was already answered."""
    models = sandbox.models
    # An UPDATE's result is a CursorResult (SQLAlchemy's own advice for its typing).
    updated = t.cast("CursorResult[t.Any]", sandbox.db.session.execute(
        sa.update(models.QRSession)
        .where(models.QRSession.uuid == uuid,
               models.QRSession.status.in_(OPEN_STATUSES))
        .values(**values)
    )).rowcount
    if updated != 1:
        sandbox.db.session.rollback()
        return False
    sandbox.db.session.commit()
    return True


#: The key of every person made up on a phone's page.
MADE_UP_PREFIX = "new-"
#: How many people made up before the phone's pages list.
MADE_UP_LISTED = 10


def chosen_person(sandbox: SandboxRuntime, form: t.Mapping[str, str]) -> str | None:
    """The key of the person a phone's form names: a listed one (built in, or made up here
    before), or a new one for a typed nickname; ``None``: neither.

    A typed nickname is always a new person, as on WeChat, where nicknames are not unique
    (many people are "微信用户"): a site must never take two for one. Coming back as someone
    made up before is picking them from the list (:func:`made_up_people`)."""
    choice = form.get("person", "")
    if choice in PEOPLE_BY_KEY:
        return choice
    if choice.startswith(MADE_UP_PREFIX):
        row = sandbox.db.session.get(sandbox.models.Person, choice[:64])
        return t.cast(str, row.key) if row is not None else None
    if choice == "new":
        typed = "".join(ch for ch in form.get("nickname", "") if ch.isprintable())
        # as the database can keep it (a MySQL connection in utf8 carries no emoji)
        nickname = storable(sandbox.db, sandbox.models.Person.__table__.c.nickname,
                            typed.strip()[:60])
        if not nickname:
            return None
        # Keys sort by when the person was made: the pages list the latest first.
        key = f"{MADE_UP_PREFIX}{time.time_ns():016x}{secrets.token_hex(3)}"
        sandbox.db.session.add(sandbox.models.Person(
            key=key, nickname=nickname, has_unionid=form.get("unionid", "on") == "on"))
        return key
    return None


def made_up_people(sandbox: SandboxRuntime) -> list[SandboxPerson]:
    """The people typed on a phone's page before, latest first (the newest
    :data:`MADE_UP_LISTED`): how a tester logs in as the same "Ada" again."""
    person_model = sandbox.models.Person
    rows = sandbox.db.session.execute(
        sa.select(person_model).where(person_model.key.startswith(MADE_UP_PREFIX))
        # Made-up keys sort by when the person was made; a key of the shorter, random kind
        # earlier versions made (a database kept from then) sorts after every newer one.
        .order_by(sa.func.length(person_model.key).desc(), person_model.key.desc())
        .limit(MADE_UP_LISTED)).scalars()
    return [_made_up_person(row) for row in rows]


def _made_up_person(row: t.Any) -> SandboxPerson:
    return SandboxPerson(row.key, row.nickname, has_unionid=row.has_unionid,
                         note=_l("made up here before"))


# --- the API the extension calls ------------------------------------------------------


@blueprint.route("/sns/oauth2/access_token")
def access_token() -> Response:
    sandbox = sandbox_runtime()
    models = sandbox.models
    args = request.args
    app_id, secret, code = args.get("appid"), args.get("secret"), args.get("code")
    if not app_id:
        return wechat_error(41002, "appid missing")
    app = sandbox.apps.get(app_id)
    if app is None:
        return wechat_error(40013, "invalid appid")
    if not secret:
        return wechat_error(41004, "appsecret missing")
    if not secrets.compare_digest(secret.encode(), app.app_secret.encode()):
        return wechat_error(40125, "invalid appsecret")
    if not code:
        return wechat_error(41008, "missing code")
    if args.get("grant_type") != "authorization_code":
        return wechat_error(40002, "invalid grant_type")
    row = sandbox.db.session.get(models.Code, lookup_key(code))
    # Another application's code (the website app's with the Official Account's
    # credentials, or the reverse) is 40029 on WeChat too ("code和appid不匹配").
    if row is None or row.app_id != app_id:
        return wechat_error(40029, "invalid code")
    if row.created_at + CODE_TTL < time.time():
        return wechat_error(42003, "code expired")
    used = t.cast("CursorResult[t.Any]", sandbox.db.session.execute(
        sa.update(models.Code).where(models.Code.code == code, models.Code.used.is_(False))
        .values(used=True)
    )).rowcount
    if used != 1:
        sandbox.db.session.rollback()
        return wechat_error(40163, "code been used")
    payload = _issue_token(sandbox, app_id, row.person_key, row.scope or "snsapi_login")
    sandbox.db.session.commit()
    return wechat_json(payload)


@blueprint.route("/sns/oauth2/refresh_token")
def refresh_token() -> Response:
    sandbox = sandbox_runtime()
    models = sandbox.models
    args = request.args
    app_id = args.get("appid")
    if not app_id:
        return wechat_error(41002, "appid missing")
    if app_id not in sandbox.apps:
        return wechat_error(40013, "invalid appid")
    if args.get("grant_type") != "refresh_token":
        return wechat_error(40002, "invalid grant_type")
    given = args.get("refresh_token")
    if not given:
        return wechat_error(41003, "refresh_token missing")
    row = sandbox.db.session.execute(
        sa.select(models.Token).where(models.Token.refresh_token == lookup_key(given),
                                      models.Token.app_id == app_id)
    ).scalar_one_or_none()
    if row is None:
        return wechat_error(40030, "invalid refresh_token")
    now = time.time()
    if row.refresh_expires_at < now:
        return wechat_error(42002, "refresh_token timeout")
    if row.expires_at < now:
        row.access_token = secrets.token_urlsafe(60)
    row.expires_at = now + ACCESS_TOKEN_TTL
    sandbox.db.session.commit()
    payload: dict[str, t.Any] = {
        "access_token": row.access_token, "expires_in": ACCESS_TOKEN_TTL,
        "refresh_token": row.refresh_token, "openid": openid_for(app_id, row.person_key),
        "scope": row.scope or "snsapi_login",
    }
    if is_snapshot(row.person_key):
        payload["is_snapshotuser"] = 1
    return wechat_json(payload)


@blueprint.route("/sns/userinfo")
def userinfo() -> Response:
    sandbox = sandbox_runtime()
    row, error = _check_access_token(sandbox)
    if error is not None:
        return error
    # An Official Account's snsapi_base token reads no profile, nor does a snapshot page's.
    if row.scope == "snsapi_base" or is_snapshot(row.person_key):
        return wechat_error(48001, "api unauthorized")
    person = person_of(sandbox, row.person_key)
    payload: dict[str, t.Any] = {
        "openid": openid_for(row.app_id, person.key),
        "nickname": person.nickname,
        # WeChat stopped returning sex and region in 2021.
        "sex": 0, "language": "", "city": "", "province": "", "country": "",
        "headimgurl": headimgurl(sandbox, person),
        "privilege": [],
    }
    if person.has_unionid:
        payload["unionid"] = unionid_for(person.key)
    return wechat_json(payload)


@blueprint.route("/sns/auth")
def auth_check() -> Response:
    _row, error = _check_access_token(sandbox_runtime())
    return error if error is not None else wechat_json({"errcode": 0, "errmsg": "ok"})


def _check_access_token(sandbox: SandboxRuntime) -> tuple[t.Any, Response | None]:
    token, openid = request.args.get("access_token"), request.args.get("openid")
    if not token:
        return None, wechat_error(41001, "access_token missing")
    if not openid:
        return None, wechat_error(41009, "missing openid")
    row = sandbox.db.session.get(sandbox.models.Token, lookup_key(token))
    if row is None:
        return None, wechat_error(40014, "invalid access_token")
    if row.expires_at < time.time():
        return None, wechat_error(42001, "access_token expired")
    if openid != openid_for(row.app_id, row.person_key):
        return None, wechat_error(40003, "invalid openid")
    return row, None


def _issue_token(sandbox: SandboxRuntime, app_id: str, person_key: str,
                 scope: str) -> dict[str, t.Any]:
    """The token answer in WeChat's order. An Official Account's gives ``unionid`` only for
    ``snsapi_userinfo`` ("只有当scope为snsapi_userinfo时返回"), and flags a snapshot visitor."""
    now = time.time()
    row = sandbox.models.Token(
        access_token=secrets.token_urlsafe(60), refresh_token=secrets.token_urlsafe(60),
        app_id=app_id, person_key=person_key, scope=scope, expires_at=now + ACCESS_TOKEN_TTL,
        refresh_expires_at=now + REFRESH_TOKEN_TTL)
    sandbox.db.session.add(row)
    payload: dict[str, t.Any] = {
        "access_token": row.access_token, "expires_in": ACCESS_TOKEN_TTL,
        "refresh_token": row.refresh_token, "openid": openid_for(app_id, person_key),
        "scope": scope,
    }
    if is_snapshot(person_key):
        payload["is_snapshotuser"] = 1
    if scope != "snsapi_base" and person_of(sandbox, person_key).has_unionid:
        payload["unionid"] = unionid_for(person_key)
    return payload


def purge_now_and_then(sandbox: SandboxRuntime, now: float) -> None:
    """Delete QR codes, codes, tokens and consents long past use, at most once a minute per process:
    every QR page makes a row, and a sandbox left running must not grow without end. A
    batch per table at a time (the next QR page goes on while batches come back full)."""
    if now < sandbox.next_purge:
        return
    sandbox.next_purge = now + PURGE_INTERVAL
    models = sandbox.models
    backlog = False
    for model, column, end in (("QRSession", "expires_at", now),
                               ("Code", "created_at", now - CODE_TTL),
                               ("Token", "refresh_expires_at", now),
                               ("Consent", "expires_at", now)):
        table = getattr(models, model).__table__
        deleted = delete_expired(sandbox.db.session, table, table.c[column],
                                 end - KEPT_AFTER_EXPIRY)
        backlog = backlog or deleted >= BATCH_SIZE
    if backlog:
        sandbox.next_purge = now


def person_of(sandbox: SandboxRuntime, key: str) -> SandboxPerson:
    if key in PEOPLE_BY_KEY:
        return PEOPLE_BY_KEY[key]
    row = sandbox.db.session.get(sandbox.models.Person, key)
    if row is None:
        return SandboxPerson(key, "WeChat user")
    return _made_up_person(row)


def _status(qr_session: t.Any, now: float) -> str:
    """A QR code's status as the desktop page and the phone see it: an unanswered code
    past its lifetime (or an unknown one) is expired."""
    if qr_session is None:
        return "expired"
    if qr_session.status in OPEN_STATUSES and qr_session.expires_at < now:
        return "expired"
    return t.cast(str, qr_session.status)


def with_query(url: str, params: list[tuple[str, str | None]]) -> str:
    query = urlencode([(k, v) for k, v in params if v is not None])
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _public_base() -> str:
    """Where a phone reaches this sandbox: the configured public URL, else this host."""
    return (sandbox_runtime().public_url or request.host_url).rstrip("/")


def _network_url(standalone: bool) -> str | None:
    """For the QR page's hint on a loopback address: this request's site at this computer's
    network address (its home page; on its own port the sandbox's root, its
    ``--public-url``), which a phone on the same network reaches if the server listens
    there; ``None`` where this computer has no network address."""
    address = network.network_address()
    if address is None:
        return None
    parts = urlsplit(request.host_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{address}{port}{request.script_root}{'' if standalone else '/'}"


def _confirm_url(uuid: str) -> str:
    """The phone's confirmation page of a QR code: what the QR image encodes."""
    return _public_base() + url_for(".confirm", uuid=uuid)
