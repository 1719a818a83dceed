"""The sandbox's simulated image host (WeChat's ``*.qlogo.cn``): each person's avatar as a
PNG at ``/mmopen/<person>/<version>/<size>``, and the "change my avatar" action, after
which the old URL answers 404, as WeChat's do.

Its avatar URLs carry the sandbox's own image origin (``.invalid``: no browser or DNS
reaches it); the extension's downloader gets them in-process, and accepts that origin only
while the sandbox is on. The sandbox's index page shows the same images at this site's path.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

from flask import Response, abort, redirect, url_for
from werkzeug.wrappers import Response as BaseResponse

from ..urls import SANDBOX_IMAGE_PATH
from .users import PEOPLE_BY_KEY
from .views import avatar_version, blueprint, person_of, sandbox_runtime

#: WeChat's size segments and the pixels each stands for (0: the 640 px original).
SIZES = {"0": 640, "46": 46, "64": 64, "96": 96, "132": 132}


@blueprint.route(f"{SANDBOX_IMAGE_PATH}/<person_key>/<int:version>/<size>")
def avatar_image(person_key: str, version: int, size: str) -> Response:
    """A person's avatar; 404 once they changed it (or for a size WeChat has not)."""
    sandbox = sandbox_runtime()
    if size not in SIZES or version != avatar_version(sandbox, person_key):
        abort(404)
    person = person_of(sandbox, person_key)
    if person_key not in PEOPLE_BY_KEY and person.nickname == "WeChat user":
        abort(404)  # nobody by that key
    png = solid_png(SIZES[size], _colour(f"{person_key}:{version}"))
    return Response(png, content_type="image/png",
                    headers={"Cache-Control": "public, max-age=600"})


@blueprint.route("/people/<person_key>/avatar", methods=["POST"])
def change_avatar(person_key: str) -> BaseResponse:
    """"Change my avatar": a new image at a new URL; the old URL answers 404 from now on."""
    sandbox = sandbox_runtime()
    if person_key not in PEOPLE_BY_KEY:
        abort(404)
    row = sandbox.db.session.get(sandbox.models.Avatar, person_key)
    if row is None:
        sandbox.db.session.add(sandbox.models.Avatar(person_key=person_key, version=2))
    else:
        row.version = row.version + 1
    sandbox.db.session.commit()
    return redirect(url_for(".index"))


def _colour(seed: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return 60 + digest[0] % 160, 60 + digest[1] % 160, 60 + digest[2] % 160


def solid_png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A ``size`` x ``size`` PNG: ``rgb`` with a lighter square in the middle."""
    light = bytes(min(255, c + 70) for c in rgb)
    edge, row_edge = size // 4, bytes(rgb) * size
    row_middle = bytes(rgb) * edge + light * (size - 2 * edge) + bytes(rgb) * edge
    rows = [row_middle if edge <= y < size - edge else row_edge for y in range(size)]
    raw = b"".join(b"\x00" + row for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))

