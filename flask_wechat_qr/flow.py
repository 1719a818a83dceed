"""Finishing a login: from WeChat's callback (or the bind page) to a typed outcome.

The data path of a login reads down this module::

    finish(connection, callback)          the browser came back from WeChat
      take the state (this browser's)             login_state
      exchange the code                           client
      resolve the user, write rows                association / binding (flushed)
      use the state, with how the login ended     login_state (same transaction)
      commit                                      here: one commit per login
      log in; user_created, identity_linked       adapter, signals
      a stale profile: refreshed in the background  refresh (after the commit)
      -> LoggedIn | Linked | NeedsBinding | Finishing | Failed
                                          (delivery.py sends login_succeeded)

The flow owns the transaction: the policy and the pending bindings decide and write rows,
the flow commits them together with the use of the login's state, so a login is never
finished twice. It knows the Flask session (through the login states, the adapter and the
pending-binding pointer) but no request or response: the views parse the request and
:mod:`.delivery` turns the outcome into a response.

WeChat calls the callback twice for one login now and then (its "double redirect", with
the same code or a second one, a fraction of a second apart), and people refresh the
callback page. Such a repeated callback ends the way its login ended, by this table
(``recent``: at most :data:`REPEAT_WINDOW` seconds after that login ended)::

    how the login ended     this browser?  recent?  the repeated callback
    ---------------------   -------------  -------  --------------------------------------
    (not ended, not used)        -            -     StateError ("no longer valid")
    waiting for binding         yes           -     the bind page (its pointer restored
                                                    into a pre-login cookie when recent)
    cancelled / refused         yes          yes    the same page again (or the same error
                                                    posted to the business callback URL)
    cancelled, on this site's   its session   -     the cancelled page again, with the same
      page (not posted)                             "Try again" (however late: the session
                                                    names its last cancelled login)
    any other failure            -            -     StateError
    logged in or linked as U     -            -     U is the logged-in user: on to where
                                                    that login went (a new ID token for a
                                                    callback URL)
    logged in as U              yes          yes    log U in again, then as above
    logged in or linked as U    otherwise           StateError

A repeated callback that still carries the state in its cookie (sent before the first
answer arrived, or a replayed cookie) exchanges its code like the first: the same code gets
40163 ("code used") from WeChat, and the request waits up to ``WECHAT_QR_CODE_USED_WAIT``
seconds for the first one to end (no wait once it has), then ends as above. Where the
first is still at work when the wait runs out (WeChat slow to send a new person's
profile), the request uses nothing (using the state would refuse the first one's commit)
and ends on a page that loads the callback again (:class:`Finishing`) until the first has
ended or had time enough (:func:`finishing_time`); it then ends as above, or as "already
used". A second code is exchanged; the request finds the state used before it asks for a
profile (someone new) or when it inserts the used state's row (someone returning: the
row's primary key is the check, so a returning login reads nothing for it), rolls back and
ends as above. Whatever else befalls a request whose login ended before it came (no code,
WeChat refusing its code, a refusal here), it ends as above; only a request that ran beside
the first shows its own error where the first one's ending is not one to repeat.
"""

from __future__ import annotations

import logging
import time
import typing as t
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import has_request_context, session
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm.exc import FlushError

from . import signals, transactions, write_turns
from .association import BindingRequired, PersonMadeMeanwhile, Resolution
from .client import ProfileNotGranted
from .errors import (
    AccountDisabled,
    AccountNotActiveYet,
    AccountNotSaved,
    BindingExpired,
    CodeUsed,
    DatabaseRefusing,
    DatabaseUnavailable,
    InvalidRequest,
    LoginCancelled,
    LoginError,
    LoginRefused,
    NotLoggedIn,
    ProfileNotShared,
    StateError,
    StateUsed,
)
from .i18n import lazy_gettext as _l
from .i18n import userinfo_lang
from .id_token import new_token_id
from .login_state import (
    UNEXPECTED_ERROR,
    BusinessParams,
    Ending,
    ExpiredState,
    LoginData,
    LoginStates,
    TooManyWaiting,
)
from .model_base import engine_of
from .outage import DatabaseOutage
from .settings import OFFICIAL_ACCOUNT
from .transactions import database_reason

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.engine import Connection

    from .adapter import AccountAdapter
    from .association import AssociationPolicy
    from .binding import PendingBindings
    from .client import OfficialAccountClient, WeChatClient, WeChatProfile, WeChatToken
    from .protocols import Identity, PendingBinding, User
    from .refresh import ProfileRefresher
    from .settings import ConnectionSettings, Settings

log = logging.getLogger("flask_wechat_qr")

#: Seconds after a login in which the same browser's repeated callback (WeChat's double
#: redirect) logs in again instead of failing; later, only an already logged-in user is
#: sent on. Short, because it trusts the pre-login session cookie.
REPEAT_WINDOW = 10
#: Seconds after which the page of a callback waiting for the other request of its login
#: (:class:`Finishing`) loads it again: well inside :data:`REPEAT_WINDOW`.
FINISHING_RELOAD = 2
#: Longest authorization code sent on to WeChat (its codes are 32 characters): a longer one
#: is refused here, not sent to WeChat's front end, which answers an HTML 414 (a 502 page).
MAX_CODE_LENGTH = 512
#: Session key holding the id of this browser's pending binding (never put in a URL).
PENDING_BINDING_KEY = "_wechat_qr_pending_binding"
#: Session key holding the business ``state``/``nonce`` while a binding is pending.
BUSINESS_KEY = "_wechat_qr_delivery"
#: Set in the session a binding's choice logged in (until another binding waits): the bind
#: page asked for again (Back) then says the login is done, not that it expired.
FINISHED_BINDING_KEY = "_wechat_qr_binding_done"
#: Whose session the pending binding was made in (the logged-in user's id, or ``None``):
#: another person logged in there since ends it (a shared computer).
PENDING_BINDING_OF_KEY = "_wechat_qr_pending_binding_of"
#: The ending recorded for a silent login of someone new (see :class:`NeedsProfile`): a
#: repeated callback of the same browser asks for the profile again, as the first did.
PROFILE_NOT_GRANTED = "ProfileNotGranted"
#: Failed endings a repeated callback of the same browser repeats (by the name recorded
#: with the used state); any other failure is repeated as a :class:`StateError`.
REPEATED_ERRORS: dict[str, type[LoginError]] = {
    "LoginCancelled": LoginCancelled,
    "LoginRefused": LoginRefused,
}

T = t.TypeVar("T")


# --- what a callback brings, and what a login comes to ----------------------------------


@dataclass(frozen=True)
class Callback:
    """What WeChat's redirect back to this site carries."""

    state: str | None
    code: str | None
    #: the browser's key (:func:`~flask_wechat_qr.login_state.browser_key` of its login
    #: cookie), where it has one
    browser: str | None = None
    #: loaded again by the page that waits for the other request of its login
    #: (:class:`Finishing`): never a login of its own, never a cancel (it has no code)
    finishing: bool = False


