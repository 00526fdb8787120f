"""The repository stands on its own, and what the README and the packaging files say is true."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def tracked_files() -> list[Path]:
    """The files a clone holds (with this change): tracked plus new ones not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): walk the folder
        skip = {".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
        return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.parts)]
    return [REPO / name for name in listed.stdout.splitlines() if (REPO / name).is_file()]


def test_nothing_reaches_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|/work/shared|shared/DESIGN\.md|shared/kling-api\.md")
    offenders = []
    for path in tracked_files():
        if path.suffix in {".png", ".jpg", ".mp4", ".sqlite3"} or path.name == "openapi.json":
            continue
        text = path.read_text(errors="replace")
        if outside.search(text) and path != Path(__file__):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_the_readme_sets_up_with_exactly_make_run_and_make_test() -> None:
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", setup, re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_every_make_target_and_bot_command_the_readme_names_exists() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z0-9-]+)", README))
    assert named and named <= targets, named - targets
    from bot.__main__ import DESCRIPTION

    commands = set(re.findall(r"python -m bot ([a-z]+)", README))
    assert commands and all(re.search(rf"^  {c}\b", DESCRIPTION, re.M) for c in commands)


def test_the_readme_permissions_are_the_invite_links() -> None:
    from bot.app import BOT_PERMISSIONS, invite_link

    [number] = set(re.findall(r"permissions=(\d+)", README))
    assert int(number) == BOT_PERMISSIONS.value
    assert invite_link(123).endswith(f"permissions={number}")
    table = README.split("| permission | why |", 1)[1].split("\n\n", 1)[0]
    named = {
        name.strip().lower().replace(" ", "_")
        for row in table.splitlines()[2:]
        for name in row.split("|")[1].split(",")
    }
    aliases = {"read_messages": "view_channel"}  # discord.py's older name for View Channel
    assert {aliases.get(name, name) for name, allowed in BOT_PERMISSIONS if allowed} == named


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = (REPO / "requirements.lock").read_text()
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=[a-z0-9])", lock):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", entry)
        if match:
            assert "--hash=sha256:" in entry, f"{match.group(1)} has no hash"
            pins[canonicalize_name(match.group(1))] = match.group(2)
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {line}"
    assert "--index-url" not in lock and "--find-links" not in lock


def test_the_image_installs_the_lock_and_checks_its_health() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "-r requirements.lock" in dockerfile
    assert re.search(r'HEALTHCHECK .*\n?.*CMD \["python", "-m", "bot", "health"\]', dockerfile)
    assert "EXPOSE 8080" in dockerfile and 'VOLUME ["/data"]' in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".env", "data/", ".git"} <= set(ignored)
    compose = (REPO / "compose.yaml").read_text()
    assert "restart: unless-stopped" in compose and "kling-data:/data" in compose


def test_the_licence_is_the_mit_licence_pyproject_declares() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
