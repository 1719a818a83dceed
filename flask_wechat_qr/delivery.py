"""Where a finished login goes: a redirect, the break-out of the embedded QR's iframe, or
a page that posts an ID token (or a refusal) to the connection's business callback URL;
and the page a failed login shows.

The last step of a login, after :mod:`.flow` decided how it ended. Sends the signals whose
receivers answer with a response (``login_succeeded``) or audit what leaves the site
(``id_token_issued``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import typing as t
import weakref
from pathlib import Path
from urllib.parse import SplitResult

from flask import (
    Response,
    current_app,
    has_request_context,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login.utils import login_url
from jinja2 import Environment, FileSystemLoader
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from .browsers import Browser, classify
from .context import this_app, this_request
from .errors import (
    BindingExpired,
    DatabaseRefusing,
    DatabaseUnavailable,
    IdTokenError,
    InvalidRequest,
    LoginCancelled,
    LoginError,
    LoginRefused,
    NotLoggedIn,
    StateError,
)
from .flow import (
    FINISHING_RELOAD,
    Finishing,
    Linked,
    LoggedIn,
    NeedsBinding,
    Outcome,
    failure_posted_to_business,
)
from .frame_policy import with_frame_ancestors
from .i18n import keep_to_the_browsers_locale
from .layout import STANDALONE
from .runtime import current_runtime
from .settings import configured_issuer
from .site_routes import routes_subdomain, serves_on_another_host
from .transactions import is_refusing, is_unreachable, roll_back_quietly
from .urls import safe_next, under_mount_point

if t.TYPE_CHECKING:
    from flask import Request

    from .login_state import BusinessParams, LoginData
    from .protocols import Identity, User
    from .settings import ConnectionSettings

log = logging.getLogger("flask_wechat_qr")

#: Endings of a login that a connection's business callback URL is told of (``error`` field), as an
#: OAuth redirect URI is: the person's choice or the site's policy, which the business front
#: end should handle itself. Anything else (an expired link, WeChat down) is this site's
#: page, where the person can try again.
CALLBACK_URL_ERRORS: dict[type[LoginError], tuple[str, str]] = {
    LoginCancelled: ("access_denied", "The user cancelled the WeChat login."),
    LoginRefused: ("account_not_linked",
                   "No account of this site is linked to this WeChat account (login only)."),
}


def respond(outcome: Outcome) -> BaseResponse:
    """The response that ends a login (a :class:`Failed` one is the views' to raise)."""
    if isinstance(outcome, LoggedIn):
        return _logged_in(outcome)
    if isinstance(outcome, Linked):
        return redirect_on(outcome.next_url)
    if isinstance(outcome, NeedsBinding):
        response = redirect_on(url_for("wechat_qr.bind"), logged_in=False)
        if request.is_secure:
            # Over https the pending binding is also tied to a __Host- cookie, which no
            # sibling sub-domain can plant: a session cookie tossed into the victim's
            # browser from one would carry the attacker's pending binding there.
            set_browser_cookie(response, BINDING_COOKIE,
                               binding_cookie_value(outcome.binding_id))
        return response
    if isinstance(outcome, Finishing):
        return _finishing(outcome)
    raise TypeError(f"no response for {type(outcome).__name__}")  # Failed: see views


#: The query field that marks the callback loaded again by :func:`_finishing`'s page.
FINISHING_FIELD = "finishing"


def _finishing(outcome: Finishing) -> BaseResponse:
    """The page of a callback whose login the other request of it is still finishing: it
    loads the callback again by itself (``Refresh``; a link where a browser does not), with
    its state and :data:`FINISHING_FIELD`: not the code, a secret no page shows. That
    reload ends as the other request did, or as "already used"; it never exchanges a code,
    nor takes the state, nor counts as a cancel (WeChat's callback without a code)."""
    # url_for's values are typed Any: a str dict would be checked against _external.
    values: dict[str, t.Any] = {"connection": outcome.connection.identifier,
                                "state": this_request().args.get("state"),
                                FINISHING_FIELD: "1"}
    again = url_for("wechat_qr.callback", **values)
    response = Response(render_template("wechat_qr/finishing.html", reload_url=again,
                                        reload_in=FINISHING_RELOAD))
    response.headers["Refresh"] = f"{FINISHING_RELOAD}; url={again}"
    return response


#: ``X-Frame-Options`` for the ``frame-ancestors`` sources it can say (older browsers).
X_FRAME_OPTIONS = {"'self'": "SAMEORIGIN", "'none'": "DENY"}


def page_headers(response: BaseResponse, frame_ancestors: str | None, *,
                 cacheable: bool = False) -> BaseResponse:
    """Login pages carry one-time state: no cache may keep them. No other site may frame
    them (clickjacking the bind or unlink forms); the embedded QR, framed by this site's
    own page, still works. A policy the host already set on the response stays."""
    headers = response.headers
    if not cacheable:
        headers["Cache-Control"] = "no-store"
    if frame_ancestors:
        # One pass over the names (a miss in Werkzeug's headers raises and catches a
        # KeyError: three lookups were half of this function's time on every login start).
        present = {name.lower() for name, _ in headers.items()}
        if "content-security-policy" not in present:
            headers.add("Content-Security-Policy", f"frame-ancestors {frame_ancestors}")
            frame_option = X_FRAME_OPTIONS.get(frame_ancestors)
            if frame_option is not None and "x-frame-options" not in present:
                headers.add("X-Frame-Options", frame_option)
    return response


def let_this_site_frame(response: BaseResponse, frame_ancestors: str | None) -> BaseResponse:
    """Let this site's own pages frame ``response`` whatever framing policy it carries: the
    callback of an embedded QR code with WeChat's ``self_redirect`` loads inside the QR's
    iframe, on this site's QR page, and a policy that forbids it (a host's ``X-Frame-Options:
    DENY``, a ``frame-ancestors 'none'``) ends every such login there.

    Nothing else is let in: a ``frame-ancestors`` directive without them gets ``'self'`` and
    the ``frame_ancestors`` sources (WECHAT_QR_FRAME_ANCESTORS: who may frame the QR page,
    so also be an ancestor of its frame), ``'none'`` giving way; ``X-Frame-Options: DENY``
    becomes ``SAMEORIGIN``; every other directive and header stays as it was."""
    needed = ["'self'", *(source for source in (frame_ancestors or "").split()
                          if source.lower() not in ("'self'", "'none'"))]
    headers = response.headers
    policies = headers.getlist("Content-Security-Policy")
    if policies:
        headers.setlist("Content-Security-Policy",
                        [with_frame_ancestors(policy, needed) for policy in policies])
    options = headers.getlist("X-Frame-Options")
    if any(option.strip().upper() == "DENY" for option in options):
        headers.setlist("X-Frame-Options", [
            "SAMEORIGIN" if option.strip().upper() == "DENY" else option for option in options])
    return response


#: The cookie that ties a pending binding to the browser that scanned (https only).
BINDING_COOKIE = "__Host-wechat-qr-binding"
#: The cookie that ties a login's state to the browser that started it (https only).
LOGIN_COOKIE = "__Host-wechat-qr-login"
#: What a login cookie this extension made looks like (anything else is replaced).
LOGIN_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{32}")


def set_browser_cookie(response: BaseResponse, name: str, value: str) -> None:
    """Set one of the ``__Host-`` cookies that tie a login to this browser (https only), as
    the session cookie is sent: its ``SameSite`` (a site framed by another, with
    ``"None"``, gets them back in the frame), and ``Partitioned`` with
    ``SESSION_COOKIE_PARTITIONED`` (a browser that blocks other sites' cookies keeps a
    partitioned session cookie in the frame, but dropped these: every login there ended on
    "This login link is no longer valid")."""
    app = this_app()
    sessions = app.session_interface  # its own answers, where a site's overrides them
    response.set_cookie(name, value, secure=True, httponly=True, path="/",
                        samesite=sessions.get_cookie_samesite(app) or "Lax",
                        partitioned=sessions.get_cookie_partitioned(app))


def binding_cookie_value(binding_id: str) -> str:
    """What the binding cookie holds for ``binding_id`` (a hash: never the id itself)."""
    return hashlib.sha256(f"wechat-qr-binding:{binding_id}".encode()).hexdigest()[:32]


#: The bind page's forms' field naming the WeChat account the page showed.
BINDING_FIELD = "binding"


def binding_field_value(connection: str, app: str, openid: str) -> str:
    """What the bind page's forms send in :data:`BINDING_FIELD` for the WeChat account
    waiting there (``openid`` of the connection's ``app``): a later WeChat login in the same
    browser replaces the waiting account, and a form of the page shown before must not bind
    (or create an account for) that other WeChat. The same account scanned again is the
    same value. Keyed with the app's ``SECRET_KEY``: the page tells nothing of the openid."""
    key = this_app().secret_key
    key_bytes = key if isinstance(key, bytes) else str(key).encode()
    message = f"wechat-qr-bind-page:{connection}:{app}:{openid}".encode()
    return hmac.new(key_bytes, message, hashlib.sha256).hexdigest()[:32]


def _logged_in(outcome: LoggedIn) -> BaseResponse:
    """On to ``next``, or with an ID token to the connection's business callback URL. A receiver of
    ``login_succeeded`` may answer instead (not for a repeated callback: it was told); it is
    given ``next`` as the redirect would go there (inside the app's mount point)."""
    next_url = under_mount_point(outcome.next_url, request.script_root)
    if not outcome.repeated:
        for _receiver, result in signals.send(
            signals.login_succeeded, user=outcome.user, identity=outcome.identity,
            connection=outcome.connection, created_user=outcome.created_user,
            new_identity=outcome.new_identity, next_url=next_url,
        ):
            if isinstance(result, BaseResponse):
                return result
    if outcome.business is not None:
        assert outcome.identity is not None  # the flow gives one with every business login
        return deliver_id_token(outcome.connection, outcome.user, outcome.identity,
                                outcome.business, outcome.auth_time,
                                token_id=outcome.token_id, issued_at=outcome.issued_at)
    return redirect_on(next_url)


def redirect_on(next_url: str, *, logged_in: bool = True) -> BaseResponse:
    """Go on to ``next_url`` (inside the app's mount point, where it has one): a redirect,
    or, when WeChat sent the embedded QR's iframe here (``self_redirect=true``), a page that
    moves the whole window there (the bind page too: the frame is the size of a QR code).
    ``logged_in``: whether the person is logged in by now (the page says so)."""
    request = this_request()
    next_url = under_mount_point(next_url, request.script_root)
    if (request.headers.get("Sec-Fetch-Dest") == "iframe"
            or _keeps_wechats_fragment(request, next_url)):
        return Response(render_template("wechat_qr/break_out.html", next_url=next_url,
                                        logged_in=logged_in))
    return redirect(next_url)


def _keeps_wechats_fragment(request: Request, next_url: str) -> bool:
    """Whether a redirect to ``next_url`` would land on it with ``#wechat_redirect``: the
    Official Account's authorization URL ends with it, and a browser keeps a fragment
    through every redirect that names none of its own (an empty one is dropped on the
    way), so a hash router would see a route named ``wechat_redirect``. Only a page's own
    navigation starts without it. ``request``: the request itself (see :mod:`.context`)."""
    return (request.endpoint == "wechat_qr.callback" and "#" not in next_url
            and classify(request.headers.get("User-Agent")).in_wechat)


def deliver_id_token(connection: ConnectionSettings, user: User, identity: Identity,
                     business: BusinessParams, auth_time: float, *,
                     token_id: str | None = None, issued_at: float | None = None) -> Response:
    """A page that POSTs a signed ID token (and the business ``state``) to the callback
    URL at once: a form body, never a query string, so the token stays out of logs,
    referrers and the browser's history. With ``token_id`` and ``issued_at`` (a login
    posted before) it is that same token again, while it is valid: one login, one token."""
    runtime = current_runtime()
    signer = runtime.id_tokens
    if signer is None:  # init_app refuses a business callback URL without a key
        raise IdTokenError()
    if issued_at is not None and signer.expired(issued_at):
        raise StateError()  # its token was handed on and has expired: log in again
    token, claims = signer.issue(
        issuer=id_token_issuer(),
        connection=connection,
        subject=runtime.adapter.get_user_id(user),
        identity=identity,
        auth_time=auth_time,
        nonce=business.get("nonce"),
        extra_claims=runtime.adapter.id_token_claims(user, connection),
        token_id=token_id,
        issued_at=issued_at,
    )
    signals.send(signals.id_token_issued, user=user, connection=connection, claims=claims)
    fields = {"id_token": token}
    if business.get("state"):
        fields["state"] = business["state"]
    return form_post(connection, fields)


def form_post(connection: ConnectionSettings, fields: dict[str, str]) -> Response:
    """The page that POSTs ``fields`` to the connection's business callback URL at once."""
    response = Response(render_template(
        "wechat_qr/form_post.html", connection=connection, action=connection.callback_url,
        fields=fields,
    ))
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


#: :func:`_own_templates`, by the app's template environment.
_OWN_TEMPLATES: weakref.WeakKeyDictionary[Environment, Environment] = (
    weakref.WeakKeyDictionary())


def error_response(error: LoginError, connection: ConnectionSettings | None,
                   login: LoginData | None) -> tuple[str | BaseResponse, int, dict[str, str]]:
    """The end of a failed login: ``login_failed`` sent, and the first response a receiver
    returned (a single-page app's own route); else its business callback URL told of it
    (for the endings the business handles), else this site's page in words with a "try
    again" link (and a ``Retry-After`` where the error passes by itself; inside WeChat on
    a phone, the error's words for there). Receivers are
    given ``next`` inside the app's mount point, as ``login_succeeded``'s are: the
    login's, else the one its URL asked for."""
    if (error.in_wechat_message is not None
            and classify(request.headers.get("User-Agent")) is Browser.WECHAT_PHONE):
        # Inside WeChat on a phone there is no QR code to scan: the words for there.
        error.title = error.in_wechat_title or error.title
        error.message = error.in_wechat_message
    # A login refused before it kept anything (a link while logged out) still has the
    # ``next`` its URL asked for.
    asked = login.next_url if login is not None else _next_asked()
    next_url = under_mount_point(asked, request.script_root) if asked else None
    # A receiver that counts failures in the database, out of reach or taking no writes,
    # is passed by: the person still gets the page, or another receiver's answer.
    for _receiver, result in signals.send(
            signals.login_failed, _database_passed_by, error=error, connection=connection,
            next_url=next_url):
        if isinstance(result, BaseResponse):
            return result, result.status_code, {}
    if failure_posted_to_business(connection, login):
        assert connection is not None and login is not None  # what it just checked
        code = next((value for kind, value in CALLBACK_URL_ERRORS.items()
                     if isinstance(error, kind)), None)
        if code is not None:
            fields = {"error": code[0], "error_description": code[1]}
            if login.business.get("state"):
                fields["state"] = login.business["state"]
            return form_post(connection, fields), 200, {}
    retry_url = None
    retry = connection
    startable = _logins_again_after(error) if connection is None else []
    if len(startable) == 1 and len(current_runtime().settings.connections) == 1:
        retry, startable = startable[0], []  # the site's one connection: "Try again"
    if retry is not None and error.offers_retry:
        # url_for's values are typed Any: a str dict would be checked against _external.
        again: dict[str, t.Any] = {"next": login.next_url, **login.business} if login else {}
        # A link tried again links: a login there would log in to whichever account the
        # WeChat scanned belongs to, out of the one that was linking.
        linking = (login.link_user is not None if login is not None
                   else request.endpoint == "wechat_qr.link")
        retry_url = url_for("wechat_qr.link" if linking else "wechat_qr.login",
                            connection=retry.identifier, **again)
    return _error_page(error=error, connection=connection, retry_url=retry_url,
                       wechat_logins=[(conn, url_for("wechat_qr.login",
                                                     connection=conn.identifier))
                                      for conn in startable],
                       back_url=next_url or request.script_root + "/",
                       other_login_url=_other_login_for(error, next_url)), error.status, (
        {} if error.retry_after is None else {"Retry-After": str(error.retry_after)})


def _database_passed_by(error: Exception) -> bool:
    """Whether a ``login_failed`` receiver's error is the database's state, not the
    receiver's fault: out of reach, or taking no writes for now. Its transaction is rolled
    back, so that the next receiver and the page find the session usable (PostgreSQL's
    would stay aborted)."""
    if not (is_unreachable(error) or is_refusing(error)):
        return False
    roll_back_quietly(current_runtime().db)
    return True


def _error_page(error: LoginError, **context: t.Any) -> str:
    """The error page. Where the database is out of reach, the extension's own page in its
    own layout, from its own templates (never the site's overrides), drawn without the
    site's context processors (Flask-Login's ``current_user`` loads the logged-in user
    for every template, and a site's layout may show it) and in the browser's language
    (the site's ``select_locale`` may read that user too): the person reads what happened,
    never a bare 500. Known out of reach (:class:`DatabaseUnavailable`), it is drawn so at
    once, after one wait for the database, not two; so is a database that takes no writes
    for now (:class:`DatabaseRefusing`: a timeout may end the layout's reads too); found
    so while drawing the page of another error (a cancel, while the database went away),
    it is drawn so after all."""
    if not isinstance(error, DatabaseUnavailable | DatabaseRefusing):
        try:
            return render_template("wechat_qr/error.html", error=error, **context)
        except Exception as failure:
            if not is_unreachable(failure):
                raise
    keep_to_the_browsers_locale()
    return _own_templates().get_template("wechat_qr/error.html").render(
        error=error, request=request, wechat_qr_layout=lambda: STANDALONE, **context)


def _own_templates() -> Environment:
    """The app's template environment over the extension's own templates only, escaping
    every page whatever the site's ``autoescape`` says; made once per environment."""
    env = current_app.jinja_env
    own = _OWN_TEMPLATES.get(env)
    if own is None:
        own = _OWN_TEMPLATES[env] = env.overlay(
            loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True)
    return own


def _logins_again_after(error: LoginError) -> list[ConnectionSettings]:
    """Where an expired binding's page starts a login again, which the binding no longer
    says: each connection that can start one here (on a site of one, its "Try again"; of
    several, which one it was is not known: a button for each). Not one for a business
    callback URL (its front end's ``state`` went with the binding: it starts its own), nor
    one without credentials (its logins are off)."""
    if not isinstance(error, BindingExpired):
        return []
    return [conn for conn in current_runtime().settings.connections.values()
            if not conn.callback_url and conn.has_credentials]


def _other_login_for(error: LoginError, next_url: str | None) -> str | None:
    """The site's own login, on the pages that ask the person to log in with it: "Log in
    first" (then back to the link), and login-only's refusal, which says to log in and
    link WeChat from the account page (then on to where the WeChat login was going); and
    on an expired binding's, whose bind page was for binding an account of the site."""
    if isinstance(error, NotLoggedIn):
        return other_login_url(_back_after_logging_in(next_url))
    if isinstance(error, (LoginRefused, BindingExpired)):
        return other_login_url(next_url)
    return None


def _back_after_logging_in(next_url: str | None) -> str | None:
    """Where "Log in first" sends the person after the site's own login: the link they
    followed (a ``GET``), to link then; else the page the unlink form named."""
    return request.url if request.method == "GET" else next_url


def other_login_url(next_url: str | None = None) -> str | None:
    """The site's other ways to log in: the setting, else Flask-Login's login view; with
    ``next_url`` as its ``next``, as Flask-Login's own ``login_url`` gives it, so that the
    person still ends where they were going."""
    view = current_runtime().settings.other_login_url
    if not view:
        view = getattr(getattr(current_app, "login_manager", None), "login_view", None)
        if not view or view.startswith("wechat_qr."):
            return None  # WeChat's own login is no other way to log in
    return login_view_url(view, next_url)


def login_view_url(view: str, next_url: str | None = None) -> str | None:
    """Flask-Login's URL of ``view`` (a URL as it is, an endpoint through ``url_for``),
    with ``next_url`` as its ``next``; ``None`` where it cannot be built on this page: an
    endpoint that needs arguments, or the site's URL defaults raising here (a
    ``/<lang_code>`` blueprint's, as Flask's docs write it, reads ``g.lang_code``, set only
    on its own pages). A link the page leaves out, rather than a 500; the latter is logged,
    with its traceback (``flask wechat-qr check`` says so too)."""
    try:
        return str(login_url(view, next_url))
    except BuildError:
        return None
    except Exception:
        log.warning("Flask-Login's login view %r could not be built on this page of the "
                    "login (your URL defaults raised): the page goes on without a link to "
                    "it", view, exc_info=True)
        return None


#: The pages that start a login (or a link), whose ``next`` is the person's way back.
LOGIN_STARTS = ("wechat_qr.login", "wechat_qr.qr", "wechat_qr.link")


def _next_asked() -> str | None:
    """The ``next`` this request asked for, on a page that starts a login (anyone may add
    one to a callback's URL), or in the unlink form; ``None`` where it cannot be read (a
    query that is not UTF-8, a value too long: the very errors the page may be telling
    of)."""
    try:
        if request.endpoint in LOGIN_STARTS:
            return kept_next(request.args.get("next"))
        if request.endpoint == "wechat_qr.unlink":
            return kept_next(request.form.get("next"))
    except (InvalidRequest, UnicodeDecodeError):
        pass
    except HTTPException:  # a form Werkzeug will not read (past its memory limit: a 413)
        pass
    return None


def kept_next(value: str | None) -> str | None:
    """The ``next`` this request asked for, as a login keeps it: a path of this site, or
    a page of the site on another of its hosts (the ``shop.`` subdomain whose button
    started the login; over https where this request is); else ``None``."""
    if not value:  # most starts: no request attribute read (each a context look-up)
        return None
    script_root, secure = request.script_root, request.is_secure

    def served(url: SplitResult) -> bool:
        return (not (secure and url.scheme.lower() != "https")
                and serves_on_another_host(current_app, url, script_root))

    return safe_next(value, request.host, served)


def id_token_issuer() -> str:
    """The ``iss`` of this site's ID tokens: ``WECHAT_QR_ID_TOKEN_ISSUER``, else the root
    URL of ``SERVER_NAME`` (not the request's Host header, which a client chooses), else
    the request's root URL; both at the app's mount point, where the public keys are
    (``iss`` + ``/auth/.well-known/jwks.json``). For a receiver living in the same app (as
    the example's)."""
    mount_point = request.script_root if has_request_context() else ""
    return (configured_issuer(current_runtime().settings, current_app.config, mount_point,
                              routes_subdomain(current_app))
            or request.url_root.rstrip("/"))
