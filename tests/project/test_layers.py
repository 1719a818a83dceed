"""The package's floor plan, read from its imports: no circle, and each room keeps to its job
(the protocol client knows nothing of users, the policy nothing of HTTP, nothing reaches up
into the views; the sandbox and the example site live on the public API)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import ROOT

import flask_wechat_qr
import flask_wechat_qr.sandbox

PACKAGE = ROOT / "flask_wechat_qr"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every import statement of
    ``module``, at any depth (inside functions and ``if TYPE_CHECKING`` blocks too)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def _edges(module: str) -> set[str]:
    """The package's modules that ``module`` imports (a name that is a submodule counts as
    that submodule; the implicit import of parent packages does not count)."""
    edges = set()
    for base, names, _line in _imports(module):
        submodules = [f"{base}.{name}" for name in names if f"{base}.{name}" in MODULES]
        edges.update(submodules)
        if base in MODULES and (len(submodules) < len(names) or not names):
            edges.add(base)
    edges.discard(module)
    return edges


GRAPH = {module: _edges(module) for module in MODULES}


def _cycle() -> list[str] | None:
    """One import circle of the package, or ``None``."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                return [*stack[stack.index(target):], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(GRAPH):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_graph_is_read() -> None:
    """The checks below see real arrows (a reader that finds none would pass them all)."""
    assert "flask_wechat_qr.flow" in GRAPH["flask_wechat_qr.views"]
    assert "flask_wechat_qr.errors" in GRAPH["flask_wechat_qr.i18n"] or \
        "flask_wechat_qr.i18n" in GRAPH["flask_wechat_qr.errors"]
    assert sum(len(targets) for targets in GRAPH.values()) > 60


def test_the_package_has_no_import_cycle() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_the_cycle_finder_finds_a_planted_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GRAPH, "flask_wechat_qr.urls",
                        GRAPH["flask_wechat_qr.urls"] | {"flask_wechat_qr.views"})
    cycle = _cycle()
    assert cycle is not None and cycle[0] == cycle[-1]


def _reaches(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


USERS_AND_PAGES = {"adapter", "association", "binding", "flow", "delivery", "views",
                   "login_state", "models", "runtime", "extension"}


@pytest.mark.parametrize("module", ["client", "id_token"])
def test_the_protocol_knows_nothing_of_users_or_pages(module: str) -> None:
    reached = {name.rpartition(".")[2] for name in _reaches(f"flask_wechat_qr.{module}")}
    assert not reached & USERS_AND_PAGES, reached & USERS_AND_PAGES


HTTP_NAMES = {"request", "Response", "redirect", "render_template", "url_for", "jsonify",
              "make_response", "abort"}


@pytest.mark.parametrize("module", ["association", "binding", "flow", "adapter", "login_state"])
def test_the_policy_and_the_flow_know_no_request_or_response(module: str) -> None:
    taken = {name for base, names, _ in _imports(f"flask_wechat_qr.{module}")
             if base in ("flask", "werkzeug.wrappers") for name in names}
    assert not taken & HTTP_NAMES, taken & HTTP_NAMES


def test_nothing_reaches_up_into_the_views() -> None:
    importers = {module for module, targets in GRAPH.items()
                 if "flask_wechat_qr.views" in targets}
    assert importers == {"flask_wechat_qr.extension"}


def test_the_flow_does_not_reach_its_caller() -> None:
    reached = _reaches("flask_wechat_qr.flow")
    assert not reached & {"flask_wechat_qr.delivery", "flask_wechat_qr.views",
                          "flask_wechat_qr.runtime", "flask_wechat_qr.extension"}


#: Ground-floor helpers (``browsers``: the User-Agent's kind of browser, stdlib only; the
#: sandbox's QR page offers a phone what works on one; ``column_types``: SQLAlchemy's types
#: as every database stores them alike, for the sandbox's tables too; ``storable``: text as
#: a MySQL column or connection can keep it, for the nickname a tester types).
SANDBOX_MAY_USE = {"flask_wechat_qr.i18n", "flask_wechat_qr.urls", "flask_wechat_qr.redact",
                   "flask_wechat_qr.purge", "flask_wechat_qr.browsers",
                   "flask_wechat_qr.column_types", "flask_wechat_qr.storable",
                   "flask_wechat_qr.transactions", "flask_wechat_qr.model_base"}


def test_the_sandbox_uses_only_ground_floor_helpers() -> None:
    used = {target for module, targets in GRAPH.items()
            if module.startswith("flask_wechat_qr.sandbox") for target in targets
            if not target.startswith("flask_wechat_qr.sandbox")}
    assert used <= SANDBOX_MAY_USE, used - SANDBOX_MAY_USE


def test_the_example_site_uses_only_public_names() -> None:
    public = {"flask_wechat_qr": set(flask_wechat_qr.__all__),
              "flask_wechat_qr.sandbox": set(flask_wechat_qr.sandbox.__all__)}
    seen = 0
    for path in sorted((ROOT / "example_app").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
                assert not [n for n in names if n.startswith("flask_wechat_qr.")], path
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "flask_wechat_qr":
                seen += 1
                assert node.attr in public["flask_wechat_qr"], f"{path.name}:{node.lineno}"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "flask_wechat_qr"):
                seen += 1
                assert node.module in public, f"{path.name}:{node.lineno} {node.module}"
                private = {alias.name for alias in node.names} - public[node.module]
                assert not private, f"{path.name}:{node.lineno} {sorted(private)}"
    assert seen >= 4
