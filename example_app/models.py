"""The site's users, on one Flask-SQLAlchemy ``db`` shared with the extension's tables, and
the extension objects every module of the site uses."""

from __future__ import annotations

import typing as t
from datetime import UTC, datetime

import sqlalchemy as sa
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_wechat_qr import AccountAdapter, WeChatQR

from .i18n import get_locale, gettext, gettext_noop

db = SQLAlchemy()
login_manager = LoginManager()
login_manager.login_view = "site.login"
#: Flashed in the visitor's language: Flask-Login passes it through ``localize_callback``.
login_manager.login_message = gettext_noop("Log in to see this page.")
login_manager.localize_callback = gettext


def utcnow() -> datetime:
    return datetime.now(UTC)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    """A person with an account here: local (username + password), from WeChat, or both."""

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Nullable: a user created by a first WeChat login has no local username.
    username: Mapped[str | None] = mapped_column(sa.String(80), unique=True)
    #: Nullable: such a user has no password either, and cannot log in with one.
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    nickname: Mapped[str | None] = mapped_column(sa.Unicode(255))
    avatar_url: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=utcnow, nullable=False
    )

    @property
    def display_name(self) -> str:
        """What the site calls the user: the WeChat nickname if any, else the username."""
        return self.nickname or self.username or gettext("User %(id)s", id=self.id)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"


class LoginFailure(db.Model):  # type: ignore[name-defined,misc]
    """A wrong password at the site's own login form, counted per account and per address
    so passwords cannot be guessed without end (the extension limits its bind page the same
    way). The account is kept as a hash: people type passwords into the username field."""

    __tablename__ = "login_failure"

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(sa.String(64), index=True)
    address: Mapped[str] = mapped_column(sa.String(64), index=True)
    at: Mapped[float] = mapped_column(sa.Float, index=True)


class UsedIdToken(db.Model):  # type: ignore[name-defined,misc]
    """ID tokens the demo front end (``business.py``) accepted, by ``jti``, until they
    expire: a token presented twice is refused, as docs/id-token.rst asks of receivers."""

    __tablename__ = "used_id_token"

    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(sa.Float, index=True)


@login_manager.user_loader
def load_user(user_id: str) -> t.Any:
    """Flask-Login's loader; a malformed id in an old cookie means "nobody"."""
    try:
        return db.session.get(User, int(user_id))
    except (TypeError, ValueError):
        return None


class SiteAccounts(AccountAdapter):
    """The default adapter, told the site's language: the extension's pages then speak
    the language of the site's own pages around them, whatever the browser sent."""

    def select_locale(self) -> str | None:
        return get_locale()


#: How the site finds, checks and logs in its users: used by its own login form and by the
#: WeChat login alike (timing-safe password check, a fresh session at every login).
accounts = SiteAccounts(db, User)
#: Holds only options; each app's runtime lives in ``app.extensions["wechat_qr"]``.
wechat = WeChatQR(db=db, adapter=accounts)
