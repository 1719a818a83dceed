"""The typing gate: ``mypy --strict`` passes on the package (its configuration in
``pyproject.toml`` kept strict), the protocols the package types users' rows with match the
tables, and a host's adapter type-checks against the public names, typed or not."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import types
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

import flask_wechat_qr
from flask_wechat_qr import protocols
from flask_wechat_qr.models import models_for

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PACKAGE = ROOT / "flask_wechat_qr"
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
#: mypy's cache, kept between runs of this worktree (a cold run takes ~15 s, a warm one ~2 s).
CACHE = Path(tempfile.gettempdir()) / (
    "flask-wechat-qr-mypy-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:12])


def mypy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m mypy`` with the project's configuration, from the project's root."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(CACHE), "--no-color-output", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )


# --- the gate ------------------------------------------------------------------------------


def test_mypy_strict_passes_on_the_package() -> None:
    result = mypy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout


def test_the_gate_is_strict() -> None:
    """The configuration checks the whole package strictly; the overrides only excuse
    libraries that ship no types, they never turn a check off."""
    assert CONFIG["strict"] is True
    assert CONFIG["files"] == ["flask_wechat_qr"]
    assert CONFIG["python_version"] == "3.11"
    for override in CONFIG.get("overrides", []):
        assert set(override) == {"module", "ignore_missing_imports"}, override
        assert not any(m.startswith("flask_wechat_qr") for m in override["module"]), override


IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]+\])?(?P<reason>.*)$")


def test_every_type_ignore_names_its_error_and_why() -> None:
    """A ``# type: ignore`` is kept for a library's own wrong types: with the error code
    and, on the line or the one above, the reason."""
    found = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            match = IGNORE.search(line)
            if match is None:
                continue
            found += 1
            where = f"{path.relative_to(ROOT)}:{number}"
            assert match["codes"], f"{where}: no error code"
            reason = match["reason"].strip(" #") or lines[number - 2].strip().startswith("#")
            assert reason, f"{where}: no reason"
    assert found, "the pattern finds no ignore at all: check it"


# --- the protocols hold to the tables ------------------------------------------------------


def _columns(protocol_name: str) -> dict[str, tuple[type, bool]]:
    """``column -> (Python type, nullable)`` of the mapped class the protocol describes."""
    model = getattr(models_for(SQLAlchemy()), protocol_name)
    return {column.name: (_python_type(column.type), bool(column.nullable))
            for column in model.__table__.columns}


def _python_type(column_type: sa.types.TypeEngine[t.Any]) -> type:
    # A JSON column holds any JSON; the extension's hold WeChat's profile, an object.
    return dict if isinstance(column_type, sa.JSON) else column_type.python_type


def _attributes(protocol: type) -> dict[str, tuple[type, bool]]:
    """``attribute -> (Python type, may be None)`` as the protocol declares them."""
    described = {}
    for name, hint in t.get_type_hints(protocol).items():
        if isinstance(hint, types.UnionType):
            kinds = [arg for arg in t.get_args(hint) if arg is not type(None)]
            assert len(kinds) == 1, (name, hint)
            described[name] = (t.get_origin(kinds[0]) or kinds[0], True)
        else:
            described[name] = (t.get_origin(hint) or hint, False)
    return described


@pytest.mark.parametrize("protocol", [protocols.Identity, protocols.PendingBinding],
                         ids=lambda protocol: protocol.__name__)
def test_each_row_protocol_matches_its_table(protocol: type) -> None:
    """Every column, with its type and whether it may be NULL; nothing the table lacks."""
    assert _attributes(protocol) == _columns(protocol.__name__)


def test_the_user_protocol_asks_nothing_of_a_host_user() -> None:
    """Any object is a user: only the adapter looks inside it."""
    assert not [name for name in vars(protocols.User) if not name.startswith("_")]
    assert t.get_type_hints(protocols.User) == {}


def test_hosts_annotate_with_the_public_identity() -> None:
    assert flask_wechat_qr.Identity is protocols.Identity
    assert "Identity" in flask_wechat_qr.__all__


# --- a host's adapter type-checks ---------------------------------------------------------


HOST = '''\
from __future__ import annotations

import typing as t

from flask_wechat_qr import (
    AccountAdapter, ConnectionSettings, Identity, Resolution, WeChatProfile, WeChatQR)


class User:
    id: int
    nickname: str | None

    def get_id(self) -> str:
        return str(self.id)


class PlainAdapter(AccountAdapter):
    """As the docs' examples: hooks narrowed to the host's user, no type argument."""

    def get_user_id(self, user: User) -> str:
        return str(user.id)

    def load_user(self, user_id: str) -> User | None:
        return None


class TypedAdapter(AccountAdapter[User]):
    def populate_user(self, user: User, connection: ConnectionSettings,
                      profile: WeChatProfile) -> None:
        user.nickname = profile.nickname

    def id_token_claims(self, user: User, connection: ConnectionSettings
                        ) -> dict[str, t.Any]:
        return {"uid": user.id}


def openids(wechat: WeChatQR, user: User) -> list[str]:
    return [identity.openid for identity in wechat.identities_of(user)]


def linked_at(resolution: Resolution) -> str:
    identity: Identity = resolution.identity
    return identity.created_at.isoformat()


WeChatQR(adapter=TypedAdapter())
WeChatQR(adapter=PlainAdapter(), user_model=User)
'''

WRONG_HOST = '''\
from __future__ import annotations

from flask_wechat_qr import AccountAdapter, Identity


class User:
    id: int


class WrongAdapter(AccountAdapter[User]):
    def load_user(self, user_id: str) -> int | None:  # not a User
        return None


def nickname_length(identity: Identity) -> int:
    return len(identity.nickname)  # may be None
'''


def test_a_host_adapter_type_checks_typed_or_not(tmp_path: Path) -> None:
    """A host's adapter checks under ``--strict`` with or without ``AccountAdapter[User]``;
    with it, a hook that breaks the user type is caught, and so is a careless read of an
    identity row."""
    (tmp_path / "host_site.py").write_text(HOST, encoding="utf-8")
    (tmp_path / "wrong_site.py").write_text(WRONG_HOST, encoding="utf-8")
    result = mypy(str(tmp_path / "host_site.py"), str(tmp_path / "wrong_site.py"),
                  env={"MYPYPATH": str(ROOT)})
    output = result.stdout + result.stderr
    assert "host_site.py" not in output, output
    assert result.returncode == 1, output
    assert re.search(r"wrong_site\.py:11: error: .*\[override\]", output), output
    assert re.search(r"wrong_site\.py:16: error: .*\[arg-type\]", output), output
