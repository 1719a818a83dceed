"""The extension's four tables: identities, login states, pending bindings, bind attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 00:00:00

Indexes are declared with ``index=True`` on the columns, as the models do, so they get the
same names as ``db.create_all()`` would give them under the host's naming convention (by
default ``ix_<table>_<column>``). The unique constraints carry the models' explicit names.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wechat_qr_identity",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("connection", sa.String(32), nullable=False),
        sa.Column("openid", sa.String(128), nullable=False),
        sa.Column("unionid", sa.String(128), index=True),
        sa.Column("user_id", sa.String(64), nullable=False, index=True),
        sa.Column("nickname", sa.Unicode(255)),
        sa.Column("avatar_url", sa.Text),
        sa.Column("profile", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("connection", "openid", name="uq_wechat_qr_identity_openid"),
        sa.UniqueConstraint("connection", "user_id", name="uq_wechat_qr_identity_user"),
    )
    op.create_table(
        "wechat_qr_login_state",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        # MariaDB and MySQL: a key of 800 bytes (utf8mb4), more than a COMPACT row indexes
        mysql_row_format="DYNAMIC",
        mariadb_row_format="DYNAMIC",
    )
    op.create_table(
        "wechat_qr_pending_binding",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("connection", sa.String(32), nullable=False),
        sa.Column("openid", sa.String(128), nullable=False),
        sa.Column("unionid", sa.String(128)),
        sa.Column("nickname", sa.Unicode(255)),
        sa.Column("avatar_url", sa.Text),
        sa.Column("profile", sa.JSON),
        sa.Column("next_url", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("used", sa.Boolean, nullable=False),
    )
    op.create_table(
        "wechat_qr_bind_attempt",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("binding_id", sa.String(64), nullable=False, index=True),
        sa.Column("address", sa.String(64), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("wechat_qr_bind_attempt")
    op.drop_table("wechat_qr_pending_binding")
    op.drop_table("wechat_qr_login_state")
    op.drop_table("wechat_qr_identity")
