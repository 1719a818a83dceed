"""Where a login's ``state`` lives between the redirect to WeChat and the callback.

A login's data (``next`` and the like) rides in the browser's signed session, next to the
state it belongs to: that binds the state to the browser and works across worker
processes without a database write when the login starts. Only data too big for a cookie
is parked in a table. What the cookie cannot do, the table does: a state is *used* by
inserting its "taken" row, which succeeds once, so a state is single use even if the
browser replays an old session cookie or WeChat calls back twice at the same time. The
taken row is inserted with how the login ended, in the login's own transaction (no
commit of its own), and answers WeChat's repeated callback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
import typing as t
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from flask import has_request_context, session
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .client_address import client_network
from .context import this_session
from .errors import StateError, StateUsed, TooManyLoginsStarted
from .model_base import engine_of
from .purge import Executor, PurgeSchedule, delete_expired
from .settings import OFFICIAL_ACCOUNT, WEBSITE_APP
from .transactions import end_reads, is_unreachable

if t.TYPE_CHECKING:
    from flask.sessions import SessionMixin
    from flask_sqlalchemy import SQLAlchemy

log = logging.getLogger("flask_wechat_qr")


#: Key prefix of the row a used state leaves behind, holding how its login ended, so
#: WeChat's double redirect (or a refresh of the callback) gets the first request's
#: ending.
TAKEN = "taken:"
#: Seconds a used state at least remembers that it was used and how its login ended.
AFTERLIFE = 120
#: Seconds between two purges of expired rows by one process (not at every login; at the
#: next login while a backlog is worked off in batches, see :mod:`.purge`).
PURGE_INTERVAL = 60
#: Seconds before the first look again for the ending of a login still running; doubled
#: at each look, up to :data:`MAX_POLL_INTERVAL`.
POLL_INTERVAL = 0.05
MAX_POLL_INTERVAL = 0.5
#: Requests of one app in one process that may wait for another request's ending at the
#: same time (threaded and gevent workers); more are answered at once.
MAX_WAITING_REQUESTS = 4
#: Key prefix of the row that says WeChat answered a code "already used" and no login of
#: this site finished with it: later callbacks with that code do not wait again. With it,
#: making a worker wait costs a fresh WeChat scan each time.
SPENT_CODE = "spent-code:"
#: Seconds a code lives at WeChat (then 42003), so its spent row needs no longer.
CODE_LIFETIME = 300
#: Logins one browser may have started and not finished (tabs, reloaded QR pages), across
#: all connections.
MAX_PENDING_STATES = 5
#: Longest login data kept in the session cookie with its state, in bytes as the session
#: writes it (JSON with ``\uXXXX`` escapes); longer (a long ``next``, a business ``state``)
#: is parked in the state table. Five pending logins then stay far below the 4 KB
#: browsers keep per cookie.
MAX_INLINE_STATE_DATA = 300
#: Key prefix of a parked state's row, followed by a hash of the client address that started
#: it, so the rows one client may park can be counted (and capped).
PARKED = "parked:"
#: Logins with parked data one client address may have waiting at a time, and all clients
#: together: anonymous requests cannot grow the table without bound (honest ``next`` values
#: fit in the cookie and park nothing).
MAX_PARKED_PER_CLIENT = 10
MAX_PARKED_TOTAL = 10_000
#: Prefix of every connection's state keys in the session.
STATE_KEY_PREFIX = "_state_wechat_qr_"
#: Session key naming this browser's last cancelled login (its state) and where it was
#: going: its callback page reloaded, however late, says "cancelled" again, with the same
#: "Try again" (see :meth:`LoginStates.remember_cancelled`).
CANCELLED_KEY = "_wechat_qr_cancelled"
#: Session key naming this browser's logins whose callback came twice (WeChat's double
#: redirect), the other request still finishing each when this one stopped waiting, and
#: until when the page that reloads the callback waits for that, by state (see
#: :meth:`LoginStates.remember_finishing`).
FINISHING_KEY = "_wechat_qr_finishing"


#: JSON without spaces, as ``json.dumps(..., separators=(",", ":"))`` writes it, with an
#: encoder built once (``json.dumps`` with an option builds one per call).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))

#: The recorded ``error`` of a login that ended in an exception that is not a login error (a
#: bug); rows of earlier versions hold JSON ``true``, read as the same.
UNEXPECTED_ERROR = "True"

#: The business front end's ``state`` and ``nonce`` of a login for a connection's callback
#: URL (echoed with, and signed into, the ID token posted there).
BusinessParams = dict[str, str]


@dataclass(frozen=True)
class LoginData:
    """What a login keeps from its start to its callback, with its state."""

    #: where to go afterwards (a local path), if the login was given one
    next_url: str | None = None
    #: the business front end's ``state``/``nonce`` (a connection with a business callback URL)
    business: BusinessParams = field(default_factory=dict)
    #: the id of the logged-in user who is linking WeChat from the account page
    link_user: str | None = None
    #: which of the connection's apps the browser was sent to: its website application's
    #: QR code, or its Official Account's authorization inside WeChat
    app: str = WEBSITE_APP
    #: WeChat was already asked for the person's profile (``snsapi_userinfo``) in this login
    profile_asked: bool = False
    #: the key of the browser the login was started in (its ``__Host-`` login cookie, over
    #: https; see :func:`browser_key`), from the session marker: not part of :meth:`to_json`
    browser: str | None = None

    def to_json(self) -> dict[str, t.Any]:
        data: dict[str, t.Any] = {"next": self.next_url}
        if self.business:
            data["delivery"] = self.business
        if self.link_user is not None:
            data["link_user"] = self.link_user
        if self.app != WEBSITE_APP:  # rows of earlier versions have none: the website's
            data["app"] = self.app
        if self.profile_asked:
            data["asked"] = 1
        return data

    @classmethod
    def from_json(cls, data: t.Any, browser: str | None = None) -> LoginData:
        """The data :meth:`to_json` kept; ``browser``: the key the marker was tied to."""
        if not isinstance(data, dict):
            raise StateError()
        business = data.get("delivery")
        link_user = data.get("link_user")
        app = data.get("app")
        return cls(next_url=data.get("next") or None,
                   business=dict(business) if isinstance(business, dict) else {},
                   link_user=str(link_user) if link_user else None,
                   app=OFFICIAL_ACCOUNT if app == OFFICIAL_ACCOUNT else WEBSITE_APP,
                   profile_asked=data.get("asked") == 1, browser=browser)


#: base64's two symbols that are not letters or digits, folded onto letters.
_LETTERS_FOR_SYMBOLS = bytes.maketrans(b"+/", b"Ab")


def new_state() -> str:
    """A new ``state``: 32 letters and digits, the base64 of 24 bytes from the system's
    random source with ``+`` and ``/`` written as letters: about 190 random bits (OAuth asks
    for at least 128, better 160). All in C: Authlib's ``generate_token`` makes a call per
    character, and base32 or base 62 digits in Python cost more than the rest of the
    state's work."""
    return base64.b64encode(secrets.token_bytes(24)).translate(_LETTERS_FOR_SYMBOLS).decode()


