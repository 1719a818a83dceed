"""WeChat's placeholders (empty values, "微信用户", the grey default avatar) never overwrite
a real nickname or avatar, on the identity or on the host's user (issue 17, item 2)."""

from __future__ import annotations

import typing as t

import pytest
from support import (
    AVATAR,
    NICKNAME,
    USERINFO_PATH,
    all_identities,
    all_users,
    finish_login,
    start_login,
)

from flask_wechat_qr.placeholders import (
    PLACEHOLDER_AVATAR_IDS,
    is_placeholder_avatar,
    is_placeholder_nickname,
)

GREY = ("https://thirdwx.qlogo.cn/mmopen/vi_32/" + next(iter(PLACEHOLDER_AVATAR_IDS)) + "/132")


@pytest.mark.parametrize("nickname", ["", "  ", "微信用户", " 微信用户 ", "WeChat User", None])
def test_placeholder_nicknames(nickname: str | None) -> None:
    assert is_placeholder_nickname(nickname)


@pytest.mark.parametrize("nickname", ["张三🐼", "微信用户123", "用户"])
def test_real_nicknames(nickname: str) -> None:
    assert not is_placeholder_nickname(nickname)


def test_the_grey_avatar_at_any_size_and_host_is_a_placeholder() -> None:
    for size in ("0", "46", "132"):
        assert is_placeholder_avatar(GREY.replace("/132", f"/{size}"))
    assert is_placeholder_avatar(GREY.replace("thirdwx", "wx"))
    assert is_placeholder_avatar(None) and is_placeholder_avatar("")
    assert not is_placeholder_avatar(AVATAR)


def log_in(client: t.Any, api: t.Any, nickname: str, avatar: str) -> t.Any:
    api.mock.reset()
    api.token()
    api.userinfo(nickname=nickname, headimgurl=avatar)
    return finish_login(client, start_login(client))


@pytest.mark.parametrize(("nickname", "avatar"), [
    ("微信用户", GREY), ("", ""), ("微信用户", AVATAR.replace("/0", "/46")), ("张三二号", GREY)])
def test_each_login_sync_keeps_real_data_over_placeholders(
        make_app: t.Any, wechat_api: t.Any, nickname: str, avatar: str) -> None:
    app = make_app(WECHAT_QR_PROFILE_SYNC="each_login")
    client = app.test_client()
    assert log_in(client, wechat_api, NICKNAME, AVATAR).status_code == 302
    assert log_in(client, wechat_api, nickname, avatar).status_code == 302
    assert USERINFO_PATH in [c.request.url.split("?")[0].removeprefix("https://api.weixin.qq.com")
                             for c in wechat_api.mock.calls]
    (user,) = all_users(app)
    (identity,) = all_identities(app)
    real_nickname = NICKNAME if nickname in ("微信用户", "") else nickname
    real_avatar = AVATAR if avatar in (GREY, "") else avatar
    assert (user.nickname, user.avatar_url) == (real_nickname, real_avatar)
    assert (identity.nickname, identity.avatar_url) == (real_nickname, real_avatar)
    assert identity.profile["nickname"] == nickname  # the raw answer is kept as sent


def test_a_first_login_with_placeholders_stores_what_there_is(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """Nothing real to keep: the identity says what WeChat said; the user gets nothing."""
    app = make_app()
    client = app.test_client()
    assert log_in(client, wechat_api, "微信用户", GREY).status_code == 302
    (identity,) = all_identities(app)
    assert (identity.nickname, identity.avatar_url) == ("微信用户", GREY)
    (user,) = all_users(app)
    assert (user.nickname, user.avatar_url) == (None, None)
