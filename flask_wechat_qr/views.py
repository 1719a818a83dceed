"""The ``wechat_qr`` blueprint: routes only.

Each view parses its request, asks the login flow (or the policy) what happens, and hands
the outcome to :mod:`.delivery`. No protocol, policy or transaction here.
"""

from __future__ import annotations

import json
import logging
import secrets
import typing as t
from dataclasses import replace
from urllib.parse import urljoin

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.routing import BuildError
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Response as BaseResponse

from . import delivery, same_site, signals
from .binding import LoginField, login_field_named
from .browsers import Browser, classify
from .context import this_app, this_request
from .csrf import FIELD as CSRF_FIELD
from .csrf import check_csrf, csrf_token
from .errors import (
    AlreadyLinked,
    BindingExpired,
    BindingReplaced,
    ConnectionAlreadyLinked,
    DatabaseUnavailable,
    InvalidRequest,
    LoginError,
    LoginNotSetUp,
    LoginUnavailable,
    NotLoggedIn,
    SessionCookieNotSent,
    WeComBrowser,
)
from .flow import (
    Callback,
    Failed,
    LoggedIn,
    NeedsProfile,
    Outcome,
    PendingLogin,
    database_refusing,
    database_unavailable,
)
from .i18n import LazyText, qr_page_lang, register_template_globals
from .i18n import lazy_gettext as _l
from .layout import EscapingOwnPages, escape_own_pages
from .login_state import BusinessParams, LoginData, browser_key
from .runtime import current_runtime, find_runtime, runtime_of
from .session_cookie import cookie_scope, misses_callback
from .settings import OFFICIAL_ACCOUNT, WEBSITE_APP
from .transactions import (
    end_reads,
    is_refusing,
    is_unreachable,
    reopen_replaced_file,
    roll_back_quietly,
)
from .urls import avatar_for_browser, has_control_characters, under_mount_point

if t.TYPE_CHECKING:
    from flask import Flask, Request

    from .client import OfficialAccountClient, WeChatClient

log = logging.getLogger("flask_wechat_qr")

blueprint = Blueprint("wechat_qr", __name__, template_folder="templates")
# Pages for people in a browser, not a site's API: APIFlask leaves a blueprint that says so
# out of the site's OpenAPI spec (and, without it, its spec was a 500: APIFlask reads this
# of every blueprint with a ``before_request`` hook).
blueprint.enable_openapi = False  # type: ignore[attr-defined]

#: The query parameters a login keeps: where to go, and the business's ``state``/``nonce``.
LOGIN_PARAMS = ("next", "state", "nonce")
#: The Official Account scope that shares the person's profile and ``unionid``.
PROFILE_SCOPE = "snsapi_userinfo"
#: Longest business ``state`` and ``nonce`` accepted by ``login``/``qr`` (echoed / signed
#: into the ID token for the connection's business callback URL).
MAX_BUSINESS_STATE_LENGTH = 1024
MAX_NONCE_LENGTH = 255
#: Endpoints serving public, cacheable files (kept up while logins are off).
PUBLIC_FILES = ("wechat_qr.jwks", "wechat_qr.avatar")


@blueprint.url_defaults
def default_connection(endpoint: str, values: dict[str, t.Any]) -> None:
    """``url_for("wechat_qr.login")`` without ``connection``: the default connection's page.
    A site whose only login is WeChat names it as Flask-Login's ``login_view``, which
    Flask-Login builds with nothing but ``next``; without this, every ``@login_required``
    page answered a visitor with a 500 (a ``BuildError``)."""
    # The pages that start a login, which a site links to or names as Flask-Login's
    # login_view, need not say which connection (``Settings.default_connection``).
    if "connection" in values or endpoint not in delivery.LOGIN_STARTS:
        return
    runtime = find_runtime(current_app)
    conn = runtime.settings.default_connection if runtime else None
    if conn is not None:
        values["connection"] = conn.identifier


