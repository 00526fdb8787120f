"""The fake Discord works with the real discord.py client and enforces Discord's contract."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import discord.asset
import discord.gateway
import discord.http
import pytest

from tests.e2e.conftest import run_bot_process
from tests.e2e.launcher import redirect_discord
from tests.e2e.smoke_bot import SMOKE_FILE_BYTES, THREAD_NAME
from tests.fakes.discord import (
    CLOSE_INVALID_SHARD,
    CLOSE_SHARDING_REQUIRED,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    IT_APPLICATION_COMMAND,
    PRIVILEGED_INTENTS,
    FakeDiscord,
    FakeInteraction,
)

SMOKE_MODULE = "tests.e2e.smoke_bot"


def _auth(fake: FakeDiscord) -> dict[str, str]:
    return {"Authorization": f"Bot {fake.token}"}


async def _post(
    fake: FakeDiscord, path: str, body: Any, *, auth: bool = True
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(fake.api_base + path, json=body, headers=_auth(fake) if auth else {}) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else {}


async def _put(fake: FakeDiscord, path: str, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.put(fake.api_base + path, json=body, headers=_auth(fake)) as resp,
    ):
        return resp.status, await resp.json()


# ---------------------------------------------------------------------- the real client


async def test_smoke_bot_end_to_end(fake_discord: FakeDiscord) -> None:
    """IDENTIFY, command sync, /ping: defer, followup with a file, thread + message in it."""
    fake = fake_discord
    env = {"DISCORD_TOKEN": fake.token}
    async with run_bot_process(
        SMOKE_MODULE, env, fake.url, fake=fake, ready=lambda f: f.find_command("ping")
    ) as bot:
        # Connected without privileged intents, with the right token.
        assert fake.identifies and fake.identifies[0]["token_ok"]
        intents = fake.identified_intents[0]
        assert intents & INTENT_GUILDS
        assert intents & PRIVILEGED_INTENTS == 0

        # /ping synced through PUT /applications/{id}/commands (schema-validated).
        ping = fake.find_command("ping")
        assert ping is not None and ping["type"] == 1
        assert any(r.method == "PUT" and r.path.endswith("/commands") for r in fake.requests)

        # discord.py honours a 429 (with Discord's headers) and retries.
        fake.rate_limit_next("POST", r"^/channels/\d+/messages$", retry_after=0.05)
        interaction = await fake.slash_command("ping")
        callback = await interaction.wait_callback(timeout=5)
        assert callback.type == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        assert callback.latency < 1.5
        assert fake.ack_latencies[interaction.id] == callback.latency

        (followup,) = await interaction.wait_followups(1, timeout=10)
        assert followup["content"] == "pong"
        (attachment,) = followup["attachments"]
        assert attachment["filename"] == "x.txt"
        assert fake.attachment_bytes(attachment) == SMOKE_FILE_BYTES
        async with aiohttp.ClientSession() as http, http.get(attachment["url"]) as resp:
            assert await resp.read() == SMOKE_FILE_BYTES

        def thread_message() -> Any:
            for thread in fake.threads:
                for message in fake.messages_in(thread["id"]):
                    if message["content"] == "inside the thread":
                        return thread
            return None

        thread = await fake.wait_for(thread_message, timeout=10)
        assert thread["name"] == THREAD_NAME
        starter = fake.message(thread["id"])  # a thread made from a message shares its id
        assert starter["content"] == "starting a thread"
        assert starter["channel_id"] == fake.channel_id

        # /edit: a reply with a file (multipart callback), an edit of @original adding a
        # button, an ephemeral followup, then a button click answered with UPDATE_MESSAGE.
        interaction = await fake.slash_command("edit", {"text": "hello"})
        callback = await interaction.wait_callback(timeout=5)
        assert callback.type == 4 and [f.data for f in callback.files] == [SMOKE_FILE_BYTES]
        (secret,) = await interaction.wait_followups(1, timeout=10)
        assert secret["flags"] & 64  # ephemeral
        original = interaction.original_message()
        assert original is not None and original["content"] == "hello (edited)"
        assert original["attachments"][0]["filename"] == "y.txt"  # kept by the edit
        click = await fake.press_button(original, "smoke:click")
        assert (await click.wait_callback(timeout=5)).type == 7
        assert fake.message(original["id"])["content"] == "clicked"
        assert fake.message(original["id"])["components"] == []

        # /ask: a modal (callback type 9), then its submission answered with a message.
        interaction = await fake.slash_command("ask")
        assert (await interaction.wait_callback(timeout=5)).type == 9
        submit = await fake.submit_modal("smoke:modal", {"smoke:text": "hi"})
        assert (await submit.wait_callback(timeout=5)).type == 4
        answer = submit.original_message()
        assert answer is not None and answer["content"] == "got hi"

        assert fake.violations == [], bot.output()
        assert fake.unknown_requests == []
        assert "Traceback" not in bot.output()


async def test_gateway_drop_then_resume_replays_missed_events(fake_discord: FakeDiscord) -> None:
    """A dropped gateway: discord.py RESUMEs and gets the events dispatched meanwhile."""
    fake = fake_discord
    env = {"DISCORD_TOKEN": fake.token}
    async with run_bot_process(SMOKE_MODULE, env, fake.url, fake=fake) as bot:
        await fake.drop_gateway(4000)
        assert not fake.connected
        # Dispatched while disconnected: buffered, then replayed after RESUME.
        interaction = await fake.slash_command("ping", require_gateway=False)
        await fake.wait_for(lambda: fake.resumes == 1, timeout=10)
        assert (await interaction.wait_callback(timeout=5)).type == 5, bot.output()
        assert fake.ready_count == 1  # resumed, not re-identified
    assert fake.violations == []


async def test_bot_restart_identifies_again(fake_discord: FakeDiscord) -> None:
    """A killed bot can be started again against the same fake (restart tests)."""
    fake = fake_discord
    env = {"DISCORD_TOKEN": fake.token}
    async with run_bot_process(SMOKE_MODULE, env, fake.url, fake=fake) as bot:
        bot.kill()
        await bot.wait()
        await fake.wait_for(lambda: not fake.connected, timeout=10)
    async with run_bot_process(
        SMOKE_MODULE, env, fake.url, fake=fake, ready=lambda f: f.ready_count >= 2
    ):
        assert len(fake.identifies) == 2
    assert fake.violations == []


# ---------------------------------------------------------------------- REST enforcement


async def test_missing_or_wrong_auth_is_401(fake_discord: FakeDiscord) -> None:
    status, body = await _post(
        fake_discord, f"/channels/{fake_discord.channel_id}/messages", {"content": "x"}, auth=False
    )
    assert (status, body) == (401, {"message": "401: Unauthorized", "code": 0})
    async with (
        aiohttp.ClientSession() as http,
        http.get(fake_discord.api_base + "/users/@me", headers={"Authorization": "Bot no"}) as r,
    ):
        assert r.status == 401
    assert [v.kind for v in fake_discord.violations] == ["unauthorized", "unauthorized"]


async def test_content_over_2000_chars_is_refused(fake_discord: FakeDiscord) -> None:
    status, body = await _post(
        fake_discord, f"/channels/{fake_discord.channel_id}/messages", {"content": "a" * 2001}
    )
    assert status == 400
    assert body["code"] == 50035 and body["message"] == "Invalid Form Body"
    assert body["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
    assert len(fake_discord.violations) == 1
    assert fake_discord.messages_in(fake_discord.channel_id) == []


@pytest.mark.parametrize(
    "body",
    [
        {"content": 123},
        {"embeds": [{"title": 5}]},
        {"embeds": "not a list"},
        {"content": "ok", "components": [{"type": 1, "components": "nope"}]},
    ],
)
async def test_body_invalid_per_openapi_is_refused(
    fake_discord: FakeDiscord, body: dict[str, Any]
) -> None:
    status, resp = await _post(fake_discord, f"/channels/{fake_discord.channel_id}/messages", body)
    assert status == 400 and resp["code"] == 50035
    assert [v.kind for v in fake_discord.violations] == ["schema"]


async def test_custom_id_over_100_chars_is_refused(fake_discord: FakeDiscord) -> None:
    button = {"type": 2, "style": 1, "label": "Go", "custom_id": "x" * 101}
    body = {"content": "hi", "components": [{"type": 1, "components": [button]}]}
    status, resp = await _post(fake_discord, f"/channels/{fake_discord.channel_id}/messages", body)
    assert status == 400 and resp["code"] == 50035
    assert fake_discord.violations


async def test_empty_message_is_refused(fake_discord: FakeDiscord) -> None:
    status, resp = await _post(fake_discord, f"/channels/{fake_discord.channel_id}/messages", {})
    assert (status, resp["code"]) == (400, 50006)


async def test_multipart_upload_and_size_limit(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    fake.upload_limit = 1024
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"

    def form(size: int) -> aiohttp.FormData:
        data = aiohttp.FormData()
        payload = {"content": "file", "attachments": [{"id": 0, "filename": "a.bin"}]}
        data.add_field("payload_json", json.dumps(payload), content_type="application/json")
        data.add_field("files[0]", b"\x01" * size, filename="a.bin")
        return data

    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=form(1024), headers=_auth(fake)) as r:
            assert r.status == 200
            message = await r.json()
        async with http.post(url, data=form(1025), headers=_auth(fake)) as r:
            assert r.status == 413
            assert await r.json() == {"code": 40005, "message": "Request entity too large"}
    assert fake.attachment_bytes(message["attachments"][0]) == b"\x01" * 1024
    assert [v.kind for v in fake.violations] == ["upload_too_large"]


async def test_thread_permission_denied(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    status, message = await _post(fake, f"/channels/{fake.channel_id}/messages", {"content": "a"})
    assert status == 200
    fake.deny_threads(fake.channel_id)
    path = f"/channels/{fake.channel_id}/messages/{message['id']}/threads"
    status, body = await _post(fake, path, {"name": "t"})
    assert (status, body) == (403, {"message": "Missing Permissions", "code": 50013})
    assert fake.threads == []


async def test_dm_channel_and_blocked_dms(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    status, dm = await _post(fake, "/users/@me/channels", {"recipient_id": fake.user["id"]})
    assert status == 200 and dm["type"] == 1 and dm["recipients"][0]["id"] == fake.user["id"]
    assert (await _post(fake, f"/channels/{dm['id']}/messages", {"content": "hi"}))[0] == 200
    fake.block_dms(fake.user["id"])
    status, body = await _post(fake, f"/channels/{dm['id']}/messages", {"content": "hi"})
    assert (status, body["code"]) == (403, 50007)


async def test_thread_without_message(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    status, thread = await _post(
        fake, f"/channels/{fake.channel_id}/threads", {"name": "jobs", "type": 11}
    )
    assert status == 201 and thread["parent_id"] == fake.channel_id and thread["type"] == 11
    status, message = await _post(fake, f"/channels/{thread['id']}/messages", {"content": "in"})
    assert status == 200 and fake.messages_in(thread["id"]) == [message]


async def test_multipart_payload_json_is_validated(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    data = aiohttp.FormData()
    data.add_field("payload_json", json.dumps({"content": ["not", "a", "string"]}))
    data.add_field("files[0]", b"abc", filename="a.txt")
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=_auth(fake)) as r:
        assert r.status == 400 and (await r.json())["code"] == 50035
    assert [v.kind for v in fake.violations] == ["schema"]


async def test_history_is_newest_first_with_limit_and_before(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    ids = []
    for i in range(3):
        _, message = await _post(fake, f"/channels/{fake.channel_id}/messages", {"content": str(i)})
        ids.append(message["id"])
    base = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    async with aiohttp.ClientSession(headers=_auth(fake)) as http:
        async with http.get(base, params={"limit": "2"}) as r:
            assert [m["id"] for m in await r.json()] == [ids[2], ids[1]]
        async with http.get(base, params={"before": ids[2]}) as r:
            assert [m["id"] for m in await r.json()] == [ids[1], ids[0]]


async def test_injected_error_is_answered_once(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    fake.inject_error(
        "POST", r"/messages$", 500, {"message": "500: Internal Server Error", "code": 0}
    )
    path = f"/channels/{fake.channel_id}/messages"
    assert (await _post(fake, path, {"content": "a"}))[0] == 500
    assert (await _post(fake, path, {"content": "a"}))[0] == 200
    assert fake.violations == []


async def test_held_requests_are_dropped_or_released_by_the_test(
    fake_discord: FakeDiscord,
) -> None:
    """A held POST takes no effect until released, none when dropped; with effect_first it is
    stored at once and only its answer waits; a held CDN download waits the same way."""
    fake = fake_discord
    path = f"/channels/{fake.channel_id}/messages"
    dropped = fake.hold_next("POST", r"/messages$", match=lambda r: r.json["content"] == "one")
    pending = asyncio.create_task(_post(fake, path, {"content": "one"}))
    await fake.wait_for(lambda: dropped.held, 5)
    assert fake.messages_in(fake.channel_id) == [], "held before it took effect"
    dropped.drop()
    assert (await pending)[0] == 503 and dropped.held[0].dropped
    assert fake.messages_in(fake.channel_id) == [], "dropped: never took effect"

    released = fake.hold_next("POST", r"/messages$")
    pending = asyncio.create_task(_post(fake, path, {"content": "two"}))
    await fake.wait_for(lambda: released.held, 5)
    released.release()
    assert (await pending)[0] == 200
    assert [m["content"] for m in fake.messages_in(fake.channel_id)] == ["two"]

    answered_late = fake.hold_next("POST", r"/messages$", effect_first=True)
    pending = asyncio.create_task(_post(fake, path, {"content": "three"}))
    await fake.wait_for(lambda: answered_late.held, 5)
    assert [m["content"] for m in fake.messages_in(fake.channel_id)] == ["two", "three"]
    assert not pending.done(), "its answer is held"
    answered_late.drop()
    await pending

    image = fake.add_attachment("a.png", b"\x89PNG fake", "image/png")
    download = fake.hold_next("GET", r"^/attachments/")
    async with aiohttp.ClientSession() as http:
        fetch = asyncio.create_task(http.get(image["url"]))
        await fake.wait_for(lambda: download.held, 5)
        assert not fetch.done()
        download.release()
        async with await fetch as response:
            assert await response.read() == b"\x89PNG fake"
    assert fake.violations == []


async def test_unknown_route_is_recorded_as_404(fake_discord: FakeDiscord) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{fake_discord.api_base}/guilds/1/bans", headers=_auth(fake_discord)) as r,
    ):
        assert r.status == 404
        assert await r.json() == {"message": "404: Not Found", "code": 0}
    assert [r.path for r in fake_discord.unknown_requests] == ["/guilds/1/bans"]


# ---------------------------------------------------------------------- interactions


async def test_second_callback_is_400_40060(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    inter = await fake.slash_command("video", require_gateway=False)
    path = f"/interactions/{inter.id}/{inter.token}/callback"
    assert (await _post(fake, path, {"type": 5}, auth=False))[0] == 204
    status, body = await _post(fake, path, {"type": 5}, auth=False)
    assert status == 400 and body["code"] == 40060
    assert [v.kind for v in fake.violations] == ["double_ack"]
    assert len(fake.interaction_callbacks) == 1


async def test_late_callback_is_404_10062() -> None:
    async with FakeDiscord(ack_deadline=0.2) as fake:
        inter = await fake.slash_command("video", require_gateway=False)
        await asyncio.sleep(0.3)
        status, body = await _post(
            fake, f"/interactions/{inter.id}/{inter.token}/callback", {"type": 5}, auth=False
        )
        assert (status, body["code"], body["message"]) == (404, 10062, "Unknown interaction")
        assert [v.kind for v in fake.violations] == ["late_ack"]
        assert fake.ack_latencies[inter.id] >= 0.2


async def test_invalid_callback_body_is_refused(fake_discord: FakeDiscord) -> None:
    inter = await fake_discord.slash_command("video", require_gateway=False)
    path = f"/interactions/{inter.id}/{inter.token}/callback"
    status, body = await _post(fake_discord, path, {"type": 4, "data": {"content": "x" * 2001}})
    assert status == 400 and body["code"] == 50035
    assert inter.callback is None


async def test_expired_interaction_token_refuses_followups() -> None:
    async with FakeDiscord(token_ttl=0.2) as fake:
        inter = await fake.slash_command("video", require_gateway=False)
        base = f"/webhooks/{fake.application_id}/{inter.token}"
        assert (await _post(fake, f"/interactions/{inter.id}/{inter.token}/callback", {"type": 5}))[
            0
        ] == 204
        assert (await _post(fake, base + "?wait=1", {"content": "in time"}, auth=False))[0] == 200
        await asyncio.sleep(0.3)
        status, body = await _post(fake, base, {"content": "too late"}, auth=False)
        assert (status, body["code"]) == (401, 50027)


async def test_interaction_payload_shape(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    image = fake.add_attachment("a.png", b"\x89PNG fake", "image/png", 64, 32)
    inter = await fake.slash_command(
        "video", {"image1": image, "prompt": "a cat"}, require_gateway=False
    )
    payload = inter.payload
    assert payload["type"] == IT_APPLICATION_COMMAND
    assert payload["data"]["resolved"]["attachments"][image["id"]]["width"] == 64
    assert payload["attachment_size_limit"] == fake.upload_limit
    for key in ("guild_id", "channel", "member", "app_permissions", "locale", "context"):
        assert key in payload
    async with aiohttp.ClientSession() as http, http.get(image["url"]) as r:
        assert await r.read() == b"\x89PNG fake"


async def test_commands_resolve_against_the_guild_they_are_used_in(
    fake_discord: FakeDiscord,
) -> None:
    """A guild command used in another guild carries that guild's command id and guild_id."""
    fake = fake_discord
    other = fake.add_guild("Other", shard=(1, 2))
    ids = {}
    for guild_id in (fake.guild_id, other["id"]):
        path = f"/applications/{fake.application_id}/guilds/{guild_id}/commands"
        status, (command,) = await _put(fake, path, [{"name": "ping", "description": "p"}])
        assert status == 200
        ids[guild_id] = command["id"]
    here = await fake.slash_command("ping", require_gateway=False)
    there = await fake.slash_command(
        "ping", channel_id=other["channels"][0]["id"], require_gateway=False
    )
    assert (here.payload["data"]["id"], here.payload["data"]["guild_id"]) == (
        ids[fake.guild_id],
        fake.guild_id,
    )
    assert (there.payload["data"]["id"], there.payload["data"]["guild_id"]) == (
        ids[other["id"]],
        other["id"],
    )
    assert there.payload["guild_id"] == other["id"] and there.sessions == []


