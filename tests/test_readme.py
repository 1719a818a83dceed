"""The README stays true to the code: every setting documented, the Quick start exact, and
valid reStructuredText (PyPI refuses to render a README with errors)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from flask_wechat_qr.settings import CONNECTION_DEFAULTS, GLOBAL_DEFAULTS, PREFIX

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text(encoding="utf-8")

QUICK_START = [
    "python -m pip install -e . && flask --app example_app run",
    "python -m pip install -e '.[test]' && python -m pytest",
]


@pytest.mark.parametrize("name", sorted({**GLOBAL_DEFAULTS, **CONNECTION_DEFAULTS}))
def test_every_setting_is_in_the_configuration_table(name: str) -> None:
    key = PREFIX + name.upper()
    table = README.split("\nConfiguration\n", 1)[1].split("\nRoutes\n", 1)[0]
    assert f"* - ``{key}``" in table, f"{key} is not documented in README.rst"


def test_no_unknown_setting_is_documented() -> None:
    known = {PREFIX + name.upper() for name in {**GLOBAL_DEFAULTS, **CONNECTION_DEFAULTS}}
    documented = set(re.findall(r"\* - ``(WECHAT_QR_[A-Z_]+)``", README))
    assert documented <= known, documented - known


def test_quick_start_is_exactly_two_lines() -> None:
    section = README.split("\nQuick start\n", 1)[1].split("\n\n\n", 1)[0]
    commands = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    assert commands == QUICK_START


def test_readme_and_changes_are_valid_restructuredtext() -> None:
    from docutils import core  # in the test extra: this check always runs

    for path in (ROOT / "README.rst", ROOT / "CHANGES.rst"):
        warnings = io.StringIO()
        core.publish_string(
            path.read_text(encoding="utf-8"), writer="html",
            settings_overrides={"warning_stream": warnings, "report_level": 2,
                                "halt_level": 5, "syntax_highlight": "none"},
        )
        assert warnings.getvalue() == "", f"{path.name}: {warnings.getvalue()}"
