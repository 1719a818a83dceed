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

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_EXACT = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
_ANY = "CHARACTER SET utf8mb4"
#: Each table's columns as 0006 leaves them: (column, definition). Identifiers compare byte
#: for byte (from a case-blind collation to an exact one no two values become one: the
#: unique keys rebuild without a conflict), people's text holds any language, times are
#: doubles, avatars up to 16 MiB.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "wechat_qr_identity": (
        ("connection", f"VARCHAR(32) {_EXACT} NOT NULL"),
        ("app", f"VARCHAR(16) {_EXACT} NOT NULL DEFAULT 'website'"),
        ("openid", f"VARCHAR(128) {_EXACT} NOT NULL"),
        ("unionid", f"VARCHAR(128) {_EXACT} NULL"),
        ("user_id", f"VARCHAR(64) {_EXACT} NOT NULL"),
        ("nickname", f"VARCHAR(255) {_ANY} NULL"),
    ),
    "wechat_qr_login_state": (
        ("key", f"VARCHAR(200) {_EXACT} NOT NULL"),
        ("value", f"TEXT {_ANY} NOT NULL"),
        ("expires_at", "DOUBLE NOT NULL"),
    ),
    "wechat_qr_pending_binding": (
        ("id", f"VARCHAR(64) {_EXACT} NOT NULL"),
        ("connection", f"VARCHAR(32) {_EXACT} NOT NULL"),
        ("app", f"VARCHAR(16) {_EXACT} NOT NULL DEFAULT 'website'"),
        ("openid", f"VARCHAR(128) {_EXACT} NOT NULL"),
        ("unionid", f"VARCHAR(128) {_EXACT} NULL"),
        ("nickname", f"VARCHAR(255) {_ANY} NULL"),
        ("next_url", f"TEXT {_ANY} NULL"),
        ("created_at", "DOUBLE NOT NULL"),
        ("expires_at", "DOUBLE NOT NULL"),
    ),
    "wechat_qr_bind_attempt": (
        ("binding_id", f"VARCHAR(64) {_EXACT} NOT NULL"),
        ("address", f"VARCHAR(64) {_EXACT} NOT NULL"),
        ("account", f"VARCHAR(64) {_EXACT} NOT NULL DEFAULT ''"),
        ("at", "DOUBLE NOT NULL"),
    ),
    "wechat_qr_avatar": (
        ("key", f"VARCHAR(64) {_EXACT} NOT NULL"),
        ("data", "MEDIUMBLOB NOT NULL"),
    ),
}
#: What ``downgrade`` gives back: the single-precision times and the 64 KiB avatars. The
#: columns keep their character sets and collations: going back to them would let two
#: people's openids be one again.
DOWNGRADED: dict[str, tuple[tuple[str, str], ...]] = {
    "wechat_qr_login_state": (("expires_at", "FLOAT NOT NULL"),),
    "wechat_qr_pending_binding": (("created_at", "FLOAT NOT NULL"),
                                  ("expires_at", "FLOAT NOT NULL")),
    "wechat_qr_bind_attempt": (("at", "FLOAT NOT NULL"),),
    "wechat_qr_avatar": (("data", "BLOB NOT NULL"),),
}


def _is_mysql() -> bool:
    return op.get_context().dialect.name in ("mysql", "mariadb")  # offline (--sql) too


def _modify(columns: dict[str, tuple[tuple[str, str], ...]]) -> None:
    """One ``ALTER TABLE`` per table: MariaDB and MySQL copy a table to change a column's
    character set, once for all its columns instead of once for each."""
    for table, changes in columns.items():
        # The login state's key widens to 800 bytes (utf8mb4), more than a COMPACT row (a
        # legacy server's default for tables made without a row format) can index.
        row_format = "ROW_FORMAT=DYNAMIC, " if table == "wechat_qr_login_state" else ""
        op.execute(f"ALTER TABLE `{table}` {row_format}" + ", ".join(
            f"MODIFY `{column}` {definition}" for column, definition in changes))


def upgrade() -> None:
    if _is_mysql():
        _modify(COLUMNS)


def downgrade() -> None:
    if _is_mysql():
        _modify(DOWNGRADED)
