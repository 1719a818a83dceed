"""The sandbox's QR images (flask_wechat_qr.sandbox.qr)."""

from __future__ import annotations

from flask_wechat_qr.sandbox.qr import qr_svg


def test_qr_images_are_rendered_once_per_content() -> None:
    qr_svg.cache_clear()
    first = qr_svg("http://192.0.2.1/x")
    second = qr_svg("http://192.0.2.1/x")
    assert first is second
    assert qr_svg.cache_info().hits == 1 and qr_svg.cache_info().misses == 1
