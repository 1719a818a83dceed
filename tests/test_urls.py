"""URL rules (urls.py): a ``next`` that leaves the site is never followed nor echoed, and a
local one survives the login as given."""

from __future__ import annotations

import typing as t

import pytest
from support import (
    TOKEN_PATH,
    find_tags,
    finish_login,
    logged_in_user_id,
    retry_links,
    start_login,
)

# --- a next parameter that leaves the site is never followed ------------------------------


OFF_SITE_NEXT = [
    "https://evil.example",
    "https://evil.example/auth/wechat/callback",
    "http:evil.example",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    " //evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\nLocation: https://evil.example",
    "/\x00/evil.example",
    "/\x7f/evil.example",
]


@pytest.mark.parametrize("post_login_url", [None, "/home"])
@pytest.mark.parametrize("next_url", OFF_SITE_NEXT)
def test_off_site_next_is_refused(make_app: t.Any, wechat_api: t.Any, next_url: str,
                                  post_login_url: str | None) -> None:
    config = {} if post_login_url is None else {"WECHAT_QR_POST_LOGIN_URL": post_login_url}
    client = make_app(**config).test_client()
    state = start_login(client, next=next_url)
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == (post_login_url or "/")
    assert logged_in_user_id(client) is not None


@pytest.mark.parametrize("next_url", OFF_SITE_NEXT)
def test_off_site_next_is_not_echoed_on_the_qr_page(client: t.Any, next_url: str) -> None:
    resp = client.get("/auth/wechat/qr", query_string={"next": next_url})
    assert resp.status_code == 200
    assert "evil" not in resp.text
    links = [a["href"] or "" for a in find_tags(resp.text, "a")]
    assert "/auth/wechat/login" in links


def test_off_site_next_is_not_echoed_in_the_retry_link(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="https://evil.example/")
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    resp = finish_login(client, state)
    assert resp.status_code == 400
    assert retry_links(resp.text) == ["/auth/wechat/login"]
    assert "evil" not in resp.text


# --- local paths survive the login --------------------------------------------------------


def test_next_of_exactly_the_limit_is_kept(client: t.Any, wechat_api: t.Any) -> None:
    next_url = "/" + "a" * 2047
    state = start_login(client, next=next_url)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).headers["Location"] == next_url


def test_non_ascii_next_survives_the_login(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="/账户?标签=微信")
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith("/")
    assert not location.startswith("//")
    assert "%E8%B4%A6%E6%88%B7" in location
