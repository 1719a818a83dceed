"""Which language a page is shown in, and translating the extension's own messages.

Every page and message exists in English (the msgids) and Simplified Chinese. The catalog
is the extension's own gettext domain, ``flask_wechat_qr``, loaded with Babel directly: it
works whether or not the host uses Flask-Babel, and never mixes with the host's catalog.

The language of a request is, in this order: what the host's
:meth:`AccountAdapter.select_locale` says; else Flask-Babel's locale when the host set up
Flask-Babel, unless the browser prefers a language of ours the host's Babel has no catalog
for (then the browser's); else the browser's ``Accept-Language``; else
``WECHAT_QR_DEFAULT_LOCALE``. It is chosen once per request.

To re-extract the messages after changing them (Babel 2.18+, which reads the keywords
from ``babel.cfg``), from the repository's root; translate what ``update`` added to the
``.po``, then compile (``tests/test_i18n.py`` checks both)::

    mkdir -p build && pybabel extract -w 100 -F babel.cfg -o build/flask_wechat_qr.pot .
    pybabel update -w 100 -D flask_wechat_qr -i build/flask_wechat_qr.pot \\
        -d flask_wechat_qr/translations -l zh_CN
    pybabel compile -D flask_wechat_qr -d flask_wechat_qr/translations -l zh_CN
"""

from __future__ import annotations

import functools
import typing as t
from gettext import NullTranslations
from pathlib import Path

from flask import Blueprint, current_app, has_app_context, has_request_context, request
from markupsafe import Markup, escape
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from .context import this_app

#: The gettext domain of the extension's catalog (``<locale>/LC_MESSAGES/<domain>.mo``).
DOMAIN = "flask_wechat_qr"
TRANSLATIONS_DIRECTORY = Path(__file__).with_name("translations")
#: The languages the extension speaks; ``en`` is the msgids themselves.
SUPPORTED_LOCALES = ("en", "zh_CN")
FALLBACK_LOCALE = "en"
#: Where the chosen language of a request is kept (one WSGI environ per request).
_ENVIRON_KEY = "flask_wechat_qr.locale"

#: Our language -> WeChat's QR page ``lang`` and ``/sns/userinfo`` ``lang``.
QR_PAGE_LANGS = {"zh_CN": "cn", "en": "en"}
USERINFO_LANGS = {"zh_CN": "zh_CN", "en": "en"}


def normalize_locale(value: object) -> str | None:
    """The supported locale for a language tag (``zh-CN``, ``zh_Hant_TW``, ``en-GB``, a
    ``babel.Locale``), or ``None``. Any Chinese is ``zh_CN``: only Simplified is shipped,
    and it serves readers of Traditional better than English does."""
    if value is None:
        return None
    language = str(value).strip().replace("-", "_").split("_", 1)[0].lower()
    if language == "zh":
        return "zh_CN"
    if language == "en":
        return "en"
    return None


def default_locale() -> str:
    """``WECHAT_QR_DEFAULT_LOCALE`` of the current app (also outside a request)."""
    if not has_app_context():
        return FALLBACK_LOCALE
    # init_app checked the key (and filled in its default); the standalone sandbox has none.
    return normalize_locale(current_app.config.get("WECHAT_QR_DEFAULT_LOCALE")) or (
        FALLBACK_LOCALE)


#: Longest ``Accept-Language`` whose language is remembered (browsers send 10-60 bytes).
MAX_REMEMBERED_ACCEPT_LANGUAGE = 200


#: How much of an ``Accept-Language`` is read: its languages up to the last comma within
#: this many characters. A server that joins repeated header lines (gunicorn) hands the
#: app one of any length, and parsing 730 KB of it took half a second of CPU per page.
MAX_READ_ACCEPT_LANGUAGE = 500


def browser_locale() -> str | None:
    """The browser's most preferred supported language (``Accept-Language``, by quality)."""
    header = request.headers.get("Accept-Language")
    if header is not None and len(header) > MAX_REMEMBERED_ACCEPT_LANGUAGE:
        return _locale_of_accept_language(header)
    return _remembered_locale_of_accept_language(header)