@blueprint.before_request
def before_login_request() -> None:
    """What every request of the blueprint checks first (one hook: they run on every login).

    Logins stay off while the site's set-up is unsafe, and a connection's while it has no
    credentials (see the start-up log); the public keys stay published. A query string
    that is not UTF-8 (raw bytes: no browser sends them, a script can) would make
    Werkzeug's ``request.args`` raise: a 400 page, not a 500. On SQLite, once per process,
    the user trigger comes back where a migration dropped it
    (``user_key.SqliteTriggerCheck``). A site that set Jinja's ``autoescape`` since
    ``init_app`` gets the extension's pages escaped again (``layout.EscapingOwnPages``).
    """
    app = this_app()
    runtime = runtime_of(app)
    request = this_request()
    if type(app.jinja_env.autoescape) is not EscapingOwnPages:  # set by the site since
        escape_own_pages(app.jinja_env)
    if runtime.unavailable and request.endpoint not in PUBLIC_FILES:
        raise LoginUnavailable()
    conn = runtime.settings.connections.get((request.view_args or {}).get("connection", ""))
    if conn is not None and not conn.has_credentials:
        raise LoginNotSetUp()
    try:
        request.query_string.decode()
    except UnicodeDecodeError:
        raise InvalidRequest() from None
    if not runtime.sqlite_trigger.done:
        runtime.sqlite_trigger.run(lambda: end_reads(runtime.db))


# --- starting a login ----------------------------------------------------------------------


class _Started(t.NamedTuple):
    client: WeChatClient
    redirect_uri: str
    state: str
    login: LoginData


def _begin(connection: str, link_user: str | None = None, *, app: str = WEBSITE_APP,
           login: LoginData | None = None) -> _Started:
    """Start a login of ``connection``'s ``app``: a new state keeping ``next`` (and, for a
    callback URL, the business's ``state`` and ``nonce``) until the callback; ``login``:
    what an earlier login of the same visit kept."""
    runtime = current_runtime()
    request = this_request()
    client = runtime.client(connection)
    runtime.flow.before_start()
    if app == OFFICIAL_ACCOUNT:
        client = runtime.official_accounts[connection]
    if login is None:
        business = (_business_params() if client.connection.callback_url and not link_user
                    else {})
        login = LoginData(next_url=delivery.kept_next(request.args.get("next")),
                          business=business, link_user=link_user, app=app)
    redirect_uri = url_for("wechat_qr.callback", connection=connection, _external=True)
    _check_session_cookie_reaches(redirect_uri)
    state = runtime.login_states[connection].begin(login, request.remote_addr or "",
                                                   _browser(request, start=True))
    return _Started(client, redirect_uri, state, login)


def _check_session_cookie_reaches(callback: str) -> None:
    """:class:`SessionCookieNotSent` where the browser would not bring the login's state
    back to ``callback`` (an ``APPLICATION_ROOT`` of ``/app`` for an app not served there
    gives the cookie that path): no login could finish, and the person would be sent to
    WeChat for nothing. Flask's defaults (no path, no domain) need no look."""
    reason = misses_callback(cookie_scope(current_app), callback)
    if reason is not None:
        raise SessionCookieNotSent(reason)


def _browser(request: Request, *, start: bool = False) -> str | None:
    """Over https, this browser's key: its ``__Host-`` login cookie, which no sibling
    sub-domain can plant, so a session cookie tossed into a victim's browser cannot carry a
    login started elsewhere (the attacker's scan, link or pending binding) to the victim's
    callback. ``start``: make the cookie where there is none (set on the response).
    ``request``: the request itself (see :mod:`.context`)."""
    if not request.is_secure:
        return None  # a __Host- cookie needs https; in development the session decides
    value = request.cookies.get(delivery.LOGIN_COOKIE)
    if start and not (value and delivery.LOGIN_COOKIE_VALUE.fullmatch(value)):
        value = _new_login_cookie()
    return browser_key(value) if value else None


def _new_login_cookie() -> str:
    """A new value of this browser's login cookie, set on the response (``page_headers``)."""
    value = g.wechat_qr_login_cookie = secrets.token_urlsafe(24)
    return value


def _business_params() -> BusinessParams:
    """The business front end's ``state`` and ``nonce`` given to ``login``/``qr``: echoed
    with (``state``) and signed into (``nonce``) the ID token for the business callback URL."""
    params = {}
    for name, limit in (("state", MAX_BUSINESS_STATE_LENGTH), ("nonce", MAX_NONCE_LENGTH)):
        value = request.args.get(name)
        if not value:
            continue
        if len(value) > limit or has_control_characters(value):
            raise InvalidRequest(_l("The login's %(name)s parameter is not valid. Go back and "
                                     "start the WeChat login again.", name=name))
        params[name] = value
    return params


