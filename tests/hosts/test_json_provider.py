"""A host whose JSON provider wraps every answer in an envelope (``{"data": ...}``, as some
API sites do), on the in-app sandbox: the extension's own JSON keeps its shape (the ID
token keys of RFC 7517, the sandbox QR page's poll, which its script reads)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask_login import current_user

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import nickname_site


class Enveloping(DefaultJSONProvider):
    """Every ``jsonify`` of the site answers ``{"data": ..., "ok": true}`` (its ``dumps``,
    which the session cookie uses too, is Flask's)."""

    def response(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        payload = self._prepare_response_obj(args, kwargs)
        return super().response({"data": payload, "ok": True})


def api_site(tmp_path: Path) -> Flask:
    app = nickname_site(tmp_path, "api_site")
    app.json = Enveloping(app)

    @app.route("/")
    def home() -> str:
        return f'<p id="who">Hello {current_user.nickname}</p>'

    return app


def test_a_login_and_the_keys_in_a_site_whose_json_is_enveloped(tmp_path: Path) -> None:
    """Before: the sandbox's poll answered ``{"data": {"status": ...}}``, which its QR page
    cannot read (the login never went on), and the keys' URL an envelope no receiver of
    ID tokens reads."""
    app = api_site(tmp_path)
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    assert "Hello 李四" in page.get_data(as_text=True)
    keys = browser.get("/auth/.well-known/jwks.json")
    assert keys.status_code == 404 and keys.mimetype == "application/json"
    assert json.loads(keys.get_data(as_text=True))["error"] == "not_found"
    assert_no_server_error(browser)