def _locale_of_accept_language(header: str | None) -> str | None:
    """The language of ours an ``Accept-Language`` prefers (of its first languages, see
    :data:`MAX_READ_ACCEPT_LANGUAGE`)."""
    if header is not None and len(header) > MAX_READ_ACCEPT_LANGUAGE:
        header = header[:header.rfind(",", 0, MAX_READ_ACCEPT_LANGUAGE + 1) + 1]
    for value, quality in parse_accept_header(header, LanguageAccept):  # by quality, order
        if quality > 0:
            locale = normalize_locale(value)
            if locale is not None:
                return locale
    return None


#: :func:`_locale_of_accept_language`, remembered: a browser's header is one of a few
#: hundred, and parsing one costs 15-20 us on every page and login.
_remembered_locale_of_accept_language = functools.lru_cache(maxsize=256)(
    _locale_of_accept_language)


def select_locale() -> str:
    """Choose the language of this request: host hook, Flask-Babel, browser, default."""
    # The app's runtime, read without importing it (it sits floors above this module).
    extensions = this_app().extensions
    runtime = extensions.get("wechat_qr")
    if runtime is not None:
        locale = normalize_locale(runtime.adapter.select_locale())
        if locale is not None:
            return locale
    if "babel" in extensions:
        return _flask_babel_locale()
    return browser_locale() or default_locale()


def _flask_babel_locale() -> str:
    """Flask-Babel's locale, where the host's Babel could have chosen otherwise.

    The host's Babel chooses among the languages it has catalogs for. Where it offers the
    browser's preferred language of ours and chose another, that was the host's decision
    (say, the user's profile). Where it cannot offer that language at all (a site in
    English and Spanish), its choice is only a fallback: the browser's language is shown,
    since the extension ships that catalog. A language we do not speak gets the browser's
    next preference, else the default.
    """
    import flask_babel

    chosen = normalize_locale(flask_babel.get_locale())
    wanted = browser_locale()
    if wanted is None or wanted == chosen:
        return chosen or default_locale()
    if chosen is not None and wanted in _languages_of_flask_babel():
        return chosen
    return wanted


def _languages_of_flask_babel() -> set[str | None]:
    """The languages of ours the host's Flask-Babel can choose: those its ``LANGUAGES``
    setting offers, where it has one (Flask-AppBuilder's, and the Flask Mega-Tutorial's
    convention: the catalogs a framework ships are not all offered), else those it has
    catalogs for (and its default)."""
    import flask_babel

    offered = current_app.config.get("LANGUAGES")
    if isinstance(offered, (list, tuple, set, frozenset, dict)) and offered and all(
            isinstance(language, str) for language in offered):
        return {normalize_locale(language) for language in offered}
    return {normalize_locale(locale)
            for locale in flask_babel.get_babel().instance.list_translations()}


def get_locale() -> str:
    """The language of the current request (chosen once), or the default outside one."""
    if not has_request_context():
        return default_locale()
    environ = request.environ
    locale = environ.get(_ENVIRON_KEY)
    if locale is None:
        locale = environ[_ENVIRON_KEY] = select_locale()
    return t.cast(str, locale)


def keep_to_the_browsers_locale() -> None:
    """Where the request's language is not chosen yet, choose the browser's (or the
    default), asking neither the host's ``select_locale`` nor Flask-Babel's selector: for a
    page drawn while the database is out of reach (either may read the logged-in user)."""
    if has_request_context() and request.environ.get(_ENVIRON_KEY) is None:
        request.environ[_ENVIRON_KEY] = browser_locale() or default_locale()


def set_request_locale(locale: str) -> None:
    """Fix the language of the current request (the sandbox: WeChat's ``lang`` parameter)."""
    request.environ[_ENVIRON_KEY] = normalize_locale(locale) or default_locale()


@functools.cache
def translations(locale: str) -> NullTranslations:
    """The extension's catalog for ``locale`` (loaded once per process)."""
    if locale == FALLBACK_LOCALE:
        return NullTranslations()  # the msgids are English
    from babel.support import Translations  # on first use: importing it costs ~15 ms

    return Translations.load(str(TRANSLATIONS_DIRECTORY), [locale], domain=DOMAIN)


def gettext(message: str, **params: t.Any) -> str:
    """``message`` in the request's language; ``%(name)s`` placeholders filled from ``params``."""
    text = translations(get_locale()).gettext(message)
    return text % params if params else text


