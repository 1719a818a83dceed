"""The ``wechat_qr`` blueprint: thin views over the client, the policy and the adapter."""

from __future__ import annotations

import logging
import time
import typing as t
from dataclasses import dataclass, field

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from . import signals
from .association import BindingRequired, Resolution
from .csrf import FIELD as CSRF_FIELD
from .csrf import check_csrf, csrf_token
from .errors import (
    AlreadyLinked,
    BindingExpired,
    CodeUsed,
    ConnectionAlreadyLinked,
    InvalidRequest,
    LoginCancelled,
    LoginError,
    LoginRefused,
    NotLoggedIn,
    StateError,
    StateUsed,
)
from .i18n import LazyText, qr_page_lang, register_template_globals, userinfo_lang
from .i18n import lazy_gettext as _l
from .login_state import TooManyWaiting
from .runtime import current_runtime
from .settings import configured_issuer
from .urls import has_control_characters, safe_next

if t.TYPE_CHECKING:
    from .client import WeChatClient
    from .login_state import LoginStates
    from .settings import ConnectionSettings

log = logging.getLogger("flask_wechat_qr")

blueprint = Blueprint("wechat_qr", __name__, template_folder="templates")

#: Seconds after a login in which the same browser's repeated callback (WeChat's double
#: redirect) logs in again instead of failing; later, only an already logged-in user is
#: sent on. Short, because it trusts the pre-login session cookie.
REPEAT_WINDOW = 10
#: Longest authorization code sent on to WeChat (its codes are 32 characters): a longer one
#: is refused here, not sent to WeChat's front end, which answers an HTML 414 (a 502 page).
MAX_CODE_LENGTH = 512
#: Session key holding the id of this browser's pending binding (never put in a URL).
PENDING_BINDING_KEY = "_wechat_qr_pending_binding"
#: Session key holding the business ``state``/``nonce`` while a binding is pending.
DELIVERY_KEY = "_wechat_qr_delivery"
#: Longest business ``state`` and ``nonce`` accepted by ``login``/``qr`` (echoed / signed
#: into the ID token for the connection's callback URL).
MAX_BUSINESS_STATE_LENGTH = 1024
MAX_NONCE_LENGTH = 255


@blueprint.before_request
def refuse_undecodable_query() -> None:
    """A query string that is not UTF-8 (raw bytes: no browser sends them, a script can)
    makes Werkzeug's ``request.args`` raise; answer with a 400 page, not a 500."""
    try:
        request.query_string.decode()
    except UnicodeDecodeError:
        raise InvalidRequest() from None


def _redirect_uri(connection: str) -> str:
    return url_for("wechat_qr.callback", connection=connection, _external=True)


@blueprint.route("/<connection>/login")
def login(connection: str) -> Response:
    """Send the browser to WeChat's QR page."""
    started = _begin(connection)
    return redirect(started.client.authorize_url(
        started.redirect_uri, started.state, lang=qr_page_lang()))


@blueprint.route("/<connection>/qr")
def qr(connection: str) -> str:
    """A page of this site with WeChat's QR code embedded (as ``wxLogin.js`` does it)."""
    started = _begin(connection)
    client = started.client
    return render_template(
        "wechat_qr/qr.html",
        connection=client.connection,
        iframe_url=client.qr_iframe_url(started.redirect_uri, started.state,
                                        lang=qr_page_lang()),
        login_url=url_for("wechat_qr.login", connection=connection, next=started.next_url,
                          **started.delivery),
        # Reload for a fresh state a little before this one expires.
        refresh_after=max(30, current_runtime().settings.state_ttl - 30),
    )


@blueprint.route("/<connection>/link")
def link(connection: str) -> Response:
    """Link WeChat to the logged-in account: the same QR login, attached on return."""
    ext = current_runtime()
    user = ext.adapter.current_user()
    if user is None:
        ext.client(connection)  # an unknown connection is a 404 first
        raise NotLoggedIn()
    started = _begin(connection, link_user=ext.adapter.get_user_id(user))
    return redirect(started.client.authorize_url(
        started.redirect_uri, started.state, lang=qr_page_lang()))


