"""Which layout the extension's pages extend: ``wechat_qr/base.html``, or, where a host's
override of it would drop a page's content, the extension's own ``wechat_qr/standalone.html``.

A host puts the pages into its layout by overriding ``wechat_qr/base.html`` with a template
that extends the layout and maps the extension's blocks onto the layout's. A child template's
block shows only where its parent renders a block of that name, so an override that maps
``wechat_qr_content`` into a block the layout does not have renders an empty page (a QR page
with no QR code, a bind page with no form) and Jinja says nothing. This module reads the
templates (not the rendered pages) to find that out, once per app; the pages then use the
extension's own layout, and the log says which block is missing and how to fix it. A dropped
``wechat_qr_title`` is only a warning: the page still works.
"""

from __future__ import annotations

import logging
import typing as t
import weakref

from flask import Flask, current_app
from jinja2 import Environment, TemplateNotFound, nodes

log = logging.getLogger("flask_wechat_qr")

#: The template every page extends, which a host may override.
BASE = "wechat_qr/base.html"
#: The extension's own small page, which a host does not override.
STANDALONE = "wechat_qr/standalone.html"
#: Templates nested deeper than this are not followed (a loop of ``extends``).
_MAX_DEPTH = 20

_verdicts: weakref.WeakKeyDictionary[Flask, str] = weakref.WeakKeyDictionary()
#: The names of the extension's templates (and of a host's overrides of them).
OWN_TEMPLATES = "wechat_qr/"


class EscapingOwnPages:
    """Jinja's ``autoescape`` for an app's environment: the extension's templates (a host's
    overrides of them included) always escape; every other template as the site said. A
    site that turned ``autoescape`` off put a WeChat nickname, anyone's to choose, into the
    bind page as HTML, and a business front end's ``state`` into the page that posts it."""

    def __init__(self, sites: bool | t.Callable[[str | None], bool]) -> None:
        self.sites = sites

    def __call__(self, name: str | None) -> bool:
        if name is not None and name.startswith(OWN_TEMPLATES):
            return True
        return self.sites(name) if callable(self.sites) else bool(self.sites)


def escape_own_pages(env: Environment) -> None:
    """Make ``env`` escape the extension's pages whatever the site set (at ``init_app``,
    and again at a login's request where the site set ``autoescape`` since)."""
    env.autoescape = EscapingOwnPages(env.autoescape)
    if env.cache is not None:
        env.cache.clear()  # compiled without: a host page that imported the macros


def page_layout() -> str:
    """The template the current app's extension pages extend (a template global)."""
    app = t.cast("t.Any", current_app)._get_current_object()
    layout = _verdicts.get(app)
    if layout is None:
        layout = _choose(app.jinja_env)
        if not app.jinja_env.auto_reload:  # in development, a fixed template counts at once
            _verdicts[app] = layout
    return layout


def _choose(env: Environment) -> str:
    if renders_block(env, BASE, "wechat_qr_content") is False:
        log.error(
            "Your template %s does not render the block wechat_qr_content: the extension's "
            "pages (QR code, bind form, errors) would be empty, so they use the extension's "
            "own layout instead. Fix: put {%% block wechat_qr_content %%}{%% endblock %%} "
            "inside a block your layout renders, e.g. {%% block content %%}{%% block "
            "wechat_qr_content %%}{%% endblock %%}{%% endblock %%} (docs: templates).", BASE)
        return STANDALONE
    if renders_block(env, BASE, "wechat_qr_title") is False:
        log.warning(
            "Your template %s does not render the block wechat_qr_title: the extension's pages "
            "keep your layout's title. Fix: map it onto your layout's title block, e.g. "
            "{%% block title %%}{%% block wechat_qr_title %%}{%% endblock %%}{%% endblock %%}.",
            BASE)
    return BASE


def renders_block(env: Environment, name: str, block: str, depth: int = 0) -> bool | None:
    """Whether rendering template ``name`` renders a block called ``block`` (its own, or
    one a child defines); ``None`` where the templates cannot tell (a computed parent, a
    template that cannot be loaded or parsed)."""
    if depth > _MAX_DEPTH:
        return None
    try:
        source = env.loader.get_source(env, name)[0] if env.loader else None
        tree = env.parse(source) if source is not None else None
    except TemplateNotFound:
        return None
    except Exception:  # the host's loader or template syntax: rendering will say it better
        return None
    if tree is None:
        return None
    path = _path_to(tree, block)
    parent = next(tree.find_all(nodes.Extends), None)
    if parent is None:
        return path is not None
    if not isinstance(parent.template, nodes.Const):
        return None
    # In a child, only its top-level blocks can show, where the parent renders them.
    outermost = path[0] if path else block
    return renders_block(env, str(parent.template.value), outermost, depth + 1)


def _path_to(node: nodes.Node, block: str, outer: tuple[str, ...] = ()
             ) -> tuple[str, ...] | None:
    """The names of the blocks from the outermost down to ``block``, or ``None``."""
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Block):
            here = (*outer, child.name)
            if child.name == block:
                return here
            found = _path_to(child, block, here)
        else:
            found = _path_to(child, block, outer)
        if found is not None:
            return found
    return None
