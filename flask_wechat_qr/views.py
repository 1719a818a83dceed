"""The ``wechat_qr`` blueprint: thin views over the client, the policy and the adapter."""

from __future__ import annotations

import logging
import typing as t
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)

from . import signals
from .errors import InvalidRequest, LoginCancelled, LoginError

if t.TYPE_CHECKING:
    from .extension import WeChatQRState

log = logging.getLogger("flask_wechat_qr")

blueprint = Blueprint("wechat_qr", __name__, template_folder="templates")

#: Longest ``next`` accepted; anything longer is refused before any work is done.
MAX_NEXT_LENGTH = 2048


def _state() -> WeChatQRState:
    return t.cast("WeChatQRState", current_app.extensions["wechat_qr"])


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a path on this site, else ``None`` (no open redirects)."""
    if not value:
        return None
    if len(value) > MAX_NEXT_LENGTH:
        raise InvalidRequest("The return address is too long. Start the login again.")
    if (
        not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
    ):
        log.info("ignored an off-site next parameter")
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def _redirect_uri(connection: str) -> str:
    return url_for("wechat_qr.callback", connection=connection, _external=True)


@blueprint.route("/<connection>/login")
def login(connection: str) -> Response:
    """Send the browser to WeChat's QR page."""
    client = _state().client(connection)
    next_url = safe_next(request.args.get("next"))
    redirect_uri = _redirect_uri(connection)
    state = client.begin_login(redirect_uri, next=next_url)
    return redirect(client.authorize_url(redirect_uri, state))


@blueprint.route("/<connection>/qr")
def qr(connection: str) -> str:
    """A page of this site with WeChat's QR code embedded (as ``wxLogin.js`` does it)."""
    ext = _state()
    client = ext.client(connection)
    next_url = safe_next(request.args.get("next"))
    redirect_uri = _redirect_uri(connection)
    state = client.begin_login(redirect_uri, next=next_url)
    return render_template(
        "wechat_qr/qr.html",
        connection=client.connection,
        iframe_url=client.qr_iframe_url(redirect_uri, state),
        login_url=url_for("wechat_qr.login", connection=connection, next=next_url),
        # Reload for a fresh state a little before this one expires.
        refresh_after=max(30, int(ext.settings.state_ttl) - 30),
    )


@blueprint.route("/<connection>/callback")
def callback(connection: str) -> Response:
    """WeChat sends the browser back here: check state, exchange code, log in."""
    ext = _state()
    client = ext.client(connection)
    data = client.take_state(request.args.get("state"))
    request.wechat_qr_next = data.get("next")  # type: ignore[attr-defined]
    code = request.args.get("code")
    if not code:
        raise LoginCancelled()

    token = client.exchange_code(code)
    resolution = ext.policy.resolve(
        client.connection, token, fetch_profile=lambda: client.userinfo(token)
    )
    ext.adapter.renew_session()
    ext.adapter.login_user(resolution.user)

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if resolution.created_user:
        signals.user_created.send(app, user=resolution.user, identity=resolution.identity,
                                  connection=client.connection)
    next_url = data.get("next") or ext.settings.post_login_url
    for _receiver, result in signals.login_succeeded.send(
        app, user=resolution.user, identity=resolution.identity,
        connection=client.connection, created_user=resolution.created_user,
        new_identity=resolution.new_identity, next_url=next_url,
    ):
        if isinstance(result, Response):
            return result
    if request.headers.get("Sec-Fetch-Dest") == "iframe":
        # Embedded QR with self_redirect=true: WeChat sent the iframe here, not the page.
        return Response(render_template("wechat_qr/break_out.html", next_url=next_url))
    return redirect(next_url)


@blueprint.errorhandler(LoginError)
def login_error(error: LoginError) -> tuple[str, int]:
    """Every login that cannot go on ends here: a page in words, never a traceback."""
    ext = _state()
    connection_id = (request.view_args or {}).get("connection")
    connection = ext.settings.connections.get(connection_id) if connection_id else None
    if error.operator_error:
        log.error("WeChat login failed and needs the site operator: %s (%s)",
                  error, type(error).__name__)
    else:
        log.info("WeChat login ended: %s (%s)", error, type(error).__name__)
    signals.login_failed.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                              error=error, connection=connection)
    retry_url = None
    if connection is not None:
        retry_url = url_for("wechat_qr.login", connection=connection.identifier,
                            next=getattr(request, "wechat_qr_next", None))
    return render_template("wechat_qr/error.html", error=error, connection=connection,
                           retry_url=retry_url), error.status


@blueprint.app_template_global("wechat_qr_connection")
def template_connection(identifier: str) -> t.Any:
    """A connection's settings, or ``None``: a template global, so the login button macro
    works when imported without context (``{% from "wechat_qr/macros.html" import ... %}``),
    where context processors' variables are not visible."""
    ext = current_app.extensions.get("wechat_qr")
    return ext.settings.connections.get(identifier) if ext is not None else None


@blueprint.after_request
def no_store(response: Response) -> Response:
    """Login pages carry one-time state; no cache may keep them."""
    response.headers["Cache-Control"] = "no-store"
    return response
