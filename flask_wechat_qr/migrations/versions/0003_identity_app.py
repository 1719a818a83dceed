"""Identities and pending bindings say which of the connection's apps their openid belongs
to: its website application (``website``) or its Official Account (``official_account``),
which logs people in from inside WeChat. One person may now have one identity of each app
on a connection, so the one-per-user constraint counts per app.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00

Rows from before are the website application's (the server default).
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import context, op

from flask_wechat_qr.user_key import TRIGGER_NAME, referenced_column, sqlite_trigger

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


IDENTITY = "wechat_qr_identity"
#: Identity columns later revisions add: the table this one rebuilds has none of them yet.
LATER_COLUMNS = ("profile_refreshed_at",)


def upgrade() -> None:
    with _sqlite_triggers_set_aside(), op.batch_alter_table(
            IDENTITY, **_copy_from(with_app=False)) as batch:
        batch.add_column(sa.Column("app", sa.String(16), nullable=False,
                                   server_default="website"))
        batch.drop_constraint("uq_wechat_qr_identity_user", type_="unique")
        batch.create_unique_constraint("uq_wechat_qr_identity_user",
                                       ["connection", "app", "user_id"])
    with op.batch_alter_table("wechat_qr_pending_binding") as batch:
        batch.add_column(sa.Column("app", sa.String(16), nullable=False,
                                   server_default="website"))


def downgrade() -> None:
    # Refused by the database while a user has identities of both apps on a connection.
    with op.batch_alter_table("wechat_qr_pending_binding") as batch:
        batch.drop_column("app")
    with _sqlite_triggers_set_aside(), op.batch_alter_table(
            IDENTITY, **_copy_from(with_app=True)) as batch:
        batch.drop_constraint("uq_wechat_qr_identity_user", type_="unique")
        batch.create_unique_constraint("uq_wechat_qr_identity_user", ["connection", "user_id"])
        batch.drop_column("app")


@contextmanager
def _sqlite_triggers_set_aside() -> Iterator[None]:
    """SQLite rebuilds the table to change a constraint (copy, drop, rename), and the rename
    fails while a trigger (the user table's delete trigger) names the table: such triggers
    are dropped for the rebuild and made again, as they were, after it."""
    if context.is_offline_mode():
        with _offline_sqlite_trigger_set_aside():
            yield
        return
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    triggers = bind.execute(sa.text(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND sql LIKE :table"),
        {"table": f"%{IDENTITY}%"}).all()
    for name, _sql in triggers:
        bind.exec_driver_sql(f'DROP TRIGGER "{name}"')
    yield
    for _name, sql in triggers:
        bind.exec_driver_sql(sql)


@contextmanager
def _offline_sqlite_trigger_set_aside() -> Iterator[None]:
    """``--sql`` on SQLite cannot look for triggers: the extension's own (the user table's
    delete cascade, where identities refer to the users) is dropped if it is there and made
    again after the rebuild."""
    dialect = op.get_context().dialect
    identity = _identity_table()
    if dialect.name != "sqlite" or referenced_column(identity) is None:
        yield
        return
    op.execute(f"DROP TRIGGER IF EXISTS {dialect.identifier_preparer.quote(TRIGGER_NAME)}")
    yield
    op.execute(sqlite_trigger(identity, dialect))


def _identity_table() -> sa.Table:
    """The extension's identity table as the running app's models declare it."""
    from flask import current_app

    from flask_wechat_qr.runtime import runtime_of

    table: sa.Table = runtime_of(current_app).models.Identity.__table__
    return table


def _copy_from(*, with_app: bool) -> dict[str, t.Any]:
    """``--sql`` on SQLite cannot reflect the table it rebuilds: it is described from the
    extension's own model instead (with or without ``app``, and its constraint)."""
    if not context.is_offline_mode() or op.get_context().dialect.name != "sqlite":
        return {}
    current = _identity_table()
    metadata = sa.MetaData()
    for foreign_key in current.foreign_keys:
        foreign_key.column.table.to_metadata(metadata)
    # Column copies keep neither their foreign key nor their index: both are given again,
    # or the rebuilt table would go without them.
    columns = [sa.Column(column.name, column.type, nullable=column.nullable,
                         primary_key=column.primary_key, server_default=column.server_default)
               for column in current.columns
               if column.name not in LATER_COLUMNS and (with_app or column.name != "app")]
    foreign_keys = [
        sa.ForeignKeyConstraint([c.name for c in fk.columns],
                                [element.target_fullname for element in fk.elements],
                                name=fk.name, ondelete=fk.ondelete)
        for fk in current.foreign_key_constraints]
    indexes = [sa.Index(index.name, *[c.name for c in index.columns], unique=index.unique)
               for index in current.indexes]
    user_columns = ["connection", "app", "user_id"] if with_app else ["connection", "user_id"]
    table = sa.Table(
        IDENTITY, metadata, *columns, *foreign_keys, *indexes,
        sa.UniqueConstraint("connection", "openid", name="uq_wechat_qr_identity_openid"),
        sa.UniqueConstraint(*user_columns, name="uq_wechat_qr_identity_user"))
    return {"copy_from": table}