def ngettext(singular: str, plural: str, num: int, **params: t.Any) -> str:
    """Like :func:`gettext`, for a count ``num`` (also available as ``%(num)d``)."""
    params.setdefault("num", num)
    return translations(get_locale()).ngettext(singular, plural, num) % params


class LazyText:
    """A message translated each time it is shown, in the language of that moment.

    For class-level messages (error titles) and messages made before the language is
    known. ``str()`` and templates give the translation; :meth:`english` the English text
    that logs and ``str(error)`` keep, since logs are for the site's operators.
    """

    __slots__ = ("num", "params", "plural", "singular")

    def __init__(self, singular: str, plural: str | None = None, num: int | None = None,
                 params: dict[str, t.Any] | None = None) -> None:
        self.singular = singular
        self.plural = plural
        self.num = num
        self.params = params or {}

    def translate(self, locale: str | None = None) -> str:
        catalog = translations(locale or get_locale())
        if self.plural is None:
            text = catalog.gettext(self.singular)
        else:
            text = catalog.ngettext(self.singular, self.plural, t.cast(int, self.num))
        return text % self.params if self.params else text

    def english(self) -> str:
        return self.translate(FALLBACK_LOCALE)

    def __str__(self) -> str:
        return self.translate()

    def __html__(self) -> Markup:
        return escape(self.translate())

    def __format__(self, spec: str) -> str:
        return format(self.translate(), spec)

    def __repr__(self) -> str:
        return f"LazyText({self.english()!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyText):
            return self.english() == other.english()
        if isinstance(other, str):
            return self.translate() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.english())

    def __contains__(self, part: str) -> bool:
        return part in self.translate()

    def __len__(self) -> int:
        return len(self.translate())

    def __add__(self, other: str) -> str:
        return self.translate() + other

    def __radd__(self, other: str) -> str:
        return other + self.translate()


def lazy_gettext(message: str, **params: t.Any) -> LazyText:
    """:func:`gettext`, translated when shown rather than now."""
    return LazyText(message, params=params)


def lazy_ngettext(singular: str, plural: str, num: int, **params: t.Any) -> LazyText:
    """:func:`ngettext`, translated when shown rather than now."""
    params.setdefault("num", num)
    return LazyText(singular, plural, num, params)


def in_english(message: object) -> str:
    """The English text of a message (for logs and ``str(error)``)."""
    return message.english() if isinstance(message, LazyText) else str(message)


def qr_page_lang() -> str:
    """The page's language as WeChat's QR page ``lang`` (a connection's own setting wins,
    in the client)."""
    return QR_PAGE_LANGS[get_locale()]


def userinfo_lang() -> str:
    """The page's language as ``/sns/userinfo``'s ``lang`` (a connection's own setting
    wins, in the client)."""
    return USERINFO_LANGS[get_locale()]


def display_name(connection: t.Any) -> str:
    """A connection's display name; the default one, "WeChat", in the page's language."""
    return str(lazy_display_name(connection))


def lazy_display_name(connection: t.Any) -> str | LazyText:
    """:func:`display_name` for text made before the language is known (the sandbox's
    application names, made at start-up): a configured name stays as given."""
    name = str(connection.display_name)
    return lazy_gettext("WeChat") if name == "WeChat" else name


def sentence_gap() -> str:
    """What goes between two sentences of a page, or a sentence and its link: a space, but
    none in Chinese, whose full-width 。and ？ carry their own (a space after them shows as
    a stray gap)."""
    return "" if get_locale().startswith("zh") else " "


#: Template globals of the extension's and the sandbox's pages, also for hosts that
#: override the templates. Ours, so a host's own ``_``/``gettext`` stay untouched.
TEMPLATE_GLOBALS: dict[str, t.Callable[..., t.Any]] = {
    "wechat_qr_gettext": gettext,
    "wechat_qr_ngettext": ngettext,
    "wechat_qr_locale": get_locale,
    "wechat_qr_display_name": display_name,
    "wechat_qr_gap": sentence_gap,
}


def register_template_globals(blueprint: Blueprint) -> None:
    """Translation in the templates of ``blueprint``'s app without the host's
    ``jinja2.ext.i18n``, and never through its ``_`` (the extension's and the standalone
    sandbox's blueprints both call this)."""
    for name, function in TEMPLATE_GLOBALS.items():
        blueprint.add_app_template_global(function, name)