@dataclass(frozen=True)
class Ending:
    """How the login of a used state ended, kept with it so that a repeated callback (WeChat's
    double redirect, a refresh) ends the same way. Exactly one of ``user_id`` (logged in or
    linked), ``binding_id`` (waiting for the person's choice) or ``error`` is set.

    Stored as JSON with the keys rows of earlier versions have, so either version reads
    the other's rows during a rolling deploy.
    """

    #: when the login ended (``None`` for a link, which is never repeated as a login)
    at: float | None = None
    user_id: str | None = None
    #: where the login went on to (a local path)
    next_url: str | None = None
    #: when WeChat authenticated the person (the ID token's ``auth_time``)
    auth_time: float | None = None
    #: the business ``state``/``nonce`` the login kept (``{}`` when it had none; ``None``
    #: for a link, which never posts to a business callback URL)
    business: BusinessParams | None = None
    binding_id: str | None = None
    #: the class name of the error the login ended with, or :data:`UNEXPECTED_ERROR`
    error: str | None = None
    #: the ``jti`` of the ID token posted for this login (issued at ``at``), so a repeated
    #: callback posts the same token, not a second one
    token_id: str | None = None
    #: the app of the connection the person logged in with: the repeated callback's ID
    #: token names that app's openid, as the first one did
    app: str = WEBSITE_APP
    #: the key of the browser the login was started in (over https), so that its repeated
    #: callback is known for this browser's even when the session that held the state is
    #: gone: a server-side session renewed at login (Flask-Session's ``regenerate``)
    browser: str | None = None
    #: the login made its user: a repeat refused as the first one was (not active yet)
    #: says the same
    created: bool = False

    def to_json(self) -> str:
        data: dict[str, t.Any] = {}
        for key, value in (("user_id", self.user_id), ("next", self.next_url),
                           ("bind", self.binding_id), ("error", self.error),
                           ("at", self.at), ("auth_time", self.auth_time),
                           ("delivery", self.business), ("jti", self.token_id)):
            if value is not None:
                data[key] = value
        if self.app != WEBSITE_APP:  # rows of earlier versions have none: the website's
            data["app"] = self.app
        if self.browser is not None:
            data["browser"] = self.browser
        if self.created:  # rows of earlier versions have none: not made by their login
            data["new"] = 1
        return _COMPACT_JSON.encode(data)

    @classmethod
    def from_json(cls, value: str) -> Ending:
        data = json.loads(value)
        business = data.get("delivery")
        user_id, binding_id, error = data.get("user_id"), data.get("bind"), data.get("error")
        return cls(at=_number(data.get("at")),
                   user_id=str(user_id) if user_id is not None else None,
                   next_url=data.get("next"),
                   auth_time=_number(data.get("auth_time")),
                   business=dict(business) if isinstance(business, dict) else None,
                   binding_id=str(binding_id) if binding_id else None,
                   error=str(error) if error is not None else None,
                   token_id=str(data["jti"]) if data.get("jti") else None,
                   app=OFFICIAL_ACCOUNT if data.get("app") == OFFICIAL_ACCOUNT else WEBSITE_APP,
                   browser=str(data["browser"]) if data.get("browser") else None,
                   created=data.get("new") == 1)

    def of_browser(self, browser: str | None) -> bool:
        """Whether ``browser`` (the key of a callback's login cookie) started this login."""
        return (self.browser is not None and browser is not None
                and hmac.compare_digest(self.browser, browser))

    def is_recent(self, seconds: float) -> bool:
        """Whether the login ended at most ``seconds`` ago (a link never counts)."""
        return self.at is not None and time.time() - self.at <= seconds


