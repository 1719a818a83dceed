"""The extension's tables, declared on the host's own Flask-SQLAlchemy ``db``, on the bind of
the host's user table (its ``__bind_key__``; the default bind for most sites): identities
refer to users by a foreign key, which joins tables of one database only, and a first login
writes the user and the identity in one transaction.

An identity names its user by the user's id as text (what Flask-Login's ``get_id()``
returns), which the adapter loads, so any user model (integer, UUID or string keys) works.
When the host's user table is known (see :mod:`flask_wechat_qr.user_key`), an identity also
carries ``user_key``, the user's primary key, as a foreign key with ``ON DELETE CASCADE``:
no identity outlives its user.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import sqlalchemy as sa

from .column_types import AvatarBytes, EpochSeconds, any_text, exact_text
from .errors import ConfigurationError
from .model_base import bind_key_of, model_base
from .settings import WEBSITE_APP
from .user_key import (
    FOREIGN_KEY_NAME,
    SETTING_KEY,
    USER_KEY,
    referenced_column,
    with_the_identity_table,
)

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime:
    """A stored time as an aware UTC one (SQLite gives it back naive); ``None`` as the
    earliest time there is."""
    if moment is None:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Models:
    """The mapped classes for one ``db``."""

    Identity: t.Any
    LoginState: t.Any
    PendingBinding: t.Any
    BindAttempt: t.Any
    Avatar: t.Any

    @property
    def tables(self) -> list[sa.Table]:
        """The extension's tables (its migrations', not the sandbox's)."""
        return [getattr(self, f.name).__table__ for f in fields(self)]

    def missing_tables(self, connection: sa.Connection) -> tuple[str, ...]:
        """The names of the extension's tables the database of ``connection`` lacks."""
        inspector = sa.inspect(connection)
        return tuple(sorted(table.name for table in self.tables
                            if not inspector.has_table(table.name, schema=table.schema)))

    def missing_columns(self, connection: sa.Connection) -> tuple[str, ...]:
        """``table.column`` of each column of the extension's tables that the database of
        ``connection`` has the table but not the column of: tables an earlier version made
        (``db.create_all()`` adds no column to a table that exists)."""
        inspector = sa.inspect(connection)
        missing = []
        for table in self.tables:
            if not inspector.has_table(table.name, schema=table.schema):
                continue
            there = {column["name"] for column in inspector.get_columns(
                table.name, schema=table.schema)}
            missing += [f"{table.name}.{column.name}" for column in table.columns
                        if column.name not in there]
        return tuple(sorted(missing))


def users_bind_key(user_model: t.Any) -> str | None:
    """The bind of the host's user table, where the extension's tables go too; ``None``
    (the default bind) without a mapped user model."""
    table = getattr(user_model, "__table__", None)
    return bind_key_of(table) if isinstance(table, sa.Table) else None


def models_for(db: SQLAlchemy, user_column: sa.Column[t.Any] | None = None,
               bind_key: str | None = None) -> Models:
    """The extension's mapped classes on ``db``, declared once per ``db``, on the bind
    ``bind_key`` (the user table's: :func:`users_bind_key`): identities refer to
    ``user_column`` (the user table's primary key) when given. Every app sharing one ``db``
    must agree on both (:class:`ConfigurationError`)."""
    models: Models | None = db.metadata.info.get(_MODELS_KEY)
    if models is None:
        models = db.metadata.info[_MODELS_KEY] = _declare(db, user_column, bind_key)
    elif referenced_column(models.Identity.__table__) is not user_column:
        raise ConfigurationError(
            SETTING_KEY, "apps sharing one db disagree on the identities' foreign key to "
            "the users",
            "Give every app on this db the same user model and the same "
            f"{SETTING_KEY}.")
    elif bind_key_of(models.Identity.__table__) != bind_key:
        raise ConfigurationError(
            "user_model", "apps sharing one db have their users on different binds",
            "Give every app on this db the same user model.")
    return models


def _declare(db: SQLAlchemy, user_column: sa.Column[t.Any] | None,
             bind_key: str | None) -> Models:
    base = model_base(db, bind_key, "WeChatQRModel")
    return Models(Identity=_identity(base, user_column), LoginState=_login_state(base),
                  PendingBinding=_pending_binding(base), BindAttempt=_bind_attempt(base),
                  Avatar=_avatar(base))