@dataclass(frozen=True)
class LoggedIn:
    """The person is logged in as ``user``: go on to ``next_url``, or post an ID token to
    the connection's business callback URL when ``business`` is set."""

    connection: ConnectionSettings
    user: User
    #: the WeChat identity; ``None`` only for a repeated callback that posts no ID token
    identity: Identity | None
    next_url: str
    #: when WeChat authenticated the person (the ID token's ``auth_time``)
    auth_time: float
    #: the business front end's ``state``/``nonce``; ``None``: no ID token to post
    business: BusinessParams | None = None
    created_user: bool = False
    new_identity: bool = False
    #: a repeat of a login that already ended (its signals were sent then)
    repeated: bool = False
    #: what the login kept from its start (for a page about a failure while delivering)
    login: LoginData | None = None
    #: the ID token's ``jti`` and ``iat`` this login keeps (a repeat posts the same token);
    #: ``None``: a fresh one
    token_id: str | None = None
    issued_at: float | None = None


@dataclass(frozen=True)
class Linked:
    """WeChat was linked to the logged-in account from the account page."""

    connection: ConnectionSettings
    user: User
    identity: Identity
    next_url: str
    login: LoginData | None = None


@dataclass(frozen=True)
class NeedsBinding:
    """Ask binding: the person chooses on the bind page (its pointer is in the session)."""

    connection: ConnectionSettings
    login: LoginData | None = None
    #: the pending binding waiting on the bind page
    binding_id: str = ""


@dataclass(frozen=True)
class Failed:
    """The login cannot go on: ``error`` says why, ``login`` what it was for (the error
    page's "try again" link, and what to tell a business callback URL)."""

    error: LoginError
    connection: ConnectionSettings
    login: LoginData | None = None


@dataclass(frozen=True)
class Finishing:
    """WeChat's double redirect, the other request of the login still at work when this one
    stopped waiting for it (WeChat slow to answer that one): nothing was used, and the page
    loads this callback again in :data:`FINISHING_RELOAD` seconds, which then ends as the
    other request did (logged in, in this browser too)."""

    connection: ConnectionSettings
    login: LoginData | None = None


Outcome = LoggedIn | Linked | NeedsBinding | Finishing | Failed


@dataclass(frozen=True)
class NeedsProfile:
    """A silent in-WeChat login (``snsapi_base``) of someone this site does not know yet:
    WeChat must ask them to share their profile (``snsapi_userinfo``), which a new login
    with the same ``login`` does. Not an outcome to deliver: the views start that login."""

    connection: ConnectionSettings
    login: LoginData


@dataclass(frozen=True)
class _Committed:
    """A login whose rows and used state are committed. What is left (logging in, the
    signals) runs outside :meth:`LoginFlow.finish`'s recording of failures: the login
    stands, whatever a signal receiver then raises."""

    connection: ConnectionSettings
    login: LoginData
    resolution: Resolution
    auth_time: float
    token_id: str | None = None
    issued_at: float | None = None
    #: the login's WeChat token (a stale profile is refreshed with it)
    token: WeChatToken | None = None


@dataclass(frozen=True)
class PendingLogin:
    """A login waiting on the bind page: its pending binding and what the login keeps."""

    binding_id: str
    row: PendingBinding
    connection: ConnectionSettings
    login: LoginData = field(default_factory=LoginData)


# --- the flow ---------------------------------------------------------------------------