async def test_press_button_requires_an_existing_button(fake_discord: FakeDiscord) -> None:
    _, message = await _post(
        fake_discord, f"/channels/{fake_discord.channel_id}/messages", {"content": "no buttons"}
    )
    with pytest.raises(ValueError, match="no button"):
        await fake_discord.press_button(message, "missing", require_gateway=False)


# ---------------------------------------------------------------------- gateway


async def _raw_identify(
    fake: FakeDiscord, intents: int, shard: Any = None, *, guild_creates: int = 1
) -> tuple[list[dict[str, Any]], int | None]:
    """IDENTIFY over a bare websocket; the events until ``guild_creates`` GUILD_CREATEs."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
        await ws.send_json({"op": 1, "d": None})
        assert (await ws.receive_json(timeout=5))["op"] == 11
        identify: dict[str, Any] = {"token": fake.token, "intents": intents, "properties": {}}
        if shard is not None:
            identify["shard"] = shard
        await ws.send_json({"op": 2, "d": identify})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            events.append(json.loads(msg.data))
            if [e.get("t") for e in events].count("GUILD_CREATE") == guild_creates:
                break
        return events, ws.close_code


async def test_gateway_ready_and_guild_create(fake_discord: FakeDiscord) -> None:
    events, _ = await _raw_identify(fake_discord, INTENT_GUILDS)
    assert [e["t"] for e in events] == ["READY", "GUILD_CREATE"]
    assert [e["s"] for e in events] == [1, 2]
    guild = events[1]["d"]
    assert guild["channels"][0]["id"] == fake_discord.channel_id
    assert any(m["user"]["id"] == fake_discord.bot_user["id"] for m in guild["members"])


async def test_resume_of_unknown_session_is_invalidated(fake_discord: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(fake_discord.gateway_url) as ws:
        await ws.receive_json(timeout=5)
        resume = {"token": fake_discord.token, "session_id": "nope", "seq": 3}
        await ws.send_json({"op": 6, "d": resume})
        assert await ws.receive_json(timeout=5) == {"op": 9, "s": None, "t": None, "d": False}


async def test_gateway_refuses_a_wrong_token(fake_discord: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(fake_discord.gateway_url) as ws:
        await ws.receive_json(timeout=5)
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 1, "properties": {}}})
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4004


async def test_gateway_refuses_privileged_intents(fake_discord: FakeDiscord) -> None:
    events, code = await _raw_identify(fake_discord, INTENT_GUILDS | INTENT_MESSAGE_CONTENT)
    assert events == [] and code == 4014
    assert fake_discord.identified_intents == [INTENT_GUILDS | INTENT_MESSAGE_CONTENT]


async def test_unsharded_session_gets_every_guild(fake_discord: FakeDiscord) -> None:
    """Without ``shard`` in IDENTIFY a session is shard 0 of 1: every guild, every event."""
    fake = fake_discord
    other = fake.add_guild("Other", shard=(1, 2))
    events, _ = await _raw_identify(fake, INTENT_GUILDS, guild_creates=2)
    assert [e["t"] for e in events] == ["READY", "GUILD_CREATE", "GUILD_CREATE"]
    assert {g["id"] for g in events[0]["d"]["guilds"]} == {fake.guild_id, other["id"]}
    (session,) = fake.sessions
    assert session.shard is None and (session.shard_id, session.shard_count) == (0, 1)
    assert session.guild_ids() == [fake.guild_id, other["id"]]


# ---------------------------------------------------------------------- sharding


@pytest.mark.parametrize("shard", [[2, 2], [-1, 2], [0, 0], [0], "0,1", [0.0, 2], [True, 2]])
async def test_gateway_refuses_an_invalid_shard(fake_discord: FakeDiscord, shard: Any) -> None:
    """Discord closes with 4010 Invalid shard unless ``shard`` is ``[id, count]``, id < count."""
    events, code = await _raw_identify(fake_discord, INTENT_GUILDS, shard)
    assert (events, code) == ([], CLOSE_INVALID_SHARD)
    assert fake_discord.sessions == []


async def test_sharding_required_when_a_shard_carries_too_many_guilds() -> None:
    """Over ``max_guilds_per_shard`` guilds on one shard closes with 4011; sharding fixes it."""
    async with FakeDiscord(max_guilds_per_shard=1) as fake:
        fake.add_guild("Other", shard=(1 - fake.shard_of(fake.guild_id, 2), 2))
        assert (await _raw_identify(fake, INTENT_GUILDS))[1] == CLOSE_SHARDING_REQUIRED
        for shard_id in (0, 1):
            events, _ = await _raw_identify(fake, INTENT_GUILDS, [shard_id, 2])
            assert [e["t"] for e in events] == ["READY", "GUILD_CREATE"]
            assert events[0]["d"]["shard"] == [shard_id, 2]
            (guild,) = events[0]["d"]["guilds"]
            assert (
                fake.shard_of(guild["id"], 2) == shard_id == fake.shard_of(events[1]["d"]["id"], 2)
            )
        assert [s.shard for s in fake.sessions] == [(0, 2), (1, 2)]


def _point_discord_py_at(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redirect this process's discord.py to the fake as the launcher does (undone after)."""
    for owner, name in (
        (discord.http.Route, "BASE"),
        (discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY"),
        (discord.asset.Asset, "BASE"),
    ):
        monkeypatch.setattr(owner, name, getattr(owner, name))  # remembered, restored after
    redirect_discord(fake.url)


@contextlib.asynccontextmanager
async def _running(client: discord.Client, token: str) -> AsyncIterator[discord.Client]:
    """Log ``client`` in, connect it and wait until it is ready; close it afterwards."""
    await client.login(token)
    connection = asyncio.create_task(client.connect())
    try:
        ready = asyncio.create_task(client.wait_until_ready())
        await asyncio.wait({connection, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise AssertionError(f"client not ready: {connection}")
        yield client
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection, 10)


class _ShardClient(discord.Client):
    """A client on one shard that defers every interaction and records what it received."""

    def __init__(self, shard_id: int, shard_count: int) -> None:
        super().__init__(
            intents=discord.Intents.default(),
            shard_id=shard_id,
            shard_count=shard_count,
            guild_ready_timeout=0.2,
        )
        self.interaction_ids: list[str] = []
        self.messages: list[str] = []

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.interaction_ids.append(str(interaction.id))
        await interaction.response.defer()

    async def on_message(self, message: discord.Message) -> None:
        self.messages.append(message.content)


async def test_two_shard_clients_get_only_their_guilds_events(
    fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two discord.py clients, shards 0 and 1 of 2 (two bot processes in production): each
    gets only its guilds' GUILD_CREATE and interactions, DMs reach shard 0 only, and either
    one can answer over REST an interaction the other received."""
    fake = fake_discord
    guilds = [fake.add_guild("Zero", shard=(0, 2)), fake.add_guild("One", shard=(1, 2))]
    _point_discord_py_at(fake, monkeypatch)
    clients = [_ShardClient(0, 2), _ShardClient(1, 2)]
    async with _running(clients[0], fake.token), _running(clients[1], fake.token):
        expected = [{g for g in fake.guilds if fake.shard_of(g, 2) == k} for k in (0, 1)]
        assert [{str(g.id) for g in c.guilds} for c in clients] == expected
        assert guilds[0]["id"] in expected[0] and guilds[1]["id"] in expected[1]
        assert [s.shard for s in fake.sessions] == [(0, 2), (1, 2)]
        sessions = [fake.sessions_on_shard(k)[0] for k in (0, 1)]
        assert [set(s.guild_ids()) for s in sessions] == expected

        # Each guild's interaction goes to its shard's session; that client defers it.
        asked: list[FakeInteraction] = []
        for guild in guilds:
            channel_id = guild["channels"][0]["id"]
            asked.append(await fake.slash_command("ping", channel_id=channel_id))
        for k, interaction in enumerate(asked):
            assert interaction.sessions == [sessions[k]]
            assert (await interaction.wait_callback(timeout=5)).type == 5
        assert [c.interaction_ids for c in clients] == [[asked[0].id], [asked[1].id]]
        assert [s.interaction_ids() for s in sessions] == [[asked[0].id], [asked[1].id]]

        # REST is shared: shard 0's client sends the followup of shard 1's interaction; its
        # MESSAGE_CREATE (a guild event) goes to shard 1.
        webhook = discord.Webhook.partial(
            int(fake.application_id), asked[1].token, client=clients[0]
        )
        await webhook.send("answered by shard 0")
        (followup,) = await asked[1].wait_followups(1, timeout=5)
        assert followup["content"] == "answered by shard 0"
        await fake.wait_for(lambda: "answered by shard 0" in clients[1].messages, timeout=5)
        assert "answered by shard 0" not in clients[0].messages

        # A DM has no guild: its MESSAGE_CREATE goes to shard 0 only, whoever sent it.
        user = await clients[1].fetch_user(int(fake.user["id"]))
        await user.send("a direct message")
        await fake.wait_for(lambda: "a direct message" in clients[0].messages, timeout=5)
        assert "a direct message" not in clients[1].messages
        dm_events = [[m["content"] for m in s.received("MESSAGE_CREATE")] for s in sessions]
        assert "a direct message" in dm_events[0] and "a direct message" not in dm_events[1]

        # Dropping shard 1's connection leaves shard 0 alone; shard 1 resumes and gets what
        # was dispatched to it meanwhile.
        await fake.drop_gateway(4000, shard_id=1)
        late = await fake.slash_command(
            "ping", channel_id=guilds[1]["channels"][0]["id"], require_gateway=False
        )
        await fake.wait_for(lambda: fake.resumes == 1, timeout=10)
        assert (fake.gateway_closes, fake.resume_attempts) == ([4000], 1)
        assert late.sessions == [sessions[1]] and sessions[0].open and sessions[1].open
        assert (await late.wait_callback(timeout=5)).type == 5
        assert clients[1].interaction_ids[-1] == late.id and len(clients[0].interaction_ids) == 1
    assert fake.violations == []
    assert fake.unknown_requests == []


class _AutoSharded(discord.AutoShardedClient):
    """discord.py's auto-sharded client, without its 5 s pause between shard IDENTIFYs."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


async def test_auto_sharded_client_starts_the_recommended_shards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AutoShardedClient asks ``GET /gateway/bot`` how many shards, opens one session each;
    every guild arrives on the shard its id says."""
    async with FakeDiscord(recommended_shards=2) as fake:
        for shard_id in (0, 1, 1):
            fake.add_guild(f"Guild on {shard_id}", shard=(shard_id, 2))
        _point_discord_py_at(fake, monkeypatch)
        client = _AutoSharded(intents=discord.Intents.default(), guild_ready_timeout=0.2)
        async with _running(client, fake.token):
            assert fake.find_requests("GET", r"^/gateway/bot$")
            assert sorted(tuple(d["shard"]) for d in fake.identifies) == [(0, 2), (1, 2)]
            assert {str(g.id) for g in client.guilds} == set(fake.guilds)
            for guild in client.guilds:
                assert guild.shard_id == fake.shard_of(guild.id, 2)
                (session,) = [s for s in fake.sessions if str(guild.id) in s.guild_ids()]
                assert session.shard_id == guild.shard_id
        assert fake.violations == []  # the /gateway/bot answer is checked against the spec


async def test_client_with_an_invalid_shard_is_refused(
    fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """discord.py gives up on 4010: the client stops with ConnectionClosed."""
    _point_discord_py_at(fake_discord, monkeypatch)
    client = discord.Client(intents=discord.Intents.default(), shard_id=2, shard_count=2)
    with pytest.raises(discord.ConnectionClosed) as refused:
        await asyncio.wait_for(client.start(fake_discord.token), 20)
    assert refused.value.code == CLOSE_INVALID_SHARD
    assert fake_discord.identifies[0]["shard"] == [2, 2] and fake_discord.sessions == []