def _identity(base: t.Any, user_column: sa.Column[t.Any] | None) -> t.Any:
    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class WeChatIdentity(base):  # type: ignore[misc]
        """A WeChat account (one openid of one app of one connection) linked to a local
        user."""

        __tablename__ = "wechat_qr_identity"
        __table_args__ = (
            sa.UniqueConstraint("connection", "openid", name="uq_wechat_qr_identity_openid"),
            # One WeChat account per connection per user (an openid of each of its apps).
            sa.UniqueConstraint("connection", "app", "user_id",
                                name="uq_wechat_qr_identity_user"),
        )

        id = sa.Column(sa.Integer, primary_key=True)
        connection = sa.Column(exact_text(32), nullable=False)
        #: which of the connection's apps the openid belongs to (openids are per app):
        #: ``website`` (the QR login) or ``official_account`` (logins inside WeChat)
        app = sa.Column(exact_text(16), nullable=False, default=WEBSITE_APP,
                        server_default=WEBSITE_APP)
        openid = sa.Column(exact_text(128), nullable=False)
        unionid = sa.Column(exact_text(128), index=True)
        user_id = sa.Column(exact_text(64), nullable=False, index=True)
        nickname = sa.Column(any_text(255))
        avatar_url = sa.Column(sa.Text)
        profile = sa.Column(sa.JSON)
        created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
        last_login_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
        #: when WeChat's profile was last read (or a refresh of it claimed): see
        #: :mod:`flask_wechat_qr.refresh`; ``NULL`` for rows from before it, read as
        #: ``created_at``
        profile_refreshed_at = sa.Column(sa.DateTime(timezone=True))
        if user_column is not None:
            #: the user's primary key (its type from the foreign key): deleting the user row
            #: deletes the identity, in the database itself; ``NULL`` only for rows linked
            #: before it existed, until ``flask wechat-qr db upgrade`` fills them
            user_key = sa.Column[t.Any](USER_KEY, sa.ForeignKey(
                user_column, ondelete="CASCADE", name=FOREIGN_KEY_NAME), index=True)

        def __repr__(self) -> str:
            return f"<WeChatIdentity {self.connection}:{self.openid} user={self.user_id}>"

    with_the_identity_table(WeChatIdentity.__table__)
    return WeChatIdentity


def _login_state(base: t.Any) -> t.Any:
    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class WeChatLoginState(base):  # type: ignore[misc]
        """Server-side half of an OAuth ``state``: single use, expires, shared by workers."""

        __tablename__ = "wechat_qr_login_state"
        #: MariaDB and MySQL: its key is 800 bytes of utf8mb4, which InnoDB's old COMPACT
        #: row format (a legacy server's default) cannot index; DYNAMIC keys up to 3072
        __table_args__ = {"mysql_row_format": "DYNAMIC", "mariadb_row_format": "DYNAMIC"}

        key = sa.Column(exact_text(200), primary_key=True)
        value = sa.Column(any_text(), nullable=False)
        expires_at = sa.Column(EpochSeconds, nullable=False, index=True)

    return WeChatLoginState


def _pending_binding(base: t.Any) -> t.Any:
    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class WeChatPendingBinding(base):  # type: ignore[misc]
        """A WeChat account waiting for its owner to choose "bind" or "create" (ask
        binding). Server-side only: its id lives in the browser's session, never in a URL;
        single use; expires."""

        __tablename__ = "wechat_qr_pending_binding"

        id = sa.Column(exact_text(64), primary_key=True)
        connection = sa.Column(exact_text(32), nullable=False)
        app = sa.Column(exact_text(16), nullable=False, default=WEBSITE_APP,
                        server_default=WEBSITE_APP)
        openid = sa.Column(exact_text(128), nullable=False)
        unionid = sa.Column(exact_text(128))
        nickname = sa.Column(any_text(255))
        avatar_url = sa.Column(sa.Text)
        profile = sa.Column(sa.JSON)
        next_url = sa.Column(any_text())
        created_at = sa.Column(EpochSeconds, nullable=False)
        expires_at = sa.Column(EpochSeconds, nullable=False, index=True)
        used = sa.Column(sa.Boolean, nullable=False, default=False)

    return WeChatPendingBinding


def _bind_attempt(base: t.Any) -> t.Any:
    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class WeChatBindAttempt(base):  # type: ignore[misc]
        """A failed "bind to my account" attempt, counted per pending binding, per client
        address and per account for the rate limit."""

        __tablename__ = "wechat_qr_bind_attempt"

        id = sa.Column(sa.Integer, primary_key=True)
        binding_id = sa.Column(exact_text(64), nullable=False, index=True)
        address = sa.Column(exact_text(64), nullable=False, index=True)
        #: the account the attempt tried (a hash of its lower-cased username), so guesses
        #: at one account from many bindings and addresses are counted together
        account = sa.Column(exact_text(64), nullable=False, server_default="", index=True)
        at = sa.Column(EpochSeconds, nullable=False, index=True)

    return WeChatBindAttempt


def _avatar(base: t.Any) -> t.Any:
    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class WeChatAvatar(base):  # type: ignore[misc]
        """A stored copy of a WeChat avatar (``WECHAT_QR_STORE_AVATARS``), by its key: what
        is stored under a key never changes (see :mod:`flask_wechat_qr.avatars`)."""

        __tablename__ = "wechat_qr_avatar"

        key = sa.Column(exact_text(64), primary_key=True)
        content_type = sa.Column(sa.String(32), nullable=False)
        data = sa.Column(AvatarBytes, nullable=False)
        created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    return WeChatAvatar


#: Where a ``db`` keeps its :class:`Models`: in its own metadata's ``info``, so they go when
#: the ``db`` goes (a weak dictionary keyed by the ``db`` would keep it for ever: the mapped
#: classes refer to their ``db``).
_MODELS_KEY = "flask_wechat_qr.models"
