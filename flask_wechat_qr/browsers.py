"""Which kind of browser asks to log in, from its User-Agent: the QR code only works on a
computer's browser; inside WeChat the Official Account logs people in; elsewhere on a
phone nothing WeChat offers works by itself.

WeChat's browsers all say ``MicroMessenger/x.y``; its Windows and Mac clients add
``WindowsWechat``/``MacWechat``; WeCom's (企业微信) adds ``wxwork`` and cannot log in with
a personal WeChat account.
"""

from __future__ import annotations

import enum
import functools
import re


class Browser(enum.Enum):
    #: WeChat's own browser on a phone (a link opened from a chat, Moments, a menu)
    WECHAT_PHONE = "wechat_phone"
    #: WeChat's browser in its Windows or Mac client
    WECHAT_DESKTOP = "wechat_desktop"
    #: WeCom's (企业微信) browser
    WECOM = "wecom"
    #: any other browser on a phone or tablet
    PHONE = "phone"
    #: a computer's browser: the QR code is for it
    COMPUTER = "computer"

    #: inside WeChat's browser (on a phone or in its desktop client)
    in_wechat: bool
    #: a phone's browser (WeChat's there too): its own camera cannot scan a QR code it
    #: shows, and desktop WeChat's fast login is not there
    on_phone: bool

    def __init__(self, value: str) -> None:
        # Plain attributes, not properties: read at every login's start and callback.
        self.in_wechat = value in ("wechat_phone", "wechat_desktop")
        self.on_phone = value in ("phone", "wechat_phone")


_WECOM = re.compile(r"\bwxwork/", re.IGNORECASE)
_WECHAT = re.compile(r"\bMicroMessenger/", re.IGNORECASE)
_WECHAT_DESKTOP = re.compile(r"\b(WindowsWechat|MacWechat)\b", re.IGNORECASE)
#: Phones and tablets that announce themselves (an iPad asking for the desktop site does
#: not, and is then a computer: it shows the QR code for another phone to scan).
_PHONE = re.compile(r"Mobi|Android|iPhone|iPad|iPod|HarmonyOS|OpenHarmony|Windows Phone",
                    re.IGNORECASE)


def classify(user_agent: str | None) -> Browser:
    """The kind of browser a User-Agent header names (a computer when it says nothing)."""
    return _classify((user_agent or "")[:1000])


@functools.lru_cache(maxsize=256)
def _classify(text: str) -> Browser:
    """:func:`classify`, remembered: a site sees few distinct User-Agents, and the four
    searches of a desktop browser's (which matches none) cost 15 us on every login start."""
    if _WECOM.search(text):
        return Browser.WECOM
    if _WECHAT.search(text):
        return Browser.WECHAT_DESKTOP if _WECHAT_DESKTOP.search(text) else Browser.WECHAT_PHONE
    if _PHONE.search(text):
        return Browser.PHONE
    return Browser.COMPUTER
