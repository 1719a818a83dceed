"""The base class for the extension's models (and the sandbox's) on the bind of the host's
user table: Flask-SQLAlchemy declares a model on the metadata of its class's
``__bind_key__``, so tables that must live beside the users' get a base naming that bind;
and which bind a table is on (:func:`bind_key_of`)."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


def model_base(db: SQLAlchemy, bind_key: str | None, name: str) -> t.Any:
    """``db.Model`` itself on the default bind; on another, an abstract subclass called
    ``name`` naming it, whose subclasses Flask-SQLAlchemy declares on that bind's metadata
    (``db.create_all()`` makes them there)."""
    if bind_key is None:
        return db.Model
    # db.Model: the host's base class, made at run time (mypy sees a variable)
    return type(name, (db.Model,), {"__abstract__": True, "__bind_key__": bind_key})


def bind_key_of(table: sa.Table) -> str | None:
    """The Flask-SQLAlchemy bind ``table`` lives on: its metadata's, as Flask-SQLAlchemy's
    session reads it (a model's ``__bind_key__``); ``None``, the default bind, for a table
    of the default metadata or of a declarative base that names none."""
    return t.cast("str | None", table.metadata.info.get("bind_key"))
