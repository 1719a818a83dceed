"""Typed errors.

Two families: :class:`ConfigurationError` stops ``init_app`` with a message naming the
key and the fix; :class:`LoginError` ends one login attempt with a page that tells the
person what happened and what to do next, and an HTTP status that says whose fault it was.
"""

from __future__ import annotations

import click

from .i18n import LazyText, in_english
from .i18n import lazy_gettext as _l


class WeChatQRError(Exception):
    """Base class of every error this extension raises."""


class ConfigurationError(WeChatQRError, ValueError, click.ClickException):
    """A setting is missing or wrong; raised at ``init_app`` time.

    Also a :class:`click.ClickException`, click's own way to end a command with a message:
    raised while a ``flask`` command loads the app (a factory calling ``init_app``), it is
    shown as one ``Error:`` paragraph (key, problem, fix) with exit status 1, not as a
    traceback that ends with the message.
    """

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        click.ClickException.__init__(self, f"{key}: {problem}. {fix}")

    def format_message(self) -> str:
        """The message as a ``flask`` command shows it, after ``Error:``. A config key
        (``WECHAT_QR_APP_ID``) is a setting; ``user_model`` and the like are arguments."""
        what = "setting " if self.key[:1].isupper() else ""
        return f"Flask-WeChat-QR {what}{self.key}: {self.problem}. Fix: {self.fix}"


class LoginError(WeChatQRError):
    """A login attempt that cannot go on.

    ``title`` and ``message`` are shown to the person, translated when shown (in the page's
    language); ``str(error)`` stays English, for the operator's logs. ``status`` is the HTTP
    status of the page. Nothing here ever contains a secret, a code or a token.
    """

    status = 400
    title: str | LazyText = _l("Login failed")
    message: str | LazyText = _l("The WeChat login could not be completed. Please try again.")
    #: whether the site operator (not the visitor) has to act
    operator_error = False
    #: whether the page offers to start the login again (in the same browser, it can help)
    offers_retry = True
    #: seconds after which trying again may help, sent as the page's ``Retry-After`` (a
    #: 429 or 503 that will pass by itself); ``None``: no such header
    retry_after: int | None = None
    #: the page's words inside WeChat on a phone, where a message about scanning a QR
    #: code asks the impossible; ``None``: the same words everywhere
    in_wechat_title: str | LazyText | None = None
    in_wechat_message: str | LazyText | None = None

    def __init__(self, message: str | LazyText | None = None, *,
                 retry_after: int | None = None) -> None:
        if message is not None:
            self.message = message
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(in_english(self.message))


class UnknownConnection(LoginError):
    status = 404
    title = _l("Unknown login method")
    message = _l(
        "This site has no WeChat login by that name. Go back and choose another way to log in."
    )


class StateError(LoginError):
    """Missing, forged, expired or already used ``state``."""

    status = 400
    title = _l("This login link is no longer valid")
    message = _l(
        "The login expired, was already completed, or was started in another browser. "
        "Start the WeChat login again from this browser."
    )


class StateUsed(StateError):
    """Another request of the same login finished first (WeChat's double redirect with a
    second code, or a replayed cookie): its outcome answers this one."""


class LoginCancelled(LoginError):
    """WeChat came back with ``state`` but no ``code``: the user tapped Deny."""

    status = 200
    title = _l("Login cancelled")
    message = _l(
        "You cancelled the WeChat login. Nothing was changed. You can try again."
    )


class InvalidRequest(LoginError):
    """A request to one of our routes that no honest browser sends (oversized values, ...)."""

    status = 400
    title = _l("Invalid request")
    message = _l("The request was not understood. Start the WeChat login again.")


class TooManyLoginsStarted(LoginError):
    """Too many logins with long data are waiting from this address, or from everyone: no
    more are kept until some finish or expire (``retry_after``: the waiting logins'
    lifetime, ``WECHAT_QR_STATE_TTL``). Only for data that must come back (a
    business ``state``): a login long only for its ``next`` goes on without it."""

    status = 429
    title = _l("Too many logins started")
    message = _l(
        "Too many WeChat logins were started from your network and not finished. Wait a few "
        "minutes, then start the login again."
    )