class LoginFlow:
    """Finishes the logins of one app; built once by ``init_app``."""

    def __init__(self, *, db: SQLAlchemy, settings: Settings, adapter: AccountAdapter[User],
                 policy: AssociationPolicy, bindings: PendingBindings,
                 clients: dict[str, WeChatClient],
                 official_accounts: dict[str, OfficialAccountClient],
                 login_states: dict[str, LoginStates],
                 refresher: ProfileRefresher | None = None) -> None:
        self.db = db
        self.settings = settings
        self.adapter = adapter
        self.policy = policy
        self.bindings = bindings
        self.clients = clients
        self.official_accounts = official_accounts
        self.login_states = login_states
        #: refreshes returning people's stale profiles off the login's path
        self.refresher = refresher
        #: a database found out of reach lately (:meth:`before_start`)
        self.outage = DatabaseOutage()

    def before_start(self) -> None:
        """:class:`DatabaseUnavailable` where a page said lately that the database is out of
        reach and it still is: the login does not start (the person would scan and confirm
        for nothing). Asks the database only then (:mod:`.outage`)."""
        if self.outage.seen_at is None:  # every start of a site whose database is up
            return
        reason = self.outage.reason_to_wait(self.db, lambda: engine_of(self.db, self._table))
        if reason is not None:
            raise DatabaseUnavailable(reason)  # no cause: the outage's memory, not news

    def database_out_of_reach(self, error: DatabaseUnavailable) -> None:
        """A page said the database is out of reach: logins do not start while it lasts
        (:meth:`before_start`). Not for a pool whose connections were all in use (an
        overload: each start would wait its ``pool_timeout`` again to say so), nor for the
        starts' own answers (no cause)."""
        cause = error.__cause__
        if cause is not None and not isinstance(cause, sa.exc.TimeoutError):
            self.outage.seen(database_reason(cause))

    # --- the callback ---------------------------------------------------------------------

    def finish(self, connection: ConnectionSettings, callback: Callback
               ) -> Outcome | NeedsProfile:
        """Finish the login WeChat sent this callback for (or repeat how it ended). A
        login this browser cancelled, on this site's page, is remembered in its session:
        that page reloaded, however late, says so again."""
        states = self.login_states[connection.identifier]
        outcome = self._finish(connection, states, callback)
        if (isinstance(outcome, Failed) and type(outcome.error) is LoginCancelled
                and callback.state and not failure_posted_to_business(connection, outcome.login)):
            states.remember_cancelled(callback.state, outcome.login or LoginData())
        return outcome

    def _finish(self, connection: ConnectionSettings, states: LoginStates,
                callback: Callback) -> Outcome | NeedsProfile:
        """The callback's outcome: its login finished, or repeated as it ended. A database
        out of reach before the login's own work (its state's reads) is raised as it is:
        the blueprint answers it with its page."""
        started = time.time()
        state = callback.state
        same_browser = states.owns(state, callback.browser)
        if callback.finishing:
            # The waiting page's reload: its state is not taken, even where a cookie from
            # before that page still holds it (it carries no code: taken, it would cancel
            # the login the other request is finishing).
            return self._after_waiting(connection, states, callback, started)
        try:
            login = states.take(state, callback.browser)
        except StateError as error:
            cancelled = states.cancelled_here(state)
            if cancelled is not None and not failure_posted_to_business(connection, cancelled):
                # This browser's cancelled login, its page reloaded: the same page.
                return Failed(LoginCancelled(), connection, cancelled)
            if states.finishing_here(state, callback.browser) is not None:
                # The waiting page itself reloaded (its URL has the code: its state was
                # taken by the request that answered it).
                return self._after_waiting(connection, states, callback, started)
            ending = states.ending(state)
            if ending is None and isinstance(error, ExpiredState):
                # This browser's login, expired before WeChat sent it back: "Try again"
                # keeps its next (and the business's state and nonce).
                return _no_longer_valid(connection, error.login)
            # The session that held the state may be gone (a server-side one renewed at
            # login): the browser's own login cookie still says whose login it was.
            return self._repeat(connection, ending, same_browser or (
                ending is not None and ending.of_browser(callback.browser)), None)
        state = t.cast(str, state)
        try:
            result = self._complete(connection, states, state, callback.code, login, started)
        except StateUsed:
            # WeChat's double redirect with a second code: the other request ended first.
            return self._repeat(connection, states.ending(state), True, login)
        except ProfileNotGranted:
            if login.profile_asked:  # WeChat was asked for it and still shared none
                return self._failed(connection, states, state, login, ProfileNotShared(),
                                    started)
            if not _record_failure(states, state, PROFILE_NOT_GRANTED, login):
                other = self._as_ended(connection, states.ending(state), login, started)
                if other is not None:
                    return other
            return NeedsProfile(connection, login)
        except LoginError as error:
            return self._failed(connection, states, state, login, error, started)
        except BaseException as error:
            if transactions.is_unreachable(error):  # nothing can be recorded either
                return Failed(database_unavailable(error), connection, login)
            if transactions.is_refusing(error):  # read-only, full: nor can that
                return Failed(database_refusing(error), connection, login)
            _record_failure(states, state, UNEXPECTED_ERROR, login)  # a bug: then a 500
            raise
        if not isinstance(result, _Committed):
            return result
        try:
            return self._after_commit(result)
        except LoginError as error:  # e.g. from a signal receiver: the page says so
            return Failed(error, connection, login)

    def _after_waiting(self, connection: ConnectionSettings, states: LoginStates,
                       callback: Callback, started: float) -> Outcome | NeedsProfile:
        """The callback of a login whose other request this browser waits for
        (:class:`Finishing`), loaded again: as that request ended (logged in however long
        the page took to reload: the session says it is this browser's); the page again
        while that request may still be at work; then "already used", the state used. One
        that failed ended this login: "already used" too (scan again), as when the wait
        saw it end. No code is exchanged, no state taken."""
        state = callback.state
        waiting = states.finishing_here(state, callback.browser)
        ending = states.ending(state)
        if waiting is None:  # not this browser's wait (another one's, or over): a repeat
            return self._repeat(connection, ending, ending is not None and (
                states.owns(state, callback.browser) or ending.of_browser(callback.browser)),
                None)
        login, until = waiting
        if ending is None:
            if time.time() < until:
                return Finishing(connection, login)
            states.forget_finishing(t.cast(str, state))  # the other request had time enough
            return self._failed(connection, states, t.cast(str, state), login,
                                _used_meanwhile(), started)
        states.forget_finishing(t.cast(str, state))
        if ending.user_id is None and ending.binding_id is None and (
                ending.error not in REPEATED_ERRORS and ending.error != PROFILE_NOT_GRANTED):
            return Failed(_used_meanwhile(), connection, login)
        # However late the page reloads, a login logs in (a link never counts as recent;
        # a business's ID token of the first request expires, so that one keeps the
        # usual window).
        return self._repeat(connection, ending, True, login, waited=(
            login.link_user is None and not connection.callback_url))

    def _complete(self, connection: ConnectionSettings, states: LoginStates, state: str,
                  code: str | None, login: LoginData, started: float
                  ) -> Outcome | NeedsProfile | _Committed:
        """The callback of a state this browser owns and nobody used yet, up to the commit
        that uses it. A login error raised here is recorded as the login's ending by
        :meth:`finish`; an outcome returned here is final (another request's ending)."""
        # Expired rows go, a batch a minute, in a transaction of their own; after the state
        # was taken, so that a database out of reach found here ends a login whose data
        # (its next) is known.
        states.store.purge_now_and_then()
        if not code:
            raise LoginCancelled()
        if len(code) > MAX_CODE_LENGTH:
            raise InvalidRequest(
                _l("The WeChat authorization is not valid. Scan the QR code again."))
        client = self.client_for(connection, login.app)
        # WeChat may take seconds to answer: the request's reads so far (the host's) give
        # their connection back to the pool meanwhile.
        transactions.end_reads(self.db)
        try:
            token = client.exchange_code(code)
        except CodeUsed as used:
            return self._code_used(connection, states, state, code, login, used, started)
        # The host's writes of the request (its before_request's), before the login's own:
        # a rollback would undo them, so the profile is then asked inside the transaction.
        # Not where each statement commits by itself (the login's begin commits them).
        session = self.db.session()
        hosts_writes = transactions.holds_writes(session) and not transactions.autocommits(
            session.connection(bind_arguments={"clause": self._table}))
        profile = _LoginProfile(self, connection, states, state, client, token, hosts_writes)
        if login.link_user is not None:
            return self._link(connection, states, state, login, token, profile)
        return self._log_in_new(connection, states, state, login, token, profile)

    def client_for(self, connection: ConnectionSettings, app: str) -> WeChatClient:
        """The client of the connection's ``app`` that the login was started with."""
        if app == OFFICIAL_ACCOUNT:
            client = self.official_accounts.get(connection.identifier)
            if client is None:  # the Official Account was removed since the login began
                raise StateError()
            return client
        return self.clients[connection.identifier]

    def _code_used(self, connection: ConnectionSettings, states: LoginStates, state: str,
                   code: str, login: LoginData, used: CodeUsed, started: float
                   ) -> Outcome | NeedsProfile:
        """WeChat's double redirect with the same code: the other request has it. Wait for
        its ending as long as configured, one request per code and process at a time; found,
        it ends as :meth:`_as_ended` says. In vain, the code is spent: nobody waits for it
        again (so making a worker wait takes a fresh scan). While no ending is recorded
        (the other request may still be at work: WeChat slow to send it a profile), nothing
        is used, which would refuse that request's commit and lose the login: the page
        loads this callback again (:class:`Finishing`), with no worker held, until the
        other request ended or had time enough. So do requests that may not wait (too
        many waiting, or one for the same code) and a code already spent."""
        if states.is_spent_code(code):
            ending = states.ending(state)
        else:
            try:
                ending = states.ending(state, wait=self.settings.code_used_wait, code=code)
            except TooManyWaiting:
                ending = states.ending(state)  # no wait; nor is the code spent for it
            else:
                outcome = self._as_ended(connection, ending, login, started)
                if outcome is not None:
                    return outcome
                states.remember_spent_code(code)
        if ending is not None:  # the other request ended, in a way not to repeat
            raise used
        log.info("a callback's code was already exchanged and the other request of its login "
                 "has not ended (WeChat slow to answer it?): its page loads the callback "
                 "again, for up to %g s", finishing_time(self.settings))
        states.remember_finishing(state, login, time.time() + finishing_time(self.settings))
        return Finishing(connection, login)

    def _link(self, connection: ConnectionSettings, states: LoginStates, state: str,
              login: LoginData, token: WeChatToken, profile: _LoginProfile) -> _Committed:
        """Link WeChat to the account that started the link (still logged in)."""
        user = self.adapter.current_user()
        if user is None or self.adapter.get_user_id(user) != login.link_user:
            raise NotLoggedIn()  # logged out (or in as someone else) since the link started
        next_url = login.next_url or self.settings.post_login_url

        def link() -> Resolution:
            resolution = self.policy.link(connection, token, profile.fetch, user)
            self.db.session.flush()  # a race on the identity shows here, and is retried
            states.use(state, Ending(user_id=login.link_user, next_url=next_url,
                                     browser=login.browser),
                       within=self._writing_on(states))
            return resolution

        return _Committed(connection, login, profile.run(link), time.time())

    def _log_in_new(self, connection: ConnectionSettings, states: LoginStates, state: str,
                    login: LoginData, token: WeChatToken, profile: _LoginProfile
                    ) -> _Committed | NeedsBinding:
        """Resolve who logs in (or park the choice), use the state, commit, log in."""
        auth_time = time.time()
        # The ID token a business callback URL gets is decided with the login, so that a repeat of
        # the callback posts the same token again.
        token_id = new_token_id() if connection.callback_url else None
        ended_at = time.time()

        def resolve() -> Resolution:
            nonlocal ended_at
            linked = profile.linked_user()
            resolution = self.policy.resolve(connection, token, linked, profile.fetch,
                                             profile.can_signup)
            # The repeat window starts when the login is done, not when the code came.
            ended_at = time.time()
            ending = Ending(
                user_id=self.adapter.get_user_id(resolution.user),
                next_url=login.next_url or self.settings.post_login_url,
                at=ended_at, auth_time=auth_time, business=login.business, token_id=token_id,
                app=token.app, browser=login.browser, created=resolution.created_user)
            # A returning login's writes come last, right before the commit: the database's
            # write lock (all of SQLite's) is not held across the work above.
            self.db.session.flush()  # a race on the identity shows here, and is retried
            states.use(state, ending, within=self._writing_on(states))
            return resolution

        try:
            resolution = profile.run(resolve)
        except BindingRequired as required:
            return self._park_binding(connection, states, state, login, required)
        return _Committed(connection, login, resolution, auth_time, token_id,
                          ended_at if token_id else None, token)

    def _after_commit(self, committed: _Committed) -> Outcome:
        """Log in (or tell of the link) once the login is committed."""
        connection, login, resolution = committed.connection, committed.login, \
            committed.resolution
        if login.link_user is None:
            outcome = self._log_in(connection, resolution, login, committed.auth_time,
                                   token_id=committed.token_id, issued_at=committed.issued_at)
            if isinstance(outcome, LoggedIn) and committed.token is not None:
                self._refresh_if_stale(connection, resolution, committed.token)
            return outcome
        if resolution.new_identity:
            signals.send(signals.identity_linked, user=resolution.user,
                         identity=resolution.identity, connection=connection,
                         via="link")
        return Linked(connection, resolution.user, resolution.identity,
                      login.next_url or self.settings.post_login_url, login)

    def _refresh_if_stale(self, connection: ConnectionSettings, resolution: Resolution,
                          token: WeChatToken) -> None:
        """A returning login that read no profile hands a stale one to the refresher."""
        refresher = self.refresher
        if refresher is None or resolution.profile is not None or resolution.new_identity:
            return
        try:
            if refresher.is_due(connection, resolution.identity, token):
                refresher.schedule(connection, self.client_for(connection, token.app),
                                   resolution.identity, token)
        except Exception:  # the person is logged in: a refresh never undoes that
            log.exception("could not start a profile refresh")

    def _park_binding(self, connection: ConnectionSettings, states: LoginStates, state: str,
                      login: LoginData, required: BindingRequired) -> NeedsBinding:
        """Ask binding: keep the WeChat account waiting for the person's choice."""

        self.bindings.purge_now_and_then()  # in a transaction of its own, not the login's

        def park() -> str:
            binding_id = self.bindings.start(connection, required.token, required.profile,
                                             login.next_url)
            # The repeated callback of this browser gets the same pending binding.
            states.use(state, Ending(binding_id=binding_id, at=time.time(),
                                     business=login.business, browser=login.browser),
                       within=self._writing_on(states))
            return binding_id

        binding_id = self._in_transaction(park)
        self._remember_binding(binding_id, login.business)
        return NeedsBinding(connection, login, binding_id)

    def _failed(self, connection: ConnectionSettings, states: LoginStates, state: str,
                login: LoginData, error: LoginError, started: float
                ) -> Outcome | NeedsProfile:
        """Record that the login failed, so a repeated callback ends the same way; if
        another request of it ended first, this one ends as :meth:`_as_ended` says. Where
        the database cannot be reached, the ending cannot be recorded either (nor waited
        for twice); nor where it refuses the work for now (its ending would be refused too,
        and the same callback may get through once it takes writes again)."""
        if isinstance(error, DatabaseUnavailable | DatabaseRefusing):
            return Failed(error, connection, login)
        if _record_failure(states, state, type(error).__name__, login):
            if isinstance(error, LoginRefused) and error.openid:
                signals.send(signals.login_refused, connection=connection,
                             openid=error.openid)
            return Failed(error, connection, login)
        other = self._as_ended(connection, states.ending(state), login, started)
        return Failed(error, connection, login) if other is None else other

    def _as_ended(self, connection: ConnectionSettings, ending: Ending | None,
                  login: LoginData, started: float) -> Outcome | NeedsProfile | None:
        """How a request ends that found its state used by another request of its login:
        as that login ended (:meth:`_repeat`), always for a late repeat (the login ended
        before this request came: a missing code is then no cancel, a refused code no
        error of its own); ``None`` where the other request ran beside this one and its
        ending is not one to repeat, so that this request's own outcome says more."""
        outcome = self._repeat(connection, ending, True, login)
        late = ending is not None and (ending.at is None or ending.at <= started)
        if late or not (isinstance(outcome, Failed) and type(outcome.error) is StateError):
            return outcome
        return None

    # --- repeated callbacks (the table in the module's docstring) --------------------------

    def _repeat(self, connection: ConnectionSettings, ending: Ending | None,
                same_browser: bool, login: LoginData | None, *, waited: bool = False
                ) -> Outcome | NeedsProfile:
        """End a callback whose state another request used as that login ended (``waited``:
        this browser's waiting page, which counts as recent however late it reloads, while
        nobody is logged in: from the history of a browser someone else logged in to since,
        it logs nobody in)."""
        if ending is None:
            return _no_longer_valid(connection, login)
        recent = ending.is_recent(REPEAT_WINDOW) or (
            waited and self.adapter.current_user() is None)
        if ending.user_id is None:
            if ending.binding_id is not None and same_browser:
                if recent and session.get(PENDING_BINDING_KEY) is None:
                    # This request carries the cookie from before the first callback.
                    self._remember_binding(ending.binding_id, ending.business or {})
                return NeedsBinding(connection, login, ending.binding_id)
            if (ending.error == PROFILE_NOT_GRANTED and same_browser and recent
                    and login is not None):
                # WeChat's second redirect of a silent login: on to the profile, as the
                # first (a new state; no login here).
                return NeedsProfile(connection, login)
            repeated = REPEATED_ERRORS.get(str(ending.error))
            if repeated is not None and same_browser and recent:
                # The same page (or business callback URL post) as the first request.
                return Failed(repeated(), connection, login)
            return _no_longer_valid(connection, login)
        # What another request of this login committed (its user, its identity) is read
        # afresh; the host's writes of this request, if any, stay as they are. Where the
        # transaction they keep may show the database as it was before the other request's
        # commit (MariaDB, MySQL), a user not found is looked for again with locking reads:
        # a returning user is found without, and nothing is locked for it.
        may_be_stale = transactions.fresh_reads(self.db, self._table)
        outcome = self._repeat_login(connection, ending, same_browser, recent, login)
        if outcome is None and may_be_stale:
            with transactions.locking_reads(self.db):
                outcome = self._repeat_login(connection, ending, same_browser, recent, login)
        return outcome if outcome is not None else _no_longer_valid(connection, login)

    def _repeat_login(self, connection: ConnectionSettings, ending: Ending,
                      same_browser: bool, recent: bool, login: LoginData | None
                      ) -> Outcome | None:
        """A repeat of a login that logged ``ending.user_id`` in: that user, logged in
        again where this browser's callback came soon after, then on as that login went;
        ``None`` where that user is not found (nothing was done)."""
        user = self.adapter.current_user()
        if user is None or self.adapter.get_user_id(user) != ending.user_id:
            if not same_browser or not recent:
                return _no_longer_valid(connection, login)
            user = self.adapter.load_user(t.cast(str, ending.user_id))
            if user is None:
                return None
            try:
                # The same login again (WeChat's double redirect): what the host's
                # login_user records of a login (a count, the time and address of the last
                # one) was recorded by the first request.
                self._log_user_in(user, keep_writes=False)
            except LoginError as error:
                return self._refused(error, ending.created, connection, login)
        business = ending.business if connection.callback_url else None
        identity = None
        if business is not None:
            identity = self.policy.identity_of(user, connection.identifier, ending.app)
            if identity is None:  # unlinked meanwhile
                return _no_longer_valid(connection, login)
        return LoggedIn(connection, user, identity,
                        ending.next_url or self.settings.post_login_url,
                        ending.auth_time or time.time(), business, repeated=True, login=login,
                        token_id=ending.token_id,
                        issued_at=ending.at if ending.token_id else None)

    # --- the bind page --------------------------------------------------------------------

    def pending_login(self) -> PendingLogin:
        """This browser's login waiting on the bind page; :class:`BindingExpired` if none
        (unknown, used, expired, or of a connection no longer configured)."""
        binding_id = session.get(PENDING_BINDING_KEY)
        if binding_id is not None and session.get(PENDING_BINDING_OF_KEY) != self._person():
            # Someone else logged in in this browser since (the site's own login): the
            # WeChat waiting is not theirs to bind.
            forget_pending_binding(None)
            raise BindingExpired()
        row = self.bindings.get(binding_id)
        connection = self.settings.connections.get(row.connection)
        if connection is None:
            raise BindingExpired()
        business = session.get(BUSINESS_KEY)
        return PendingLogin(t.cast(str, binding_id), row, connection,
                            LoginData(next_url=row.next_url,
                                      business=dict(business) if business else {}))

    def create_account(self, pending: PendingLogin) -> Outcome:
        """"Create a new account" on the bind page (refused in login-only mode)."""
        try:
            resolution = self._in_transaction(
                lambda: self.bindings.create_account(pending.connection, pending.binding_id))
        except LoginRefused as refused:
            signals.send(signals.login_refused, connection=pending.connection,
                         openid=refused.openid or pending.row.openid)
            raise
        return self._finish_binding(pending, resolution)

    def bind_account(self, pending: PendingLogin, user: User) -> Outcome:
        """"Bind to my existing account", once ``user`` proved it is theirs (one the site
        does not let log in yet, waiting for approval or disabled, is bound all the same and
        the page says it cannot log in: the password proved it is theirs)."""
        resolution = self._in_transaction(
            lambda: self.bindings.bind_account(pending.connection, pending.binding_id, user))
        return self._finish_binding(pending, resolution)

    def _finish_binding(self, pending: PendingLogin, resolution: Resolution) -> Outcome:
        session.pop(BUSINESS_KEY, None)
        outcome = self._log_in(pending.connection, resolution, pending.login, time.time())
        if isinstance(outcome, LoggedIn):
            session[FINISHED_BINDING_KEY] = True  # in the renewed session
        return outcome

    def finished_binding(self) -> bool:
        """Whether this browser's last binding choice logged it in, and none waits now."""
        return bool(session.get(FINISHED_BINDING_KEY)) and PENDING_BINDING_KEY not in session

    def _person(self) -> str | None:
        """The id of the user logged in in this session, if any."""
        user = self.adapter.current_user()
        return None if user is None else str(self.adapter.get_user_id(user))

    def _remember_binding(self, binding_id: str, business: BusinessParams) -> None:
        """Point this browser's session at its pending binding (never a URL), and say whose
        session it was made in."""
        session[PENDING_BINDING_KEY] = binding_id
        session[PENDING_BINDING_OF_KEY] = self._person()
        session.pop(FINISHED_BINDING_KEY, None)
        if business:
            session[BUSINESS_KEY] = business
        else:
            session.pop(BUSINESS_KEY, None)

    # --- the end of every login -------------------------------------------------------------

    def _log_in(self, connection: ConnectionSettings, resolution: Resolution,
                login: LoginData, auth_time: float, *, token_id: str | None = None,
                issued_at: float | None = None) -> Outcome:
        """Renew the session, log the user in and tell the signals (after the commit).

        A user the site refuses to log in (Flask-Login: ``is_active`` false; e.g. a new
        account waiting for approval) was created or linked all the same: the signals say
        so, and the site hears of an account it may have to approve."""
        try:
            self._log_user_in(resolution.user)
        except LoginError as error:
            self._tell_created_and_linked(connection, resolution)
            return self._refused(error, resolution.created_user, connection, login)
        except Exception:
            # The site's hook failed (its 500): what the login committed stays, and the
            # next login is a returning one, so this is the signals' only chance. A
            # receiver failing too is logged; the hook's error is the one that goes on.
            try:
                self._tell_created_and_linked(connection, resolution)
            except Exception:
                log.exception("a user_created or identity_linked receiver failed, after "
                              "the site's login_user did")
            raise
        self._tell_created_and_linked(connection, resolution)
        return LoggedIn(connection, resolution.user, resolution.identity,
                        login.next_url or self.settings.post_login_url, auth_time,
                        dict(login.business) if connection.callback_url else None,
                        created_user=resolution.created_user,
                        new_identity=resolution.new_identity, login=login,
                        token_id=token_id, issued_at=issued_at)

    def _log_user_in(self, user: User, *, keep_writes: bool = True) -> None:
        """Renew the session and log the user in; then commit what the host's ``login_user``
        wrote (Flask-Security's login tracking: ``login_count``, ``current_login_at``...),
        which would otherwise be lost with the request's database session. Nothing to
        commit (Flask-Login's ``login_user`` writes nothing) costs no database round trip.

        The hook runs without autoflush, so its writes reach the database only at that
        commit: the login itself is committed already, and if the database refuses them
        they are rolled back and said in the log, the person logged in all the same. A hook
        that refuses the user (a :class:`LoginError`) leaves nothing written; so does one
        of a repeated login (``keep_writes`` false: the first request recorded it). A hook
        that commits by itself answers for its own commit. Only the hook's writes are
        undone: those of the host's own in the request (a ``before_request``'s, which a
        repeated login's transaction may still hold) stay, the host's to commit or not."""
        self.adapter.renew_session()
        if not keep_writes:
            try:
                with transactions.undone(self.db, self._table), self.db.session.no_autoflush:
                    self.adapter.login_user(user)
            except LoginError:
                raise
            except BaseException:
                # A 500 next, whose record of the failure (on a connection of its own)
                # would wait for the locks of the host's writes (all of SQLite's).
                self.db.session.rollback()
                raise
            return
        try:
            with self.db.session.no_autoflush:
                self.adapter.login_user(user)
        except BaseException:
            self.db.session.rollback()
            raise
        if not self.db.session().in_transaction():
            return
        try:
            transactions.commit(self.db)
        except SQLAlchemyError as error:
            self.db.session.rollback()
            log.warning("what the site's login_user wrote for the WeChat login was not saved: "
                        "the database refused it (%s); the person is logged in all the same",
                        database_reason(error) if isinstance(error, IntegrityError)
                        else type(error).__name__)

    @staticmethod
    def _refused(error: LoginError, created: bool, connection: ConnectionSettings,
                 login: LoginData | None) -> Failed:
        """The login's user may not log in: said as "your account was created" for one
        this login made (the plain refusal of an inactive user; a host's own subclass, its
        message, stays), for WeChat's repeated callback of that login too."""
        if type(error) is AccountDisabled and created:
            return Failed(AccountNotActiveYet(), connection, login)
        return Failed(error, connection, login)

    @staticmethod
    def _tell_created_and_linked(connection: ConnectionSettings,
                                 resolution: Resolution) -> None:
        """``user_created`` and ``identity_linked``, for what the login committed."""
        if resolution.created_user:
            signals.send(signals.user_created, user=resolution.user,
                         identity=resolution.identity, connection=connection)
        if resolution.new_identity:
            signals.send(signals.identity_linked, user=resolution.user,
                         identity=resolution.identity, connection=connection,
                         via=resolution.via)

    def unlink(self, connection: ConnectionSettings, user: User) -> list[Identity]:
        """Unlink ``user``'s WeChat of ``connection`` (never their last way in): its
        identity of each app, each told to ``identity_unlinked``."""
        identities = self._in_transaction(
            lambda: self.policy.unlink(connection, user, self.settings.connections))
        for identity in identities:
            signals.send(signals.identity_unlinked, user=user, identity=identity,
                         connection=connection)
        return identities

    def _transaction_of(self, states: LoginStates) -> Connection:
        """The login's transaction, on the login states' engine (the user table's bind,
        not the session's default one)."""
        return self.db.session.connection(bind_arguments={"clause": states.store.table})

    def _writing_on(self, states: LoginStates) -> Connection:
        """The login's transaction, its turn to write taken (SQLite: :mod:`.write_turns`)."""
        write_turns.take(self.db.session())
        return self._transaction_of(states)

    @property
    def _table(self) -> sa.Table:
        """A table on the bind of every login's transaction (the extension's tables are all
        on the user table's bind)."""
        return t.cast(sa.Table, self.policy.models.Identity.__table__)

    def tables_behind(self, error: DBAPIError) -> AccountNotSaved | None:
        """Where a statement failed on a table or column that is not there and the
        extension's tables lack some of this version's: the login's end that says to bring
        them up to date (``None`` otherwise, or where the database cannot tell; asked only
        after a statement failed). A site serving new code before its ``db upgrade`` (or
        tables an earlier version's ``db.create_all()`` made) ended on Flask's bare 500."""
        if not (transactions.names_a_missing_table(error)
                or transactions.names_a_missing_column(error)):
            return None
        # The statement's transaction failed: its connection goes back before the look,
        # which would otherwise wait for a second one (a pool of one: its whole timeout).
        self.db.session.rollback()
        try:
            with engine_of(self.db, self._table).connect() as connection:
                models = self.policy.models
                behind = models.missing_tables(connection) or models.missing_columns(
                    connection)
        except SQLAlchemyError:
            return None
        return AccountNotSaved(database_reason(error), _TABLES_ADVICE) if behind else None

    def _in_transaction(self, work: t.Callable[[], T]) -> T:
        """Run ``work`` and commit once, at the end: a user is never created without its
        identity, and every write of a login costs one commit (in a transaction of its own
        also where the host's engine commits each statement by itself). Two first logins of
        one identity at the same moment meet the unique constraint on ``(connection,
        openid)``; the loser rolls back and runs ``work`` again, finding the winner's row.
        A transaction the database rolled back for another one's sake (a serialization
        failure, a deadlock: see :mod:`.transactions`) runs again after a pause, up to
        :data:`~.transactions.CONFLICT_RETRIES` times; one whose connection the database
        server closed (a restart) runs again once, on a new connection.

        None of them where the transaction held the host's own writes of the request when
        the login began (:func:`~.transactions.holds_writes`: its ``before_request``
        flushed a row): the rollback undid them, and a second run would commit the login
        without them. The login ends as one the database refused (``AccountNotSaved``)."""
        refused = conflicts = 0
        lost = busy = waited = False
        hosts_writes: bool | None = None
        while True:
            try:
                bind = transactions.begin(self.db, self._table)
                if hosts_writes is None:  # the first run (AUTOCOMMIT: committed by begin)
                    hosts_writes = transactions.holds_writes(self.db.session())
                write_turns.give_turns(self.db.session(), bind)
                result = work()
                transactions.commit(self.db)
                return result
            except PersonMadeMeanwhile:  # the other app's login of the person committed
                self.db.session.rollback()
                if hosts_writes:
                    raise AccountNotSaved("the same person's login through the other app "
                                          "made their account meanwhile", _HOSTS_WRITES,
                                          said_by="The login") from None
                if conflicts == transactions.CONFLICT_RETRIES:
                    raise AccountNotSaved("the same person's login through the other app "
                                          "kept making their account", _CONFLICT_ADVICE,
                                          said_by="The login") from None
                conflicts += 1
                log.info("the same person's login through the connection's other app made "
                         "their account meanwhile; trying again, to join it")
            except IntegrityError as error:
                self.db.session.rollback()
                refused += 1
                if hosts_writes:
                    raise AccountNotSaved(database_reason(error), _HOSTS_WRITES) from error
                if refused == 3:
                    raise AccountNotSaved(database_reason(error)) from error
                log.info("the database refused the login's changes (%s); trying again: "
                         "another request may have made the same identity",
                         database_reason(error))
            except DataError as error:  # a value its column cannot hold: no try helps
                self.db.session.rollback()
                raise AccountNotSaved(database_reason(error), _VALUE_ADVICE) from error
            except FlushError as error:  # objects the ORM cannot save, before the database
                self.db.session.rollback()
                raise AccountNotSaved(database_reason(error), _OBJECT_ADVICE,
                                      said_by="SQLAlchemy") from error
            except sa.exc.TimeoutError as error:  # the pool's: no connection came free
                self.db.session.rollback()
                raise database_unavailable(error) from error
            except DBAPIError as error:
                self.db.session.rollback()
                if transactions.is_conflict(error):
                    if hosts_writes:
                        raise AccountNotSaved(database_reason(error),
                                              _HOSTS_WRITES) from error
                    if conflicts == transactions.CONFLICT_RETRIES:
                        raise AccountNotSaved(database_reason(error),
                                              _CONFLICT_ADVICE) from error
                    conflicts += 1
                    log.info("the database rolled the login back for another transaction's "
                             "sake (%s); trying again", database_reason(error))
                    transactions.pause(conflicts)
                elif error.connection_invalidated and not lost and not hosts_writes:
                    lost = True
                    log.warning("the database connection of a login was lost (%s); trying "
                                "again on a new one (one the server closed while it sat in "
                                "the pool, pool_pre_ping avoids: docs, deploying; one lost "
                                "under a statement, a restart mid-query, nothing does)",
                                database_reason(error))
                elif (not lost and not hosts_writes
                      and transactions.reopen_replaced_file(self.db, error)):
                    lost = True
                    log.warning("the SQLite file of the login's tables was replaced under the "
                                "running site (%s); its connections are made anew, and the "
                                "login tried again", database_reason(error))
                elif transactions.is_lock_wait(error) and not waited and not hosts_writes:
                    waited = True  # the holder may be done a moment later
                    log.info("the database gave up waiting for a lock another transaction "
                             "held (%s); trying again", database_reason(error))
                    transactions.pause(1)
                elif transactions.is_busy(error):
                    # Once more after a pause: a transaction that had read before it wrote
                    # (where the host begins them at the first read) is refused at once while
                    # another connection writes, without waiting out the busy timeout.
                    if busy or hosts_writes:
                        raise AccountNotSaved(database_reason(error), _BUSY_ADVICE) from error
                    busy = True
                    log.info("SQLite's database was locked by another connection (%s); "
                             "trying again", database_reason(error))
                    transactions.pause(1)
                elif error.connection_invalidated and hosts_writes:
                    raise AccountNotSaved(database_reason(error), _HOSTS_WRITES) from error
                elif error.connection_invalidated or transactions.is_unreachable(error):
                    raise database_unavailable(error) from error  # lost again, or none to be had
                elif transactions.is_refusing(error):
                    raise database_refusing(error) from error  # read-only, full, timed out
                elif (behind := self.tables_behind(error)) is not None:
                    raise behind from error
                else:
                    raise
            except BaseException:
                self.db.session.rollback()
                raise


