"""Whether a page's Content-Security-Policy lets it frame WeChat's QR page."""

from __future__ import annotations

import pytest

from flask_wechat_qr.frame_policy import allows_frame, frame_sources

WECHAT = "https://open.weixin.qq.com"
PAGE = "https://www.example.com/auth/wechat/qr"


@pytest.mark.parametrize(("policies", "allowed"), [
    ([], True),
    (["frame-ancestors 'self'"], True),  # who may frame the page, not what it frames
    (["default-src 'self'; object-src 'none'"], False),  # Flask-Talisman's default
    (["default-src 'self'; frame-src 'self' https://open.weixin.qq.com"], True),
    (["default-src 'none'; child-src https://open.weixin.qq.com"], True),
    (["frame-src https://open.weixin.qq.com; child-src 'none'"], True),  # frame-src first
    (["frame-src *.qq.com"], True),
    (["frame-src *.weixin.qq.com:443"], True),
    (["frame-src open.weixin.qq.com"], True),
    (["frame-src https:"], True),
    (["frame-src http:"], True),  # http: also allows https
    (["frame-src *"], True),
    (["frame-src https://open.weixin.qq.com:8443"], False),
    (["frame-src http://open.weixin.qq.com/connect/"], True),
    (["frame-src https://weixin.qq.com"], False),
    (["frame-src 'none'"], False),
    (["frame-src 'nonce-abc' 'self'"], False),
    (["FRAME-SRC HTTPS://OPEN.WEIXIN.QQ.COM"], True),
    # Every policy must allow it: two headers, or two policies in one.
    (["frame-src *", "default-src 'self'"], False),
    (["frame-src *, default-src 'self'"], False),
    # The first directive of a name counts.
    (["frame-src 'self'; frame-src https://open.weixin.qq.com"], False),
])
def test_which_policies_let_the_page_frame_wechat(policies: list[str], allowed: bool) -> None:
    assert allows_frame(policies, WECHAT, PAGE) is allowed


def test_self_is_the_pages_own_origin() -> None:
    sandbox = "https://www.example.com/wechat-sandbox/connect/qrconnect"
    assert allows_frame(["default-src 'self'"], sandbox, PAGE)
    assert not allows_frame(["default-src 'self'"], sandbox, "http://www.example.com/qr")


def test_the_deciding_sources_per_policy() -> None:
    assert frame_sources("img-src *; default-src 'self', frame-src a.example") == [
        ["'self'"], ["a.example"]]
    assert frame_sources("img-src *") == [None]