def _way_in(connection: str) -> str | None:
    """Where this browser logs in: ``"official_account"`` inside WeChat where the
    connection has one, ``"phone"`` (the page of what works on a phone) on another phone,
    ``None`` for the QR code. :class:`WeComBrowser` in WeCom's browser."""
    runtime = current_runtime()
    conn = runtime.connection(connection)
    request = this_request()
    browser = classify(request.headers.get("User-Agent"))
    if browser is Browser.WECOM:
        # No link to copy for a business callback URL's login: it must end in the browser
        # that started it (see _phone_page). Percent-encoded, as WeChat's chat finds links.
        business = bool(conn.callback_url) and request.endpoint != "wechat_qr.link"
        raise WeComBrowser(page_url=None if business else iri_to_uri(request.url))
    if browser.in_wechat and conn.has_official_account:
        return OFFICIAL_ACCOUNT
    if request.args.get("show_qr") or not runtime.settings.mobile_page:
        return None
    return "phone" if browser.on_phone else None


def _start_in_wechat(connection: str, link_user: str | None = None,
                     login: LoginData | None = None, scope: str | None = None
                     ) -> BaseResponse:
    """Send WeChat's browser to the Official Account's authorization (网页授权)."""
    started = _begin(connection, link_user, app=OFFICIAL_ACCOUNT, login=login)
    client = t.cast("OfficialAccountClient", started.client)
    return redirect(client.authorize_url(started.redirect_uri, started.state, scope=scope))


def _phone_page(connection: str) -> tuple[str, int]:
    """What works on a phone whose browser cannot scan its own QR code."""
    conn = current_runtime().connection(connection)
    in_wechat = classify(request.headers.get("User-Agent")) is Browser.WECHAT_PHONE
    # Only what a login keeps (url_for treats other names, "_external" say, as its own).
    # (url_for's values are typed Any: a str dict would be checked against _external.)
    args: dict[str, t.Any] = {name: value for name, value in request.args.items()
                              if name in LOGIN_PARAMS}
    next_url = delivery.kept_next(args.get("next"))
    # A link goes on in WeChat's browser from the site's page (logged in there first): its
    # login URL would log in to, or make, another account.
    linking = request.endpoint == "wechat_qr.link"
    # A login for the business callback URL ends in this browser, where the business kept
    # its state: opened anywhere else, its token would be refused there. Nor does the
    # site's own login post one. Only the QR code, scanned by another phone, goes on here.
    business = bool(conn.callback_url) and not linking
    page_url: str | None
    if business:
        page_url = None
    elif conn.has_official_account and not linking:
        page_url = url_for("wechat_qr.login", connection=connection, _external=True, **args)
    else:
        page_url = (urljoin(request.host_url, under_mount_point(next_url, request.script_root))
                    if next_url else request.url_root)
    return render_template(
        "wechat_qr/phone.html", connection=conn, in_wechat=in_wechat,
        page_url=page_url, linking=linking, business=business,
        qr_url=url_for(request.endpoint or "wechat_qr.login", connection=connection,
                       show_qr="1", **args),
        # someone linking is logged in already: no other way to log in to offer
        other_login_url=None if linking or business else delivery.other_login_url(
            under_mount_point(next_url, request.script_root) if next_url else None),
    ), 200


@blueprint.route("/<connection>/login")
def login(connection: str) -> BaseResponse | tuple[str, int]:
    """Send the browser to WeChat's QR page (inside WeChat: the Official Account's
    authorization; on another phone: the page of what works there)."""
    way_in = _way_in(connection)
    if way_in == OFFICIAL_ACCOUNT:
        return _start_in_wechat(connection)
    if way_in == "phone":
        return _phone_page(connection)
    started = _begin(connection)
    return redirect(started.client.authorize_url(
        started.redirect_uri, started.state, lang=qr_page_lang()))