class _Started(t.NamedTuple):
    client: WeChatClient
    redirect_uri: str
    state: str
    next_url: str | None
    #: the business front end's ``state``/``nonce`` (a connection with a callback URL)
    delivery: dict[str, str]


def _begin(connection: str, **data: t.Any) -> _Started:
    """Start a login of ``connection``: a new state keeping ``next`` (and, for a callback
    URL, the business's ``state`` and ``nonce``) until the callback."""
    ext = current_runtime()
    client = ext.client(connection)
    next_url = safe_next(request.args.get("next"))
    delivery = {}
    if client.connection.callback_url and "link_user" not in data:
        delivery = data["delivery"] = _business_params()
    state = ext.login_states[connection].begin(next=next_url, **data)
    return _Started(client, _redirect_uri(connection), state, next_url, delivery)


def _business_params() -> dict[str, str]:
    """The business front end's ``state`` and ``nonce`` given to ``login``/``qr``: echoed
    with (``state``) and signed into (``nonce``) the ID token for the callback URL."""
    params = {}
    for name, limit in (("state", MAX_BUSINESS_STATE_LENGTH), ("nonce", MAX_NONCE_LENGTH)):
        value = request.args.get(name)
        if not value:
            continue
        if len(value) > limit or has_control_characters(value):
            raise InvalidRequest(_l("The login's %(name)s parameter is not valid.", name=name))
        params[name] = value
    return params


@dataclass
class _Login:
    """The login this request is finishing (callback or bind page); the error page reads
    it for its "try again" link and for what to tell a callback URL."""

    connection: str
    next_url: str | None = None
    #: the business front end's ``state``/``nonce`` (a connection with a callback URL)
    delivery: dict[str, str] = field(default_factory=dict)
    #: linking from the account page, not logging in
    linking: bool = False
    #: the state's outcome is recorded (in the login's own transaction: a later failure,
    #: e.g. in a signal receiver, does not undo it) or another request of it answers this
    #: one; until then a failure is recorded as the outcome
    settled: bool = False


@blueprint.route("/<connection>/callback")
def callback(connection: str) -> Response:
    """WeChat sends the browser back here: check state, exchange code, log in (or link)."""
    ext = current_runtime()
    client = ext.client(connection)
    states = ext.login_states[connection]
    state = request.args.get("state")
    same_browser = states.owns(state)
    try:
        data = states.take(state)
    except StateError:
        return _repeated_callback(client, state, same_browser)
    login = g.wechat_qr_login = _Login(connection, data.get("next"),
                                       data.get("delivery") or {}, bool(data.get("link_user")))
    if states.outcome(state) is not None:
        # A replayed cookie, or WeChat's second redirect after the first one ended: no
        # WeChat call, no second login.
        return _repeated_callback(client, state, same_browser=True)
    try:
        return _finish_callback(client, t.cast(str, state), data, login)
    except StateUsed:
        # WeChat's double redirect with a second code: the other request finished first.
        login.settled = True
        return _repeated_callback(client, state, same_browser=True)
    except LoginError as error:
        if login.settled or _record_failure(states, t.cast(str, state), login, error):
            if isinstance(error, LoginRefused) and error.openid:
                signals.login_refused.send(_app(), connection=client.connection,
                                           openid=error.openid)
            raise
        # Another request of this login (WeChat's double redirect) ended first, and the
        # browser shows this response: answer as that one did.
        try:
            return _repeated_callback(client, state, same_browser=True)
        except StateError:
            raise error from None
    finally:
        if not login.settled:  # anything else that went wrong: recorded too
            _record_failure(states, t.cast(str, state), login)


def _record_failure(states: LoginStates, state: str, login: _Login,
                    error: BaseException | None = None) -> bool:
    """Record that the login of ``state`` failed, and how, so a repeated callback gets the
    same answer: ``False`` if another request of it ended first."""
    login.settled = True
    outcome = {"error": type(error).__name__ if error is not None else True, "at": time.time()}
    try:
        return states.record_failure(state, outcome)
    except Exception:  # never hide the login's own result behind this bookkeeping
        log.exception("could not record the outcome of a WeChat callback")
        return True


