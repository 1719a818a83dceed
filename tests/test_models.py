"""The extension's tables (models.py) as the database enforces them: one identity per openid
of a connection. Their migrations: test_migrations."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from support import (
    add_user,
    link_identity,
)


def test_openid_is_unique_per_connection(app: t.Any) -> None:
    link_identity(app, add_user(app, username="a"))
    with pytest.raises(sa.exc.IntegrityError):
        link_identity(app, add_user(app, username="b"))