@blueprint.route("/<connection>/qr")
def qr(connection: str) -> Response | BaseResponse | tuple[str, int]:
    """A page of this site with WeChat's QR code embedded (as ``wxLogin.js`` does it)."""
    way_in = _way_in(connection)
    if way_in == OFFICIAL_ACCOUNT:
        return _start_in_wechat(connection)
    if way_in == "phone":
        return _phone_page(connection)
    started = _begin(connection)
    client = started.client
    # url_for's values are typed Any: a str dict would be checked against _external.
    login_params: dict[str, t.Any] = {"next": started.login.next_url, **started.login.business}
    if request.args.get("show_qr"):  # a phone asked for the QR code: its fallback too
        login_params["show_qr"] = "1"
    # Reload for a fresh state a little before this one expires: a header, which no
    # layout of the host's can drop as it could drop a <meta> in a block.
    refresh_after = max(30, current_runtime().settings.state_ttl - 30)
    page = render_template(
        "wechat_qr/qr.html",
        connection=client.connection,
        iframe_url=client.qr_iframe_url(started.redirect_uri, started.state,
                                        lang=qr_page_lang()),
        login_url=url_for("wechat_qr.login", connection=connection, **login_params),
        refresh_after=refresh_after,
    )
    return Response(page, headers={"Refresh": str(refresh_after)})


@blueprint.route("/<connection>/link")
def link(connection: str) -> BaseResponse | tuple[str, int]:
    """Link WeChat to the logged-in account: the same QR login, attached on return."""
    runtime = current_runtime()
    user = runtime.adapter.current_user()
    if user is None:
        runtime.client(connection)  # an unknown connection is a 404 first
        return _log_in_first()
    way_in = _way_in(connection)
    app = OFFICIAL_ACCOUNT if way_in == OFFICIAL_ACCOUNT else WEBSITE_APP
    if runtime.policy.identity_of(user, connection, app) is not None:
        # Linked already (logged in with this very WeChat on the login page that the link
        # sent them to, say): a second QR code would only end on "already linked".
        return delivery.redirect_on(delivery.kept_next(request.args.get("next"))
                                    or runtime.settings.post_login_url)
    link_user = runtime.adapter.get_user_id(user)
    if way_in == OFFICIAL_ACCOUNT:
        return _start_in_wechat(connection, link_user)
    if way_in == "phone":
        return _phone_page(connection)
    started = _begin(connection, link_user=link_user)
    return redirect(started.client.authorize_url(
        started.redirect_uri, started.state, lang=qr_page_lang()))


def _log_in_first() -> BaseResponse:
    """Linking needs a logged-in account: the site's own way of asking for one (Flask-Login's
    unauthorized handler, or its login view, which brings the person back here), else the
    "Log in first" page (also for a login view that cannot be built here), which leads to
    the site's other login where it has one (:func:`~.delivery.other_login_url`)."""
    manager = getattr(current_app, "login_manager", None)
    if manager is None:
        raise NotLoggedIn()
    view = manager.blueprint_login_views.get(request.blueprint) or manager.login_view
    if manager.unauthorized_callback is None and (
            not view or delivery.login_view_url(view) is None):
        raise NotLoggedIn()
    try:
        return t.cast(BaseResponse, manager.unauthorized())
    except BuildError:  # a login view named but not routable here (e.g. needs arguments)
        raise NotLoggedIn() from None


# --- finishing it --------------------------------------------------------------------------


@blueprint.route("/<connection>/callback")
def callback(connection: str) -> BaseResponse:
    """WeChat sends the browser back here: the flow finishes the login (or link)."""
    runtime = current_runtime()
    conn = runtime.connection(connection)
    if same_site.session_cookie_withheld():
        return same_site.return_from_this_site(connection)
    request = this_request()
    outcome = runtime.flow.finish(conn, Callback(
        state=request.args.get("state"), code=request.args.get("code"), browser=_browser(request),
        finishing=request.args.get(delivery.FINISHING_FIELD) == "1"))
    if isinstance(outcome, NeedsProfile):
        # A silent login of someone new: WeChat asks them to share their profile.
        return _start_in_wechat(connection, outcome.login.link_user,
                                replace(outcome.login, profile_asked=True),
                                scope=PROFILE_SCOPE)
    return _respond(outcome)