def _finish_callback(client: WeChatClient, state: str, data: dict[str, t.Any],
                     login: _Login) -> Response:
    """The callback after its state checked out. Whatever the login writes, and the use of
    its state, are one transaction: a request that loses the race for the state (WeChat
    calls back twice) rolls back with :class:`StateUsed`."""
    ext = current_runtime()
    states = ext.login_states[client.connection.identifier]
    code = request.args.get("code")
    if not code:
        raise LoginCancelled()
    if len(code) > MAX_CODE_LENGTH:
        raise InvalidRequest(
            _l("The WeChat authorization is not valid. Scan the QR code again."))
    try:
        token = client.exchange_code(code)
    except CodeUsed as used:
        # WeChat's double redirect with the same code: the other request has it. Wait for
        # it as long as its remaining WeChat calls may take. In vain, the code is spent:
        # nobody waits for it again (making a worker wait takes a fresh scan), and this
        # state is used (a replay does not wait either).
        if states.is_spent_code(code):
            raise used from None
        try:
            response = _repeated_callback(client, state, same_browser=True,
                                          wait=ext.settings.code_used_wait)
        except TooManyWaiting:
            login.settled = True  # the other request may still finish: record nothing
            raise used from None
        except StateError:
            states.remember_spent_code(code)
            raise used from None
        except LoginError:
            login.settled = True  # the other request's ending, repeated
            raise
        login.settled = True
        return response
    fetch_profile = lambda: client.userinfo(  # noqa: E731 - only if the policy asks
        token, lang=userinfo_lang())
    next_url = login.next_url
    after_login = next_url or ext.settings.post_login_url

    def use_state(**outcome: t.Any) -> None:
        """Use the state, with how its login ended, in the login's own transaction."""
        states.use(state, outcome, within=ext.db.session)

    if login.linking:
        user = ext.adapter.current_user()
        if user is None or ext.adapter.get_user_id(user) != data["link_user"]:
            raise NotLoggedIn()  # logged out (or in as someone else) since the link started
        resolution = ext.policy.link(
            client.connection, token, fetch_profile, user,
            before_commit=lambda _resolution: use_state(user_id=data["link_user"],
                                                        next=after_login))
        login.settled = True
        return _linked(client.connection, resolution, after_login)
    auth_time = time.time()

    def logged_in(resolution: Resolution) -> None:
        use_state(user_id=ext.adapter.get_user_id(resolution.user), next=after_login,
                  # The repeat window starts when the login is done, not when the code came.
                  at=time.time(), auth_time=auth_time, delivery=login.delivery)

    try:
        resolution = ext.policy.resolve(client.connection, token, fetch_profile,
                                        before_commit=logged_in)
    except BindingRequired as required:
        binding_id = ext.bindings.start(
            client.connection, token, required.profile, next_url,
            # The repeated callback of this browser gets the same pending binding.
            before_commit=lambda binding_id: use_state(bind=binding_id, at=time.time(),
                                                       delivery=login.delivery))
        login.settled = True
        session[PENDING_BINDING_KEY] = binding_id
        if login.delivery:
            session[DELIVERY_KEY] = login.delivery
        else:
            session.pop(DELIVERY_KEY, None)
        return redirect(url_for("wechat_qr.bind"))
    login.settled = True
    return _logged_in(client.connection, resolution, next_url, login.delivery, auth_time)


