"""The site in English and Simplified Chinese, by the browser's ``Accept-Language``.

The site's messages are English msgids in its own gettext domain, ``example_app``, loaded
with Babel directly (a dependency of the extension already): the quick start needs nothing
more, and the catalog never mixes with the extension's. The site tells the extension the
language it chose (:meth:`SiteAccounts.select_locale <example_app.models.SiteAccounts>`), so
the extension's pages inside the site's layout always speak the same language as the rest.

After changing a message, from the repository's root (``tests/project/test_example_app.py``
checks that the catalog is complete and compiled)::

    mkdir -p build && pybabel extract -F example_app/babel.cfg -o build/example_app.pot .
    pybabel update -D example_app -i build/example_app.pot -d example_app/translations -l zh_CN
    pybabel compile -D example_app -d example_app/translations -l zh_CN
"""

from __future__ import annotations

import functools
import typing as t
from gettext import NullTranslations
from pathlib import Path

from babel.support import Translations
from flask import Flask, current_app, has_request_context, request
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

DOMAIN = "example_app"
TRANSLATIONS_DIRECTORY = Path(__file__).with_name("translations")
#: ``en`` is the msgids themselves.
SUPPORTED_LOCALES = ("en", "zh_CN")
FALLBACK_LOCALE = "en"
_ENVIRON_KEY = "example_app.locale"
#: How much of ``Accept-Language`` is read (browsers send 10-60 characters): a server that
#: joins repeated header lines (gunicorn) gives the app one of any length, and parsing all of
#: it would cost a page a second of CPU per megabyte.
MAX_READ_ACCEPT_LANGUAGE = 500


def supported_locale(tag: object) -> str | None:
    """The site's language for a tag like ``zh-CN``, ``zh-TW`` or ``en-GB``, else ``None``.
    Any Chinese gets Simplified Chinese: it serves a Traditional reader better than English."""
    language = str(tag or "").strip().replace("-", "_").split("_", 1)[0].lower()
    return {"zh": "zh_CN", "en": "en"}.get(language)


def _choose() -> str:
    """The browser's most preferred language the site speaks, else the configured default
    (``WECHAT_QR_DEFAULT_LOCALE``, which the extension uses for such a browser too)."""
    header = request.headers.get("Accept-Language", "")
    if len(header) > MAX_READ_ACCEPT_LANGUAGE:  # its first languages, up to a comma
        header = header[:header.rfind(",", 0, MAX_READ_ACCEPT_LANGUAGE + 1) + 1]
    for tag, quality in parse_accept_header(header, LanguageAccept):  # by quality, order
        locale = supported_locale(tag) if quality > 0 else None
        if locale is not None:
            return locale
    return supported_locale(current_app.config.get("WECHAT_QR_DEFAULT_LOCALE")) or (
        FALLBACK_LOCALE)


def get_locale() -> str:
    """The language of this request (chosen once), or English outside a request."""
    if not has_request_context():
        return FALLBACK_LOCALE
    locale = request.environ.get(_ENVIRON_KEY)
    if locale is None:
        locale = request.environ[_ENVIRON_KEY] = _choose()
    return t.cast(str, locale)


def html_lang() -> str:
    """The page's language as an HTML ``lang`` value (``zh-CN``, ``en``)."""
    return get_locale().replace("_", "-")


@functools.cache
def translations(locale: str) -> NullTranslations:
    """The site's catalog for ``locale``, loaded once per process."""
    if locale == FALLBACK_LOCALE:
        return NullTranslations()
    return Translations.load(str(TRANSLATIONS_DIRECTORY), [locale], domain=DOMAIN)


def gettext(message: str, **params: t.Any) -> str:
    """``message`` in the request's language, ``%(name)s`` placeholders filled in."""
    text = translations(get_locale()).gettext(message)
    return text % params if params else text


def ngettext(singular: str, plural: str, num: int, **params: t.Any) -> str:
    """:func:`gettext` for a count ``num`` (also available as ``%(num)d``)."""
    params.setdefault("num", num)
    return translations(get_locale()).ngettext(singular, plural, num) % params


def gettext_noop(message: str) -> str:
    """Marks a message for the catalog where it is translated later (Flask-Login's)."""
    return message


def _template_gettext(message: str) -> str:
    # Jinja's "newstyle" gettext fills in the placeholders itself, escaping them.
    return translations(get_locale()).gettext(message)


def _template_ngettext(singular: str, plural: str, num: int) -> str:
    return translations(get_locale()).ngettext(singular, plural, num)


def init_app(app: Flask) -> None:
    """``_``, ``gettext``, ``ngettext`` and ``{% trans %}`` in the site's templates, with
    ``site_lang()`` (the layout's ``<html lang>``) and ``connection_name(conn)``. The
    extension's templates use their own ``wechat_qr_gettext``: this does not touch them."""
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        _template_gettext, _template_ngettext, newstyle=True)
    app.add_template_global(html_lang, "site_lang")
    app.add_template_global(connection_name, "connection_name")


def connection_name(connection: t.Any) -> str:
    """A WeChat connection's display name; the default one, "WeChat", in the page's language
    (a name the site configured is shown as configured)."""
    name = str(connection.display_name)
    return gettext("WeChat") if name == "WeChat" else name
