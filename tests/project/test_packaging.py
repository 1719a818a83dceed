"""The wheel carries everything the package needs at run time (templates, ``py.typed``,
the migrations)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from support import ROOT

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


#: Imported only when the host has set them up (``"babel"`` / ``"csrf"`` in
#: ``app.extensions``): never a dependency of the extension.
PROBED = {"flask_babel", "flask_wtf"}
#: Required although nothing imports it: the security floor of what Flask renders the
#: extension's templates with.
FLOOR_ONLY = {"jinja2"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_requires(wheel: Path, wheel_names: list[str]) -> dict[str, str]:
    """The wheel's non-extra ``Requires-Dist`` lines: normalized name -> the whole line."""
    metadata = [n for n in wheel_names if n.endswith(".dist-info/METADATA")]
    assert len(metadata) == 1
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(metadata[0]).decode("utf-8")
    assert "Name: Flask-WeChat-QR" in text
    lines = [line.split(":", 1)[1].strip() for line in text.splitlines()
             if line.startswith("Requires-Dist:") and "extra ==" not in line]
    return {_normalized(re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0]): line
            for line in lines}


def _imported_modules() -> set[str]:
    """Top-level names of every module the package imports (at module level or inside a
    function), standard library and the package itself left out."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "flask_wechat_qr"}


def test_wheel_requires_exactly_what_the_package_imports(
    wheel: Path, wheel_names: list[str]
) -> None:
    """Every distribution the package imports is required; nothing else is, but the
    floor-only ones; what is only probed for is not."""
    requires = _runtime_requires(wheel, wheel_names)
    distributions = packages_distributions()
    imported = _imported_modules()
    assert {"flask", "authlib", "requests", "alembic", "babel"} <= imported
    assert PROBED <= imported
    needed = {_normalized(distributions[module][0]) for module in imported - PROBED}
    floors = {_normalized(distributions[module][0]) for module in FLOOR_ONLY}
    assert set(requires) == needed | floors
    probed = {_normalized(distributions[module][0]) for module in PROBED}
    assert not probed & set(requires)


def test_every_runtime_requirement_has_a_lower_bound(wheel: Path,
                                                     wheel_names: list[str]) -> None:
    for line in _runtime_requires(wheel, wheel_names).values():
        assert ">=" in line, line


def test_wheel_contains_the_migrations(wheel_names: list[str]) -> None:
    """``env.py``, the script template and every revision: without them ``flask wechat-qr db
    upgrade`` fails on an installed site while it works in a checkout."""
    directory = PACKAGE / "migrations"
    files = [p.relative_to(ROOT).as_posix() for p in directory.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert {"flask_wechat_qr/migrations/env.py", "flask_wechat_qr/migrations/script.py.mako",
            "flask_wechat_qr/migrations/versions/0001_initial.py",
            "flask_wechat_qr/migrations/versions/0002_bind_attempt_account.py"} <= set(files)
    missing = [f for f in files if f not in wheel_names]
    assert missing == []


def test_migrations_load_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    """Alembic finds the revisions in the unpacked wheel (not only in the source tree)."""
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    code = ("import flask_wechat_qr; from flask_wechat_qr import migrations; "
            "print(flask_wechat_qr.__file__); print(migrations.head_revision())")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(unpacked)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    directory, head = result.stdout.split()
    assert Path(directory).is_relative_to(unpacked)
    assert head == "0006"


def test_wheel_requires_alembic_not_flask_migrate(wheel: Path,
                                                  wheel_names: list[str]) -> None:
    """The migrations run on Alembic itself; Flask-Migrate is the host's own choice."""
    requires = _runtime_requires(wheel, wheel_names)
    assert requires["alembic"] == "alembic>=1.9"
    assert "flask-migrate" not in requires
    assert "flask-babel" not in requires


def test_wheel_contains_the_translations(wheel_names: list[str]) -> None:
    """The Chinese catalog, compiled (what runs) and its source."""
    catalog = "flask_wechat_qr/translations/zh_CN/LC_MESSAGES/flask_wechat_qr"
    assert f"{catalog}.mo" in wheel_names
    assert f"{catalog}.po" in wheel_names


def test_translations_load_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    code = ("import flask_wechat_qr; from flask_wechat_qr import i18n; "
            "print(flask_wechat_qr.__file__); print(i18n.translations('zh_CN').gettext("
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