@blueprint.route("/bind", methods=["GET", "POST"])
def bind() -> BaseResponse | tuple[str, int]:
    """Ask binding: bind this WeChat to an existing account (password) or create one.

    Form contract: ``action=create``, or ``action=bind`` with ``username`` and
    ``password``; always ``csrf_token``, and ``binding`` (the WeChat account the page
    showed; a form without it, a site's own page from before, is taken for the one
    waiting).
    """
    runtime = current_runtime()
    try:
        pending = runtime.flow.pending_login()
    except BindingExpired:
        if (request.method == "GET" and runtime.flow.finished_binding()
                and runtime.adapter.current_user() is not None):
            return _binding_done()
        raise
    if request.is_secure and request.cookies.get(delivery.BINDING_COOKIE) != (
            delivery.binding_cookie_value(pending.binding_id)):
        raise BindingExpired()  # not the browser that scanned: a planted session cookie
    g.wechat_qr_login = (pending.connection, pending.login)
    if request.method == "GET":
        return _bind_page(pending)
    check_csrf(request.form.get(CSRF_FIELD))
    shown = request.form.get(delivery.BINDING_FIELD)
    if shown is not None and shown != _binding_shown(pending):
        # A page shown before another WeChat login of this browser: nothing is tried (no
        # attempt counted), and no form is offered for the other WeChat now waiting.
        raise BindingReplaced()
    action = request.form.get("action")
    if action == "create":
        return _respond(runtime.flow.create_account(pending))
    if action != "bind":
        raise InvalidRequest(_l("Choose whether to bind an existing account or create one."))
    address = request.remote_addr or "unknown"
    user = runtime.bindings.prove_account(pending.binding_id, address,
                                          request.form.get("username", ""),
                                          request.form.get("password", ""))
    if user is None:
        _binding_failed(pending, "wrong_credentials", address)
        return _bind_page(pending, _login_field().wrong, 400)
    try:
        outcome = runtime.flow.bind_account(pending, user)
    except ConnectionAlreadyLinked as exc:
        _binding_failed(pending, "already_linked", address)
        return _bind_page(pending, exc.message, exc.status)
    except AlreadyLinked:
        _binding_failed(pending, "linked_elsewhere", address)
        raise
    return _respond(outcome)


def _binding_done() -> tuple[str, int]:
    """The bind page of a browser that its binding choice logged in, with no other choice
    waiting: Back after binding (or creating) comes here, and is told it is done, not that
    the login expired."""
    continue_url = under_mount_point(current_runtime().settings.post_login_url,
                                     request.script_root)
    return render_template("wechat_qr/bind_done.html", continue_url=continue_url), 200


def _login_field() -> LoginField:
    return login_field_named(current_runtime().adapter.login_field)


def _bind_page(pending: PendingLogin, problem: str | LazyText | None = None,
               status: int = 200) -> tuple[str, int]:
    return render_template(
        "wechat_qr/bind.html", connection=pending.connection, pending=pending.row,
        problem=problem, can_signup=current_runtime().adapter.can_signup(pending.connection),
        csrf_token=csrf_token(), binding=_binding_shown(pending), login_field=_login_field(),
        avatar_url=avatar_for_browser(pending.row.avatar_url, request.script_root),
        username=request.form.get("username", "") if problem else "",
    ), status


def _binding_shown(pending: PendingLogin) -> str:
    """The bind page's ``binding`` for the WeChat account it shows."""
    row = pending.row
    return delivery.binding_field_value(row.connection, row.app, row.openid)


def _binding_failed(pending: PendingLogin, reason: str, address: str) -> None:
    """Tell the signal, with the username tried: a site can warn that account's owner."""
    signals.send(signals.binding_failed, connection=pending.connection, reason=reason,
                 address=address,
                 username=request.form.get("username", "")[:200])


def _respond(outcome: Outcome) -> BaseResponse:
    """The outcome as a response. What the login was for stays at hand for
    :func:`login_error`: a failed outcome is raised, and delivering may fail too (a
    ``login_succeeded`` receiver, the ID token)."""
    g.wechat_qr_login = (outcome.connection, outcome.login)
    if isinstance(outcome, Failed):
        raise outcome.error
    if isinstance(outcome, LoggedIn) and request.is_secure:
        # A new login cookie with the new login: WeChat's second redirect, sent before this
        # answer, still brings the one the login was started with (and so ends as this one
        # did, see flow.finish); a later request of this browser (the callback reloaded
        # after logging out) no longer does.
        _new_login_cookie()
    return delivery.respond(outcome)


