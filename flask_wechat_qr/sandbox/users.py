"""The simulated WeChat people of the sandbox, and how their ids are derived.

Ids are derived, not stored: ``openid`` from (AppID, person), ``unionid`` from the one
simulated Open Platform account every sandbox app belongs to. So one person has a
different openid in each connection and the same unionid in all, exactly as on WeChat.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from ..i18n import LazyText
from ..i18n import lazy_gettext as _l


@dataclass(frozen=True)
class SandboxPerson:
    key: str
    nickname: str
    has_unionid: bool = True
    #: shown on the sandbox's pages (in their language)
    note: str | LazyText = ""
    #: the avatar WeChat gives: ``"https"`` (an image), ``"http"`` (an ``http://`` URL of
    #: the 46 px thumbnail, as older profiles have) or ``"placeholder"`` (WeChat's grey
    #: default avatar)
    avatar: str = "https"


#: Ready-made people: CJK and emoji nicknames, a Latin-1 name, one without unionid, one
#: with an ``http://`` avatar, and WeChat's placeholder profile.
PEOPLE: tuple[SandboxPerson, ...] = (
    SandboxPerson("zhangsan", "张三🐼", note=_l("CJK + emoji nickname")),
    SandboxPerson("lisi", "李四", note=_l("a second user")),
    SandboxPerson("xiaohua", "🌸小花🌸", note=_l("emoji around CJK")),
    SandboxPerson("jose", "José Martín", note=_l("Latin-1 range letters")),
    SandboxPerson("wangwu", "王五", has_unionid=False,
                  note=_l("no unionid (app not bound to an Open Platform account)")),
    SandboxPerson("zhaoliu", "赵六", avatar="http",
                  note=_l("avatar URL over http:// (a 46 px thumbnail)")),
    SandboxPerson("placeholder", "微信用户", avatar="placeholder",
                  note=_l("WeChat's placeholder profile: 微信用户 and the grey default avatar")),
)
PEOPLE_BY_KEY = {person.key: person for person in PEOPLE}

OPEN_PLATFORM_ACCOUNT = "flask-wechat-qr-sandbox"

#: The consent page's choice for a visitor on a 朋友圈 snapshot page (快照页, WeChat since
#: 2022-07-12): WeChat gives the site virtual ids and ``is_snapshotuser: 1``.
SNAPSHOT_CHOICE = "snapshot"
_SNAPSHOT_PREFIX = "snapshot-"


def new_snapshot_key(token: str) -> str:
    """A snapshot visit's person key: a new virtual openid each visit."""
    return _SNAPSHOT_PREFIX + token


def is_snapshot(person_key: str) -> bool:
    return person_key.startswith(_SNAPSHOT_PREFIX)


def _wechat_id(*parts: str) -> str:
    digest = hashlib.sha256(":".join(parts).encode("utf-8")).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode("ascii")[:27]


def openid_for(app_id: str, person_key: str) -> str:
    """28 characters, stable per (app, person), like WeChat's."""
    return _wechat_id("openid", app_id, person_key)


def unionid_for(person_key: str) -> str:
    """Snapshot visitors share one virtual unionid, unlike any real person's (sites that
    trusted it found many openids on one unionid)."""
    if is_snapshot(person_key):
        return _wechat_id("unionid", OPEN_PLATFORM_ACCOUNT, "snapshot", "virtual")
    return _wechat_id("unionid", OPEN_PLATFORM_ACCOUNT, person_key)


def avatar_for(nickname: str) -> str:
    """A small SVG avatar as a data URI (works without any host name)."""
    initial = (nickname.strip() or "?")[0]
    hue = int(hashlib.sha256(nickname.encode("utf-8")).hexdigest()[:2], 16) * 360 // 256
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="132" height="132">'
        f'<rect width="132" height="132" fill="hsl({hue},55%,55%)"/>'
        '<text x="66" y="86" font-size="64" text-anchor="middle" fill="#fff" '
        f'font-family="sans-serif">{_xml_escape(initial)}</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: WeChat's grey default avatar, as WeChat sends it (see ``flask_wechat_qr.placeholders``).
PLACEHOLDER_AVATAR = ("https://thirdwx.qlogo.cn/mmopen/vi_32/POgEwh4mIHO4nibH0KlMECNjjGxQUq24"
                      "ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg/132")
