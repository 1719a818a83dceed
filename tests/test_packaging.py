"""The wheel carries everything the package needs at run time (templates, ``py.typed``,
the migrations)."""

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
            "qrcode", "flask-babel"} <= requires


def test_wheel_contains_the_migrations(wheel_names: list[str]) -> None:
    """``env.py``, the script template and every revision: without them ``flask wechat-qr db
    upgrade`` fails on an installed site while it works in a checkout."""
    directory = PACKAGE / "migrations"
    files = [p.relative_to(ROOT).as_posix() for p in directory.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert {"flask_wechat_qr/migrations/env.py", "flask_wechat_qr/migrations/script.py.mako",
            "flask_wechat_qr/migrations/versions/0001_initial.py"} <= set(files)
    missing = [f for f in files if f not in wheel_names]
    assert missing == []


def test_migrations_load_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    """Alembic finds the revisions in the unpacked wheel (not only in the source tree)."""
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    code = ("from flask_wechat_qr import migrations; "
            "print(migrations.DIRECTORY); print(migrations.head_revision())")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(unpacked)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    directory, head = result.stdout.split()
    assert Path(directory).is_relative_to(unpacked)
    assert head == "0001"


def test_wheel_requires_flask_migrate(wheel: Path, wheel_names: list[str]) -> None:
    metadata = next(n for n in wheel_names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(metadata).decode("utf-8")
    requires = [line for line in text.splitlines() if line.startswith("Requires-Dist:")
                and "extra ==" not in line]
    assert "Requires-Dist: flask-migrate>=4.0" in requires


def test_wheel_contains_the_translations(wheel_names: list[str]) -> None:
    """The Chinese catalog, compiled (what runs) and its source."""
    catalog = "flask_wechat_qr/translations/zh_CN/LC_MESSAGES/flask_wechat_qr"
    assert f"{catalog}.mo" in wheel_names
    assert f"{catalog}.po" in wheel_names


def test_translations_load_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    code = ("from flask_wechat_qr import i18n; "
            "print(i18n.TRANSLATIONS_DIRECTORY); print(i18n.translations('zh_CN').gettext("
            "'Try again'))")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=60,
        check=False, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(unpacked),
                          "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    directory, text = result.stdout.decode("utf-8").split()
    assert Path(directory).is_relative_to(unpacked)
    assert text == "重试"