@blueprint.route("/<connection>/unlink", methods=["POST"])
def unlink(connection: str) -> BaseResponse:
    """Unlink the logged-in user's WeChat account of this connection (never the last way in)."""
    runtime = current_runtime()
    conn = runtime.connection(connection)
    user = runtime.adapter.current_user()
    if user is None:
        raise NotLoggedIn()
    check_csrf(request.form.get(CSRF_FIELD))
    # Checked before anything is unlinked: an oversized next refuses the whole request.
    next_url = delivery.kept_next(request.form.get("next"))
    runtime.flow.unlink(conn, user)
    return delivery.redirect_on(next_url or runtime.settings.post_login_url)


@blueprint.route("/.well-known/jwks.json")
def jwks() -> tuple[Response, int] | Response:
    """The public keys of the RS256 ID tokens, for receivers to verify them with."""
    signer = current_runtime().id_tokens
    if signer is None or not signer.public_jwks:
        response = _json({"error": "not_found",
                          "error_description": "No RS256 ID token key is configured."})
        response.headers["Cache-Control"] = "no-store"
        return response, 404
    response = _json(signer.jwks())
    # Public and cacheable; receivers refetch when they meet an unknown kid (rotation).
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _json(payload: t.Mapping[str, t.Any]) -> Response:
    """A JSON answer of the extension's own shape (RFC 7517's for the keys), whatever JSON
    provider the site set: one that wraps, renames or re-encodes what ``jsonify`` gives
    would make receivers fail to read the keys."""
    return Response(json.dumps(payload, separators=(",", ":")) + "\n",
                    mimetype="application/json")


@blueprint.route("/avatars/<key>")
def avatar(key: str) -> Response:
    """A stored WeChat avatar (``WECHAT_QR_STORE_AVATARS``); 404 for an unknown key."""
    avatars = current_runtime().avatars
    response = avatars.response(key) if avatars is not None else None
    if response is None:
        return Response("Not Found", status=404, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})
    return response


# --- errors, caching, template globals ------------------------------------------------------


@blueprint.errorhandler(LoginError)
def login_error(error: LoginError) -> tuple[str | BaseResponse, int, dict[str, str]]:
    """Every login that cannot go on ends here: a page in words, never a traceback; or
    the response a ``login_failed`` receiver returned (a single-page app's own route)."""
    runtime = current_runtime()
    connection, login = g.get("wechat_qr_login") or (None, None)
    if connection is None:
        connection_id = (request.view_args or {}).get("connection")
        connection = runtime.settings.connections.get(connection_id) if connection_id else None
    if isinstance(error, DatabaseUnavailable):
        runtime.flow.database_out_of_reach(error)  # logins do not start while it lasts
    if isinstance(error, LoginUnavailable):  # said once at start-up: no line per visitor
        log.info("WeChat login is off: %s (%s)", error, type(error).__name__)
    elif error.operator_error:
        log.error("WeChat login failed and needs the site operator: %s (%s)",
                  error, type(error).__name__)
    else:
        log.info("WeChat login ended: %s (%s)", error, type(error).__name__)
    return delivery.error_response(error, connection, login)