class AccountDisabled(LoginError):
    """The user exists but may not log in (Flask-Login: ``is_active`` is false): disabled
    by the site, or not approved yet; the page does not guess which."""

    status = 403
    title = _l("This account cannot log in")
    message = _l(
        "The account on this site that this WeChat is linked to may not log in: the site has "
        "disabled it, or not approved it yet. Contact the site owner."
    )


class AccountNotActiveYet(AccountDisabled):
    """The user this very login made may not log in yet (Flask-Login: ``is_active`` is
    false): a site whose new accounts wait for its approval or a confirmation. Told so,
    not that the account is disabled."""

    title = _l("Your account was created")
    message = _l(
        "Your account on this site was made with your WeChat, but the site does not let it "
        "log in yet (for example, until the site approves it). Try again later, or contact "
        "the site owner."
    )


class LoginRefused(LoginError):
    """Login-only mode: this WeChat account has no account on this site."""

    status = 403
    title = _l("No account is linked to this WeChat")
    message = _l(
        "This site does not create accounts from WeChat. Log in with your account, then "
        "link WeChat from your account page."
    )

    def __init__(self, message: str | LazyText | None = None, *,
                 openid: str | None = None) -> None:
        super().__init__(message)
        #: the refused WeChat account (for the ``login_refused`` signal), when known
        self.openid = openid


class BindingExpired(LoginError):
    """The pending "bind or create" choice is gone: used, expired, or from another browser."""

    status = 400
    title = _l("This WeChat login has expired")
    message = _l(
        "The choice between binding and creating an account expired or was already made. "
        "Log in with WeChat again."
    )


class BindingReplaced(BindingExpired):
    """A bind page's form named a WeChat account other than the one waiting now: another
    WeChat login started in the same browser after that page was shown (at a shared
    computer, a stranger's). Nothing was bound, created or counted; its page shows no
    form for the account waiting now, and offers to log in with WeChat again."""

    status = 409
    title = _l("Another WeChat account is waiting here")
    message = _l(
        "Another WeChat account started logging in in this browser after that page was "
        "shown, so nothing was bound or created. To bind your own WeChat, log in with "
        "WeChat again."
    )


class BindingBlocked(LoginError):
    """Too many wrong passwords while binding; ``retry_after``: the block's window
    (``WECHAT_QR_BIND_BLOCK_SECONDS``), which the message names too."""

    status = 429
    title = _l("Too many attempts")
    message = _l(
        "Too many wrong usernames or passwords. Binding is blocked for a while; "
        "wait 15 minutes and log in with WeChat again."
    )


class NotLoggedIn(LoginError):
    """Linking or unlinking without a logged-in account. Starting WeChat's login again would
    log in to (or make) another account, not link: the page offers the site's own login
    where one is known."""

    status = 401
    title = _l("Log in first")
    message = _l("Log in to your account first, then link or unlink WeChat from your account page.")
    offers_retry = False


class AlreadyLinked(LoginError):
    """The WeChat account is linked to a different local account."""

    status = 409
    title = _l("This WeChat is linked to another account")
    message = _l(
        "This WeChat account is already linked to another account on this site. Log in "
        "with WeChat to use that account, or unlink it there first."
    )


class LinkedMeanwhile(AlreadyLinked):
    """"Create a new account" on a bind page whose WeChat account got linked while the page
    waited (the same person chose in another browser, say on the computer and inside WeChat
    on the phone). Not a login to that account: the page may have been left open at a
    shared computer."""

    title = _l("This WeChat was linked meanwhile")
    message = _l(
        "While this page waited, this WeChat account was linked to an account on this site "
        "(in another browser or tab). Log in with WeChat to use that account."
    )


class ConnectionAlreadyLinked(LoginError):
    """The local account already has an identity on this connection."""

    status = 409
    title = _l("Your account already has a WeChat linked")
    message = _l(
        "Your account already has a WeChat account linked for this login. Unlink it from "
        "your account page first if you want to link another one."
    )
    offers_retry = False


class NotLinked(LoginError):
    status = 404
    title = _l("No WeChat account linked")
    message = _l("Your account has no WeChat account linked for this login.")
    offers_retry = False


class LastLoginMethod(LoginError):
    """Unlinking would leave the account with no way to log in."""

    status = 409
    title = _l("This is your only way to log in")
    message = _l(
        "Unlinking this WeChat account would leave your account with no way to log in. "
        "Set a password or link another account first."
    )
    offers_retry = False


