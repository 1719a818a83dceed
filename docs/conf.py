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


def setup(app):  # type: ignore[no-untyped-def]
    """``.. setting:: WECHAT_QR_X`` declares a configuration key; ``:setting:`WECHAT_QR_X```
    links to it, and a link to an undeclared key is a warning (so a typo fails the build)."""
    from sphinx.roles import XRefRole

    app.add_object_type("setting", "setting", indextemplate="pair: %s; configuration key")
    app.add_role_to_domain("std", "setting", XRefRole(warn_dangling=True), override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
