"""A site that logs people in with GitHub through Flask-Dance (``apps/host_flask_dance``)
and with WeChat: one user model, Flask-Login shared, Flask-Dance's ``OAuth`` table next to
the extension's. Someone who came with GitHub links WeChat from their account page and
logs in with WeChat afterwards: the same account, with both still linked; GitHub's login
(its ``oauth_authorized`` receiver, its token storage) keeps working beside the extension."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest
import responses
from flask import Flask
from support import logged_in_user_id

from .browse import Browser, wechat_login
from .shapes import SANDBOX

GITHUB_USER = {"id": 583231, "login": "octocat", "name": "章鱼猫"}


def build(tmp_path: Path) -> Flask:
    import host_flask_dance

    return t.cast(Flask, host_flask_dance.create_app({
        **SANDBOX, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'dance.db'}"}))


def github_login(browser: Browser) -> t.Any:
    """GitHub's login as Flask-Dance makes it, GitHub answering through ``responses``."""
    start = browser.get("/login/github", follow=False)
    state = re.search(r"state=([^&]+)", start.headers["Location"]).group(1)  # type: ignore[union-attr]
    with responses.RequestsMock() as github:
        github.post("https://github.com/login/oauth/access_token",
                    json={"access_token": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
                          "token_type": "bearer", "scope": ""})
        github.get("https://api.github.com/user", json=GITHUB_USER)
        return browser.get(f"/login/github/authorized?code=github-code&state={state}")


def account(browser: Browser) -> list[str]:
    page = browser.get("/account").get_data(as_text=True)
    return re.findall(r'<p id="\w+">(.*?)</p>', page)


def test_a_github_user_links_wechat_and_logs_in_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test client's http://
    app = build(tmp_path)
    browser = Browser(app)
    assert '<p id="who">章鱼猫</p>' in github_login(browser).get_data(as_text=True)
    user_id = logged_in_user_id(browser.client)
    assert account(browser) == ["章鱼猫", "未绑定微信", "GitHub"]

    linked = wechat_login(browser, "lisi", path="/auth/wechat/link?next=/account")
    assert re.findall(r'<p id="\w+">(.*?)</p>', linked.get_data(as_text=True)) == [
        "章鱼猫", "wechat", "GitHub"]
    browser.get("/logout")
    assert logged_in_user_id(browser.client) is None

    wechat_login(browser, "lisi", next_url="/account")
    assert logged_in_user_id(browser.client) == user_id
    assert account(browser) == ["章鱼猫", "wechat", "GitHub"]
    # GitHub again, over the WeChat login: the same account.
    github_login(browser)
    assert logged_in_user_id(browser.client) == user_id
    assert browser.errors() == []
