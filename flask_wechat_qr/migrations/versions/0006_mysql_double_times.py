"""MariaDB and MySQL: the times kept as seconds become doubles, stored avatars a
``MEDIUMBLOB``, identifiers compare exactly and text holds any language.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:00:00

Their ``FLOAT`` is single precision: a time such as 1796495745.69 was stored as 1796495744,
so login states and pending bindings expired up to two minutes early or late and the bind
attempts' window was blurred. Their ``BLOB`` holds 64 KiB, less than an avatar may be.
Their default collations compare without case, where two people's openids ``oAbc...`` and
``oabc...`` were one (the second logged in to the first's account): identifiers become
``utf8mb4_bin``. Text of people (nicknames, the page to return to) becomes ``utf8mb4``
whatever the database's default (``latin1`` or ``utf8`` refused a first login of 张三🐼, a
500). Nothing changes on other databases (their ``FLOAT`` is a double already, their
binary columns unbounded, their text Unicode and compared exactly). Times already stored
keep their rounding; they are minutes long.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: The columns of seconds since the epoch, by table (all NOT NULL).
#: What those times are stored as there (a float in Python, not MySQL's default Decimal).
DOUBLE = mysql.DOUBLE(asdecimal=False)
TIME_COLUMNS = {
    "wechat_qr_login_state": ("expires_at",),
    "wechat_qr_pending_binding": ("created_at", "expires_at"),
    "wechat_qr_bind_attempt": ("at",),
}


#: Identifiers compared byte for byte: (table, column, length, nullable, server default).
EXACT_COLUMNS: tuple[tuple[str, str, int, bool, str | None], ...] = (
    ("wechat_qr_identity", "connection", 32, False, None),
    ("wechat_qr_identity", "app", 16, False, "website"),
    ("wechat_qr_identity", "openid", 128, False, None),
    ("wechat_qr_identity", "unionid", 128, True, None),
    ("wechat_qr_identity", "user_id", 64, False, None),
    ("wechat_qr_login_state", "key", 200, False, None),
    ("wechat_qr_pending_binding", "id", 64, False, None),
    ("wechat_qr_pending_binding", "connection", 32, False, None),
    ("wechat_qr_pending_binding", "app", 16, False, "website"),
    ("wechat_qr_pending_binding", "openid", 128, False, None),
    ("wechat_qr_pending_binding", "unionid", 128, True, None),
    ("wechat_qr_bind_attempt", "binding_id", 64, False, None),
    ("wechat_qr_bind_attempt", "address", 64, False, None),
    ("wechat_qr_bind_attempt", "account", 64, False, ""),
    ("wechat_qr_avatar", "key", 64, False, None),
)
#: Text of any language: (table, column, length or None for TEXT, nullable).
TEXT_COLUMNS: tuple[tuple[str, str, int | None, bool], ...] = (
    ("wechat_qr_identity", "nickname", 255, True),
    ("wechat_qr_login_state", "value", None, False),
    ("wechat_qr_pending_binding", "nickname", 255, True),
    ("wechat_qr_pending_binding", "next_url", None, True),
)


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if not _is_mysql():
        return
    for table, columns in TIME_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=DOUBLE, existing_type=sa.Float(),
                            existing_nullable=False)
    op.alter_column("wechat_qr_avatar", "data", type_=mysql.MEDIUMBLOB(),
                    existing_type=sa.LargeBinary(), existing_nullable=False)
    # From a case-blind collation to an exact one no two values become one: the unique keys
    # rebuild without a conflict.
    for table, column, length, nullable, default in EXACT_COLUMNS:
        op.alter_column(table, column,
                        type_=mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"),
                        existing_type=sa.String(length), existing_nullable=nullable,
                        existing_server_default=default)
    for table, column, text_length, nullable in TEXT_COLUMNS:
        op.alter_column(table, column,
                        type_=mysql.TEXT(charset="utf8mb4") if text_length is None
                        else mysql.VARCHAR(text_length, charset="utf8mb4"),
                        existing_type=sa.Text() if text_length is None
                        else sa.Unicode(text_length),
                        existing_nullable=nullable)


def downgrade() -> None:
    # The columns keep their character sets and collations: going back to them would let
    # two people's openids be one again.
    if not _is_mysql():
        return
    op.alter_column("wechat_qr_avatar", "data", type_=sa.LargeBinary(),
                    existing_type=mysql.MEDIUMBLOB(), existing_nullable=False)
    for table, columns in TIME_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=sa.Float(), existing_type=DOUBLE,
                            existing_nullable=False)