@blueprint.errorhandler(DBAPIError)
@blueprint.errorhandler(PoolTimeout)
def database_error(error: Exception) -> tuple[str | BaseResponse, int, dict[str, str]]:
    """A database that cannot be asked at all (down, full, its pool's connections all in
    use) ends any page of the login on the "cannot reach its database" one. Any other
    database error (a statement or key the database refused, a connection the server
    closed under a statement) goes where it went before: the site's own handler of its
    class; but one that names a table or column the extension's tables lack ends on the
    page that says to upgrade them, and, where the site has no handler, one of a database
    that will not do the work for now (read-only, its disk full, a statement cancelled)
    on the "cannot save logins right now" one; else raised again, the site's 500 with its
    traceback."""
    if is_unreachable(error):
        return login_error(database_unavailable(error))
    if isinstance(error, DBAPIError):
        behind = current_runtime().flow.tables_behind(error)
        if behind is not None:  # new code served before its `db upgrade`: say so
            return login_error(behind)
    db = current_runtime().db
    reopen_replaced_file(db, error)  # a SQLite file replaced: the next try writes to it
    handler = _sites_handler(error)
    if handler is None and is_refusing(error):
        # Maybe the site's own statement (a before_request's write): its transaction is
        # over (on PostgreSQL aborted), and nothing of it may be sent from; the page is
        # drawn from the extension's own templates.
        roll_back_quietly(db)
        return login_error(database_refusing(error))
    if handler is None:
        raise error
    # The site's handler returns whatever a view may (Flask's ResponseReturnValue).
    return this_app().ensure_sync(handler)(error)  # type: ignore[no-any-return]


def _sites_handler(error: Exception) -> t.Callable[[Exception], t.Any] | None:
    """The site's own error handler of ``error``'s class (``app.errorhandler``), the most
    specific first, as Flask finds it where no handler of the blueprint's is in the way."""
    handlers = this_app().error_handler_spec[None][None]
    return next((handlers[cls] for cls in type(error).__mro__ if cls in handlers), None)


@blueprint.after_request
def page_headers(response: BaseResponse) -> BaseResponse:
    """No cache keeps a login page, no other site frames one (see delivery); a new login
    cookie goes with the response that started the login."""
    new_cookie = g.pop("wechat_qr_login_cookie", None)
    app = this_app()
    if new_cookie is not None:
        delivery.set_browser_cookie(response, delivery.LOGIN_COOKIE, new_cookie)
    return delivery.page_headers(response, runtime_of(app).settings.frame_ancestors,
                                 cacheable=request.endpoint in PUBLIC_FILES)


def frame_callbacks_last(sender: Flask, response: BaseResponse, **_extra: t.Any) -> None:
    """After the host's own hooks (Flask's ``request_finished``, connected by ``init_app``
    for its app): a connection's callback with WeChat's ``self_redirect`` stays framable by
    this site's QR page. A host's ``after_request`` (Flask-Talisman's ``frame_options=DENY``,
    a ``frame-ancestors 'none'`` on every response) runs after the blueprint's, so it would
    overwrite :func:`page_headers` and block the frame: no such login would finish."""
    if request.endpoint != "wechat_qr.callback" or request.headers.get(
            "Sec-Fetch-Dest", "iframe") != "iframe":
        return  # a callback loaded in the whole window needs no frame (older browsers: may)
    runtime = find_runtime(sender)
    if runtime is None:
        return
    conn = runtime.settings.connections.get((request.view_args or {}).get("connection", ""))
    if conn is not None and conn.qr_self_redirect:
        delivery.let_this_site_frame(response, runtime.settings.frame_ancestors)


def no_credentialed_reads_last(sender: Flask, response: BaseResponse, **_extra: t.Any
                               ) -> None:
    """After the host's own hooks (Flask's ``request_finished``, connected by ``init_app``):
    no other origin's script reads a login page with this browser's cookies. A host's CORS
    with credentials on every route (Flask-CORS's ``supports_credentials=True`` echoes any
    ``Origin``) would let another origin fetch the QR page, the bind page or a callback's
    answer with the visitor's session and read the login's state or the bind form's token:
    a login of the attacker's WeChat finished in the visitor's browser (login CSRF, or its
    binding to the visitor's account). Any site can where the session cookie is
    ``SameSite=None``; a sibling sub-domain (one the attacker runs, or a page there it can
    put script in) can whatever it is: its requests are same-site, and carry Lax and Strict
    cookies, the ``__Host-`` login cookie too. ``Access-Control-Allow-Credentials`` goes
    from the blueprint's pages (a browser then keeps such a read from the script); the
    public keys and avatars keep the host's headers."""
    endpoint = request.endpoint
    if (endpoint is None or not endpoint.startswith("wechat_qr.") or endpoint in PUBLIC_FILES
            or "Access-Control-Allow-Credentials" not in response.headers):
        return
    del response.headers["Access-Control-Allow-Credentials"]


register_template_globals(blueprint)
