"""A stand-in for a separate business front end that receives the ID token.

With ``WECHAT_QR_CALLBACK_URL`` pointing at ``/business/wechat-done`` (and an ID token key),
``/business/`` starts a WeChat login with its own ``state`` and ``nonce``, and the callback
URL verifies the posted token the way another service would: signature, issuer, audience,
expiry, nonce, and its own ``state``. It lives in this app only to make the demo one process.
"""

from __future__ import annotations

import hmac
import secrets
import time
import typing as t

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, make_response, render_template, request, url_for
from itsdangerous import BadData, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey
from joserfc.jwt import JWTClaimsRegistry

from flask_wechat_qr import id_token_issuer

from .i18n import gettext as _
from .models import UsedIdToken, db, wechat

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

bp = Blueprint("business", __name__, url_prefix="/business")

#: Cookie where the demo keeps the login it started: the front end's own storage, not this
#: site's session (which is renewed at the WeChat login).
PENDING_COOKIE = "business_login"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="business-login")


def _connection() -> t.Any | None:
    """The first connection that posts ID tokens, if any."""
    return next((c for c in wechat.connections.values() if c.callback_url), None)


@bp.get("/")
def start() -> ResponseReturnValue:
    connection = _connection()
    login_url = pending = None
    if connection is not None:
        pending = {"state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16)}
        login_url = url_for("wechat_qr.login", connection=connection.identifier, **pending)
    response = make_response(render_template("business.html", connection=connection,
                                             login_url=login_url, claims=None))
    if pending:
        response.set_cookie(PENDING_COOKIE, _serializer().dumps(pending), max_age=600,
                            path=bp.url_prefix, httponly=True, samesite="Lax",
                            secure=request.is_secure)
    return response


@bp.post("/wechat-done")
def wechat_done() -> ResponseReturnValue:
    """The callback URL: trust the login only if the token verifies."""
    try:
        pending = _serializer().loads(request.cookies.get(PENDING_COOKIE, ""), max_age=600)
    except BadData:
        pending = {}
    state = request.form.get("state", "")
    if not pending or not hmac.compare_digest(pending.get("state", ""), state):
        abort(400, description=_("This login was not started here (its state does not "
                                 "match)."))
    connection = _connection()
    if connection is None:
        abort(404)
    if request.form.get("error"):  # the user said no, or login-only refused them
        response = make_response(render_template(
            "business.html", connection=connection, login_url=url_for("business.start"),
            claims=None, error=request.form["error"]))
        response.delete_cookie(PENDING_COOKIE, path=bp.url_prefix)
        return response
    # A separate service would fetch /auth/.well-known/jwks.json (or hold the secret).
    jwks = wechat.jwks()
    keys: t.Any = (KeySet.import_key_set(jwks) if jwks["keys"]
                   else OctKey.import_key(current_app.config["WECHAT_QR_ID_TOKEN_SECRET"]))
    try:
        token = jwt.decode(request.form.get("id_token", ""), keys,
                           algorithms=["RS256" if jwks["keys"] else "HS256"])
        JWTClaimsRegistry(
            iss={"essential": True, "value": id_token_issuer()},
            aud={"essential": True,
                 "value": connection.id_token_audience or connection.identifier},
            nonce={"essential": True, "value": pending.get("nonce")},
            exp={"essential": True},  # a token without an expiry is never accepted
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        abort(400, description=_("The ID token did not verify (%(reason)s).",
                                 reason=type(exc).__name__))
    if not _first_use(str(token.claims.get("jti", "")), float(token.claims["exp"])):
        abort(400, description=_("The ID token did not verify (%(reason)s).",
                                 reason="ReplayedToken"))
    response = make_response(render_template("business.html", connection=connection,
                                             login_url=None, claims=token.claims))
    response.delete_cookie(PENDING_COOKIE, path=bp.url_prefix)  # one login, used once
    return response


def _first_use(jti: str, expires_at: float) -> bool:
    """Remember a token's ``jti`` until it expires; ``False`` if it was seen before (a
    token replayed, with the login's cookie, to log in again)."""
    if not jti or len(jti) > 64:
        return False
    db.session.execute(sa.delete(UsedIdToken).where(UsedIdToken.expires_at < time.time()))
    db.session.add(UsedIdToken(jti=jti, expires_at=expires_at))
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        return False
    return True
