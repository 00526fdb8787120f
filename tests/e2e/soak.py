"""A seeded crash soak: many /video requests while the real bot is SIGKILLed again and again.

`run_soak` starts the fake Discord and the fake CometAPI, runs `python -m bot` against them,
sends `requests` /video requests from `users` users (about a quarter of them fail at the
provider) and kills the bot `kills` times with SIGKILL, each time restarting it at once on the
same database and media folder. Some kills come at chosen moments, made deterministic by having
the fakes hold one request and killing while it is held:

* ``intake``: the CDN holds an image download (the request is in its intake);
* ``notice``: Discord holds a failure notice (lost, or posted with its answer lost);
* ``upload``: Discord holds a video upload (lost, or posted with its answer lost);
* ``final_edit``: Discord holds the final status edit after an upload;
* ``status_post``: Discord holds a new status message (lost, or posted with its answer lost);
* ``submit``: the provider created a task but its answer to the submit is late;
* ``restart``: the bot is killed again while it is starting and answering what was left open;

and the others at a random moment. Then it waits until everything settled and counts, per
request (each has its own prompt): lost requests (acknowledged, but no video, no failure notice
and no "interrupted" message ever came), double submits (more than one task, or more than one
provider task, for a request), double deliveries (more than one result or notice message for a
task), double status messages, private answers never given, and quota mismatches.

Used by `tests/e2e/test_crash_soak.py` (marked slow) and `benchmarks/bench_crash_soak.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.conftest import BotProcess, run_bot_process
from tests.e2e.helpers import API_KEY, World, png
from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord import FakeDiscord, FakeInteraction, Hold, RecordedRequest

CHOSEN = ("intake", "notice", "upload", "final_edit", "status_post", "submit", "restart")
FAIL_TAG = "[fails]"


@dataclass
class SoakReport:
    """What a soak run found (every figure but `kills`, `requests`, `by_kind` should be 0)."""

    seed: int
    requests: int
    kills: int
    by_kind: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    unacknowledged: int = 0  # killed before the defer: Discord itself says it failed
    delivered: int = 0
    failed_told: int = 0
    interrupted_told: int = 0
    lost: int = 0
    double_submits: int = 0
    double_deliveries: int = 0
    double_status: int = 0
    unanswered: int = 0  # the private "thinking…" never replaced
    stale_status: int = 0  # a status message that doesn't show the end
    quota_mismatches: int = 0
    violations: int = 0
    tracebacks: int = 0
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing lost, nothing twice, nothing Discord would refuse."""
        return not (
            self.lost
            or self.double_submits
            or self.double_deliveries
            or self.double_status
            or self.unanswered
            or self.stale_status
            or self.quota_mismatches
            or self.violations
            or self.tracebacks
        )

    def summary(self) -> str:
        """One line of figures."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items()))
        return (
            f"seed {self.seed}: {self.requests} requests, {self.kills} kills ({kinds}) in "
            f"{self.seconds:.0f} s → lost {self.lost}, double submits {self.double_submits}, "
            f"double deliveries {self.double_deliveries}, double status {self.double_status}, "
            f"unanswered {self.unanswered}, stale status {self.stale_status}, quota "
            f"mismatches {self.quota_mismatches}, violations {self.violations}, tracebacks "
            f"{self.tracebacks} | delivered {self.delivered}, failures told "
            f"{self.failed_told}, interrupted told {self.interrupted_told}, not acknowledged "
            f"{self.unacknowledged}"
        )


@dataclass
class _Sent:
    prompt: str
    interaction: FakeInteraction


class _Soak:
    def __init__(self, world: World, seed: int, requests: int, kills: int, users: int) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.report = SoakReport(seed=seed, requests=requests, kills=0)
        self.total = requests
        self.users = [world.discord.user] + [
            world.discord.add_user(f"soak-user-{n}") for n in range(1, users)
        ]
        self.sent: list[_Sent] = []
        self.process: BotProcess | None = None
        # Every chosen moment at least once, the intake and the notice twice; the rest random.
        plan = [*CHOSEN, "intake", "notice"]
        plan += ["random"] * max(0, kills - len(plan))
        self.rng.shuffle(plan)
        self.plan = plan
        points = sorted(self.rng.sample(range(3, requests - 2), len(plan)))
        self.kill_at = dict(zip(points, plan, strict=True))

    # --- driving ------------------------------------------------------------------------

    async def run(self) -> SoakReport:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._start()
        for index in range(self.total):
            kind = self.kill_at.get(index)
            if kind is None:
                await self._send(index)
                await asyncio.sleep(self.rng.uniform(0.05, 0.4))
                continue
            await self._kill_around(index, kind)
        await self._settle()
        await self._stop()
        self.report.seconds = loop.time() - started
        self._count()
        return self.report

    async def _start(self) -> None:
        self._life = self.world.bot()
        self.process = await self._life.__aenter__()

    async def _stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._life.__aexit__(None, None, None)

    async def _restart(self) -> None:
        await self._stop()
        await self._start()

    async def _kill(self, kind: str) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
        self.report.kills += 1
        self.report.by_kind[kind] = self.report.by_kind.get(kind, 0) + 1

    def _prompt(self, index: int, fails: bool) -> str:
        return f"soak request {index} {FAIL_TAG if fails else ''}".strip()

    async def _send(self, index: int, *, fails: bool | None = None) -> None:
        if fails is None:
            fails = self.rng.random() < 0.25
        prompt = self._prompt(index, fails)
        user = self.rng.choice(self.users)
        size = self.rng.choice((400, 480, 560))
        interaction = await self.world.video(
            [png(size, 400, (index % 250, 90, 200)), png(400, size)], prompt, user=user
        )
        self.sent.append(_Sent(prompt, interaction))

    async def _kill_around(self, index: int, kind: str) -> None:
        """Send request `index` so that the kill of `kind` meets it (or a request before it)."""
        discord = self.world.discord
        hold: Hold | None = None
        effect_first = self.rng.random() < 0.5
        if kind == "intake":
            hold = discord.hold_next("GET", r"^/attachments/")
        elif kind == "notice":
            hold = discord.hold_next(
                "POST",
                r"^/channels/\d+/messages$",
                effect_first=effect_first,
                match=_content_has("couldn't be made"),
            )
        elif kind == "upload":
            hold = discord.hold_next(
                "POST",
                r"^/channels/\d+/messages$",
                effect_first=effect_first,
                match=lambda r: any(f.filename.endswith(".mp4") for f in r.files),
            )
        elif kind == "final_edit":
            hold = discord.hold_next(
                "PATCH",
                r"^/channels/\d+/messages/\d+$",
                match=lambda r: "Done" in json.dumps(r.json or {}, ensure_ascii=False),
            )
        elif kind == "status_post":
            hold = discord.hold_next(
                "POST",
                r"^/channels/\d+/messages$",
                effect_first=effect_first,
                match=lambda r: "Video request #" in json.dumps(r.json or {}, ensure_ascii=False),
            )
        elif kind == "submit":
            self.world.api.add_fault("slow", on="submit", delay=15)
        submits = len(self.world.api.submits)
        await self._send(index, fails=True if kind == "notice" else None)
        if hold is not None:
            try:
                await discord.wait_for(lambda: hold.held, 30)
            except TimeoutError:
                hold.cancel()
                kind = f"{kind} (not met: random)"
        elif kind == "submit":
            await self.world.until(lambda: len(self.world.api.submits) > submits, 30)
            await asyncio.sleep(0.1)  # the provider has created it; the answer is pending
        else:
            await asyncio.sleep(self.rng.uniform(0.0, 1.5))
        await self._kill(kind)
        if hold is not None:
            hold.drop()
        self.world.api.faults[:] = [f for f in self.world.api.faults if f.kind != "slow"]
        if kind == "restart":
            await self._kill_while_starting()
        else:
            await self._start()

    async def _kill_while_starting(self) -> None:
        """Start the bot and kill it again while it picks up what the last one left."""
        await self._stop()
        async with run_bot_process(
            "bot", self.world.env(), self.world.discord.url, fake=self.world.discord, ready=None
        ) as starting:
            self.world.processes.append(starting)
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            self.process = starting
            await self._kill("restart (again)")
        await self._start()

    # --- the end --------------------------------------------------------------------------

    async def _settle(self, timeout: float = 120.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._settled():
                await asyncio.sleep(1.0)  # let anything late show itself
                return
            await asyncio.sleep(0.5)

    def _settled(self) -> bool:
        """Every request answered and every task's end told (as the store sees it)."""
        ended = ("delivered", "failed", "timed_out")
        return not _open_interactions(self.world) and all(
            row.get("notified_at", 0 if row["state"] in ended else None) is not None
            for row in self.world.tasks()
        )

    def _count(self) -> None:
        world, report = self.world, self.report
        rows = world.tasks()
        by_prompt: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_prompt.setdefault(row["prompt"], []).append(row)
        remote: dict[str, int] = {}
        for remote_task in world.api.tasks.values():
            remote[remote_task.body["prompt"]] = remote.get(remote_task.body["prompt"], 0) + 1
        messages = [
            message
            for channel in list(world.discord.channels)
            for message in world.discord.messages_in(channel)
        ]
        interrupted = [m for m in messages if "was interrupted" in m["content"]]
        for sent in self.sent:
            acked = sent.interaction.callback is not None
            tasks = by_prompt.get(sent.prompt, [])
            if not acked:
                report.unacknowledged += 1
                if tasks:
                    report.details.append(f"{sent.prompt}: a task without an acknowledgement")
                continue
            report.acknowledged += 1
            if len(tasks) > 1 or remote.get(sent.prompt, 0) > 1:
                report.double_submits += 1
                report.details.append(
                    f"{sent.prompt}: {len(tasks)} tasks, {remote.get(sent.prompt, 0)} remote"
                )
            if not tasks:
                mention = _user_of(sent.interaction)
                if any(m["content"].startswith(f"<@{mention}>") for m in interrupted):
                    report.interrupted_told += 1
                else:
                    report.lost += 1
                    report.details.append(f"{sent.prompt}: no task and no answer")
                continue
            task = tasks[0]
            ends = _marked(messages, task["id"])
            statuses = _statuses(messages, task["id"])
            if not ends:
                report.lost += 1
                report.details.append(f"{sent.prompt}: task {task['id']} {task['state']}, no end")
            elif len(ends) > 1:
                report.double_deliveries += 1
                report.details.append(f"{sent.prompt}: {len(ends)} ends for task {task['id']}")
            elif task["state"] == "delivered":
                report.delivered += 1
            else:
                report.failed_told += 1
            if len(statuses) > 1:
                report.double_status += 1
                report.details.append(f"{sent.prompt}: {len(statuses)} status messages")
            elif statuses and not _shows_end(statuses[0]):
                report.stale_status += 1
                report.details.append(f"{sent.prompt}: status still '{_state(statuses[0])}'")
            if not any(
                "on its way" in str(r.json.get("content") or "")
                for r in world.original_edits(sent.interaction)
            ):
                report.unanswered += 1
                report.details.append(f"{sent.prompt}: the private answer never came")
            counted = task["quota_refunded"] == 0
            if counted != (task["state"] == "delivered"):
                report.quota_mismatches += 1
                report.details.append(f"{sent.prompt}: {task['state']} counted={counted}")
        report.violations = len(world.discord.violations) + len(world.api.violations)
        report.details += [str(v) for v in world.discord.violations]
        report.tracebacks = sum("Traceback" in p.output() for p in world.processes)