def _repeated_callback(client: WeChatClient, state: str | None, same_browser: bool,
                       wait: float = 0) -> Response:
    """A callback whose state another request used: WeChat's double redirect (the same or
    a second code, within a second) or a refresh of the callback page. It ends the way that
    login did (never logging in twice); else it is a :class:`StateError`. ``wait``: how
    long the other request may still take."""
    ext = current_runtime()
    outcome = ext.login_states[client.connection.identifier].outcome(state, wait)
    recent = outcome is not None and time.time() - outcome.get("at", 0) <= REPEAT_WINDOW
    if outcome is None or "user_id" not in outcome:
        if outcome is not None and outcome.get("bind") and same_browser:
            if session.get(PENDING_BINDING_KEY) is None and recent:
                # This request carries the cookie from before the first callback.
                session[PENDING_BINDING_KEY] = outcome["bind"]
                if outcome.get("delivery"):
                    session[DELIVERY_KEY] = outcome["delivery"]
            return redirect(url_for("wechat_qr.bind"))
        repeated = REPEATED_ERRORS.get(str(outcome.get("error"))) if outcome else None
        if repeated is not None and same_browser and recent:
            raise repeated()  # the same page (or callback URL post) as the first request
        raise StateError()
    current = ext.adapter.current_user()
    if current is not None and ext.adapter.get_user_id(current) == outcome["user_id"]:
        # A refresh after the login: already done.
        return _end_repeated(client.connection, current, outcome)
    if not same_browser or not recent:
        raise StateError()
    user = ext.adapter.load_user(outcome["user_id"])
    if user is None:
        raise StateError()
    ext.adapter.renew_session()
    ext.adapter.login_user(user)
    return _end_repeated(client.connection, user, outcome)


def _end_repeated(connection: ConnectionSettings, user: t.Any,
                  outcome: dict[str, t.Any]) -> Response:
    """End a repeated callback as its first one ended: on to ``next``, or (a callback URL)
    a new ID token for the same login."""
    if connection.callback_url and "delivery" in outcome:
        identity = current_runtime().policy.identity_of(user, connection.identifier)
        if identity is None:  # unlinked meanwhile
            raise StateError()
        return _deliver_id_token(connection, user, identity, outcome["delivery"],
                                 outcome["auth_time"])
    return _redirect_on(outcome["next"])


@blueprint.route("/bind", methods=["GET", "POST"])
def bind() -> t.Any:
    """Ask binding: bind this WeChat to an existing account (password) or create one.

    Form contract: ``action=create``, or ``action=bind`` with ``username`` and
    ``password``; always ``csrf_token``.
    """
    ext = current_runtime()
    binding_id = session.get(PENDING_BINDING_KEY)
    pending = ext.bindings.get(binding_id)
    connection = ext.settings.connections.get(pending.connection)
    if connection is None:
        raise BindingExpired()
    g.wechat_qr_login = _Login(connection.identifier, pending.next_url,
                               session.get(DELIVERY_KEY) or {})
    if request.method == "GET":
        return _bind_page(connection, pending)

    check_csrf(request.form.get(CSRF_FIELD))
    action = request.form.get("action")
    next_url = pending.next_url
    if action == "create":
        try:
            resolution = ext.bindings.create_account(connection, binding_id)
        except LoginRefused:
            signals.login_refused.send(_app(), connection=connection, openid=pending.openid)
            raise
    elif action == "bind":
        address = request.remote_addr or "unknown"
        user = ext.bindings.prove_account(binding_id, address, request.form.get("username", ""),
                                          request.form.get("password", ""))
        if user is None:
            signals.binding_failed.send(_app(), connection=connection,
                                        reason="wrong_credentials", address=address)
            return _bind_page(connection, pending, _l("Wrong username or password."), 400)
        try:
            resolution = ext.bindings.bind_account(connection, binding_id, user)
        except ConnectionAlreadyLinked as exc:
            signals.binding_failed.send(_app(), connection=connection,
                                        reason="already_linked", address=address)
            return _bind_page(connection, pending, exc.message, exc.status)
        except AlreadyLinked:
            signals.binding_failed.send(_app(), connection=connection,
                                        reason="linked_elsewhere", address=address)
            raise
    else:
        raise InvalidRequest(_l("Choose whether to bind an existing account or create one."))
    return _logged_in(connection, resolution, next_url, session.pop(DELIVERY_KEY, None))


@blueprint.route("/<connection>/unlink", methods=["POST"])
def unlink(connection: str) -> Response:
    """Unlink the logged-in user's WeChat account of this connection (never the last way in)."""
    ext = current_runtime()
    client = ext.client(connection)
    user = ext.adapter.current_user()
    if user is None:
        raise NotLoggedIn()
    check_csrf(request.form.get(CSRF_FIELD))
    # Checked before anything is unlinked: an oversized next refuses the whole request.
    next_url = safe_next(request.form.get("next"))
    identity = ext.policy.unlink(client.connection, user)
    signals.identity_unlinked.send(_app(), user=user, identity=identity,
                                   connection=client.connection)
    return redirect(next_url or ext.settings.post_login_url)


