"""Shared fixtures; the helpers and WeChat's answer shapes live in ``support``."""

from __future__ import annotations

import typing as t

import pytest
import responses
from flask import Flask
from support import WeChatAPI, make_test_app


@pytest.fixture
def make_app(tmp_path: t.Any) -> t.Callable[..., Flask]:
    counter = iter(range(1000))

    def factory(**config: t.Any) -> Flask:
        folder = tmp_path / f"app{next(counter)}"
        folder.mkdir()
        return make_test_app(folder, **config)

    return factory


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


