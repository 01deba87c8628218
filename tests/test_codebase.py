"""Guards on the source tree itself, read as text (AST), never imported: fast.

Tests use only public seams (a test that reaches into `_private` state breaks on
every refactoring and proves nothing a user sees), and the package ships no
module that nothing imports.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "exporter"
PROJECT_MODULES = (PACKAGE, "tests")
# The vendor's model module: the fake API is held against it on purpose (STYLE.md).
ALLOWED_PRIVATE = {"notte_sdk._generated"}
# Calls naming an attribute by a string: `monkeypatch.setattr("a._b.c", ...)`, `getattr(x, "_c")`.
BY_NAME = {"setattr", "getattr", "delattr", "hasattr"}
DOTTED = re.compile(r"[A-Za-z_][\w.]*")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def own_private_names(tree: ast.Module) -> set[str]:
    """Private names a module defines itself (functions, classes, names, `self._x`):
    its own code may use them on any of its own objects."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.update([node.attr] if ast.unparse(node.value) in ("self", "cls") else [])
    return {name for name in names if is_private(name)}


def names_private(dotted: str) -> bool:
    return any(map(is_private, dotted.split(".")))


def is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT_MODULES


def is_allowed(dotted: str) -> bool:
    return any(dotted == name or dotted.startswith(name + ".") for name in ALLOWED_PRIVATE)


def private_uses(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, what) for each use of another module's private name in `tree`."""
    own = own_private_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and is_project(node.module or ""):
            module = node.module or ""
            for alias in node.names:
                if is_private(alias.name) or names_private(module):
                    yield node.lineno, f"from {module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_project(alias.name) and names_private(alias.name):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            receiver = ast.unparse(node.value)
            if receiver in ("self", "cls") or node.attr in own:
                continue
            if not is_allowed(f"{receiver}.{node.attr}"):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Call) and called_name(node.func) in BY_NAME:
            for arg in node.args:
                named = arg.value if isinstance(arg, ast.Constant) else None
                if isinstance(named, str) and DOTTED.fullmatch(named) and names_private(named):
                    yield node.lineno, f"{ast.unparse(node.func)}({named!r}, ...)"


def called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def test_no_test_touches_another_modules_private_names() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line, what in private_uses(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == [], "tests must use public seams only:\n" + "\n".join(found)


def test_the_private_name_guard_sees_each_form_of_access() -> None:
    source = """
from exporter.web.http_server import _Handler
import exporter._hidden
app.client._retry
monkeypatch.setattr("exporter.web.http_server._Handler.timeout", 1)
getattr(poller, "_state")
self._own
x.__class__
notte_sdk._generated.models.SessionResponse
from notte_sdk._generated import models
class Local:
    def __init__(self) -> None:
        self._mine = 1
other._mine
"""
    assert [line for line, _ in private_uses(ast.parse(source))] == [2, 3, 4, 5, 6]


def imported_modules(path: Path, name: str) -> Iterator[str]:
    """The package's modules that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up `level - 1` packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        yield from (n for n in names if n.split(".")[0] == PACKAGE)


def dead_modules(root: Path, entry_points: set[str]) -> list[str]:
    """The modules under `root/PACKAGE` that no entry point reaches by imports."""
    modules = {}
    for path in (root / PACKAGE).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    reached: set[str] = set()
    todo = list(entry_points)
    while todo:
        name = todo.pop()
        if name in reached or name not in modules:
            continue
        reached.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:end]) for end in range(1, len(parts))]  # its packages
        todo += imported_modules(modules[name], name)
    return sorted(set(modules) - reached)


def entry_points() -> set[str]:
    """What runs the package: its console scripts and every `python -m` module."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    scripts = {target.split(":")[0] for target in project.get("scripts", {}).values()}
    mains = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / PACKAGE).rglob("__main__.py")
    }
    return scripts | mains


def test_every_module_of_the_package_is_imported_by_it() -> None:
    dead = dead_modules(ROOT, entry_points())
    assert dead == [], f"modules that nothing runs or imports (dead code): {dead}"


