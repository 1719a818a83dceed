"""WeChat's text as a MySQL or MariaDB column can hold it.

WeChat nicknames are CJK and emoji. A MySQL or MariaDB table made in a database whose
default character set is ``latin1`` (MariaDB's own default) or ``utf8``/``utf8mb3`` (at most
three bytes a character: no emoji), or a connection opened with ``?charset=utf8``, cannot
hold them, and in the strict mode those servers default to, the whole ``INSERT`` is refused
("Incorrect string value", error 1366): the login was a 500. Here such text is stored
without the characters the column (and the connection) cannot hold, and not at all when
nothing readable is left; the column and the fix are said in the log once per process. A
column the database has shorter than its model says (a legacy table, the model written
later) is filled to its length, said the same way: strict servers refused the whole
``INSERT`` ("Data too long").
Other databases keep every character, and cost nothing here.
"""

from __future__ import annotations

import logging
import threading
import typing as t
import weakref

import sqlalchemy as sa

from .column_types import MYSQL_DIALECTS

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

log = logging.getLogger("flask_wechat_qr")

#: Character sets holding every character (Unicode, four bytes where needed).
_ALL = frozenset({"utf8mb4", "utf16", "utf16le", "utf32", "gb18030", "binary"})
#: Character sets holding the Basic Multilingual Plane only (no emoji).
_BMP = frozenset({"utf8", "utf8mb3", "ucs2"})
#: Other character sets, as Python's codecs (and PyMySQL) spell them.
_CODECS = {"latin1": "cp1252", "ascii": "ascii", "gbk": "gbk", "gb2312": "gb2312",
           "big5": "big5", "latin2": "iso8859-2", "cp1250": "cp1250", "cp1251": "cp1251",
           "koi8r": "koi8-r", "sjis": "shift_jis", "ujis": "euc_jp", "euckr": "euc_kr",
           "greek": "iso8859-7", "hebrew": "iso8859-8", "tis620": "tis-620"}

#: Left of a sequence whose characters were taken out: zero-width joiners and variation
#: selectors (of an emoji sequence).
_JOINERS = "\u200d\ufe0e\ufe0f"

#: Per engine: of (schema, table, column), its character set, the connections' and the
#: characters it holds (where fewer than its model says).
_KNOWN: weakref.WeakKeyDictionary[
    sa.Engine, dict[tuple[str | None, str, str], tuple[str | None, str | None, int | None]]] = \
    weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def storable(db: SQLAlchemy, column: sa.Column[t.Any], text: str | None) -> str | None:
    """``text`` as ``column`` can store it on ``db``'s database: unchanged but on MySQL and
    MariaDB, where the characters its character set (or the connection's) cannot hold are
    taken out; ``None`` if nothing readable (a letter or digit) is left."""
    if not text:
        return text
    table = column.table
    bind = db.session.get_bind(clause=table)
    engine = getattr(bind, "engine", bind)  # a Connection's engine
    if not isinstance(engine, sa.Engine) or engine.dialect.name not in MYSQL_DIALECTS:
        return text
    column_charset, connection_charset, length = _what_it_holds(db, engine, table, column)
    kept = _kept(_kept(text, column_charset), connection_charset)
    if kept is not None and length is not None and len(kept) > length:
        kept = kept[:length].rstrip(_JOINERS + " ")  # what the database's column holds
    if kept == text:
        return text
    if kept is not None:
        kept = " ".join(kept.replace("\u200d", "").split()).strip(_JOINERS) or None
        if kept is not None and not any(ch.isalnum() for ch in kept):
            kept = None
    return kept


def _kept(text: str | None, charset: str | None) -> str | None:
    if text is None or charset is None or charset in _ALL:
        return text
    if charset in _BMP:
        return "".join(ch for ch in text if ord(ch) <= 0xFFFF)
    codec = _CODECS.get(charset)
    if codec is None:
        return text  # a character set not known here: the database judges
    return "".join(ch for ch in text if _encodes(ch, codec))


def _encodes(ch: str, codec: str) -> bool:
    try:
        ch.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def _what_it_holds(db: SQLAlchemy, engine: sa.Engine, table: sa.Table,
                   column: sa.Column[t.Any]) -> tuple[str | None, str | None, int | None]:
    """The character sets of ``column`` and of ``engine``'s connections, and the characters
    the column holds where the database says fewer than its model (a table older than the
    model), asked once per process, in the session's transaction (the login's): a
    connection of their own, beside the login's, waited for itself where the pool has one
    (``pool_size=1``), and the login with it. A read of the server's catalogue, which
    neither locks nor (on MariaDB and MySQL) ends the transaction if it fails."""
    key = (table.schema, table.name, column.name)
    with _LOCK:
        known = _KNOWN.setdefault(engine, {}).get(key)
    if known is not None:
        return known
    row: t.Sequence[t.Any]
    try:
        row = _column_facts(db.session.connection(bind_arguments={"clause": table}),
                            table, column)
    except sa.exc.SQLAlchemyError:
        log.warning("could not read the character set of %s.%s; storing WeChat's text as "
                    "it is", table.fullname, column.name, exc_info=True)
        row = (None,) * 6  # not asked again: said once
    found = (row[1], row[0], _shorter(column, row))
    with _LOCK:
        _KNOWN[engine][key] = found
    wrong = _what_is_wrong(column, row)
    if wrong is not None:
        log.warning("%s. Store them whole: %s, then restart. Said once per process.", *wrong)
    if row[0] is not None and row[0] not in _ALL:
        log.warning(
            "the database connection's character set is %s, which cannot carry every "
            "character of WeChat nicknames (CJK, emoji) to %s.%s: they are stored without "
            "them. Put ?charset=utf8mb4 in the database URL. Said once per process.",
            row[0], table.fullname, column.name)
    return found


