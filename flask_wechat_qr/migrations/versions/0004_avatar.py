"""Stored copies of WeChat avatars (``WECHAT_QR_STORE_AVATARS``): WeChat's own avatar URLs
stop working when the person changes their avatar.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 00:00:00

A new table; nothing else changes. Sites that keep the setting off leave it empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tables an earlier version's db.create_all() made, stamped at 0003 to be upgraded:
    # a newer version's db.create_all() may have made this one since (adding no column to
    # the others). Empty, it is made again as this revision makes it.
    if not context.is_offline_mode():
        bind = op.get_bind()
        if sa.inspect(bind).has_table("wechat_qr_avatar"):
            if bind.execute(sa.text("SELECT COUNT(*) FROM wechat_qr_avatar")).scalar():
                from flask_wechat_qr.migrations import MigrationError

                raise MigrationError(
                    "wechat_qr_avatar already exists and holds avatars: these tables are "
                    "past revision 0003. Record the revision they are at: `flask wechat-qr "
                    "db stamp 0004`, then run `flask wechat-qr db upgrade`.")
            op.drop_table("wechat_qr_avatar")
    op.create_table(
        "wechat_qr_avatar",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("wechat_qr_avatar")
