"""Turning a login's outcome into a response (delivery.py): the error pages in words with a
way to try again, the form post of an ID token or an error to the business callback URL,
and the page that posts it."""

from __future__ import annotations

import typing as t

import pytest
from support import (
    TOKEN_PATH,
    all_identities,
    all_users,
    api_paths,
    finish_login,
    logged_in_user_id,
    query_pairs,
    retry_links,
    start_login,
)

# --- error pages: in words, with a way to try again ---------------------------------------


ERRCODES = [
    # errcode, errmsg, status, words on the page
    (40029, "invalid code", 400, "expired"),
    (40163, "code been used", 400, "already used"),
    (41008, "missing code", 400, "Scan the QR code again"),
    (40125, "invalid appsecret", 502, "tell the site owner"),
    (40013, "invalid appid", 502, "tell the site owner"),
    (-1, "system error", 502, "busy"),
    (45011, "api minute-quota reach limit mustslow down!!", 502, "Wait a minute"),
    (99999, "something new", 502, "Try again"),
]


@pytest.mark.parametrize(("errcode", "errmsg", "status", "words"), ERRCODES)
def test_wechat_errcode_is_a_page_in_words(app: t.Any, client: t.Any, wechat_api: t.Any,
                                           errcode: int, errmsg: str, status: int,
                                           words: str) -> None:
    state = start_login(client, next="/account")
    wechat_api.error(TOKEN_PATH, errcode, errmsg)
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == status
    page = resp.text
    assert words in page
    assert "rid:" not in page
    assert "Traceback" not in page
    retry = retry_links(page)
    assert len(retry) == 1
    assert dict(query_pairs(retry[0])) == {"next": "/account"}
    # Busy (-1) is retried once; nothing else is.
    assert api_paths(wechat_api) == [TOKEN_PATH] * (2 if errcode == -1 else 1)
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None
