"""QR images as SVG (the ``qrcode`` package; no Pillow), rendered once per content."""

from __future__ import annotations

import functools

import qrcode
import qrcode.image.svg


@functools.lru_cache(maxsize=512)
def qr_svg(content: str) -> bytes:
    """An SVG QR code of ``content``; cached, since a page polls and reloads it."""
    image = qrcode.make(content, image_factory=qrcode.image.svg.SvgPathImage, box_size=10,
                        border=2)
    return image.to_string(encoding="unicode").encode("utf-8")