class SnapshotUser(LoginError):
    """WeChat's browse-only "snapshot" mode hands out virtual ids; never log them in."""

    status = 403
    title = _l("WeChat did not share your account")
    message = _l(
        "WeChat opened this page in browse-only mode. Tap \u201c使用完整服务\u201d "
        "(use full service) in WeChat, then log in again."
    )


class ProfileNotShared(LoginError):
    """Asked for the person's profile (``snsapi_userinfo``), WeChat still answered with a
    silent login's token: asking again would only loop."""

    status = 403
    title = _l("WeChat did not share your profile")
    message = _l(
        "The first time you log in, this site needs WeChat to share your nickname and avatar "
        "with it. Log in again and tap Allow (允许)."
    )


class WeComBrowser(LoginError):
    """WeCom's (企业微信) browser: it holds a work account, not the person's WeChat, so
    neither the QR code nor an Official Account can log them in there."""

    status = 400
    title = _l("Open this page in WeChat or a browser")
    message = _l(
        "WeCom (企业微信) cannot log in with a personal WeChat account. Copy this page's "
        "link and open it in WeChat, or in a browser on a computer and scan the QR code."
    )
    offers_retry = False  # the same browser again: the same page

    def __init__(self, page_url: str | None = None) -> None:
        super().__init__()
        #: the link to copy (the page shows it: WeCom's browser hides its address bar)
        self.page_url = page_url


class SessionCookieNotSent(LoginError):
    """The browser would not send the session cookie, which carries the login's state, to
    the callback: every login would end on "This login link is no longer valid", with
    nothing in the log. Refused at its start instead; ``str(error)`` (logged at ``ERROR``)
    gives the reason and the fix."""

    status = 503
    operator_error = True
    offers_retry = False
    title = _l("WeChat login is not available")
    message = _l(
        "This site's WeChat login is set up in a way that cannot finish, so it is off. Log "
        "in another way, or try again later; the site's operator has been told why."
    )

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
        self.args = (f"{self.args[0]} {reason}: the browser does not send the session "
                     "cookie, which carries the login's state, to the callback. Fix: unset "
                     "SESSION_COOKIE_PATH and SESSION_COOKIE_DOMAIN (Flask's defaults cover "
                     "the whole site), or make them include the callback; APPLICATION_ROOT "
                     "only where the app is really served under that path (docs: deploying, "
                     "'Under a URL prefix').",)


# --- Errors from talking to WeChat -------------------------------------------------


class LoginUnavailable(LoginError):
    """The site's WeChat login is off until its operator fixes its set-up (the reason is in
    the server's log, said once at start-up)."""

    status = 503
    operator_error = True
    title = _l("WeChat login is not available")
    message = _l(
        "This site's WeChat login is not set up safely yet, so it is off. Log in another "
        "way, or try again later; the site's operator has been told why."
    )


class LoginNotSetUp(LoginUnavailable):
    """The connection has no AppID and AppSecret yet: the site runs, its WeChat login is
    off (said once at start-up)."""

    title = _l("WeChat login is not set up yet")
    message = _l(
        "This site has not finished setting up its WeChat login, so it is off for now. Log "
        "in another way, or try again later."
    )


class IdTokenError(LoginError):
    """The ID token for the connection's business callback URL could not be made (the
    site's own adapter gave claims that are not JSON)."""

    status = 500
    operator_error = True
    title = _l("Login could not be completed")
    message = _l(
        "You are logged in to this site, but it could not hand the login on to the "
        "application that asked for it. Tell the site's operator; try again later."
    )


class AccountNotSaved(LoginError):
    """The database refused a login's changes on every try: not two requests making the same
    identity (that ends on the second try) but the site's own data, most often a user
    ``AccountAdapter.create_user`` made without a column the database requires.
    ``str(error)`` (logged at ``ERROR``) gives the database's reason and the fix."""

    status = 500
    operator_error = True
    title = _l("Login could not be completed")
    message = _l(
        "This site could not save your account. Its operator has been told; try again "
        "later, or log in another way."
    )

    def __init__(self, reason: str, advice: str | None = None,
                 said_by: str = "The database") -> None:
        super().__init__()
        self.reason = reason
        advice = advice or ("If that is a column of the user model, AccountAdapter.create_user "
                            "must fill it (docs: hooks, 'Creating users')")
        self.args = (f"{self.args[0]} {said_by} said: {reason}. {advice}.",)


