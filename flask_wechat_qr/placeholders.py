"""What WeChat hands out instead of a person's real profile, in one place.

Since WeChat's 2021 privacy changes some answers carry placeholders: the nickname
"微信用户" ("WeChat user") and a grey default avatar (anonymised profiles: mini programs,
some Official Account and plugin answers), or empty strings. A sync that copied them would
replace a real nickname and avatar with nothing: profile sync (the identity row and the
host's user) keeps what it has instead. Snapshot-mode (快照页) data never gets this far:
those logins are refused outright.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: Nicknames that say nothing about the person (compared after stripping spaces).
PLACEHOLDER_NICKNAMES = frozenset({"微信用户", "WeChat User", "WeChat user", "微信使用者"})

#: The image ids of WeChat's grey default avatar (the path segment before the size, on any
#: ``*.qlogo.cn`` host, at any size: ``/0``, ``/46``, ``/64``, ``/96``, ``/132``).
PLACEHOLDER_AVATAR_IDS = frozenset({
    "POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg",
})


def is_placeholder_nickname(nickname: str | None) -> bool:
    """Whether ``nickname`` is empty or one of WeChat's placeholders."""
    text = (nickname or "").strip()
    return not text or text in PLACEHOLDER_NICKNAMES


def is_placeholder_avatar(url: str | None) -> bool:
    """Whether ``url`` is missing or WeChat's grey default avatar."""
    if not url:
        return True
    segments = [segment for segment in urlsplit(url).path.split("/") if segment]
    return any(segment in PLACEHOLDER_AVATAR_IDS for segment in segments)
