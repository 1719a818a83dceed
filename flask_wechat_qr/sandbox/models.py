"""The sandbox's tables: everything a second worker process must see."""

from __future__ import annotations

import typing as t
import weakref
from dataclasses import dataclass

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


@dataclass(frozen=True)
class SandboxModels:
    QRSession: t.Any
    Person: t.Any
    Code: t.Any
    Token: t.Any


def sandbox_models_for(db: SQLAlchemy) -> SandboxModels:
    """The sandbox's mapped classes on ``db``, declared once per ``db`` (declaring a table
    twice on one metadata is an error)."""
    if db not in _declared:
        _declared[db] = _declare(db)
    return _declared[db]


def _declare(db: SQLAlchemy) -> SandboxModels:
    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class SandboxQRSession(db.Model):  # type: ignore[name-defined,misc]
        """One QR code shown on a desktop: waiting -> scanned -> confirmed/denied/expired."""

        __tablename__ = "wechat_qr_sandbox_qr"

        uuid = sa.Column(sa.String(40), primary_key=True)
        app_id = sa.Column(sa.String(64), nullable=False)
        redirect_uri = sa.Column(sa.Text, nullable=False)
        state = sa.Column(sa.String(200))
        status = sa.Column(sa.String(16), nullable=False, default="waiting")
        code = sa.Column(sa.String(64))
        created_at = sa.Column(sa.Float, nullable=False)
        expires_at = sa.Column(sa.Float, nullable=False)

    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class SandboxPersonRow(db.Model):  # type: ignore[name-defined,misc]
        """A "new user" made up on the confirmation page."""

        __tablename__ = "wechat_qr_sandbox_person"

        key = sa.Column(sa.String(64), primary_key=True)
        nickname = sa.Column(sa.Unicode(100), nullable=False)
        has_unionid = sa.Column(sa.Boolean, nullable=False, default=True)

    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class SandboxCode(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "wechat_qr_sandbox_code"

        code = sa.Column(sa.String(64), primary_key=True)
        app_id = sa.Column(sa.String(64), nullable=False)
        person_key = sa.Column(sa.String(64), nullable=False)
        created_at = sa.Column(sa.Float, nullable=False)
        used = sa.Column(sa.Boolean, nullable=False, default=False)

    # db.Model: the host's base class, made at run time (mypy sees a variable)
    class SandboxToken(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "wechat_qr_sandbox_token"

        access_token = sa.Column(sa.String(128), primary_key=True)
        refresh_token = sa.Column(sa.String(128), nullable=False, unique=True)
        app_id = sa.Column(sa.String(64), nullable=False)
        person_key = sa.Column(sa.String(64), nullable=False)
        expires_at = sa.Column(sa.Float, nullable=False)
        refresh_expires_at = sa.Column(sa.Float, nullable=False)

    return SandboxModels(QRSession=SandboxQRSession, Person=SandboxPersonRow,
                         Code=SandboxCode, Token=SandboxToken)


_declared: weakref.WeakKeyDictionary[t.Any, SandboxModels] = weakref.WeakKeyDictionary()
