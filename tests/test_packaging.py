"""The wheel carries everything the package needs at run time (templates, ``py.typed``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_wechat_qr"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the source tree.

    Built from a copy so nothing left in ``build/`` or ``*.egg-info`` by earlier builds
    can put files into the wheel that the packaging metadata forgot.
    """
    source = tmp_path_factory.mktemp("source") / "project"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".venv", "venv", "*.db", "instance"))
    outdir = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(outdir.glob("*.whl"))
    assert len(wheels) == 1, wheels
    assert wheels[0].name.lower().startswith("flask_wechat_qr-")
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_contains_every_template(wheel_names: list[str]) -> None:
    templates = sorted(p.name for p in (PACKAGE / "templates" / "wechat_qr").glob("*.html"))
    assert {"base.html", "error.html", "macros.html", "qr.html"} <= set(templates)
    for name in templates:
        assert f"flask_wechat_qr/templates/wechat_qr/{name}" in wheel_names


def test_wheel_contains_py_typed(wheel_names: list[str]) -> None:
    assert "flask_wechat_qr/py.typed" in wheel_names


def test_wheel_contains_every_module(wheel_names: list[str]) -> None:
    modules = [p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts]
    assert "flask_wechat_qr/__init__.py" in modules
    missing = [m for m in modules if m not in wheel_names]
    assert missing == []


def test_wheel_contains_no_tests_or_example(wheel_names: list[str]) -> None:
    top_level = {name.split("/", 1)[0] for name in wheel_names}
    stray = sorted(n for n in top_level if not n.startswith("flask_wechat_qr")
                   and not n.endswith(".dist-info"))
    assert stray == []


def test_wheel_metadata_names_the_runtime_dependencies(wheel: Path,
                                                       wheel_names: list[str]) -> None:
    metadata = [n for n in wheel_names if n.endswith(".dist-info/METADATA")]
    assert len(metadata) == 1
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(metadata[0]).decode("utf-8")
    assert "Name: Flask-WeChat-QR" in text
    requires = {line.split(":", 1)[1].strip().split(";")[0].split(">")[0].split("=")[0]
                .strip().lower()
                for line in text.splitlines() if line.startswith("Requires-Dist:")
                and "extra ==" not in line}
    assert {"flask", "authlib", "requests", "flask-sqlalchemy", "flask-login",
            "qrcode"} <= requires