#: What to do where the extension's tables are not (all) made yet, or are an earlier
#: version's.
_TABLES_ADVICE = (
    "The extension's tables are not (all) in the database, or lack columns this version "
    "needs: run `flask wechat-qr db upgrade` (after your own migrations; `flask wechat-qr "
    "check` lists what is missing), or db.create_all() where your site makes its tables so "
    "and none is there yet (it adds no column to a table that exists; docs: deploying, "
    "'Database tables and migrations')")
#: What to do where SQLite's database stayed locked by another connection.
_BUSY_ADVICE = (
    "Another connection kept the SQLite database locked for longer than the connection's "
    "busy timeout (Python's sqlite3 waits 5 seconds unless told otherwise): a long write of "
    "the site's own, or many processes writing to one file. Put the file in WAL mode with a "
    "busy timeout (docs: deploying, 'SQLite with several threads'), serve it from one "
    "process with threads, keep the site's own write transactions short; several processes "
    "or machines want PostgreSQL")
#: What to do about a value its column cannot hold (a ``DataError``).
_VALUE_ADVICE = (
    "A value does not fit its column (too long, characters its character set cannot hold, the "
    "wrong type) or a column the database requires got none: if the column is the user "
    "model's, make AccountAdapter.create_user fill it with a value that fits, or widen the "
    "column (docs: hooks, 'Creating users')")
