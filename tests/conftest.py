"""Shared fixtures; the helpers and WeChat's answer shapes live in ``support``."""

from __future__ import annotations

import os
import typing as t

import pytest
import responses
from flask import Flask
from support import (
    POSTGRES_URL_VARIABLE,
    REQUIRE_POSTGRES_VARIABLE,
    Database,
    WeChatAPI,
    dispose_engines,
    make_test_app,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Database]:
    """Every test that stores anything runs on SQLite and on PostgreSQL."""
    server_url = None
    if request.param == "postgresql":
        server_url = os.environ.get(POSTGRES_URL_VARIABLE)
        if not server_url:
            reason = (f"PostgreSQL variant: set {POSTGRES_URL_VARIABLE}=postgresql://... "
                      "(bash .ci/start-postgres prints one)")
            if os.environ.get(REQUIRE_POSTGRES_VARIABLE):
                pytest.fail(f"{REQUIRE_POSTGRES_VARIABLE} is set but {reason}")
            pytest.skip(reason)
    database = Database(request.param, tmp_path, server_url)
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def make_app(tmp_path: t.Any, database: Database) -> t.Iterator[t.Callable[..., Flask]]:
    counter = iter(range(1000))
    apps: list[Flask] = []

    def factory(**config: t.Any) -> Flask:
        name = f"app{next(counter)}"
        folder = tmp_path / name
        folder.mkdir()
        app = make_test_app(folder, database.url(name), **config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        dispose_engines(app)


@pytest.fixture
def app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> t.Any:
    return app.test_client()


@pytest.fixture
def wechat_api() -> t.Iterator[WeChatAPI]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield WeChatAPI(mock)