def _bind_page(connection: ConnectionSettings, pending: t.Any,
               problem: str | LazyText | None = None, status: int = 200) -> tuple[str, int]:
    return render_template(
        "wechat_qr/bind.html", connection=connection, pending=pending, problem=problem,
        can_signup=current_runtime().adapter.can_signup(connection), csrf_token=csrf_token(),
        username=request.form.get("username", "") if problem else "",
    ), status


def _linked(connection: ConnectionSettings, resolution: Resolution, next_url: str
            ) -> Response:
    """Tell the signals about a WeChat account linked from the account page; move on."""
    if resolution.new_identity:
        signals.identity_linked.send(_app(), user=resolution.user,
                                     identity=resolution.identity, connection=connection,
                                     via="link")
    return _redirect_on(next_url)


def _logged_in(connection: ConnectionSettings, resolution: Resolution,
               next_url: str | None, delivery: dict[str, str] | None = None,
               auth_time: float | None = None) -> Response:
    """Renew the session, log in, tell the signals, and move on: to ``next``, or with an
    ID token to the connection's callback URL."""
    ext = current_runtime()
    ext.adapter.renew_session()
    ext.adapter.login_user(resolution.user)
    app = _app()
    if resolution.created_user:
        signals.user_created.send(app, user=resolution.user, identity=resolution.identity,
                                  connection=connection)
    if resolution.new_identity:
        signals.identity_linked.send(app, user=resolution.user, identity=resolution.identity,
                                     connection=connection, via=resolution.via)
    next_url = next_url or ext.settings.post_login_url
    for _receiver, result in signals.login_succeeded.send(
        app, user=resolution.user, identity=resolution.identity,
        connection=connection, created_user=resolution.created_user,
        new_identity=resolution.new_identity, next_url=next_url,
    ):
        if isinstance(result, Response):
            return result
    if connection.callback_url:
        return _deliver_id_token(connection, resolution.user, resolution.identity,
                                 delivery or {}, auth_time or time.time())
    return _redirect_on(next_url)


def _deliver_id_token(connection: ConnectionSettings, user: t.Any, identity: t.Any,
                      delivery: dict[str, str], auth_time: float) -> Response:
    """A page that POSTs a signed ID token (and the business ``state``) to the callback
    URL at once: a form body, never a query string, so the token stays out of logs,
    referrers and the browser's history."""
    ext = current_runtime()
    signer = ext.id_tokens
    if signer is None:  # init_app refuses a callback URL without a key; defensive only
        raise RuntimeError("a callback URL without an ID token key")
    token, claims = signer.issue(
        issuer=id_token_issuer(),
        connection=connection,
        subject=ext.adapter.get_user_id(user),
        identity=identity,
        auth_time=auth_time,
        nonce=delivery.get("nonce"),
        extra_claims=ext.adapter.id_token_claims(user, connection),
    )
    signals.id_token_issued.send(_app(), user=user, connection=connection, claims=claims)
    fields = {"id_token": token}
    if delivery.get("state"):
        fields["state"] = delivery["state"]
    return _form_post(connection, fields)


def _form_post(connection: ConnectionSettings, fields: dict[str, str]) -> Response:
    """The page that POSTs ``fields`` to the connection's callback URL at once."""
    response = Response(render_template(
        "wechat_qr/form_post.html", connection=connection, action=connection.callback_url,
        fields=fields,
    ))
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _redirect_on(next_url: str) -> Response:
    if request.headers.get("Sec-Fetch-Dest") == "iframe":
        # Embedded QR with self_redirect=true: WeChat sent the iframe here, not the page.
        return Response(render_template("wechat_qr/break_out.html", next_url=next_url))
    return redirect(next_url)


def id_token_issuer() -> str:
    """The ``iss`` of this site's ID tokens: ``WECHAT_QR_ID_TOKEN_ISSUER``, else the root
    URL of ``SERVER_NAME`` (not the request's Host header, which a client chooses), else
    the request's root URL."""
    return (configured_issuer(current_runtime().settings, current_app.config)
            or request.url_root.rstrip("/"))


