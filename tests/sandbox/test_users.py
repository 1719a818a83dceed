"""The sandbox's people: openid per app, unionid per person (flask_wechat_qr.sandbox.users)."""

from __future__ import annotations

from flask_wechat_qr.sandbox.users import openid_for, unionid_for


def test_ids_are_per_app_and_unionid_is_shared() -> None:
    assert openid_for("wxA", "zhangsan") != openid_for("wxB", "zhangsan")
    assert len(openid_for("wxA", "zhangsan")) == 28
    assert unionid_for("zhangsan") != unionid_for("lisi")