#: Why a login whose transaction held the host's writes is not tried again.
_HOSTS_WRITES = (
    "The login's transaction also held this request's own writes of the site (flushed "
    "before the login, e.g. in a before_request), which the rollback undid: the login is "
    "not tried again without them. Commit the site's writes before the request reaches "
    "the extension's routes (docs: deploying, 'Database settings')")
#: What to do about transactions the database keeps rolling back for others' sake.
_CONFLICT_ADVICE = (
    "Other transactions kept conflicting with the login's (serialization failures or "
    "deadlocks) however often it was tried again: under a SERIALIZABLE isolation level every "
    "login at the same moment may conflict with the others; READ COMMITTED (PostgreSQL's "
    "default) or REPEATABLE READ (MariaDB's) is all the extension needs (docs: deploying). "
    "On SQLite, other connections kept committing between the login's first read and its "
    "first write (its transactions begin at their first read): fewer processes writing to "
    "the file, or PostgreSQL")
#: What to do about objects the ORM cannot save (a ``FlushError``: a None in a relation).
_OBJECT_ADVICE = (
    "The objects of the login could not be saved, before the database was asked: most often "
    "AccountAdapter.create_user gave the user a related object that is None (a role looked "
    "up by a name the site does not have); make it give only objects that exist (docs: "
    "hooks, 'Creating users')")

