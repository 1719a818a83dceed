"""The extension's tables, declared on the host's own Flask-SQLAlchemy ``db``.

The host's user table is not referenced by a foreign key: the extension stores the
user's id as text (what Flask-Login's ``get_id()`` returns) and asks the adapter to load
it, so any user model (integer, UUID or string keys) works.
"""

from __future__ import annotations

import typing as t
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Models:
    """The mapped classes for one ``db``."""

    Identity: t.Any
    LoginState: t.Any
    PendingBinding: t.Any
    BindAttempt: t.Any


M = t.TypeVar("M")


def declared_once(declare: t.Callable[[SQLAlchemy], M]) -> t.Callable[[SQLAlchemy], M]:
    """``declare(db)`` runs once per ``db``; later calls get the same mapped classes
    (declaring a table twice on one metadata is an error)."""
    by_db: weakref.WeakKeyDictionary[t.Any, M] = weakref.WeakKeyDictionary()

    def for_db(db: SQLAlchemy) -> M:
        if db not in by_db:
            by_db[db] = declare(db)
        return by_db[db]

    return for_db


def models_for(db: SQLAlchemy) -> Models:
    """The extension's mapped classes on ``db`` (declared once per ``db``)."""
    return _declared(db)


def _declare(db: SQLAlchemy) -> Models:
    return Models(Identity=_identity(db), LoginState=_login_state(db),
                  PendingBinding=_pending_binding(db), BindAttempt=_bind_attempt(db))


def _identity(db: SQLAlchemy) -> t.Any:
    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class WeChatIdentity(db.Model):  # type: ignore[name-defined,misc]
        """A WeChat account (one openid of one connection) linked to a local user."""

        __tablename__ = "wechat_qr_identity"
        __table_args__ = (
            sa.UniqueConstraint("connection", "openid", name="uq_wechat_qr_identity_openid"),
            # One WeChat account per connection per user.
            sa.UniqueConstraint("connection", "user_id", name="uq_wechat_qr_identity_user"),
        )

        id = sa.Column(sa.Integer, primary_key=True)
        connection = sa.Column(sa.String(32), nullable=False)
        openid = sa.Column(sa.String(128), nullable=False)
        unionid = sa.Column(sa.String(128), index=True)
        user_id = sa.Column(sa.String(64), nullable=False, index=True)
        nickname = sa.Column(sa.Unicode(255))
        avatar_url = sa.Column(sa.Text)
        profile = sa.Column(sa.JSON)
        created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
        last_login_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

        def __repr__(self) -> str:
            return f"<WeChatIdentity {self.connection}:{self.openid} user={self.user_id}>"

    return WeChatIdentity


def _login_state(db: SQLAlchemy) -> t.Any:
    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class WeChatLoginState(db.Model):  # type: ignore[name-defined,misc]
        """Server-side half of an OAuth ``state``: single use, expires, shared by workers."""

        __tablename__ = "wechat_qr_login_state"

        key = sa.Column(sa.String(200), primary_key=True)
        value = sa.Column(sa.Text, nullable=False)
        expires_at = sa.Column(sa.Float, nullable=False, index=True)

    return WeChatLoginState


def _pending_binding(db: SQLAlchemy) -> t.Any:
    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class WeChatPendingBinding(db.Model):  # type: ignore[name-defined,misc]
        """A WeChat account waiting for its owner to choose "bind" or "create" (ask
        binding). Server-side only: its id lives in the browser's session, never in a URL;
        single use; expires."""

        __tablename__ = "wechat_qr_pending_binding"

        id = sa.Column(sa.String(64), primary_key=True)
        connection = sa.Column(sa.String(32), nullable=False)
        openid = sa.Column(sa.String(128), nullable=False)
        unionid = sa.Column(sa.String(128))
        nickname = sa.Column(sa.Unicode(255))
        avatar_url = sa.Column(sa.Text)
        profile = sa.Column(sa.JSON)
        next_url = sa.Column(sa.Text)
        created_at = sa.Column(sa.Float, nullable=False)
        expires_at = sa.Column(sa.Float, nullable=False, index=True)
        used = sa.Column(sa.Boolean, nullable=False, default=False)

    return WeChatPendingBinding


def _bind_attempt(db: SQLAlchemy) -> t.Any:
    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class WeChatBindAttempt(db.Model):  # type: ignore[name-defined,misc]
        """A failed "bind to my account" attempt, counted per pending binding, per client
        address and per account for the rate limit."""

        __tablename__ = "wechat_qr_bind_attempt"

        id = sa.Column(sa.Integer, primary_key=True)
        binding_id = sa.Column(sa.String(64), nullable=False, index=True)
        address = sa.Column(sa.String(64), nullable=False, index=True)
        #: the account the attempt tried (a hash of its lower-cased username), so guesses
        #: at one account from many bindings and addresses are counted together
        account = sa.Column(sa.String(64), nullable=False, server_default="", index=True)
        at = sa.Column(sa.Float, nullable=False, index=True)

    return WeChatBindAttempt


_declared = declared_once(_declare)
