"""The site's pages: home, local accounts, the account page and a small JSON API."""

from __future__ import annotations

import hashlib
import re
import time
import typing as t
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, logout_user
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from flask_wechat_qr import LoginError, safe_next

from . import csrf
from .models import LoginFailure, User, accounts, db, wechat

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

bp = Blueprint("site", __name__)
bp.before_request(csrf.protect)

USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,40}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def _next_url() -> str | None:
    """Where to go after logging in: a local path, or nowhere (the extension's rule)."""
    try:
        return safe_next(request.values.get("next"))
    except LoginError:  # longer than any honest link
        return None


#: Wrong passwords allowed per account and per client address within the window.
FAILURES_PER_ACCOUNT = 10
FAILURES_PER_ADDRESS = 50
FAILURE_WINDOW = 15 * 60


def _count_failure(username: str) -> tuple[int, bool]:
    """Count a login attempt as a failure *before* its password is checked (so a burst of
    guesses sees itself); its id, and whether a limit is already passed."""
    account = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    address = (request.remote_addr or "unknown")[:64]
    now = time.time()
    db.session.execute(sa.delete(LoginFailure).where(LoginFailure.at < now - FAILURE_WINDOW))
    failure = LoginFailure(account=account, address=address, at=now)
    db.session.add(failure)
    db.session.commit()
    per_account, per_address = db.session.execute(sa.select(
        sa.func.count().filter(LoginFailure.account == account),
        sa.func.count().filter(LoginFailure.address == address),
    ).where(LoginFailure.at >= now - FAILURE_WINDOW)).one()
    blocked = per_account > FAILURES_PER_ACCOUNT or per_address > FAILURES_PER_ADDRESS
    return failure.id, blocked


def _forget_failure(failure_id: int) -> None:
    """The attempt was right (or blocked before any check): it is no failure."""
    db.session.execute(sa.delete(LoginFailure).where(LoginFailure.id == failure_id))
    db.session.commit()


def _log_in(user: User) -> None:
    """Log in on a fresh session, as the WeChat login does."""
    accounts.renew_session()
    accounts.login_user(user)


@bp.get("/")
def index() -> ResponseReturnValue:
    setup = current_app.extensions["example_app"]["wechat_setup"]
    callback_url = callback_domain = None
    if not setup.enabled:
        # What to register on the WeChat Open Platform, as the extension will build it.
        config = current_app.config
        prefix = "/" + str(config.get("WECHAT_QR_URL_PREFIX", "/auth") or "").strip("/")
        connection = config.get("WECHAT_QR_CONNECTION") or "wechat"
        callback_url = f"{request.host_url.rstrip('/')}{prefix.rstrip('/')}/{connection}/callback"
        callback_domain = urlsplit(request.host_url).hostname
    return render_template("index.html", callback_url=callback_url,
                           callback_domain=callback_domain)


@bp.route("/register", methods=["GET", "POST"])
def register() -> ResponseReturnValue:
    next_url = _next_url()
    errors: list[str] = []
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if not USERNAME.fullmatch(username):
            errors.append("A username has 3 to 40 letters, digits, '.', '_' or '-'.")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            errors.append(f"A password has at least {MIN_PASSWORD} characters.")
        if not errors:
            taken = db.session.execute(
                sa.select(User.id).where(sa.func.lower(User.username) == username.lower())
            ).first()
            if taken:
                errors.append("That username is taken. Choose another one.")
        if not errors:
            user = User(username=username, password_hash=generate_password_hash(password))
            db.session.add(user)
            try:
                db.session.commit()
            except IntegrityError:
                db.session.rollback()
                errors.append("That username is taken. Choose another one.")
            else:
                _log_in(user)
                flash(f"Welcome, {user.display_name}! Your account is ready.")
                return redirect(next_url or url_for(".index"))
    return render_template("register.html", errors=errors, username=username,
                           next_url=next_url), 400 if errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_url = _next_url()
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")[:MAX_PASSWORD]
        failure_id, blocked = _count_failure(username)
        if blocked:
            _forget_failure(failure_id)
            return render_template("login.html", username=username, next_url=next_url,
                                   error="Too many wrong passwords. Wait 15 minutes and try "
                                         "again."), 429
        # Constant work whether or not the user exists: timing does not reveal usernames.
        user = accounts.authenticate(username, password)
        error = "Wrong username or password."
        if user is not None:
            _forget_failure(failure_id)
            try:
                _log_in(user)
            except LoginError as refused:  # e.g. a disabled account (is_active false)
                error = str(refused.message)
            else:
                flash(f"Logged in as {user.display_name}.")
                return redirect(next_url or url_for(".index"))
    return render_template("login.html", error=error, username=username,
                           next_url=next_url), 400 if error else 200


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> ResponseReturnValue:
    """POST (with the CSRF token) logs out; GET asks for confirmation, so a link or an
    ``<img>`` on another site cannot log anyone out."""
    if request.method == "GET":
        if not current_user.is_authenticated:
            return redirect(url_for(".index"))
        return render_template("logout.html")
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for(".index"))


@bp.get("/account")
@login_required
def account() -> ResponseReturnValue:
    return render_template("account.html", identities=wechat.identities_of(current_user))


@bp.get("/api/me")
def api_me() -> ResponseReturnValue:
    """The logged-in user as JSON; 401 JSON for anyone else (never a redirect)."""
    if not current_user.is_authenticated:
        response = jsonify(error="unauthorized", message="Log in first.")
        response.status_code = 401
    else:
        user = current_user
        response = jsonify({
            "id": user.id,
            "username": user.username,
            "nickname": user.nickname,
            "identities": [
                {"connection": i.connection, "openid": i.openid, "unionid": i.unionid}
                for i in wechat.identities_of(user)
            ],
        })
    response.headers["Cache-Control"] = "no-store"
    return response