def _number(value: t.Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


class ExpiredState(StateError):
    """A state of this browser's that expired before its callback: what its login kept
    (``login``: its ``next``, the business's ``state`` and ``nonce``) is still known, so
    that the page's "Try again" keeps it. Shown as the :class:`StateError` it is."""

    def __init__(self, login: LoginData | None) -> None:
        super().__init__()
        self.login = login


class TooManyWaiting(Exception):
    """:data:`MAX_WAITING_REQUESTS` already wait: answer now, and record nothing (the
    request waited for may still finish)."""


class LoginStateStore:
    """The server-side half of login states: parked data, used states and their endings.

    Every step is one statement, so a login costs as few database round trips (and
    commits) as its safety allows: none of its own on the way to a successful login.
    """

    def __init__(self, db: SQLAlchemy, model: t.Any) -> None:
        self.db = db
        self.table = model.__table__
        self.purges = PurgeSchedule(PURGE_INTERVAL)
        self._waiting = threading.BoundedSemaphore(MAX_WAITING_REQUESTS)
        #: what requests of this process wait with (:meth:`ending`'s ``claim``)
        self._claims: dict[str, object] = {}
        table = self.table
        # Built once: a login runs them every time, and building costs more than running.
        self._insert = sa.insert(table)
        self._value_of = (sa.select(table.c.value)
                          .where(table.c.key == sa.bindparam("key"),
                                 table.c.expires_at >= sa.bindparam("now")))

    @property
    def _engine(self) -> sa.Engine:
        """The current app's engine of the table (the user table's bind), for a connection
        of the store's own: the request's reads end first, so that it never holds one
        connection of the pool while it waits for this one
        (:func:`~.transactions.end_reads`; never called in a login's transaction, whose
        writes would be committed halfway)."""
        end_reads(self.db)
        return engine_of(self.db, self.table)

    def park(self, key: str, value: str, expires_at: float, client: str = "") -> None:
        """Keep a state's data that is too big for the session cookie, under ``key``
        (which starts with ``PARKED + client + ":"``). :class:`TooManyLoginsStarted` when
        that client, or everyone, already has the most waiting.

        The row is committed before the count, so simultaneous starts see each other: a
        burst cannot all pass a count taken before any of them was kept (40 at once from
        one address parked up to 23). One over a limit is taken back, so a burst may keep
        fewer than the limit, never more (those go on without their ``next``). One that
        finds the limit reached already writes nothing (a flood costs a count a start)."""
        with self._engine.begin() as conn:
            self._purge_now_and_then(conn)
            if self._parked_at_least(conn, client, 0):
                raise TooManyLoginsStarted(retry_after=_seconds_until(expires_at))
            conn.execute(self._insert, {"key": key, "value": value, "expires_at": expires_at})
        with self._engine.connect() as conn:  # counts include this row
            over = self._parked_at_least(conn, client, 1)
        if over:
            self.delete(key)
            raise TooManyLoginsStarted(retry_after=_seconds_until(expires_at))

    def _parked_at_least(self, conn: Executor, client: str, more: int) -> bool:
        """Whether ``client``, or everyone, has ``more`` rows parked beyond the limit."""
        return (self._count(conn, f"{PARKED}{client}:") >= MAX_PARKED_PER_CLIENT + more
                or self._count(conn, PARKED) >= MAX_PARKED_TOTAL + more)

    def _count(self, conn: Executor, prefix: str) -> int:
        """Unexpired rows whose key starts with ``prefix`` (a LIKE, not a key range: a
        database's collation may order punctuation its own way). Only long logins park, so
        this runs rarely."""
        table = self.table
        return int(conn.execute(
            sa.select(sa.func.count()).select_from(table)
            .where(table.c.key.startswith(prefix, autoescape=True),
                   table.c.expires_at >= time.time())).scalar_one())

    def parked(self, key: str, *, expired_too: bool = False) -> str | None:
        """A parked state's data, ``None`` once it expired (``expired_too``: until the purge
        deletes its row). Reading it does not use the state (:meth:`use` does); the row
        stays until it expires, outlived by the taken row."""
        return self._value(key, since=0.0 if expired_too else None)

    def use(self, key: str, ending: str, expires_at: float, within: Executor) -> None:
        """Use a state, recording how its login ended, in the caller's transaction.

        :class:`StateUsed` if another request used it first: the caller rolls back (a
        login is never finished twice) and answers with that request's ending. The
        taken row outlives the state, so the same state in a replayed cookie finds it.
        ``within`` has no pending ORM changes (flushed), so an error here is this row's.
        """
        try:
            within.execute(self._insert,
                           {"key": TAKEN + key, "value": ending, "expires_at": expires_at})
        except IntegrityError as error:
            raise StateUsed() from error

    def is_used(self, key: str, within: Executor | None = None) -> bool:
        """Whether a state is used, read in the caller's transaction (``within``), else on a
        connection of its own."""
        return self._value(TAKEN + key, within) is not None

    def record_failure(self, key: str, ending: str, expires_at: float) -> bool:
        """Use a state whose login failed (its own small transaction): ``True``; ``False``
        if another request of the state got there first (its ending stays)."""
        try:
            with self._engine.begin() as conn:
                self.use(key, ending, expires_at, conn)
        except StateUsed:
            return False
        return True

    def ending(self, key: str, wait: float = 0, claim: str | None = None) -> str | None:
        """How the login of a used state ended; waits up to ``wait`` seconds for a request
        still running. ``None`` if nobody used the state (in time); :class:`TooManyWaiting`
        if it would wait and :data:`MAX_WAITING_REQUESTS` already do, or another request of
        this process waits with the same ``claim`` (a code's key: one code sent with many
        states held a thread per state)."""
        value = self._ending(key)
        if value is not None or wait <= 0:
            return value
        if claim is not None:
            mine = object()
            if self._claims.setdefault(claim, mine) is not mine:  # one step: atomic
                raise TooManyWaiting()
        try:
            return self._wait_for_ending(key, wait)
        finally:
            if claim is not None:
                del self._claims[claim]

    def _wait_for_ending(self, key: str, wait: float) -> str | None:
        if not self._waiting.acquire(blocking=False):
            raise TooManyWaiting()
        try:
            value = None
            deadline = time.monotonic() + wait
            interval = POLL_INTERVAL
            while value is None and time.monotonic() < deadline:
                time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
                interval = min(2 * interval, MAX_POLL_INTERVAL)
                value = self._ending(key)
            return value
        finally:
            self._waiting.release()

    def _ending(self, key: str) -> str | None:
        return self._value(TAKEN + key)

    def _value(self, key: str, within: Executor | None = None, *,
               since: float | None = None) -> str | None:
        """The value of an unexpired row (``""`` for a row without one), else ``None``; read
        on its own connection, or in the caller's transaction (``within``). ``since``: a row
        that expired after this moment counts too."""
        if within is None:
            with self._engine.connect() as conn:
                return self._value(key, conn, since=since)
        return t.cast("str | None", within.execute(
            self._value_of, {"key": key, "now": time.time() if since is None else since}
        ).scalar())

    def remember_spent_code(self, key: str) -> None:
        """A code WeChat called used, and no login here finished with it: not waited for
        again while WeChat could still answer it."""
        try:
            with self._engine.begin() as conn:
                conn.execute(self._insert, {"key": SPENT_CODE + key, "value": "",
                                            "expires_at": time.time() + CODE_LIFETIME})
        except IntegrityError:
            pass  # another request said so first

    def is_spent_code(self, key: str) -> bool:
        return self._value(SPENT_CODE + key) is not None

    def delete(self, key: str) -> None:
        """Forget a parked state that was never used."""
        with self._engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.key == key))

    def purge_now_and_then(self) -> None:
        """Delete a batch of expired rows, at most once per :data:`PURGE_INTERVAL` per process
        (at the next callback while batches come back full); in a transaction of its own,
        never in a login's (which may roll back, or hold locks), nor beside the host's writes
        of the request (:func:`~.transactions.end_reads`)."""
        if self.purges.is_due() and end_reads(self.db):
            try:
                with self._engine.begin() as conn:
                    self._purge_now_and_then(conn)
            except SQLAlchemyError as error:  # housekeeping: never fail a login over it
                if is_unreachable(error):
                    raise  # ...but nor can the login get through: one wait, not two
                log.warning("could not purge expired login states; trying again later",
                            exc_info=True)

    def _purge_now_and_then(self, conn: Executor) -> None:
        now = time.time()
        if self.purges.is_due(now):
            self.purges.start(now)
            deleted = delete_expired(conn, self.table, self.table.c.expires_at, now,
                                     self.purges.batch)
            self.purges.finished(deleted, now)