def _content_has(words: str) -> Callable[[RecordedRequest], bool]:
    def match(request: RecordedRequest) -> bool:
        return words in str((request.json or {}).get("content") or "")

    return match


def _user_of(interaction: FakeInteraction) -> str:
    payload = interaction.payload
    return str((payload.get("member") or {}).get("user", payload.get("user", {})).get("id"))


def _marked(messages: list[dict[str, Any]], task_id: int) -> list[dict[str, Any]]:
    marker = f'"kling:details:{task_id}"'
    return [m for m in messages if marker in json.dumps(m.get("components") or [])]


def _statuses(messages: list[dict[str, Any]], task_id: int) -> list[dict[str, Any]]:
    title = f"🎬 Video request #{task_id}"
    return [m for m in messages if any(e.get("title") == title for e in m.get("embeds") or [])]


def _state(message: dict[str, Any]) -> str:
    fields = message["embeds"][0].get("fields") or []
    return str(next((f["value"] for f in fields if f["name"] == "Status"), ""))


def _shows_end(message: dict[str, Any]) -> bool:
    return _state(message).startswith(("✅", "❌", "⌛"))


def _open_interactions(world: World) -> list[Any]:
    with contextlib.closing(sqlite3.connect(world.database)) as db:
        try:
            return list(db.execute("SELECT id FROM open_interactions"))
        except sqlite3.OperationalError:  # a bot from before the journal (to compare with)
            return []


async def run_soak(
    seed: int, *, requests: int = 40, kills: int = 8, users: int = 6, folder: Path | None = None
) -> SoakReport:
    """Run one seeded soak against fresh fakes and return its report."""
    with tempfile.TemporaryDirectory() as scratch:
        tmp = folder or Path(scratch)
        async with (
            FakeDiscord() as discord,
            FakeCometAPI(api_key=API_KEY, processing_after=0.2, finish_after=0.8) as api,
        ):
            api.outcome_for = lambda body: "failed" if FAIL_TAG in body["prompt"] else "succeed"
            world = World(discord, api, tmp)
            soak = _Soak(world, seed, requests, kills, users)
            original_env = world.env

            def env(**extra: str) -> dict[str, str]:  # generous limits: every request counts
                return original_env(
                    QUOTA_DAILY_PER_USER="1000",
                    QUOTA_CONCURRENT_PER_USER="50",
                    KLING_MAX_CONCURRENT_TASKS="4",
                    **extra,
                )

            world.env = env  # type: ignore[method-assign]
            return await soak.run()
