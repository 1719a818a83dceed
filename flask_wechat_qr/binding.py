"""Ask binding: a WeChat account nobody owns waits, server-side, for its owner to choose
"bind to my existing account" (proven by re-authentication) or "create a new account".

A pending binding is single use, expires, and is reached only through the browser session
that started it. Failed binding attempts are counted per pending binding and per client
address, in the database so every worker process sees them (each count commits at once,
so simultaneous guesses see each other); everything else is written in the login flow's
transaction, which commits it. Also what the bind page calls the login field the person
proves an account with (:class:`LoginField`). Knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.urls import iri_to_uri

from .adapter import found_user
from .association import Resolution
from .check_times import CheckTimes
from .client import WeChatProfile
from .client_address import client_network
from .errors import (
    AlreadyLinked,
    BindingBlocked,
    BindingExpired,
    ConnectionAlreadyLinked,
    LinkedMeanwhile,
    LoginRefused,
)
from .i18n import LazyText, lazy_ngettext
from .i18n import lazy_gettext as _l
from .model_base import engine_of
from .purge import PurgeSchedule, delete_expired
from .storable import storable
from .transactions import committed, end_reads, is_unreachable

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.engine import CursorResult

    from .association import AssociationPolicy
    from .client import WeChatToken
    from .models import Models
    from .protocols import PendingBinding, User
    from .settings import ConnectionSettings, Settings


log = logging.getLogger("flask_wechat_qr")

#: Seconds between two purges of expired pending bindings by one process.
PURGE_INTERVAL = 60


class PendingBindings:
    """Create, find and complete pending bindings; enforce the attempt limits."""

    def __init__(self, db: SQLAlchemy, models: Models, policy: AssociationPolicy,
                 settings: Settings) -> None:
        self.db = db
        self.models = models
        self.policy = policy
        self.settings = settings
        self.purges = PurgeSchedule(PURGE_INTERVAL)
        #: how long this app's recent password checks took (every answer waits as long)
        self.check_times = CheckTimes()

    def start(self, connection: ConnectionSettings, token: WeChatToken,
              profile: WeChatProfile, next_url: str | None) -> str:
        """Park the identity (in the caller's transaction); returns the pending binding's
        id, for the browser's session only."""
        Pending = self.models.PendingBinding
        now = time.time()
        binding_id = secrets.token_urlsafe(32)
        self.db.session.add(Pending(
            id=binding_id, connection=connection.identifier, app=token.app,
            openid=token.openid,
            unionid=profile.unionid or token.unionid,
            nickname=storable(self.db, Pending.__table__.c.nickname,
                              profile.nickname[:255] or None),
            avatar_url=profile.avatar_url, profile=profile.raw,
            # as a URI (the same page): ASCII, which any connection's character set carries
            next_url=iri_to_uri(next_url) if next_url else next_url,
            created_at=now, expires_at=now + self.settings.bind_ttl,
        ))
        self.db.session.flush()
        return binding_id

    def purge_now_and_then(self) -> None:
        """Delete a batch of expired pending bindings, at most once per
        :data:`PURGE_INTERVAL` per process (at the next start while batches come back full),
        in a transaction of its own; never beside the host's writes of the request
        (:func:`~.transactions.end_reads`)."""
        now = time.time()
        if not self.purges.is_due(now) or not end_reads(self.db):
            return
        self.purges.start(now)
        table = self.models.PendingBinding.__table__
        try:
            with engine_of(self.db, table).begin() as conn:
                deleted = delete_expired(conn, table, table.c.expires_at, now,
                                         self.purges.batch)
        except SQLAlchemyError as error:  # housekeeping: never fail a login over it
            if is_unreachable(error):
                raise  # ...but nor can the login get through: one wait, not two
            log.warning("could not purge expired pending bindings; trying again later",
                        exc_info=True)
            return
        self.purges.finished(deleted, now)

    def get(self, binding_id: str | None) -> PendingBinding:
        """The pending binding, or :class:`BindingExpired` if it is unknown, used or expired."""
        row: PendingBinding | None = (
            self.db.session.get(self.models.PendingBinding, binding_id) if binding_id else None)
        if row is None or row.used or row.expires_at < time.time():
            raise BindingExpired()
        return row

    # --- the two choices --------------------------------------------------------------

    def create_account(self, connection: ConnectionSettings, binding_id: str) -> Resolution:
        """"Create a new account" (refused in login-only mode), in the caller's
        transaction."""
        pending = self.get(binding_id)
        if not self.policy.adapter.can_signup(connection):
            raise LoginRefused(openid=pending.openid)
        profile = _profile_of(pending)
        self._consume(pending.id)
        # Checked in the completing transaction; one that commits after the check meets the
        # unique constraint, and the retry lands here (or attach finds it by unionid).
        if self.policy.linked_user(connection.identifier, pending.openid) is not None:
            # Not a login to that account: the page may have been left at a shared computer.
            raise LinkedMeanwhile()
        with self.policy.person_claimed(connection, pending.unionid,
                                        pending.app) as account:
            if account is not None:
                # The same person's account made through the other app (inside WeChat on
                # the phone): "linked to another account" said before (a helper's hunt).
                raise LinkedMeanwhile()
            user = self.policy.create_user_for(connection, profile)
            try:
                identity = self.policy.attach(connection, user, pending.openid, profile,
                                              pending.unionid, app=pending.app)
            except AlreadyLinked:
                if self.policy.linked_user(connection.identifier, pending.openid) is not None:
                    raise LinkedMeanwhile() from None
                raise  # the person's other app's openid is someone else's
        return Resolution(user=user, identity=identity, created_user=True,
                          new_identity=True, profile=profile, via="signup")

    def bind_account(self, connection: ConnectionSettings, binding_id: str, user: User
                     ) -> Resolution:
        """"Bind to my existing account", once ``user`` has been re-authenticated; in the
        caller's transaction."""
        pending = self.get(binding_id)
        profile = _profile_of(pending)
        self._consume(pending.id)
        # Checked in the completing transaction (see create_account), and again where
        # attach finds it linked since.
        meanwhile = self._linked_meanwhile_to(connection, pending.openid, user)
        if meanwhile is not None:
            return meanwhile
        if connection.profile_sync == "each_login":
            self.policy.populate_user(user, connection, profile)
        # Under the person's claim, as a new account is: the account their other app's
        # login makes at the same moment is seen, and attach refuses to split the person.
        with self.policy.person_claimed(connection, pending.unionid, pending.app):
            try:
                identity = self.policy.attach(connection, user, pending.openid, profile,
                                              pending.unionid, app=pending.app)
            except (AlreadyLinked, ConnectionAlreadyLinked):
                meanwhile = self._linked_meanwhile_to(connection, pending.openid, user)
                if meanwhile is not None:
                    return meanwhile
                raise
        return Resolution(user=user, identity=identity, new_identity=True, profile=profile,
                          via="binding")

    def _linked_meanwhile_to(self, connection: ConnectionSettings, openid: str, user: User
                             ) -> Resolution | None:
        """The waiting WeChat account linked since the page was drawn (the same person
        chose in another browser): to ``user``, whose password was just proved, that login;
        to someone else, :class:`AlreadyLinked` (never re-linked silently); ``None``: not
        linked."""
        linked = self.policy.linked_user(connection.identifier, openid)
        if linked is None:
            return None
        identity, _owner = linked
        if identity.user_id != self.policy.adapter.get_user_id(user):
            raise AlreadyLinked()
        return Resolution(user=user, identity=identity)

    def _consume(self, binding_id: str) -> None:
        """Mark used, atomically: of two concurrent completions only one goes on."""
        Pending = self.models.PendingBinding
        # An UPDATE's result is a CursorResult (SQLAlchemy's own advice for its typing).
        done = t.cast("CursorResult[t.Any]", self.db.session.execute(
            sa.update(Pending)
            .where(Pending.id == binding_id, Pending.used.is_(False),
                   Pending.expires_at >= time.time())
            .values(used=True)
        )).rowcount
        if done != 1:
            raise BindingExpired()

    # --- attempt limits ---------------------------------------------------------------

    def prove_account(self, binding_id: str, address: str, username: str, password: str
                      ) -> User | None:
        """The account whose password the person gave, or ``None`` (a failed attempt).

        :class:`BindingBlocked` once the attempt limits are reached. The attempt counts as
        a failure until the password proves right, so concurrent guesses see each other.
        """
        username, password = username[:200], password[:1000]
        attempt = self.begin_attempt(binding_id, address, username)
        # No form field typed in a browser holds NUL, and PostgreSQL refuses it in a query
        # (a 500 from the adapter's lookup): wrong credentials, without asking the adapter.
        if "\x00" in username + password:
            return None
        # No sooner than the slowest recent check, so the time tells no usernames; the
        # request's reads end before it waits, not to hold a connection of the pool.
        with self.check_times.check(before_waiting=lambda: end_reads(self.db)):
            # Read back inside the check's time, which the floor evens out: an account
            # found but gone (soft-deleted) shows no read of its own in the answer's time.
            adapter = self.policy.adapter
            user = found_user(adapter, adapter.authenticate(username, password),
                              "authenticate")
        if user is not None:
            self.forget_attempt(attempt)
        return user

    def begin_attempt(self, binding_id: str, address: str, username: str = "") -> int:
        """Count a "bind to my account" attempt *before* its password is checked; its id.

        :class:`BindingBlocked` once a limit (per pending binding, client address or
        account tried) is reached within the window. The
        attempt is committed before the count, so simultaneous guesses see each other: a
        burst cannot all pass a count taken before any of them failed. A blocked attempt
        is not counted. Call :meth:`forget_attempt` when the credentials were right: only
        failures count.
        """
        Attempt = self.models.BindAttempt
        # One client's many IPv6 addresses (a /64) count as one.
        address = client_network(address)[:_ADDRESS_LENGTH]
        account = account_key(self.policy.adapter.login_key(username))
        now = time.time()
        since = now - self.settings.bind_block_seconds

        def count_attempt() -> int:
            # Attempts older than the window count no more: a batch of them goes (bounded, so
            # a flood of old attempts never lands on one person's request).
            delete_expired(self.db.session, Attempt.__table__, Attempt.__table__.c.at, since)
            attempt = Attempt(binding_id=binding_id, address=address, account=account, at=now)
            self.db.session.add(attempt)
            self.db.session.flush()
            return int(attempt.id)

        def counts() -> tuple[int, int, int]:
            row = self.db.session.execute(sa.select(
                count_where(Attempt.binding_id == binding_id),
                count_where(Attempt.address == address),
                count_where(Attempt.account == account),
            ).where(Attempt.at >= since,
                    sa.or_(Attempt.binding_id == binding_id, Attempt.address == address,
                           Attempt.account == account))).one()
            return int(row[0]), int(row[1]), int(row[2])

        # Each step commits by itself (tried again where the database rolled it back for
        # another person's attempt: SERIALIZABLE), the counts before the password is checked.
        attempt_id = committed(self.db, count_attempt)
        per_binding, per_address, per_account = committed(self.db, counts)
        # Every count includes this attempt.
        if (per_binding > self.settings.bind_attempts_per_binding
                or per_address > self.settings.bind_attempts_per_address
                or per_account > self.settings.bind_attempts_per_account):
            self.forget_attempt(attempt_id)
            raise self._blocked()
        return attempt_id

    def _blocked(self) -> BindingBlocked:
        """The block page names the configured wait, not a fixed one."""
        minutes = max(1, math.ceil(self.settings.bind_block_seconds / 60))
        return BindingBlocked(lazy_ngettext(
            "Too many wrong usernames or passwords. Binding is blocked for a while; "
            "wait %(num)d minute and log in with WeChat again.",
            "Too many wrong usernames or passwords. Binding is blocked for a while; "
            "wait %(num)d minutes and log in with WeChat again.", minutes),
            retry_after=self.settings.bind_block_seconds)

    def forget_attempt(self, attempt_id: int) -> None:
        """Uncount an attempt (blocked, or its credentials were right)."""
        Attempt = self.models.BindAttempt
        committed(self.db, lambda: self.db.session.execute(
            sa.delete(Attempt).where(Attempt.id == attempt_id)))


#: Length of the ``address`` column: addresses are stored (and compared) cut to it.
_ADDRESS_LENGTH = 64


def account_key(login_key: str) -> str:
    """What a bind attempt keeps of the account it tried (the adapter's
    :meth:`~.AccountAdapter.login_key` of the username): a hash, so a password typed into the
    username field is never stored."""
    return hashlib.sha256(login_key.encode("utf-8")).hexdigest()[:32]


def _profile_of(pending: PendingBinding) -> WeChatProfile:
    raw = dict(pending.profile or {})
    return WeChatProfile(openid=pending.openid, unionid=pending.unionid,
                         nickname=pending.nickname or "", avatar_url=pending.avatar_url,
                         raw=raw)


class LoginField(t.NamedTuple):
    """How the bind page asks for the adapter's ``login_field``: a person proves an account
    with it and a password."""

    label: LazyText
    #: the page's message for a wrong pair
    wrong: LazyText
    #: the input's ``type``: the keyboard a phone shows
    input_type: str


#: The login fields the bind page knows by name; any other is asked for as "Account".
LOGIN_FIELDS = {
    "username": LoginField(_l("Username"), _l("Wrong username or password."), "text"),
    "email": LoginField(_l("Email"), _l("Wrong email or password."), "email"),
    "phone": LoginField(_l("Phone number"), _l("Wrong phone number or password."), "tel"),
}
OTHER_LOGIN_FIELD = LoginField(_l("Account"), _l("Wrong account or password."), "text")


def login_field_named(name: str) -> LoginField:
    """How the bind page asks for the login field ``name``."""
    return LOGIN_FIELDS.get(name, OTHER_LOGIN_FIELD)


def count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    """``count(*) FILTER (WHERE condition)`` as every database says it: MariaDB and MySQL
    have no ``FILTER`` (each binding attempt there was a syntax error, a 500)."""
    return sa.func.count(sa.case((condition, 1)))
