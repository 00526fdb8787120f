"""The compose files read as YAML, and `compose.sharded.yaml` runs what the README says: two bot
processes on one PostgreSQL, each with its own shards and its own metrics port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from tests.yaml_subset import YamlSubsetError, load

REPO = Path(__file__).resolve().parents[1]


def compose(name: str) -> dict[str, Any]:
    document = load((REPO / name).read_text())
    assert isinstance(document, dict)
    return document


def shard_ids(text: str) -> set[int]:
    """`0-3` or `0,2` as a set of shard ids."""
    ids: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        ids.update(range(int(first), int(last or first) + 1))
    return ids


def test_both_compose_files_read_as_yaml() -> None:
    assert set(compose("compose.yaml")["services"]) == {"bot"}
    assert set(compose("compose.sharded.yaml")["services"]) == {"postgres", "bot-0", "bot-1"}


def test_two_bot_processes_share_one_postgresql_and_split_the_shards() -> None:
    document = compose("compose.sharded.yaml")
    services = document["services"]
    bots = [services["bot-0"], services["bot-1"]]
    envs = [bot["environment"] for bot in bots]
    known = {name.upper() for name in Settings.model_fields}
    for env in envs:
        assert set(env) <= known, "every variable is a setting"
        assert env["DATABASE_URL"].startswith("postgresql://kling:")
        assert env["DATABASE_URL"].endswith("@postgres:5432/kling")
    [count] = {env["SHARD_COUNT"] for env in envs}
    first, second = (shard_ids(env["SHARD_IDS"]) for env in envs)
    assert not first & second and first | second == set(range(int(count)))
    assert len({bot["hostname"] for bot in bots}) == 2, "each its own `process` label"
    published = [bot["ports"][0].rsplit(":", 2) for bot in bots]
    assert len({host_port for _, host_port, _ in published}) == 2
    for bot, env, (address, _, inside) in zip(bots, envs, published, strict=True):
        assert address == "127.0.0.1" and inside == env["METRICS_PORT"]
        assert env["METRICS_PORT"] in " ".join(bot["healthcheck"]["test"])
        assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert bot["volumes"] == ["kling-data:/data"], "one media folder for both"
        assert bot["stop_grace_period"] == "30s"
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    used = {
        volume.split(":", 1)[0] for service in services.values() for volume in service["volumes"]
    }
    assert used == set(document["volumes"])


@pytest.mark.parametrize(
    "text",
    [
        "a:\n\tb: 1\n",
        "a: 1\na: 2\n",
        "a: &x 1\n",
        "a: 1 # note\n",
        "a:\n  b: 1\n   c: 2\n",
        "a: [1, 2\n",
        "- a\n  - b\n",
    ],
)
def test_the_reader_refuses_what_it_doesn_t_understand(text: str) -> None:
    with pytest.raises(YamlSubsetError):
        load(text)