class LoginStates:
    """The login states of one connection: made at the login, used at the callback.

    The session half (the state, its expiry, small data) binds a state to the browser; the
    :class:`LoginStateStore` half makes it single use and remembers how its login ended.
    """

    def __init__(self, store: LoginStateStore, connection: str, app_id: str,
                 ttl: int) -> None:
        self.store = store
        self.prefix = f"{STATE_KEY_PREFIX}{connection}_"
        #: another app sharing this SECRET_KEY reads the same cookie, and must not take
        #: this app's logins for its own
        self.app_id = app_id
        self.ttl = ttl

    def begin(self, login: LoginData, client: str = "", browser: str | None = None) -> str:
        """A new ``state`` for one login, its ``login`` data kept until the callback.
        ``client``: the address of the browser (a long ``next`` parks its data in the table,
        a few at a time per address, an IPv6 /64 counting as one: see
        :func:`~flask_wechat_qr.client_address.client_network`). ``browser``: a key of this browser
        that a session cookie planted in another browser cannot carry (see
        :func:`browser_key`); the callback must then bring the same.

        ``[A-Za-z0-9]{32}``: within the 128-byte alphanumeric limit WeChat documents.
        """
        state = new_state()
        session = this_session()
        _forget_oldest_states(self.store, session)
        key = self.prefix + state
        expires_at = time.time() + self.ttl
        data = login.to_json()
        value = _COMPACT_JSON.encode(data)
        marker: dict[str, t.Any] = {"exp": expires_at, "app": self.app_id}
        if browser is not None:
            marker["browser"] = browser
        if len(value) > MAX_INLINE_STATE_DATA:
            client_key = hashlib.sha256(client_network(client).encode()).hexdigest()[:16]
            try:
                self.store.park(f"{PARKED}{client_key}:{key}", value, expires_at, client_key)
                marker["parked"] = f"{PARKED}{client_key}:{key}"
            except TooManyLoginsStarted:
                # Full, as many networks' scripts can make it: a login long only for its
                # next goes on without it (to the post-login page) rather than not at all.
                data = replace(login, next_url=None).to_json()
                if not _fits_inline(data):
                    raise
                log.warning("too many logins with long data are waiting: a login goes on "
                            "without its next")
        if "parked" not in marker:
            marker["data"] = data
        session[key] = marker
        return state

    def take(self, state: str | None, browser: str | None = None) -> LoginData:
        """Take ``state`` out of this browser's session: the data saved with it.

        :class:`StateError` when the state is missing, forged, from another browser (its
        session, or its ``browser`` key where the login was started with one) or expired.
        The state is used for good only by :meth:`use` (or :meth:`record_failure`), in the
        transaction that finishes its login: a request that finds it used there rolls
        back.
        """
        if not state or len(state) > 128:
            raise StateError()
        key = self.prefix + state
        session = this_session()
        # Not this browser's state: nothing is touched, its owner may still use it.
        marker = session.pop(key, None)
        now = time.time()
        for other in [k for k in session if k.startswith(self.prefix)]:
            if _marker_expiry(session[other]) < now:
                session.pop(other, None)
        if FINISHING_KEY in session:  # waiting pages left long ago go
            _keep_waiting(session, lambda _key, marker: (
                (_number(marker.get("until")) or 0) + self.ttl >= now))
        if not _is_ours(marker, self.app_id, browser):
            raise StateError()
        if _marker_expiry(marker) < now:
            raise ExpiredState(self._expired_login(marker, key))
        if "data" in marker:
            data = marker["data"]
        else:
            value = self.store.parked(_parked_key(marker, key))
            if value is None:
                raise StateError()
            data = json.loads(value)
        tied_to = marker.get("browser")
        return LoginData.from_json(data, tied_to if isinstance(tied_to, str) else None)

    def _expired_login(self, marker: dict[str, t.Any], key: str) -> LoginData | None:
        """What this browser's expired login kept, for its page's "Try again": in the
        session, or parked in the table until the purge takes the row (then, or with the
        database out of reach, nothing: the page says the same without it). Never the
        login itself: its state is expired."""
        if "data" in marker:
            return _login_of(marker["data"], marker)
        try:
            value = self.store.parked(_parked_key(marker, key), expired_too=True)
            return _login_of(json.loads(value), marker) if value else None
        except (SQLAlchemyError, ValueError):
            return None

    def owns(self, state: str | None, browser: str | None = None) -> bool:
        """Whether this browser started the login of ``state``: its session (in this app:
        another one sharing the ``SECRET_KEY`` reads the same cookie), and its ``browser``
        key where the login was started with one."""
        marker = session.get(self.prefix + state) if state else None
        return _is_ours(marker, self.app_id, browser)

    def remember_cancelled(self, state: str, login: LoginData) -> None:
        """Remember in this browser's session that it cancelled the login of ``state``
        (only the last one): a reload of that callback page, however late, then says so
        again rather than "no longer valid", with the same "Try again" (``next``, and a link
        tried again as a link). The used state's row says it only for a few seconds, and
        over http cannot tell this browser from another. A ``next`` too long for the cookie
        is left out (the try goes to the post-login page)."""
        kept = LoginData(next_url=login.next_url, link_user=login.link_user).to_json()
        if not _fits_inline(kept):
            kept = LoginData(link_user=login.link_user).to_json()
        session[CANCELLED_KEY] = {"state": self.prefix + state, "app": self.app_id,
                                  "data": kept}

    def cancelled_here(self, state: str | None) -> LoginData | None:
        """What the login of ``state`` kept, if it is the one this browser cancelled last
        (:meth:`remember_cancelled`); else ``None``."""
        kept = session.get(CANCELLED_KEY)
        if (not state or not isinstance(kept, dict) or kept.get("app") != self.app_id
                or kept.get("state") != self.prefix + state):
            return None
        try:
            return LoginData.from_json(kept.get("data"))
        except StateError:
            return None

    def remember_finishing(self, state: str, login: LoginData, until: float) -> None:
        """Remember in this browser's session that another request of the login of
        ``state`` may still be finishing it (WeChat's double redirect: this one's code was
        answered "used" and its wait ran out), until ``until``: the page that loads the
        callback again waits for that request's ending, not for a used state of its own,
        which would refuse that request's commit. Its ``login`` rides along (without a
        ``next`` too long for the cookie), for the page that ends the wait in vain."""
        kept = login.to_json()
        if not _fits_inline(kept):
            kept = replace(login, next_url=None).to_json()
        marker: dict[str, t.Any] = {"app": self.app_id, "until": until, "data": kept}
        if login.browser is not None:  # tied as the state was (see _is_ours)
            marker["browser"] = login.browser
        waiting = _waiting(session)
        waiting[self.prefix + state] = marker  # one per login: another tab may wait too
        latest = sorted(waiting, key=lambda key: _number(waiting[key].get("until")) or 0)
        session[FINISHING_KEY] = {key: waiting[key] for key in latest[-MAX_PENDING_STATES:]}

    def finishing_here(self, state: str | None, browser: str | None = None
                       ) -> tuple[LoginData, float] | None:
        """The login of ``state`` and until when this browser waits for another request to
        finish it (:meth:`remember_finishing`), if this browser waits for that (its
        ``browser`` key where the login was tied to one); else ``None``."""
        kept = _waiting(session).get(self.prefix + state) if state else None
        if not _is_ours(kept, self.app_id, browser):
            return None
        kept = t.cast(dict[str, t.Any], kept)
        until = _number(kept.get("until"))
        if until is None or until + self.ttl < time.time():
            return None  # a page left long ago: see take
        tied_to = kept.get("browser")
        try:
            login = LoginData.from_json(kept.get("data"),
                                        tied_to if isinstance(tied_to, str) else None)
        except StateError:
            return None
        return login, until

    def forget_finishing(self, state: str) -> None:
        """This browser waits for no other request's ending of the login of ``state`` any
        more."""
        forgotten = self.prefix + state
        _keep_waiting(session, lambda key, _marker: key != forgotten)

    def use(self, state: str, ending: Ending, within: Executor) -> None:
        """Use ``state`` for good, recording how its login ended, in the caller's
        transaction (``within``: no commit of its own). :class:`StateUsed` if another
        request of it did first: roll back and answer with :meth:`ending`."""
        self.store.use(self.prefix + state, ending.to_json(), self._taken_until(), within)

    def is_used(self, state: str, within: Executor | None = None) -> bool:
        """Whether another request used ``state`` (read in the caller's transaction, else on
        a connection of its own)."""
        return self.store.is_used(self.prefix + state, within)

    def record_failure(self, state: str, ending: Ending) -> bool:
        """Use ``state`` for good after its login failed: ``True``; ``False`` if another
        request of it ended first (its ending stays)."""
        return self.store.record_failure(self.prefix + state, ending.to_json(),
                                         self._taken_until())

    def ending(self, state: str | None, wait: float = 0, code: str | None = None
               ) -> Ending | None:
        """How the login of a used ``state`` ended, waiting up to ``wait`` seconds for a
        request of it still running; ``None`` if there is nothing to repeat. With ``code``,
        only one request of this process waits for that code at a time
        (:class:`TooManyWaiting` for the others)."""
        if not state or len(state) > 128 or not state.isalnum():
            return None  # not a state this extension made
        value = self.store.ending(self.prefix + state, wait,
                                  None if code is None else self._code_key(code))
        return Ending.from_json(value) if value else None

    def remember_spent_code(self, code: str) -> None:
        """WeChat said ``code`` was used, and waiting found no login that used it."""
        self.store.remember_spent_code(self._code_key(code))

    def is_spent_code(self, code: str) -> bool:
        return self.store.is_spent_code(self._code_key(code))

    def _code_key(self, code: str) -> str:
        """Codes are secrets: only their hash is kept, per connection."""
        return hashlib.sha256(f"{self.prefix}{code}".encode()).hexdigest()

    def _taken_until(self) -> float:
        """When a taken row may go: after every cookie that could carry its state has
        expired (it was made at most ``ttl`` ago), and not before :data:`AFTERLIFE`."""
        return time.time() + max(self.ttl, AFTERLIFE)