def forget_pending_binding(_sender: t.Any, **_extra: t.Any) -> None:
    """Flask-Login's ``user_logged_out`` (connected by ``init_app``), and a login of
    someone else found by :meth:`LoginFlow.pending_login`: a WeChat left waiting on the bind
    page goes with the session's person. Kept past the site's own logout (or someone
    else's login) at a shared computer, the next person's password on that page linked the
    earlier person's WeChat to their account. (Not on ``user_logged_in``: a site may log
    the same user in at every request, and binding would never work there.)"""
    if has_request_context():
        session.pop(PENDING_BINDING_KEY, None)
        session.pop(PENDING_BINDING_OF_KEY, None)


def database_unavailable(error: BaseException) -> DatabaseUnavailable:
    """The login's end where its database could not be asked
    (:func:`~.transactions.is_unreachable`), with the driver's or the pool's reason; its
    cause is ``error`` whether it is raised or answered as it is."""
    unavailable = DatabaseUnavailable(database_reason(error))
    unavailable.__cause__ = error
    return unavailable


def database_refusing(error: BaseException) -> DatabaseRefusing:
    """The login's end where its database would not do the work for now
    (:func:`~.transactions.is_refusing`), with the database's reason and what to check."""
    advice = DatabaseRefusing.LOCK_ADVICE if transactions.is_lock_wait(error) else None
    refusing = DatabaseRefusing(database_reason(error), advice)
    refusing.__cause__ = error
    return refusing


