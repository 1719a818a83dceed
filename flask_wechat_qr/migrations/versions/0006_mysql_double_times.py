"""MariaDB and MySQL: the times kept as seconds become doubles, stored avatars a
``MEDIUMBLOB``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:00:00

Their ``FLOAT`` is single precision: a time such as 1796495745.69 was stored as 1796495744,
so login states and pending bindings expired up to two minutes early or late and the bind
attempts' window was blurred. Their ``BLOB`` holds 64 KiB, less than an avatar may be.
Nothing changes on other databases (their ``FLOAT`` is a double already, their binary
columns unbounded). Times already stored keep their rounding; they are minutes long.
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


def downgrade() -> None:
    if not _is_mysql():
        return
    op.alter_column("wechat_qr_avatar", "data", type_=sa.LargeBinary(),
                    existing_type=mysql.MEDIUMBLOB(), existing_nullable=False)
    for table, columns in TIME_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=sa.Float(), existing_type=DOUBLE,
                            existing_nullable=False)
