"""The site's pages: home, local accounts, the account page and a small JSON API."""

from __future__ import annotations

import hashlib
import re
import time
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from flask_login import current_user, login_required, logout_user
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from werkzeug.security import generate_password_hash

from flask_wechat_qr import LoginError, safe_next

from . import csrf
from .i18n import gettext as _
from .i18n import gettext_noop
from .models import LoginFailure, User, accounts, db, login_manager, wechat

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
        return safe_next(request.values.get("next"), request.host)
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
        # count(CASE ...), not count(*) FILTER: MariaDB and MySQL have no FILTER
        sa.func.count(sa.case((LoginFailure.account == account, 1))),
        sa.func.count(sa.case((LoginFailure.address == address, 1))),
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


@bp.get("/favicon.ico")
def favicon() -> ResponseReturnValue:
    """Where browsers look for an icon on pages without a link to one (the extension's and
    the sandbox's own): the site's icon, answered without the session, so it never sends a
    cookie that could arrive after a login's and undo it (a 404 page loaded the user). The
    file itself, not a redirect: a permanent one would stay in the browser for every other
    site later served on the same host and port."""
    return send_from_directory(current_app.static_folder or "static", "favicon.svg",
                               mimetype="image/svg+xml", max_age=86400)


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
            errors.append(_("A username has 3 to 40 letters, digits, '.', '_' or '-'."))
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            errors.append(_("A password has at least %(num)d characters.", num=MIN_PASSWORD))
        if not errors:
            taken = db.session.execute(
                sa.select(User.id).where(sa.func.lower(User.username) == username.lower())
            ).first()
            if taken:
                errors.append(_("That username is taken. Choose another one."))
        if not errors:
            user = User(username=username, password_hash=generate_password_hash(password))
            db.session.add(user)
            try:
                db.session.commit()
            except IntegrityError:
                db.session.rollback()
                errors.append(_("That username is taken. Choose another one."))
            else:
                _log_in(user)
                flash(_("Welcome, %(name)s! Your account is ready.", name=user.display_name))
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
                                   error=_("Too many wrong passwords. Wait 15 minutes and "
                                           "try again.")), 429
        # Constant work whether or not the user exists: timing does not reveal usernames.
        user = accounts.authenticate(username, password)
        error = _("Wrong username or password.")
        if user is not None:
            _forget_failure(failure_id)
            try:
                _log_in(user)
            except LoginError as refused:  # e.g. a disabled account (is_active false)
                error = str(refused.message)
            else:
                flash(_("Logged in as %(name)s.", name=user.display_name))
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
    flash(_("You are logged out."))
    return redirect(url_for(".index"))


#: What each app of a connection is to a person: the QR code on a computer (the website
#: application) or the login inside WeChat (the Official Account).
APP_NAMES = {"website": gettext_noop("QR code login"),
             "official_account": gettext_noop("Login inside WeChat")}


@dataclass(frozen=True)
class LinkedWeChat:
    """One WeChat account linked on one connection. A person who logged in both by QR code
    and inside WeChat has an identity of each app there (one openid per app, one unionid);
    to them it is one WeChat, linked once, and unlinking removes both."""

    connection: str
    #: oldest first
    identities: list[t.Any]

    @property
    def profile(self) -> t.Any:
        """The identity to show the nickname and avatar of: the last one to log in with a
        profile (a silent in-WeChat login may carry none)."""
        with_profile = [i for i in self.identities if i.nickname] or self.identities
        return max(with_profile, key=lambda identity: identity.last_login_at)

    @property
    def unionids(self) -> list[str]:
        return list(dict.fromkeys(i.unionid for i in self.identities if i.unionid))

    def app_name(self, identity: t.Any) -> str:
        return _(APP_NAMES[identity.app]) if identity.app in APP_NAMES else identity.app


def linked_wechat(user: User) -> list[LinkedWeChat]:
    """The user's linked WeChat accounts, one per connection, oldest first."""
    by_connection: dict[str, list[t.Any]] = {}
    for identity in wechat.identities_of(user):
        by_connection.setdefault(identity.connection, []).append(identity)
    return [LinkedWeChat(connection, identities)
            for connection, identities in by_connection.items()]