def browser_key(cookie_value: str) -> str:
    """What a login's session marker keeps of the browser's login cookie (a hash: a session
    cookie read by someone else never gives the cookie itself)."""
    return hashlib.sha256(f"wechat-qr-login:{cookie_value}".encode()).hexdigest()[:32]


def _is_ours(marker: t.Any, app_id: str, browser: str | None) -> bool:
    """A session marker of this app's, and of this browser where it was tied to one: a
    session cookie planted from a sibling sub-domain (cookie tossing) carries the marker
    but not the ``__Host-`` cookie it was tied to."""
    if not isinstance(marker, dict) or marker.get("app") != app_id:
        return False
    tied_to = marker.get("browser")
    return tied_to is None or (browser is not None and hmac.compare_digest(tied_to, browser))


def _forget_oldest_states(store: LoginStateStore, session: SessionMixin) -> None:
    """Keep at most :data:`MAX_PENDING_STATES` - 1 older states in ``session`` (the
    request's), of all connections: a page that embeds the QR and reloads would otherwise
    grow the cookie past what browsers keep."""
    markers = [key for key in session if key.startswith(STATE_KEY_PREFIX)]
    if len(markers) < MAX_PENDING_STATES:  # most starts: room for one more, nothing sorted
        return
    markers.sort(key=lambda key: _marker_expiry(session[key]))
    for key in markers[: max(0, len(markers) - (MAX_PENDING_STATES - 1))]:
        marker = session.pop(key)
        if isinstance(marker, dict) and "data" not in marker:
            store.delete(_parked_key(marker, key))  # parked: its row goes too


