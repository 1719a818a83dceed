"""MariaDB and MySQL as sites really run them: a legacy database whose default character set
is ``latin1`` or ``utf8mb3``, InnoDB's REPEATABLE READ (a transaction reads the snapshot of
its first read), its unique keys under two requests at once, and ``*_general_ci``
collations. Each test on a database of the MariaDB server of ``WECHAT_QR_TEST_MARIADB_URL``
(skipped without one, as every MariaDB variant)."""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from flask import Flask
from support import (
    CODE_USED_ANSWER,
    PROFILE_ANSWER,
    TOKEN_ANSWER,
    TOKEN_PATH,
    USERINFO_PATH,
    WeChatAPI,
    all_identities,
    all_users,
    answer_with,
    api_paths,
    browser_copy,
    error_name,
    logged_in_user_id,
    start_login,
    wechat_body,
)

pytestmark = pytest.mark.parametrize("database", ["mariadb"], indirect=True)


def reads_the_database_first(app: Flask) -> None:
    """A host whose every request reads its own table first (a site setting, a count on
    the layout, a members-only check): on InnoDB that read takes the request's snapshot."""
    @app.before_request
    def count_users() -> None:
        db = app.extensions["sqlalchemy"]
        db.session.execute(sa.text("SELECT COUNT(*) FROM user")).scalar()


# --- REPEATABLE READ ------------------------------------------------------------------------


def test_double_redirect_of_a_first_login_sees_the_first_requests_user(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI
) -> None:
    """WeChat's double redirect of someone new, on a host that reads its database at the
    start of each request: the second callback (40163) waits for the first one's ending and
    then loads the user the first one made. Its snapshot, taken before that commit, must
    not hide the user (the second redirect's page, the one the browser shows, said "no
    longer valid" after a login that succeeded)."""
    app = make_app(before_init=reads_the_database_first, WECHAT_QR_CODE_USED_WAIT=5)
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    twin = browser_copy(app, browser)
    second_arrived = threading.Event()
    first_at_wechat = threading.Event()
    calls: list[str] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        calls.append(request.params["code"])
        if len(calls) == 1:
            first_at_wechat.set()
            second_arrived.wait(timeout=10)  # WeChat answers the first after the second came
            return wechat_body(TOKEN_ANSWER)
        second_arrived.set()
        return wechat_body(CODE_USED_ANSWER)

    answer_with(wechat_api, TOKEN_PATH, token)
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    query = {"code": "0816AbDOUBLE", "state": state}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(browser.get, "/auth/wechat/callback", query_string=query)
        assert first_at_wechat.wait(timeout=10)
        second = pool.submit(twin.get, "/auth/wechat/callback", query_string=query)
        answers = [first.result(timeout=30), second.result(timeout=30)]
    assert second_arrived.is_set()
    assert [(a.status_code, error_name(a)) for a in answers] == [(302, None), (302, None)]
    assert [a.headers["Location"] for a in answers] == ["/welcome", "/welcome"]
    assert api_paths(wechat_api).count(USERINFO_PATH) == 1
    user_id = str(all_users(app)[0].id)
    assert logged_in_user_id(browser) == user_id and logged_in_user_id(twin) == user_id
    assert len(all_users(app)) == 1 and len(all_identities(app)) == 1