class _DatabaseForNow(LoginError):
    """The site's database, not the login, stops it for now: a page that says to try again
    in a few minutes, and the operator told at ``ERROR``."""

    status = 503
    operator_error = True
    retry_after = 120  # "a few minutes", as the page says
    # its own title: the page's title (a tab, a screen reader's first words) says what
    # happened, as the other errors' do (an accessibility hunt, session 36)
    title = _l("Login unavailable for now")


class DatabaseUnavailable(_DatabaseForNow):
    """The site's database could not be asked at all: the server is down or refuses
    connections, a connection was lost and lost again, or none of the pool's connections
    came free within ``pool_timeout``. Nothing of the login was saved, nor could its ending
    be recorded; ``str(error)`` (logged at ``ERROR``) gives the reason and what to check."""

    message = _l(
        "This site cannot reach its database right now, so the login cannot go on. Try "
        "again in a few minutes; the site's operator has been told."
    )

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
        self.args = (
            f"{self.args[0]} Asking it failed with: {reason}. Check that the database "
            "server is running and reachable from this machine (its address, port and "
            "firewall, its limit of connections) and that the database URL's account, "
            "password and database name are right; where the pool had no free connection "
            "(\"QueuePool limit ... reached\"), give it more (pool_size, max_overflow) or "
            "each process fewer threads. A connect_timeout in the database URL keeps a "
            "request from waiting minutes for a server that does not answer (docs: "
            "deploying, 'Database settings')",)


class DatabaseRefusing(_DatabaseForNow):
    """The site's database answered but would not do the login's work for now: it is
    read-only (a replica after a failover, ``default_transaction_read_only``, a SQLite file
    or folder the site cannot write), its disk is full, it failed to read or write its files,
    or it cancelled a statement that ran or waited too long (``statement_timeout``,
    ``lock_timeout``, MariaDB's ``max_statement_time``). Nothing of the login was saved;
    ``str(error)`` (logged at ``ERROR``) gives the database's reason and what to check."""

    message = _l(
        "This site cannot save logins right now, so the login cannot go on. Try again in a "
        "few minutes; the site's operator has been told."
    )

    #: What to check, by default: the kinds of refusal the reason may be.
    ADVICE = (
        "Check that it accepts writes (not a read-only replica, default_transaction_read_only "
        "or read_only off; a SQLite file and its folder writable by the site's user), that "
        "its disk has room (a SQLite 'disk I/O error' may also be a damaged file: PRAGMA "
        "integrity_check), and that statement_timeout (MariaDB's max_statement_time) leaves "
        "a login's few statements time enough")
    #: What to check where another transaction held a lock the login needed.
    LOCK_ADVICE = (
        "Another transaction held a row or table the login needed for longer than the "
        "database waits for a lock (lock_timeout, innodb_lock_wait_timeout), twice: look for "
        "long transactions of the site's own on the user or identity tables (a request "
        "that keeps one open, a batch job)")

    def __init__(self, reason: str, advice: str | None = None) -> None:
        super().__init__()
        self.reason = reason
        self.args = (f"{self.args[0]} The database said: {reason}. {advice or self.ADVICE}",)


class WeChatUnavailable(LoginError):
    """WeChat could not be reached or answered something that is not its API."""

    status = 502
    title = _l("WeChat is not answering")
    message = _l("WeChat's servers did not answer properly. Wait a moment and try again.")


class WeChatTimeout(WeChatUnavailable):
    status = 504
    title = _l("WeChat took too long")
    message = _l("WeChat's servers took too long to answer. Wait a moment and try again.")


class WeChatAPIError(LoginError):
    """WeChat answered with ``{"errcode": N, "errmsg": "..."}`` (always on HTTP 200).

    ``errmsg`` carries a request id suffix (``, rid: ...``), so code matches on
    ``errcode`` only.
    """

    status = 502
    title = _l("WeChat refused the login")
    message = _l(
        "WeChat refused this login. Try again; if it keeps happening, tell the site owner."
    )

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        self.errcode = errcode
        #: WeChat's text, with line breaks and other control characters escaped: it goes
        #: into the site's logs, where a line break would forge a log line
        self.errmsg = "".join(ch if ch.isprintable() else ascii(ch)[1:-1]
                              for ch in str(errmsg)[:500])
        errmsg = self.errmsg
        super().__init__()
        self.args = (f"WeChat errcode {errcode}: {errmsg}",)

    def __str__(self) -> str:
        return f"WeChat errcode {self.errcode}: {self.errmsg}"


