"""The site shows each user's WeChat nickname (and keeps their avatar): when the extension
refreshes a returning person's profile in the background (``WECHAT_QR_PROFILE_REFRESH_AFTER``),
the user row follows it.

The receiver runs in the extension's background thread, with an app context and no request:
it writes through the same ``db`` and commits itself. WeChat's placeholders ("微信用户", the
grey default avatar) never replace what the user has (``real_nickname``/``real_avatar_url``
are ``None`` for them).
"""

from __future__ import annotations

import typing as t

from flask import Flask

from flask_wechat_qr import signals

from .models import db


@signals.profile_refreshed.connect
def on_profile_refreshed(app: Flask, *, user: t.Any, identity: t.Any, profile: t.Any,
                         **_extra: t.Any) -> None:
    if "example_app" not in app.extensions or user is None:
        return
    if profile.real_nickname:
        user.nickname = profile.real_nickname
    if profile.real_avatar_url:
        # The site's stored copy (WECHAT_QR_STORE_AVATARS): WeChat's own URL dies when the
        # person changes their avatar.
        user.avatar_url = profile.real_avatar_url
    db.session.commit()