def test_the_dead_module_guard_finds_a_module_nothing_imports(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "cli.py": "from exporter import used\nfrom .sub import near\n",
        "used.py": "import exporter.sub.far\n",
        "orphan.py": "import exporter.used\n",
        "sub/__init__.py": "",
        "sub/near.py": "",
        "sub/far.py": "",
        "sub/lost.py": "",
    }
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")
    assert dead_modules(tmp_path, {"exporter.cli"}) == ["exporter.orphan", "exporter.sub.lost"]


# Runtime dependencies the package never imports, and why they are declared anyway.
INDIRECT_DEPENDENCIES = {
    # httpcore imports it on every request to tell asyncio from trio; missing, each
    # request pays for a failed import (a walk of sys.path).
    "sniffio": "httpcore",
}
# Distribution name -> the module it provides, where the two differ.
MODULE_OF = {
    "prometheus-client": "prometheus_client",
    "pydantic-settings": "pydantic_settings",
    "pyyaml": "yaml",
}


def imported_top_level() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / PACKAGE).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported_or_says_who_needs_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0] for spec in project["dependencies"]}
    imported = imported_top_level()
    unused = {
        name
        for name in declared
        if MODULE_OF.get(name, name.replace("-", "_")) not in imported
        and name not in INDIRECT_DEPENDENCIES
    }
    assert unused == set(), f"declared, never imported, no reason given: {sorted(unused)}"
    stale = {name for name in INDIRECT_DEPENDENCIES if name not in declared}
    assert stale == set(), f"reasons kept for dependencies no longer declared: {sorted(stale)}"


# The rooms of the package, lowest first: a module may import its own room and the
# rooms below it, never one above. The shared leaves import nothing of the package.
LEAVES = {
    "exporter",
    "exporter.settings",
    "exporter.labels",
    "exporter.logs",
    "exporter.memory",
    "exporter.gil",
    "exporter.pauses",
}
ROOMS = ("notte", "polling", "metrics", "web")
TOP = {"exporter.app", "exporter.cli", "exporter.__main__"}


def room_of(module: str) -> int:
    """The module's height: leaves 0, then the rooms in order, the simulator beside
    polling (it may use the objects and schedules, nothing that serves), the top last."""
    if module in LEAVES:
        return 0
    if module in TOP:
        return len(ROOMS) + 1
    parts = module.split(".")
    if parts[1] == "simulator":
        return ROOMS.index("polling") + 1
    return ROOMS.index(parts[1]) + 1


def upward_imports(root: Path) -> list[str]:
    """Every import of a module from a room above its own, as `importer -> imported`."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules = {m for m in imported_modules(path, name) if _is_module(root, m)}
        for target in modules:
            if any(other.startswith(target + ".") for other in modules):
                continue  # `from exporter.web import routes`: the module, not its package
            if target in (PACKAGE, name) or _same_room(name, target):
                continue
            if room_of(target) > room_of(name):
                found.append(f"{name} -> {target}")
    return sorted(found)


def _is_module(root: Path, module: str) -> bool:
    path = root / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _same_room(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


def test_no_import_runs_up_between_the_rooms() -> None:
    assert upward_imports(ROOT) == []


def test_the_room_guard_finds_an_import_that_runs_up(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "labels.py": "",
        "notte/__init__.py": "",
        "notte/client.py": "from exporter.metrics import selfmetrics\nimport exporter.labels\n",
        "metrics/__init__.py": "",
        "metrics/selfmetrics.py": "from exporter.notte.client import X\n",
        "web/__init__.py": "",
        "web/routes.py": "from exporter.metrics.selfmetrics import Y\n",
        "polling/__init__.py": "",
        "polling/poller.py": "from exporter.web.routes import Readiness\n",
    }
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert upward_imports(tmp_path) == [
        "exporter.notte.client -> exporter.metrics.selfmetrics",
        "exporter.polling.poller -> exporter.web.routes",
    ]