def _app() -> t.Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


@blueprint.errorhandler(LoginError)
def login_error(error: LoginError) -> tuple[str | Response, int]:
    """Every login that cannot go on ends here: a page in words, never a traceback."""
    ext = current_runtime()
    login: _Login | None = g.get("wechat_qr_login")
    connection_id = (request.view_args or {}).get("connection") or (login and login.connection)
    connection = ext.settings.connections.get(connection_id) if connection_id else None
    if error.operator_error:
        log.error("WeChat login failed and needs the site operator: %s (%s)",
                  error, type(error).__name__)
    else:
        log.info("WeChat login ended: %s (%s)", error, type(error).__name__)
    signals.login_failed.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                              error=error, connection=connection)
    reported = _report_to_callback_url(connection, login, error)
    if reported is not None:
        return reported, 200
    retry_url = None
    if connection is not None:
        retry_url = url_for("wechat_qr.login", connection=connection.identifier,
                            **({"next": login.next_url, **login.delivery} if login else {}))
    return render_template("wechat_qr/error.html", error=error, connection=connection,
                           retry_url=retry_url), error.status


#: Failed endings a repeated callback of the same browser repeats (by the name recorded
#: with the used state); any other failure is repeated as a :class:`StateError`.
REPEATED_ERRORS: dict[str, type[LoginError]] = {
    "LoginCancelled": LoginCancelled,
    "LoginRefused": LoginRefused,
}


#: Endings of a login that a connection's callback URL is told of (``error`` field), as an
#: OAuth redirect URI is: the person's choice or the site's policy, which the business front
#: end should handle itself. Anything else (an expired link, WeChat down) is this site's
#: page, where the person can try again.
CALLBACK_URL_ERRORS: dict[type[LoginError], tuple[str, str]] = {
    LoginCancelled: ("access_denied", "The user cancelled the WeChat login."),
    LoginRefused: ("account_not_linked",
                   "No account of this site is linked to this WeChat account (login only)."),
}


def _report_to_callback_url(connection: ConnectionSettings | None, login: _Login | None,
                            error: LoginError) -> Response | None:
    """The page that posts ``error`` (and the business ``state``) to the connection's
    callback URL, for the endings the business handles; ``None`` for the others (and for
    linking from the account page, which is this site's own business)."""
    if connection is None or not connection.callback_url or login is None or login.linking:
        return None
    code = next((value for kind, value in CALLBACK_URL_ERRORS.items()
                 if isinstance(error, kind)), None)
    if code is None:
        return None
    fields = {"error": code[0], "error_description": code[1]}
    if login.delivery.get("state"):
        fields["state"] = login.delivery["state"]
    return _form_post(connection, fields)


register_template_globals(blueprint)


@blueprint.app_template_global("wechat_qr_csrf_token")
def template_csrf_token() -> str:
    """For the host's own unlink forms: ``<input name="csrf_token" value="...">``."""
    return csrf_token()


@blueprint.app_template_global("wechat_qr_connection")
def template_connection(identifier: str) -> t.Any:
    """A connection's settings, or ``None``: a template global, so the login button macro
    works when imported without context (``{% from "wechat_qr/macros.html" import ... %}``),
    where context processors' variables are not visible."""
    ext = current_app.extensions.get("wechat_qr")
    return ext.settings.connections.get(identifier) if ext is not None else None


@blueprint.route("/.well-known/jwks.json")
def jwks() -> tuple[Response, int] | Response:
    """The public keys of the RS256 ID tokens, for receivers to verify them with."""
    signer = current_runtime().id_tokens
    if signer is None or not signer.public_jwks:
        response = jsonify(error="not_found",
                           error_description="No RS256 ID token key is configured.")
        response.headers["Cache-Control"] = "no-store"
        return response, 404
    response = jsonify(signer.jwks())
    # Public and cacheable; receivers refetch when they meet an unknown kid (rotation).
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@blueprint.after_request
def no_store(response: Response) -> Response:
    """Login pages carry one-time state; no cache may keep them."""
    if request.endpoint != "wechat_qr.jwks":
        response.headers["Cache-Control"] = "no-store"
    return response