@bp.get("/account")
@login_required
def account() -> ResponseReturnValue:
    return render_template("account.html", linked=linked_wechat(current_user))


@bp.get("/account/unlink/<connection>")
@login_required
def confirm_unlink(connection: str) -> ResponseReturnValue:
    """Ask before unlinking: this page's form posts to the extension's unlink route (with
    the CSRF token), so a click on the account page never unlinks by itself."""
    linked = next((entry for entry in linked_wechat(current_user)
                   if entry.connection == connection), None)
    # A connection since removed from the settings has no unlink route to post to.
    settings = wechat.connections.get(connection)
    if linked is None or settings is None:
        abort(404, description=_("No WeChat account of this kind is linked to your account."))
    return render_template("unlink.html", linked=linked, connection=settings)


@bp.get("/api/me")
def api_me() -> ResponseReturnValue:
    """The logged-in user as JSON; 401 JSON for anyone else (never a redirect)."""
    if not current_user.is_authenticated:
        response = jsonify(error="unauthorized", message=_("Log in first."))
        response.status_code = 401
    else:
        user = current_user
        response = jsonify({
            "id": user.id,
            "username": user.username,
            "nickname": user.nickname,
            "identities": [
                {"connection": i.connection, "app": i.app, "openid": i.openid,
                 "unionid": i.unionid}
                for i in wechat.identities_of(user)
            ],
        })
    response.headers["Cache-Control"] = "no-store"
    return response


#: The error page's title and text by status; the text unless the error carries its own.
ERROR_TEXTS: dict[int, tuple[str, str]] = {
    400: (gettext_noop("Bad request"),
          gettext_noop("The site could not use this request. Go back and try again.")),
    401: (gettext_noop("Log in first"), gettext_noop("Log in to see this page.")),
    403: (gettext_noop("Not allowed"), gettext_noop("You are not allowed to see this page.")),
    404: (gettext_noop("Page not found"),
          gettext_noop("There is no page at this address. Check it, or start again from "
                       "the home page.")),
    405: (gettext_noop("Not allowed"),
          gettext_noop("This address does not take this kind of request.")),
    429: (gettext_noop("Too many requests"), gettext_noop("Wait a moment and try again.")),
}
#: Requests for a page (``Sec-Fetch-Dest``); other requests' errors get no page.
PAGE_DESTINATIONS = frozenset({"document", "iframe", "frame", "fencedframe", "empty"})
OTHER_ERROR = (gettext_noop("Something went wrong"),
               gettext_noop("The site could not answer this request. Try again in a moment."))


@bp.app_errorhandler(HTTPException)
def error_page(error: HTTPException) -> ResponseReturnValue:
    """The site's pages in words and in the visitor's language, never Werkzeug's English
    default. The extension's and the sandbox's routes answer with their own pages.

    An error must not write the session: its answer may arrive after a login's (a missing
    icon the browser asked for while the visitor logged in, a fetch) and would put back
    the session from before (a helper's hunt, session 38). So a request that is not for
    a page gets no page, and a visitor who is not logged in is not loaded: Flask-Login
    writes "_fresh" into a session holding a CSRF token the first time it loads one."""
    if (request.blueprint or "").startswith("wechat_qr"):
        return error
    code = error.code or 500
    # The error's own headers (a 405's Allow), not its default page's Content-Type
    headers = [(name, value) for name, value in error.get_headers()
               if name.lower() != "content-type"]
    headers.append(("Vary", "Sec-Fetch-Dest"))
    if request.headers.get("Sec-Fetch-Dest", "document") not in PAGE_DESTINATIONS:
        # An image, a script, an icon (Safari's apple-touch-icon.png): its status in words
        return Response(error.name, code, headers, mimetype="text/plain")
    title, text = ERROR_TEXTS.get(code, OTHER_ERROR)
    # Our own aborts carry a message already in the visitor's language.
    own = error.description if error.description != type(error).description else None
    if "_user_id" not in session:
        # Flask-Login's context processor loads the user for every template; where nobody
        # is logged in, its slot for the request's user gets the anonymous one instead.
        g._login_user = login_manager.anonymous_user()
    return render_template("error.html", code=code, title=_(title),
                           message=own or _(text)), code, headers
