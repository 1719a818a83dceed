"""Bind attempts remember the account they tried (a hash of its username), so guesses at one
account are limited across pending bindings and client addresses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 00:00:00

Rows from before keep an empty account: they count per binding and address as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wechat_qr_bind_attempt") as batch:
        batch.add_column(sa.Column("account", sa.String(64), nullable=False,
                                   server_default=""))
        batch.create_index("ix_wechat_qr_bind_attempt_account", ["account"])


def downgrade() -> None:
    with op.batch_alter_table("wechat_qr_bind_attempt") as batch:
        batch.drop_index("ix_wechat_qr_bind_attempt_account")
        batch.drop_column("account")
