"""The base class for the extension's models (and the sandbox's) on the bind of the host's
user table: Flask-SQLAlchemy declares a model on the metadata of its class's
``__bind_key__``, so tables that must live beside the users' get a base naming that bind;
and which bind a table is on (:func:`bind_key_of`).

A site whose base is a ``MappedAsDataclass`` (``class Base(MappedAsDataclass,
DeclarativeBase)``) makes every subclass of ``db.Model`` a dataclass, the extension's too:
their columns are no dataclass fields (``sa.Column``, not ``Mapped[...]``), so their
``__init__`` would take no argument, and the base's own dataclass ``__eq__`` (of no fields)
makes any two rows equal and none hashable. Their base opts out of what the dataclass makes
(``__init__``, ``__eq__``, ``__repr__``), constructs by keyword and compares by identity, as
a plain declarative model does."""

from __future__ import annotations

import types
import typing as t

import sqlalchemy as sa
from sqlalchemy.orm import MappedAsDataclass

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

#: What a ``MappedAsDataclass`` subclass of the extension's base leaves to the class.
_NOT_A_DATACLASS = {"init": False, "eq": False, "repr": False}


def model_base(db: SQLAlchemy, bind_key: str | None, name: str) -> t.Any:
    """``db.Model`` itself on the default bind; on another, an abstract subclass called
    ``name`` naming it, whose subclasses Flask-SQLAlchemy declares on that bind's metadata
    (``db.create_all()`` makes them there). On a ``MappedAsDataclass`` base, always such a
    subclass, whose subclasses construct by keyword (see the module's doc)."""
    dataclasses = isinstance(db.Model, type) and issubclass(db.Model, MappedAsDataclass)
    if bind_key is None and not dataclasses:
        return db.Model
    body: dict[str, t.Any] = {"__abstract__": True}
    if bind_key is not None:
        body["__bind_key__"] = bind_key
    if not dataclasses:
        # db.Model: the host's base class, made at run time (mypy sees a variable)
        return type(name, (db.Model,), body)
    body.update(__init__=_construct_by_keyword, __eq__=object.__eq__, __ne__=object.__ne__,
                __hash__=object.__hash__)
    return types.new_class(name, (db.Model,), dict(_NOT_A_DATACLASS),
                           lambda namespace: namespace.update(body))


def _construct_by_keyword(self: t.Any, **values: t.Any) -> None:
    """Set each value on the attribute of its name, as SQLAlchemy's default constructor."""
    cls = type(self)
    for key, value in values.items():
        if not hasattr(cls, key):
            raise TypeError(f"{key!r} is an invalid keyword argument for {cls.__name__}")
        setattr(self, key, value)


def bind_key_of(table: sa.Table) -> str | None:
    """The Flask-SQLAlchemy bind ``table`` lives on: its metadata's, as Flask-SQLAlchemy's
    session reads it (a model's ``__bind_key__``); ``None``, the default bind, for a table
    of the default metadata or of a declarative base that names none."""
    return t.cast("str | None", table.metadata.info.get("bind_key"))


def engine_of(db: SQLAlchemy, table: sa.Table) -> sa.Engine:
    """The engine of one of the extension's tables in the current app (not ``db.engine``,
    the default bind's, where the host's users are on a bind of their own)."""
    return db.engines[bind_key_of(table)]