class InvalidCode(WeChatAPIError):
    """40029 / 42003: the code is wrong, expired (5 minutes) or from another AppID."""

    status = 400
    title = _l("This QR code has expired")
    message = _l("The WeChat authorization expired or is not valid. Scan a new QR code.")
    in_wechat_title = _l("This WeChat authorization has expired")
    in_wechat_message = _l(
        "The WeChat authorization expired or is not valid. Tap “Try again” to log in again.")


class CodeUsed(WeChatAPIError):
    """40163: the code was already exchanged (double redirect or a page refresh)."""

    status = 400
    title = _l("This QR code was already used")
    message = _l("This WeChat authorization was already used. Scan the QR code again.")
    in_wechat_title = _l("This WeChat authorization was already used")
    in_wechat_message = _l(
        "This WeChat authorization was already used. Tap “Try again” to log in again.")


class MissingCode(WeChatAPIError):
    """41008: WeChat got no code."""

    status = 400
    title = _l("WeChat sent no authorization")
    message = _l("WeChat did not send an authorization. Scan the QR code again.")
    in_wechat_message = _l(
        "WeChat did not send an authorization. Tap “Try again” to log in again.")


class InvalidCredentials(WeChatAPIError):
    """40125 / 40013 / 40001: the site's AppID or AppSecret is wrong."""

    operator_error = True
    title = _l("This site's WeChat login is misconfigured")
    message = _l(
        "WeChat rejected this site's WeChat credentials (AppID or AppSecret). "
        "This is not your fault: tell the site owner. You can log in another way meanwhile."
    )


class InvalidAccessToken(WeChatAPIError):
    """40014 / 42001 / 40003: the access token is invalid or expired."""

    title = _l("WeChat authorization expired")
    message = _l(
        "The WeChat authorization expired before it could be used. Scan the QR code again."
    )
    in_wechat_message = _l(
        "The WeChat authorization expired before it could be used. Tap “Try again” to log "
        "in again.")


class InvalidRefreshToken(WeChatAPIError):
    """40030 / 42002: the refresh token is invalid or past its 30 days."""

    title = _l("WeChat authorization expired")
    message = _l(
        "The stored WeChat authorization can no longer be renewed. Log in with WeChat again."
    )


class WeChatBusy(WeChatAPIError):
    """-1: WeChat's system is busy."""

    title = _l("WeChat is busy")
    message = _l("WeChat's servers are busy right now. Wait a moment and try again.")


class RateLimited(WeChatAPIError):
    """45011: this site hit WeChat's per-minute API quota."""

    operator_error = True
    title = _l("Too many WeChat logins right now")
    message = _l("This site reached WeChat's limit for the moment. Wait a minute and try again.")


class Unauthorized(WeChatAPIError):
    """48001 / 50001: the token does not allow this API (e.g. a snapshot user)."""

    title = _l("WeChat did not share your profile")
    message = _l("WeChat did not allow this site to read your profile. Scan the QR code again.")
    in_wechat_message = _l(
        "WeChat did not allow this site to read your profile. Tap “Try again” to log in "
        "again.")


#: errcode -> error class; anything else is a plain :class:`WeChatAPIError`.
ERRCODES: dict[int, type[WeChatAPIError]] = {
    -1: WeChatBusy,
    40001: InvalidCredentials,
    40013: InvalidCredentials,
    40125: InvalidCredentials,
    40003: InvalidAccessToken,
    40014: InvalidAccessToken,
    42001: InvalidAccessToken,
    40029: InvalidCode,
    42003: InvalidCode,
    40163: CodeUsed,
    41008: MissingCode,
    40030: InvalidRefreshToken,
    42002: InvalidRefreshToken,
    45011: RateLimited,
    48001: Unauthorized,
    50001: Unauthorized,
}


def error_for(errcode: int, errmsg: str = "") -> WeChatAPIError:
    """The typed error for a WeChat ``errcode``."""
    return ERRCODES.get(errcode, WeChatAPIError)(errcode, errmsg)
