"""The association policy: which local user a WeChat identity logs in as.

Decides between "known identity", "attach to an existing user" and "create a user"
from the connection's settings; reads and writes identity rows (flushed, never committed:
the login flow owns the transaction); asks the adapter for anything about users. Knows
nothing of HTTP: the profile arrives through a callable, so a returning user costs no
profile request unless the sync policy wants one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import typing as t
from dataclasses import dataclass, replace
from datetime import timedelta

import sqlalchemy as sa

from .adapter import found_user, own_user
from .client import ProfileNotGranted
from .errors import (
    AlreadyLinked,
    ConnectionAlreadyLinked,
    LastLoginMethod,
    LoginError,
    LoginRefused,
    NotLinked,
)
from .models import as_utc, utcnow
from .settings import OFFICIAL_ACCOUNT, WEBSITE_APP
from .storable import storable
from .user_key import USER_KEY, referenced_column

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import ORMExecuteState

    from .adapter import AccountAdapter
    from .avatars import AvatarKeeper
    from .client import WeChatProfile, WeChatToken
    from .models import Models
    from .protocols import Identity, User
    from .settings import ConnectionSettings

log = logging.getLogger("flask_wechat_qr")


class PersonMadeMeanwhile(Exception):
    """The person's identity through the connection's other app was committed after this
    login's transaction began (:meth:`AssociationPolicy.person_claimed`): the login's
    transaction runs again, and finds it."""


#: Key prefix (in the login state table) of a person's claim while their account is made,
#: and when a claim would expire, were its transaction ever to commit it (it deletes it).
PERSON_CLAIM = "person:"
PERSON_CLAIM_SECONDS = 120.0

#: A returning login writes ``last_login_at`` only when the stored one is older than this
#: (seconds): most logins then write nothing but their used state, and the column still
#: says when the person last came, to the hour.
LAST_LOGIN_PRECISION = 3600

__all__ = ["AssociationPolicy", "BindingRequired", "LoginRefused", "Resolution"]


class BindingRequired(Exception):
    """Ask binding: the person must choose "bind to my account" or "create an account".

    Not an error page: the views park the identity as a pending binding and show the
    choice.
    """

    def __init__(self, connection: ConnectionSettings, token: WeChatToken,
                 profile: WeChatProfile) -> None:
        super().__init__("binding required")
        self.connection = connection
        self.token = token
        self.profile = profile


@dataclass
class Resolution:
    """Who logs in, and what this login changed."""

    user: User
    identity: Identity
    created_user: bool = False
    new_identity: bool = False
    profile: WeChatProfile | None = None
    #: how a new identity was linked: "signup", "match", "binding", "link" or "unionid"
    #: (the same person's identity of the connection's other app)
    via: str | None = None


class AssociationPolicy:
    """Resolves a WeChat identity to a local user, writing identity rows as it goes."""

    def __init__(self, db: SQLAlchemy, models: Models, adapter: AccountAdapter[User],
                 avatars: AvatarKeeper | None = None) -> None:
        self.db = db
        self.models = models
        self.adapter = adapter
        #: stores avatars (``WECHAT_QR_STORE_AVATARS``); ``None``: WeChat's URLs are kept
        self.avatars = avatars
        IdentityModel = models.Identity
        # Built once: every login runs them, and building costs more than running. The whole
        # row, raw profile included: signal receivers are documented to get the identity's
        # attributes, and may keep it past the request (a deferred column would then raise).
        self._identity_by_openid = sa.select(IdentityModel).where(
            IdentityModel.connection == sa.bindparam("connection"),
            IdentityModel.openid == sa.bindparam("openid"))
        self._identity_and_user = self._with_user(self._identity_by_openid)

    def find_identity(self, connection: str, openid: str) -> Identity | None:
        identity: Identity | None = self.db.session.execute(
            self._identity_by_openid, {"connection": connection, "openid": openid}
        ).scalar_one_or_none()
        return identity

    def unlinked_only_signs_up(self, connection: ConnectionSettings) -> bool:
        """Whether a login that finds no identity of its openid can end only in a new
        account and its identity (or in the unique key's refusal of one made meanwhile):
        no choice to ask (association ``off``), no other app's account to join, sign-up
        allowed by the setting, and the account made and filled by the default hooks.
        Elsewhere an identity made meanwhile may change the ending before any insert (a
        match, a join, a bind page, a refusal; a site's ``create_user`` that finds the
        name taken, or sends mail), so it must be looked for (two reviews, session 38)."""
        adapter = self.adapter
        return (connection.association == "off" and not connection.oa_app_id
                and not connection.login_only and adapter._signup_by_setting()
                and adapter._is_default("create_user")
                and adapter._is_default("populate_user"))

    def linked_user(self, connection: str, openid: str) -> tuple[Identity, User] | None:
        """``(identity, user)`` of a WeChat account linked here, or ``None``. An identity
        whose user is gone (deleted behind the ORM where no foreign key removed it) is
        stale: it goes now (in the caller's transaction)."""
        if self._identity_and_user is None:
            identity = self.find_identity(connection, openid)
        else:
            # One statement for both: the user row joined in lands in the session, where
            # the default load_user below finds it without a query of its own.
            row = self.db.session.execute(
                self._identity_and_user, {"connection": connection, "openid": openid}).first()
            identity = row[0] if row is not None else None
        if identity is None:
            return None
        user = self.adapter.load_user(identity.user_id)
        if user is None:
            self.db.session.delete(identity)
            self.db.session.flush()
            return None
        return identity, user

    def identities_of(self, user: User, *, for_update: bool = False) -> list[Identity]:
        """The user's identities; ``for_update``: read as they are now, rows locked (MariaDB's
        and MySQL's plain reads see the transaction's first snapshot, which may be older)."""
        IdentityModel = self.models.Identity
        user_id = self.adapter.get_user_id(user)
        query = sa.select(IdentityModel).where(IdentityModel.user_id == user_id) \
            .order_by(IdentityModel.id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        identities: list[Identity] = list(self.db.session.execute(query).scalars())
        return identities

    def resolve(
        self,
        connection: ConnectionSettings,
        token: WeChatToken,
        linked: tuple[Identity, User] | None,
        fetch_profile: t.Callable[[], WeChatProfile],
        can_signup: t.Callable[[], bool],
    ) -> Resolution:
        """The user this identity logs in as; creates or links as the settings say.
        ``linked``: :meth:`linked_user`'s answer for ``token.openid``, read in the caller's
        transaction (or known to be ``None`` there: an identity made meanwhile is refused by
        its unique key, and the caller runs again).

        :class:`LoginRefused` in login-only mode for an identity nobody owns;
        :class:`BindingRequired` when the person must choose (ask binding);
        :class:`~.client.ProfileNotGranted` for a silent login of someone this site does not
        know yet. Writes are flushed in the caller's transaction, not committed.

        The same person's identity of the connection's other app (same ``unionid``) logs
        in as its user whatever the association settings: one person, one account.
        ``can_signup``: the adapter's answer for this login, asked where a new account
        would be made (the flow decides when the site's own hook is asked).
        """
        if linked is not None:
            return self._returning(connection, token, *linked, fetch_profile)
        if not token.grants_profile:
            # No profile and no unionid: nothing to know the person by but this openid.
            raise ProfileNotGranted()

        same_person = self._same_person(connection, token, fetch_profile)
        if same_person is not None:
            return self._join(connection, token, same_person, fetch_profile())

        user = self._match(connection, token.app, token.unionid, fetch_profile)
        if user is None and connection.association == "ask_binding":
            raise BindingRequired(connection, token, fetch_profile())
        if user is None and not can_signup():
            # Refused with nothing written, and before any profile request unless finding
            # the same person's other app needed the unionid the token did not carry.
            raise LoginRefused(openid=token.openid)
        profile = fetch_profile()
        with self.person_claimed(connection, token.unionid or profile.unionid,
                                 token.app) as account:
            if account is not None:  # the profile's unionid found the person's other app
                return self._join(connection, token, account, profile)
            if user is not None:
                if connection.profile_sync == "each_login":
                    self.populate_user(user, connection, profile)
                identity = self.attach(connection, user, token.openid, profile,
                                       token.unionid, app=token.app)
                return Resolution(user=user, identity=identity, new_identity=True,
                                  profile=profile, via="match")
            user = self.create_user_for(connection, profile)
            identity = self.attach(connection, user, token.openid, profile, token.unionid,
                                   app=token.app, fresh_user=True)
        return Resolution(user=user, identity=identity, created_user=True,
                          new_identity=True, profile=profile, via="signup")

    def _join(self, connection: ConnectionSettings, token: WeChatToken, user: User,
              profile: WeChatProfile) -> Resolution:
        """This app's identity of the person added to their account of the other app."""
        if connection.profile_sync == "each_login":
            self.populate_user(user, connection, profile)
        identity = self.attach(connection, user, token.openid, profile, token.unionid,
                               app=token.app)
        return Resolution(user=user, identity=identity, new_identity=True, profile=profile,
                          via="unionid")

    def link(
        self,
        connection: ConnectionSettings,
        token: WeChatToken,
        fetch_profile: t.Callable[[], WeChatProfile],
        user: User,
    ) -> Resolution:
        """Link a WeChat account to the logged-in ``user`` (from the account page), in the
        caller's transaction. :class:`AlreadyLinked` if it belongs to someone else."""
        linked = self.linked_user(connection.identifier, token.openid)
        if linked is not None:
            identity = linked[0]
            if identity.user_id != self.adapter.get_user_id(user):
                raise AlreadyLinked()
            return Resolution(user=user, identity=identity)
        profile = fetch_profile()
        return Resolution(user=user, new_identity=True, profile=profile, via="link",
                          identity=self.attach(connection, user, token.openid, profile,
                                               token.unionid, app=token.app))

    def attach(
        self,
        connection: ConnectionSettings,
        user: User,
        openid: str,
        profile: WeChatProfile,
        unionid: str | None = None,
        *,
        app: str = WEBSITE_APP,
        fresh_user: bool = False,
    ) -> Identity:
        """A new identity row linking ``openid`` of ``connection``'s ``app`` to ``user``
        (flushed).

        :class:`ConnectionAlreadyLinked` if the user already has one of this app for this
        connection: one WeChat account per connection per user, as identity platforms do
        it (its website application and its Official Account each know it by an openid).
        """
        conflict = None if fresh_user else self._conflict(
            connection, user, app, profile.unionid or unionid)
        if conflict is not None:
            raise conflict()
        identity: Identity = self.models.Identity(
            connection=connection.identifier,
            app=app,
            openid=openid,
            user_id=self.adapter.get_user_id(user),
            **self._user_key_of(user),
        )
        _store_profile(self.db, identity, self.as_kept(profile), unionid)
        self.db.session.add(identity)
        self.db.session.flush()
        return identity

    def _conflict(self, connection: ConnectionSettings, user: User, app: str,
                  unionid: str | None) -> type[LoginError] | None:
        """Why ``user`` cannot take this identity of ``app``: one WeChat account per
        connection per user, and one user per WeChat account, where ``unionid`` tells the
        two apps' openids of one person apart from another's. :class:`ConnectionAlreadyLinked`
        if the user has an identity of ``app``, or the other app's of another person;
        :class:`AlreadyLinked` if this person's other openid is another user's (the two apps
        would log in to two accounts)."""
        IdentityModel = self.models.Identity
        user_id = self.adapter.get_user_id(user)
        for identity in self.db.session.execute(sa.select(IdentityModel).where(
                IdentityModel.connection == connection.identifier,
                IdentityModel.user_id == user_id)).scalars():
            if identity.app == app or (unionid and identity.unionid
                                       and identity.unionid != unionid):
                return ConnectionAlreadyLinked
        if unionid and self.db.session.execute(sa.select(IdentityModel.id).where(
                IdentityModel.connection == connection.identifier,
                IdentityModel.unionid == unionid,
                IdentityModel.user_id != user_id).limit(1)).first() is not None:
            return AlreadyLinked
        return None

    def populate_user(self, user: User, connection: ConnectionSettings,
                      profile: WeChatProfile) -> None:
        """The adapter's ``populate_user``, given the profile as the site keeps it: with
        the stored copy of the avatar where avatars are stored (WeChat's URL dies)."""
        self.adapter.populate_user(user, connection, self.as_kept(profile))

    def as_kept(self, profile: WeChatProfile) -> WeChatProfile:
        """``profile`` with this site's stored avatar in ``avatar_url`` where there is one
        (storing it if needed); its ``raw`` keeps WeChat's ``headimgurl``."""
        stored = self.avatars.stored_url(profile) if self.avatars else None
        return replace(profile, avatar_url=stored) if stored else profile

    @contextlib.contextmanager
    def person_claimed(self, connection: ConnectionSettings, unionid: str | None, app: str
                       ) -> t.Iterator[User | None]:
        """Around giving the person ``unionid`` names their first identity of ``app`` on the
        connection (a new account, a match, a binding): their account through the other
        app where there is one (to join, or to refuse), else ``None``.

        The first logins of one person through both apps at once each found no identity of
        the other and made an account each (a helper's hunt: five times in five on
        PostgreSQL), which no unique key stopped. Where both apps log people in now, a row
        only one transaction at a time may hold (its primary key, in the login state
        table) makes the second wait for the first's commit; a locking read then sees the
        first's identity, and :class:`PersonMadeMeanwhile` runs the login again, which
        finds it. The row goes with the transaction that made it: it never stands in a
        later sign-up's way (an account deleted and made again)."""
        if not unionid or not connection.oa_app_id:  # no other app to have an identity of
            yield None
            return
        account = self.other_apps_user(connection, unionid, app)
        if account is not None or not connection.has_official_account:
            yield account
            return
        table = self.models.LoginState.__table__
        digest = hashlib.sha256(f"{connection.identifier}:{unionid}".encode()).hexdigest()
        key = f"{PERSON_CLAIM}{digest}"
        session = self.db.session
        session.execute(sa.insert(table).values(
            key=key, value="", expires_at=time.time() + PERSON_CLAIM_SECONDS))
        if session.execute(self._other_apps_identities(
                self.models.Identity.id, connection, unionid, app
        ).limit(1).with_for_update(read=True)).first() is not None:
            raise PersonMadeMeanwhile()  # committed after this transaction's snapshot
        yield None
        session.execute(sa.delete(table).where(table.c.key == key))

    def create_user_for(self, connection: ConnectionSettings, profile: WeChatProfile) -> User:
        """A new user from a WeChat profile, populated as the sync policy says (flushed)."""
        user = own_user(self.adapter, self.adapter.create_user(connection, profile),
                        "create_user")
        if connection.profile_sync != "never":
            self.populate_user(user, connection, profile)
        self.db.session.flush()
        return user

    def identity_of(self, user: User, connection: str, app: str | None = None
                    ) -> Identity | None:
        """The user's identity of ``connection`` (of its ``app``; else the oldest)."""
        IdentityModel = self.models.Identity
        select = sa.select(IdentityModel).where(
            IdentityModel.connection == connection,
            IdentityModel.user_id == self.adapter.get_user_id(user))
        if app is not None:
            select = select.where(IdentityModel.app == app)
        identity: Identity | None = self.db.session.execute(
            select.order_by(IdentityModel.id).limit(1)).scalar_one_or_none()
        return identity

    def unlink(self, connection: ConnectionSettings, user: User,
               usable: t.Mapping[str, ConnectionSettings]) -> list[Identity]:
        """Remove the user's identities of ``connection`` (the one WeChat account, by
        each app's openid) in the caller's transaction, unless WeChat is their last way
        in. ``usable``: the connections configured now; an identity of one removed from the
        settings is no way in (its login page is a 404), nor one whose app logs nobody in
        now (:func:`_a_way_in`)."""
        # Two unlinks of one user at once must not each see the other's identity and leave
        # none: touching the user's identity rows first takes their write locks (the rows' on
        # PostgreSQL and MariaDB, the database's on SQLite), so the second waits for the first
        # to commit and then counts what is left, in a locking read: under MariaDB's and
        # MySQL's REPEATABLE READ a plain one would count from the snapshot of before the
        # wait, the other's deleted identity included (both unlinks went through).
        table = self.models.Identity.__table__
        user_id = self.adapter.get_user_id(user)
        self.db.session.execute(sa.update(table).where(table.c.user_id == user_id)
                                .values(user_id=table.c.user_id))
        identities = self.identities_of(user, for_update=True)
        removed = [i for i in identities if i.connection == connection.identifier]
        if not removed:
            raise NotLinked()
        left = [i for i in identities if i.connection != connection.identifier
                and _a_way_in(i, usable.get(i.connection))]
        if not left and not self.adapter.has_password(user):
            raise LastLoginMethod()
        for identity in removed:
            self.db.session.delete(identity)
        self.db.session.flush()
        return removed

    def _returning(
        self,
        connection: ConnectionSettings,
        token: WeChatToken,
        identity: Identity,
        user: User,
        fetch_profile: t.Callable[[], WeChatProfile],
    ) -> Resolution:
        profile = None
        if connection.profile_sync == "each_login" and token.grants_profile:
            profile = fetch_profile()
            _store_profile(self.db, identity, self.as_kept(profile), token.unionid)
            self.populate_user(user, connection, profile)
        elif token.unionid and not identity.unionid:
            identity.unionid = token.unionid
        now = utcnow()
        if now - as_utc(identity.last_login_at) >= timedelta(seconds=LAST_LOGIN_PRECISION):
            identity.last_login_at = now
        return Resolution(user=user, identity=identity, profile=profile)

    def refresh_profile(self, identity_id: int, profile: WeChatProfile,
                        unionid: str | None) -> Identity | None:
        """Store a profile read off the login's path (:mod:`.refresh`) on its identity, in
        the caller's transaction; ``None`` if that identity is gone."""
        identity: Identity | None = self.db.session.get(self.models.Identity, identity_id)
        if identity is None or identity.openid != profile.openid:
            return None  # unlinked; on SQLite its id may even be someone else's by now
        _store_profile(self.db, identity, self.as_kept(profile), unionid)
        self.db.session.flush()
        return identity

    def _same_person(self, connection: ConnectionSettings, token: WeChatToken,
                     fetch_profile: t.Callable[[], WeChatProfile]) -> User | None:
        """The user whose identity of the connection's other app has this ``unionid``
        (WeChat's one id of a person across the apps of one Open Platform account), where
        the user has none of this one yet. Also where the other app logs nobody in now
        (its AppSecret unset): who the person is does not change with that (a helper's
        hunt: everyone who had signed up inside WeChat got a second account at their next
        QR login). Not where no Official Account is configured: a first login there reads
        nothing more. The profile is asked for the unionid only where the connection has
        two apps now (without, the profile a new account is made from is looked at, in
        :meth:`person_claimed`)."""
        if not connection.oa_app_id:  # never an identity of another app to find
            return None
        unionid = token.unionid or (
            fetch_profile().unionid if connection.has_official_account else None)
        user = self.other_apps_user(connection, unionid, token.app)
        if user is None or self.identity_of(user, connection.identifier, token.app):
            return None
        return user

    def other_apps_user(self, connection: ConnectionSettings, unionid: str | None,
                        app: str) -> User | None:
        """The user of the person ``unionid`` names through the connection's app other than
        ``app``, if exactly one."""
        if not unionid:
            return None
        user_ids = self.db.session.execute(self._other_apps_identities(
            self.models.Identity.user_id, connection, unionid, app
        ).distinct().limit(2)).scalars().all()
        if len(user_ids) != 1:
            if user_ids:
                log.warning("unionid is linked to several users of connection %r; not "
                            "joining them", connection.identifier)
            return None
        return self.adapter.load_user(user_ids[0])

    def _other_apps_identities(self, column: t.Any, connection: ConnectionSettings,
                               unionid: str, app: str) -> sa.Select[t.Any]:
        """``column`` of the person's identities (``unionid``) of the connection's apps
        other than ``app``."""
        IdentityModel = self.models.Identity
        return sa.select(column).where(IdentityModel.connection == connection.identifier,
                                       IdentityModel.unionid == unionid,
                                       IdentityModel.app != app)

    def _match(
        self,
        connection: ConnectionSettings,
        app: str,
        unionid: str | None,
        fetch_profile: t.Callable[[], WeChatProfile],
    ) -> User | None:
        """An existing user to attach a new identity to (field matching only).

        ``unionid`` comes with the token, so matching on it needs no profile request. A
        user who already has an identity of this app on this connection, or another
        person's, is never matched.
        """
        if connection.association != "field_matching":
            return None
        for field in connection.match_fields:
            if field == "unionid":
                user = self._user_by_unionid(unionid or fetch_profile().unionid)
            else:
                user = found_user(self.adapter, self.adapter.match_user(
                    connection, field, fetch_profile()), "match_user")
            if user is not None and self._conflict(
                    connection, user, app, unionid or fetch_profile().unionid) is None:
                return user
        return None

    def forget_user(self, user_id: str, connection: Connection | None = None) -> None:
        """Delete every identity of a user the host is deleting, so a later user who is
        given the same id (SQLite reuses ids) never inherits them."""
        table = self.models.Identity.__table__
        statement = sa.delete(table).where(table.c.user_id == user_id)
        if connection is not None:
            connection.execute(statement)
        else:
            self.db.session.execute(statement)

    def forget_users(self, state: ORMExecuteState, statement: sa.Delete
                     ) -> t.Callable[[], None] | None:
        """For a bulk ``DELETE`` of users about to run (``statement``, which ``state``
        runs, itself or wrapped in ``from_statement``): what deletes their identities once
        it has run. With the foreign key, every identity whose user is gone (exact, whatever
        criteria the ORM adds: inheritance, loader criteria, parameters); without, the
        identities of the users the statement selects now (not for executemany, where the
        next login's stale check removes them)."""
        table = self.models.Identity.__table__
        user_key = table.c.get(USER_KEY)
        session = state.session
        if user_key is not None:
            user_column = next(iter(user_key.foreign_keys)).column
            orphans = sa.delete(table).where(user_key.is_not(None), ~sa.exists(
                sa.select(sa.literal(1)).where(user_column == user_key)))

            def remove_orphans() -> None:
                session.execute(orphans)

            return remove_orphans
        entity = statement.entity_description.get("entity") or self.adapter.user_model
        if entity is None or isinstance(state.parameters, list):
            return None
        doomed = sa.select(entity)
        if statement.whereclause is not None:
            doomed = doomed.where(statement.whereclause)
        ids = [self.adapter.get_user_id(user)
               for user in session.scalars(doomed, state.parameters or {})]
        if not ids:
            return None
        gone = sa.delete(table).where(table.c.user_id.in_(ids))

        def remove_theirs() -> None:
            session.execute(gone)

        return remove_theirs

    def _with_user(self, select: sa.Select[t.Any]) -> sa.Select[t.Any] | None:
        """``select`` of identities with their user rows joined in (by ``user_key``), when
        the default :meth:`~.AccountAdapter.load_user` (which looks in the session first)
        loads the users of the table the key refers to; ``None`` otherwise."""
        user_model = self.adapter.user_model
        user_column = referenced_column(self.models.Identity.__table__)
        if (user_model is None or user_column is None
                or not self.adapter._loads_by_primary_key()
                or getattr(user_model, "__table__", None) is not user_column.table):
            return None
        user_key = self.models.Identity.__table__.c[USER_KEY]
        return select.add_columns(user_model).outerjoin(user_model, user_key == user_column)

    def user_key_for(self, user_id: str) -> t.Any:
        """The primary key of the user ``user_id`` names (the adapter's ``load_user``), for
        an identity's ``user_key``; ``None`` when no such user is stored."""
        user = self.adapter.load_user(user_id)
        return _stored_key(user) if user is not None else None

    def _user_key_of(self, user: User) -> dict[str, t.Any]:
        """``{"user_key": primary key}`` when identities refer to the user table."""
        if USER_KEY not in self.models.Identity.__table__.c:
            return {}
        state = sa.inspect(user, raiseerr=False)
        if state is not None and state.identity is None:
            self.db.session.flush()  # a user made in this transaction gets its key
        key = _stored_key(user)
        return {USER_KEY: key} if key is not None else {}

    def _user_by_unionid(self, unionid: str | None) -> User | None:
        if not unionid:
            return None
        IdentityModel = self.models.Identity
        rows = self.db.session.execute(
            sa.select(IdentityModel.user_id).where(IdentityModel.unionid == unionid).distinct()
        ).scalars().all()
        if len(rows) != 1:
            if rows:
                log.warning("unionid is linked to %d users; not matching on it", len(rows))
            return None
        return self.adapter.load_user(rows[0])


def _a_way_in(identity: Identity, connection: ConnectionSettings | None) -> bool:
    """Whether ``identity`` logs its user in now: its connection is configured and has its
    credentials (without them, every login of it answers 503, inside WeChat too), and its
    app logs people in: the website app; the Official Account where it has its own
    credentials, or through the website app's QR login, which finds the person by the
    identity's ``unionid`` (:meth:`AssociationPolicy._same_person`)."""
    if connection is None or not connection.has_credentials:
        return False
    return identity.app != OFFICIAL_ACCOUNT or connection.has_official_account or bool(
        identity.unionid)


def _stored_key(user: object) -> t.Any:
    """The primary key the database holds for ``user`` (an ORM object's identity), ``None``
    for one not stored yet or not mapped."""
    state = sa.inspect(user, raiseerr=False)
    return state.identity[0] if state is not None and state.identity else None


def _store_profile(db: SQLAlchemy, identity: Identity, profile: WeChatProfile,
                   unionid: str | None) -> None:
    """The profile, as the site keeps it (:meth:`AssociationPolicy.as_kept`), onto the
    identity; WeChat's placeholders (see :mod:`.placeholders`) never replace a nickname or
    avatar it has (its raw ``profile`` is what WeChat sent). The nickname as the column
    can hold it (:func:`.storable.storable`: a MySQL table in ``latin1`` or ``utf8mb3``)."""
    identity.unionid = profile.unionid or unionid or identity.unionid
    nickname, avatar_url = profile.real_nickname, profile.real_avatar_url
    if nickname or not identity.nickname:
        kept = storable(db, t.cast(t.Any, type(identity)).__table__.c.nickname,
                        (nickname or profile.nickname)[:255] or None)
        if kept or not identity.nickname:
            identity.nickname = kept
    if avatar_url or not identity.avatar_url:
        identity.avatar_url = avatar_url or profile.avatar_url
    identity.profile = profile.raw
    identity.profile_refreshed_at = utcnow()
