"""Column types that mean the same on every database the extension supports.

SQLAlchemy's generic types fall short on MariaDB and MySQL: their ``FLOAT`` is single
precision, their ``BLOB`` stops at 64 KiB, their default collations compare text without
case and their default character set may hold no Chinese (``latin1``) or no emoji
(``utf8``). Each type here is the generic one elsewhere, unchanged, and the right one there.
Used by the extension's tables and the sandbox's (a ground-floor room: SQLAlchemy only).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: SQLAlchemy's names of MariaDB and MySQL (``mysql+pymysql://`` reaches either as "mysql").
MYSQL_DIALECTS = ("mysql", "mariadb")

#: A moment as seconds since the epoch (``time.time()``): a double everywhere. MariaDB's and
#: MySQL's ``FLOAT`` is single precision, which keeps today's times to 128 seconds (states
#: and bindings expired minutes early or late, rate-limit windows blurred); elsewhere
#: ``FLOAT`` is a double already, and stays as it was.
EpochSeconds = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), *MYSQL_DIALECTS)


def exact_text(length: int) -> sa.types.TypeEngine[str]:
    """An identifier WeChat or this extension made (an openid, a key): compared byte for
    byte. MariaDB's and MySQL's default collations compare text without case, where
    ``oAbc...`` and ``oabc...``, two people's openids, are one (the second logged in to the
    first's account); there the column is ``utf8mb4_bin``."""
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), *MYSQL_DIALECTS)


def any_text(length: int | None = None) -> sa.types.TypeEngine[str]:
    """Text of any language (a WeChat nickname: CJK and emoji): ``utf8mb4`` on MariaDB and
    MySQL whatever the database's default (``latin1`` on a MariaDB without a configuration
    file; ``utf8`` holds no emoji), where a first login of 张三🐼 was refused, a 500."""
    if length is None:
        return sa.Text().with_variant(mysql.TEXT(charset="utf8mb4"), *MYSQL_DIALECTS)
    return sa.Unicode(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4"), *MYSQL_DIALECTS)


#: Bytes of up to :data:`~flask_wechat_qr.avatar_download.MAX_AVATAR_BYTES`: MariaDB's and
#: MySQL's ``BLOB`` stops at 64 KiB (a large avatar was refused), ``MEDIUMBLOB`` at 16 MiB.
AvatarBytes = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), *MYSQL_DIALECTS)
