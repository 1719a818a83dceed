"""The sandbox's tables: everything a second worker process must see."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, fields

import sqlalchemy as sa

from ..column_types import EpochSeconds, any_text
from ..model_base import bind_key_of, model_base

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


@dataclass(frozen=True)
class SandboxModels:
    QRSession: t.Any
    Person: t.Any
    Code: t.Any
    Token: t.Any
    Consent: t.Any
    Avatar: t.Any

    @property
    def tables(self) -> list[sa.Table]:
        return [getattr(self, f.name).__table__ for f in fields(self)]

    @property
    def bind_key(self) -> str | None:
        """The Flask-SQLAlchemy bind of the tables (``None``: the default one)."""
        return bind_key_of(self.QRSession.__table__)

    def engine(self, db: SQLAlchemy) -> sa.Engine:
        """The engine of the tables in the current app (``db.engine`` is the default
        bind's, which a site with binds only does not have)."""
        return db.engines[self.bind_key]


def sandbox_models_for(db: SQLAlchemy, bind_key: str | None = None) -> SandboxModels:
    """The sandbox's mapped classes on ``db``, declared once per ``db`` (declaring a table
    twice on one metadata is an error), on the Flask-SQLAlchemy bind ``bind_key`` (the
    extension's tables' own, the host's user table's; ``None``: the default bind)."""
    models: SandboxModels | None = db.metadata.info.get(_MODELS_KEY)
    if models is None:
        base = model_base(db, bind_key, "WeChatQRSandboxModel")
        models = db.metadata.info[_MODELS_KEY] = _declare(base)
    elif models.bind_key != bind_key:
        raise ValueError(f"the sandbox's tables on this db are on the bind "
                         f"{models.bind_key!r}, not {bind_key!r}: every app sharing one db "
                         "must put them on the same bind")
    return models


def _declare(base: t.Any) -> SandboxModels:
    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class SandboxQRSession(base):  # type: ignore[misc]
        """One QR code shown on a desktop: waiting -> scanned -> confirmed/denied/expired."""

        __tablename__ = "wechat_qr_sandbox_qr"

        uuid = sa.Column(sa.String(40), primary_key=True)
        app_id = sa.Column(sa.String(64), nullable=False)
        redirect_uri = sa.Column(sa.Text, nullable=False)
        state = sa.Column(sa.String(200))
        status = sa.Column(sa.String(16), nullable=False, default="waiting")
        code = sa.Column(sa.String(64))
        created_at = sa.Column(EpochSeconds, nullable=False)
        expires_at = sa.Column(EpochSeconds, nullable=False)

    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class SandboxPersonRow(base):  # type: ignore[misc]
        """A "new user" made up on the confirmation page."""

        __tablename__ = "wechat_qr_sandbox_person"

        key = sa.Column(sa.String(64), primary_key=True)
        nickname = sa.Column(any_text(100), nullable=False)
        has_unionid = sa.Column(sa.Boolean, nullable=False, default=True)

    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class SandboxCode(base):  # type: ignore[misc]
        __tablename__ = "wechat_qr_sandbox_code"

        code = sa.Column(sa.String(64), primary_key=True)
        app_id = sa.Column(sa.String(64), nullable=False)
        person_key = sa.Column(sa.String(64), nullable=False)
        created_at = sa.Column(EpochSeconds, nullable=False)
        used = sa.Column(sa.Boolean, nullable=False, default=False)
        #: what the person granted; ``None`` (rows of before 2026-12): ``snsapi_login``
        scope = sa.Column(sa.String(32))

    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class SandboxToken(base):  # type: ignore[misc]
        __tablename__ = "wechat_qr_sandbox_token"

        access_token = sa.Column(sa.String(128), primary_key=True)
        refresh_token = sa.Column(sa.String(128), nullable=False, unique=True)
        app_id = sa.Column(sa.String(64), nullable=False)
        person_key = sa.Column(sa.String(64), nullable=False)
        expires_at = sa.Column(EpochSeconds, nullable=False)
        refresh_expires_at = sa.Column(EpochSeconds, nullable=False)
        #: as on its code
        scope = sa.Column(sa.String(32))

    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class SandboxConsent(base):  # type: ignore[misc]
        """A person who authorized an Official Account: later ``snsapi_base`` visits of
        theirs to it are silent."""

        __tablename__ = "wechat_qr_sandbox_consent"
        __table_args__ = (sa.UniqueConstraint("app_id", "person_key"),)

        #: one column: the purge deletes in batches by primary key
        id = sa.Column(sa.Integer, primary_key=True)
        app_id = sa.Column(sa.String(64), nullable=False)
        person_key = sa.Column(sa.String(64), nullable=False)
        scope = sa.Column(sa.String(32), nullable=False)
        #: when the consent is forgotten (renewed by each authorization)
        expires_at = sa.Column(EpochSeconds, nullable=False, index=True)

    # base: db.Model or a subclass of it, made at run time (mypy sees a variable)
    class SandboxAvatar(base):  # type: ignore[misc]
        """How many times a person changed their avatar: each change gives a new image URL
        and makes the old one 404, as on WeChat."""

        __tablename__ = "wechat_qr_sandbox_avatar"

        person_key = sa.Column(sa.String(64), primary_key=True)
        version = sa.Column(sa.Integer, nullable=False, default=1)

    return SandboxModels(QRSession=SandboxQRSession, Person=SandboxPersonRow,
                         Code=SandboxCode, Token=SandboxToken, Consent=SandboxConsent,
                         Avatar=SandboxAvatar)


def add_missing_columns(engine: sa.Engine, tables: t.Iterable[sa.Table]) -> None:
    """Add the nullable columns a newer sandbox declares to tables an older one made (a
    standalone sandbox keeps its SQLite file between versions; ``create_all`` only makes
    missing tables). One connection for all of it: an inspector of the engine took a second
    one beside it, and with a pool of one (``pool_size=1``) waited for itself."""
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        for table in tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {quote(table.name)} "
                                     f"ADD COLUMN {quote(column.name)} {kind}"))


#: Where a ``db`` keeps its :class:`SandboxModels`: in its own metadata's ``info``, so they go
#: when the ``db`` goes (the mapped classes refer to their ``db``: a weak dictionary keyed by
#: it would keep it for ever).
_MODELS_KEY = "flask_wechat_qr.sandbox_models"
