"""SQL statements and rows written, counted inside each site process with SQLAlchemy's
cursor listener, and summed over a site's worker processes through one shared file.

A gunicorn site has several worker processes and a stats request reaches only one of
them, so each process claims a slot of a small file (under a lock) and keeps its own
totals there; the benchmark reads all slots. Both sites pay the same few microseconds
per statement for the counting.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import pathlib
import struct
import threading
import typing as t

import sqlalchemy as sa

#: What each slot holds, in order (all 64-bit integers).
FIELDS = ("pid", "statements", "select", "insert", "update", "delete", "other", "commit",
          "rows_written")
SLOTS = 64
_SLOT = struct.Struct(f"<{len(FIELDS)}q")
SIZE = SLOTS * _SLOT.size
_WRITES = {"insert", "update", "delete"}


def create(path: pathlib.Path) -> None:
    """An empty counts file (all slots free)."""
    path.write_bytes(b"\0" * SIZE)


def read(path: pathlib.Path) -> dict[str, int]:
    """The totals over every process that has counted into ``path``."""
    data = path.read_bytes()
    totals = dict.fromkeys(FIELDS[1:], 0)
    for slot in range(SLOTS):
        values = _SLOT.unpack_from(data, slot * _SLOT.size)
        if values[0]:
            for name, value in zip(FIELDS[1:], values[1:], strict=True):
                totals[name] += value
    return totals


class _ProcessSlot:
    """This process's slot in the counts file, claimed on first use (after the fork)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.pid = 0
        self.offset = 0
        self.view: mmap.mmap | None = None
        self.lock = threading.Lock()

    def claim(self) -> None:
        with self.lock:
            self.view = self._claim()

    def _claim(self) -> mmap.mmap:
        with open(self.path, "r+b") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            view = mmap.mmap(file.fileno(), SIZE)
            for slot in range(SLOTS):
                if _SLOT.unpack_from(view, slot * _SLOT.size)[0] == 0:
                    break
            else:
                raise RuntimeError(f"more than {SLOTS} processes count into {self.path}")
            self.offset = slot * _SLOT.size
            _SLOT.pack_into(view, self.offset, os.getpid(), *([0] * (len(FIELDS) - 1)))
        self.pid = os.getpid()
        return view

    def add(self, field: str, rows: int = 0) -> None:
        with self.lock:
            if self.pid != os.getpid() or self.view is None:
                self.view = self._claim()
            values = list(_SLOT.unpack_from(self.view, self.offset))
            values[FIELDS.index(field)] += 1
            if field in FIELDS[2:7]:
                values[FIELDS.index("statements")] += 1
            values[FIELDS.index("rows_written")] += rows
            _SLOT.pack_into(self.view, self.offset, *values)


def install(path: pathlib.Path) -> None:
    """Count every statement and commit of every engine in this process into ``path``."""
    slot = _ProcessSlot(path)
    slot.claim()  # now, not inside a statement

    def after_cursor_execute(conn: t.Any, cursor: t.Any, statement: str, parameters: t.Any,
                             context: t.Any, executemany: bool) -> None:
        words = statement.lstrip().split(None, 1)
        kind = words[0].lower() if words else "other"
        if kind == "with":  # a CTE: what it does follows
            kind = next((w for w in ("insert", "update", "delete") if w in statement.lower()),
                        "select")
        kind = kind if kind in FIELDS[2:7] else "other"
        rows = max(cursor.rowcount, 0) if kind in _WRITES else 0
        slot.add(kind, rows)

    def commit(conn: t.Any) -> None:
        slot.add("commit")

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", after_cursor_execute)
    sa.event.listen(sa.engine.Engine, "commit", commit)