def narrow_column(connection: sa.Connection, column: sa.Column[t.Any]
                  ) -> tuple[str, str] | None:
    """For ``flask wechat-qr check``: on MariaDB and MySQL, when ``column`` (the user
    model's nickname) cannot hold every character of WeChat nicknames, what is wrong and
    the ``ALTER TABLE`` that fixes it; else ``None``. Reads only, every time."""
    if connection.dialect.name not in MYSQL_DIALECTS:
        return None
    return _what_is_wrong(column, _column_facts(connection, column.table, column))


def _what_is_wrong(column: sa.Column[t.Any], row: t.Sequence[t.Any]
                   ) -> tuple[str, str] | None:
    """What ``column`` (its facts in ``row``) cannot hold of WeChat nicknames, and the one
    ``ALTER TABLE`` for all of it (two, one per problem, would each undo the other);
    ``None`` when it holds them."""
    narrow = row[1] is not None and row[1] not in _ALL
    shorter = _shorter(column, row)
    if not narrow and shorter is None:
        return None
    wrong = []
    if narrow:
        wrong.append(f"is in character set {row[1]}, which cannot hold every character of "
                     "WeChat nicknames (CJK, emoji): they are stored without them, or not at "
                     "all (an all-Chinese name in latin1: not at all)")
    model_length = getattr(column.type, "length", None)
    if shorter is not None:
        wrong.append(f"holds {shorter} characters in the database, where the model says "
                     f"{model_length}: WeChat nicknames are cut to {shorter}")
    return (f"{column.table.fullname}.{column.name} {'; and it '.join(wrong)}",
            _widening(column.table, column, row, model_length if shorter else None,
                      row[1] if not narrow else None))


def _shorter(column: sa.Column[t.Any], row: t.Sequence[t.Any]) -> int | None:
    """The characters the database's column holds, where fewer than its model says."""
    model_length = getattr(column.type, "length", None)
    if row[4] is None or not isinstance(model_length, int) or int(row[4]) >= model_length:
        return None
    return int(row[4])


def _column_facts(connection: sa.Connection, table: sa.Table, column: sa.Column[t.Any]
                  ) -> t.Sequence[t.Any]:
    """The connection's character set and the column's: its character set, type, whether
    it takes NULL, its length in characters and its collation (``None`` for a column the
    database does not have). The column is looked up by a ``WHERE`` on schema, table and
    column names, which MariaDB and MySQL answer from that one table's definition; joined to
    anything (a ``LEFT JOIN`` that always gave a row) they read every table of every
    database on the server first: 20 ms with five databases, seconds on a shared server."""
    row = connection.execute(sa.text(
        "SELECT LOWER(@@character_set_client), LOWER(c.character_set_name), "
        "c.column_type, c.is_nullable, c.character_maximum_length, c.collation_name "
        "FROM information_schema.columns AS c WHERE c.table_schema = "
        "COALESCE(:schema, DATABASE()) AND c.table_name = :table "
        "AND c.column_name = :column"),
        {"schema": table.schema, "table": table.name, "column": column.name}).first()
    if row is not None:
        return row
    client = connection.execute(sa.text("SELECT LOWER(@@character_set_client)")).scalar()
    return (client, None, None, None, None, None)


def _widening(table: sa.Table, column: sa.Column[t.Any], row: t.Sequence[t.Any],
              length: int | None = None, charset: str | None = None) -> str:
    """The ``ALTER TABLE`` that makes the column utf8mb4 (or keeps ``charset`` and its
    collation, where only its ``length`` is wrong), and ``varchar(length)``: the column only,
    since converting the whole table would also convert a text primary key, which the
    identities' foreign key to it keeps MariaDB from changing."""
    kind = f"varchar({length})" if length else row[2]
    keeps = f"{charset} COLLATE {row[5]}" if charset and row[5] else charset
    name = ".".join(f"`{part}`" for part in (table.schema, table.name) if part)
    return (f"ALTER TABLE {name} MODIFY `{column.name}` {kind} CHARACTER SET "
            f"{keeps or 'utf8mb4'} {'NULL' if row[3] == 'YES' else 'NOT NULL'} (keep its "
            "DEFAULT, if it has one)")