def _used_meanwhile() -> CodeUsed:
    """The ending of a waiting page whose other request failed, or never ended in time:
    WeChat's own "code used" (a new one each time: an error raised carries its traceback)."""
    return CodeUsed(40163, "code been used")


def finishing_time(settings: Settings) -> float:
    """Seconds a callback's page waits (loading the callback again) for the other request
    of its login, once its own wait ran out: as long as that one may still take after its
    code was exchanged. A new person's profile (one more try where WeChat asks for it), then
    the avatar, each within the HTTP timeout."""
    return 3 * settings.http_timeout


def failure_posted_to_business(connection: ConnectionSettings | None,
                               login: LoginData | None) -> bool:
    """Whether a failure of ``login`` is posted to the connection's business callback URL
    (a login for it, not a link: :func:`.delivery.error_response` posts it), not shown on
    this site's page."""
    return (connection is not None and bool(connection.callback_url) and login is not None
            and login.link_user is None)


def _record_failure(states: LoginStates, state: str, error: str, login: LoginData) -> bool:
    """Use ``state`` with a failed ending: ``False`` if another request of it ended first.
    Never hides the login's own result behind this bookkeeping."""
    try:
        return states.record_failure(state, Ending(error=error, at=time.time(),
                                                   browser=login.browser))
    except Exception:
        log.exception("could not record the outcome of a WeChat callback")
        return True


