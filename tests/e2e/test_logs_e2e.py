"""The bot's own output as an operator's log collector sees it (a pipe, not a terminal)."""

from __future__ import annotations

import asyncio
import json

from tests.e2e.helpers import World, png


async def test_json_logs_are_one_object_per_line_and_carry_the_task_id(world: World) -> None:
    world.api.outcome = "failed"  # the engine logs the ending of a task it worked on
    async with world.bot(LOG_FORMAT="json") as process:
        interaction = await world.video([png(), png(420, 400)])
        await interaction.wait_callback(3)
        await world.until(lambda: [t["state"] for t in world.tasks()] == ["failed"])
        await asyncio.sleep(0.5)
    lines = [line for line in process.output().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert entries, "the bot logged nothing"
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
    [task] = world.tasks()
    about_the_task = [e for e in entries if e.get("task_id") == task["id"]]
    assert about_the_task, "no line carries the task id"
    assert any(e["logger"].startswith("discord") for e in entries)  # discord.py's lines too


async def test_text_logs_are_plain_lines(world: World) -> None:
    async with world.bot() as process:
        await asyncio.sleep(0.2)
    output = process.output()
    assert "\x1b[" not in output
    assert any(" INFO     discord." in line for line in output.splitlines()), output[-2000:]