def _seconds_until(moment: float) -> int:
    """Whole seconds from now until ``moment`` (at least one): when a parked login started
    now would expire, and with it those already waiting."""
    return max(1, math.ceil(moment - time.time()))


def _login_of(data: t.Any, marker: dict[str, t.Any]) -> LoginData | None:
    """The login data an expired ``marker`` of this browser's kept (``data``: in the session
    or parked), if it reads as such."""
    tied_to = marker.get("browser")
    try:
        return LoginData.from_json(data, tied_to if isinstance(tied_to, str) else None)
    except StateError:
        return None


def _parked_key(marker: dict[str, t.Any], key: str) -> str:
    """Where a state's parked data is (markers of earlier versions park under the key)."""
    parked = marker.get("parked")
    return parked if isinstance(parked, str) and parked.startswith(PARKED) else key



def forget_waiting_pages(_sender: t.Any, **_extra: t.Any) -> None:
    """Flask-Login's ``user_logged_out`` (connected by ``init_app``): the double redirect's
    waiting pages (:meth:`LoginStates.remember_finishing`) go with the session's person, so
    that loading one again from the browser's history logs nobody in after that logout."""
    if has_request_context():
        session.pop(FINISHING_KEY, None)


def _waiting(session: SessionMixin) -> dict[str, dict[str, t.Any]]:
    """The logins this browser's waiting pages wait for, by state key (a copy: the session
    notices only a value set anew)."""
    waiting = session.get(FINISHING_KEY)
    if not isinstance(waiting, dict):
        return {}
    return {key: marker for key, marker in waiting.items() if isinstance(marker, dict)}


def _keep_waiting(session: SessionMixin,
                  keep: t.Callable[[str, dict[str, t.Any]], bool]) -> None:
    """Keep only the waiting pages' logins ``keep`` says (none left: no key)."""
    waiting = _waiting(session)
    kept = {key: marker for key, marker in waiting.items() if keep(key, marker)}
    if kept == waiting and (kept or FINISHING_KEY not in session):
        return  # nothing to change: the session stays unmodified
    if kept:
        session[FINISHING_KEY] = kept
    else:
        session.pop(FINISHING_KEY, None)


def _fits_inline(data: dict[str, t.Any]) -> bool:
    """Whether a login's data is small enough to ride in the session cookie."""
    return len(_COMPACT_JSON.encode(data)) <= MAX_INLINE_STATE_DATA


def _marker_expiry(marker: t.Any) -> float:
    """When a state kept in the session expires (0 for anything that is not a state)."""
    expiry = marker.get("exp") if isinstance(marker, dict) else None
    return float(expiry) if isinstance(expiry, (int, float)) else 0.0
