"""The layout's rules hold: only the Discord side imports discord, the domain core imports
nothing of the project, no module imports itself again through others (no import cycle, not
even one hidden under TYPE_CHECKING or inside a function), and every package is installed."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "cogs")


def modules() -> dict[str, Path]:
    """Every module of the bot's packages, by its dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it (a `from package import name` counts
    as importing `package.name` when that is a module)."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                targets.add(submodule if submodule in known else node.module)
    return {target for target in targets if target.split(".")[0] in PACKAGES or target == "discord"}


def graph() -> dict[str, set[str]]:
    """Each module and the project modules it imports."""
    found = modules()
    names = set(found)
    return {name: imports(path, names) & names for name, path in found.items()}


def test_only_the_discord_side_imports_discord() -> None:
    found = modules()
    names = set(found)
    importers = {
        name
        for name, path in found.items()
        if any(t == "discord" for t in imports(path, names | {"discord"}))
    }
    assert importers, "the Discord side was found"
    assert {n for n in importers if not (n.startswith("cogs") or n == "bot.app")} == set()


def test_the_domain_core_imports_nothing_of_the_project() -> None:
    assert graph()["bot.tasks"] == set()


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert cycles == []


def test_every_package_is_listed_for_the_install() -> None:
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = {
        ".".join(init.parent.relative_to(REPO).parts)
        for package in PACKAGES
        for init in (REPO / package).rglob("__init__.py")
    }
    assert sorted(listed) == sorted(packages)
