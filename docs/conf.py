"""Sphinx configuration of Flask-WeChat-QR's documentation.

Builds offline: only Sphinx's own extensions and its bundled ``alabaster`` theme, no
intersphinx. ``tests/test_docs.py`` builds it with ``-W`` (every warning is an error).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The package is importable from a checkout even when it is not installed.
sys.path.insert(0, str(ROOT))

import flask_wechat_qr  # noqa: E402

project = "Flask-WeChat-QR"
author = "The Flask-WeChat-QR authors"
copyright = "Flask-WeChat-QR authors, BSD-3-Clause"
release = flask_wechat_qr.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
language = "en"
exclude_patterns = ["_build"]
pygments_style = "sphinx"
# Literal blocks written with a bare "::" are shown as they are, not as Python.
highlight_language = "text"

# -- autodoc -------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True

# -- HTML ----------------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"Flask-WeChat-QR {release}"
html_theme_options = {
    "description": "Log in with WeChat (QR code on PC) for Flask",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_sidebars = {
    "**": ["about.html", "navigation.html", "relations.html", "searchbox.html"],
}
html_show_sourcelink = False


# -- the configuration reference, generated from the settings table ------------------


def _literal(value):  # type: ignore[no-untyped-def]
    """A default as Python source, strings in double quotes (as the docs write them)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        items = [_literal(item) for item in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return repr(value)


def settings_reference(topic):  # type: ignore[no-untyped-def]
    """The ``.. setting::`` entries of one docs section (a ``topic`` of the settings table):
    key, default, connection-dict key and one-line doc, all read from
    :data:`flask_wechat_qr.settings.SETTINGS`."""
    from flask_wechat_qr.settings import SETTINGS, TOPICS

    if topic not in TOPICS:
        raise ValueError(f"no settings topic {topic!r}; the topics are {', '.join(TOPICS)}")
    lines = []
    for row in SETTINGS:
        if row.topic != topic:
            continue
        if not row.doc.strip():
            raise ValueError(f"{row.key} has no doc in flask_wechat_qr/settings.py")
        lines += [f".. setting:: {row.key}", "", f"   :Default: ``{_literal(row.default)}``"]
        if row.per_connection:
            lines.append(f"   :In a connection dict: ``{row.name}``")
        lines += ["", f"   {row.doc}", ""]
    return "\n".join(lines)


def setup(app):  # type: ignore[no-untyped-def]
    """``.. setting:: WECHAT_QR_X`` declares a configuration key; ``:setting:`WECHAT_QR_X```
    links to it, and a link to an undeclared key is a warning (so a typo fails the build).
    ``.. wechat-qr-settings:: TOPIC`` writes the declarations of one topic from the settings
    table, and a key that no page declares is a warning too."""
    from docutils.statemachine import StringList
    from sphinx.roles import XRefRole
    from sphinx.util import logging
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    from flask_wechat_qr.settings import SETTINGS

    class SettingsReference(SphinxDirective):
        required_arguments = 1

        def run(self):  # type: ignore[no-untyped-def]
            from docutils import nodes

            try:
                text = settings_reference(self.arguments[0])
            except ValueError as exc:
                raise self.error(str(exc)) from None
            container = nodes.container()
            source = StringList(text.splitlines(), source=self.get_source_info()[0])
            nested_parse_with_titles(self.state, source, container)
            return container.children

    def every_setting_declared(app, env):  # type: ignore[no-untyped-def]
        declared = {name for kind, name in env.get_domain("std").objects if kind == "setting"}
        for row in SETTINGS:
            if row.key not in declared:
                logging.getLogger(__name__).warning(
                    "%s is in the settings table but on no docs page", row.key)

    app.add_object_type("setting", "setting", indextemplate="pair: %s; configuration key")
    app.add_role_to_domain("std", "setting", XRefRole(warn_dangling=True), override=True)
    app.add_directive("wechat-qr-settings", SettingsReference)
    app.connect("env-check-consistency", every_setting_declared)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