def _no_longer_valid(connection: ConnectionSettings, login: LoginData | None) -> Failed:
    """A repeated callback with nothing to repeat: the state is no longer valid."""
    return Failed(StateError(), connection, login)


class _ProfileFirst(Exception):
    """A login's resolution asked for WeChat's profile inside its transaction: rolled back,
    the profile is asked outside it first (:meth:`_LoginProfile.run`)."""


@dataclass
class _LoginProfile:
    """WeChat's profile of one login's callback, asked at most once, and with no database
    connection held: WeChat may take seconds (up to the HTTP timeout), and a held connection
    kept the site's other pages waiting (a red team's measure, session 36). A run of the
    login's transaction that needs it is rolled back (:class:`_ProfileFirst`), the profile
    asked, and the transaction runs again (:meth:`run`); inside the transaction only where
    it holds the host's own writes (``hosts_writes``), which a rollback would undo."""

    flow: LoginFlow
    connection: ConnectionSettings
    states: LoginStates
    state: str
    client: WeChatClient
    token: WeChatToken
    hosts_writes: bool
    #: the profile, once asked
    asked: WeChatProfile | None = None
    #: the run before the profile found no identity of the openid, and none can change
    #: its ending but by the unique key's refusal: the run after it does not look again
    #: (:meth:`linked_user`)
    none_found: bool = False

    def fetch(self) -> WeChatProfile:
        """The profile, for the login's resolution, in its transaction."""
        if self.asked is not None:
            return self.asked
        self._stop_if_used()
        if not self.hosts_writes:
            raise _ProfileFirst()
        return self._ask()

    def linked_user(self) -> tuple[Identity, User] | None:
        """The identity of the login's openid and its user, read in this run. Not read
        again in the run right after the profile where the run before found none and the
        login can only sign the person up (:meth:`AssociationPolicy.unlinked_only_signs_up`):
        one round trip fewer per first login on PostgreSQL. One made meanwhile (the same
        person in a second tab) is then refused by the unique key on ``(connection,
        openid)`` and the next run looks again (:meth:`LoginFlow._in_transaction`)."""
        if self.none_found and self.asked is not None:
            self.none_found = False  # once: a run after a refusal looks again
            return None
        policy = self.flow.policy
        linked = policy.linked_user(self.connection.identifier, self.token.openid)
        # No row (a stale one deleted is a write, which the rollback undoes)
        self.none_found = (self.asked is None and linked is None
                           and policy.unlinked_only_signs_up(self.connection)
                           and not transactions.holds_writes(policy.db.session()))
        return linked

    def can_signup(self) -> bool:
        """The adapter's answer for a new account. A site's own may spend something (an
        invitation taken from the session, a quota in its database): asked in the run that
        commits, once the profile is there, not in one rolled back to ask for it. The
        default's (login-only mode) spends nothing: asked at once, and a refused login asks
        WeChat for no profile."""
        adapter = self.flow.adapter
        if self.asked is None and not self.hosts_writes and \
                not adapter._signup_by_setting():
            self._stop_if_used()
            raise _ProfileFirst()
        return bool(adapter.can_signup(self.connection))

    def _stop_if_used(self) -> None:
        """A callback repeated after its login ended (WeChat's second redirect sent with the
        cookie from before the first answer, a replayed cookie) stops before the profile is
        asked or an account made: read in the transaction that found it needs the profile
        (on PostgreSQL a read of a connection of its own, after the rollback, cost three
        more round trips a first login). A returning login reads nothing for this: its
        used state's row refuses the repeat at the commit."""
        if self.states.is_used(self.state, within=self.flow._transaction_of(self.states)):
            raise StateUsed()

    def run(self, work: t.Callable[[], Resolution]) -> Resolution:
        """The login's transaction (``work``), once more after asking for the profile where
        its first run found it needs one."""
        flow = self.flow
        try:
            return flow._in_transaction(work)
        except _ProfileFirst:
            pass  # the rest outside the handler: its errors are not chained to this
        self._ask()  # the state found unused in the run rolled back (_stop_if_used)
        return flow._in_transaction(work)

    def _ask(self) -> WeChatProfile:
        # A new avatar is downloaded with the profile, before the login writes (and so
        # locks) anything, with no connection held; the policy stores it with the identity.
        flow = self.flow
        fetched = self.client.userinfo(self.token, lang=userinfo_lang())
        avatars = flow.policy.avatars
        self.asked = (avatars.prefetch(fetched, lambda: transactions.end_reads(flow.db))
                      if avatars else fetched)
        return self.asked
