"""When each identity's WeChat profile was last read (``WECHAT_QR_PROFILE_REFRESH_AFTER``):
a returning login refreshes a stale profile in the background, and claims it through this
column so that one worker at a time does.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 00:00:00

One nullable column; existing rows keep ``NULL``, read as their ``created_at``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("wechat_qr_identity",
                  sa.Column("profile_refreshed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place, so its delete trigger on the users may stay.
    op.drop_column("wechat_qr_identity", "profile_refreshed_at")
