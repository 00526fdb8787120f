"""The Discord side without Discord: extensions load, commands translate, messages render."""

from __future__ import annotations

import importlib
import json
import pkgutil
import time
from dataclasses import replace

import pytest

import cogs
from bot.app import EXTENSIONS, KlingBot
from bot.config import load_settings
from bot.images import AttachmentRef, ImageIntakeError, ImageProblem
from bot.quota import QuotaExceeded, QuotaKind
from bot.strings import EN, NL, NL_IMAGES, PROBLEM_TEXT, text
from bot.tasks import FailureReason, ResultWhere, Task, TaskNotes, TaskOptions, TaskState
from cogs.messages import describe_error, failure_reason, status_embed
from cogs.translator import KlingTranslator
from cogs.video.buttons import TaskButton, notice_view, result_view, task_marker
from cogs.video.flow import VideoRequest


@pytest.fixture
def bot() -> KlingBot:
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    return KlingBot(settings)


async def test_every_extension_loads(bot: KlingBot) -> None:
    with_setup = {
        module.name
        for module in pkgutil.walk_packages(cogs.__path__, "cogs.")
        if hasattr(importlib.import_module(module.name), "setup")
    }
    assert set(EXTENSIONS) == with_setup == {"cogs.admin", "cogs.video"}, "none forgotten"
    for name in EXTENSIONS:
        await bot.load_extension(name)
    commands = {c.name for c in bot.tree.get_commands()}
    assert {"video", "quota", "tasks", "kling-admin", "Make a video"} <= commands


async def test_commands_carry_dutch_names_and_descriptions(bot: KlingBot) -> None:
    for name in EXTENSIONS:
        await bot.load_extension(name)
    await bot.tree.set_translator(KlingTranslator())
    payload = {c["name"]: c for c in await bot.command_payload()}
    video = payload["video"]
    assert video["description_localizations"]["nl"].startswith("Maak een korte video")
    options = {o["name"]: o for o in video["options"]}
    assert list(options)[:3] == ["image1", "image2", "prompt"], "required options first"
    assert options["image1"]["type"] == 11 and options["image1"]["required"]
    assert options["image1"]["name_localizations"]["nl"] == "afbeelding1"
    assert options["prompt"]["max_length"] == 500
    assert [c["value"] for c in options["duration"]["choices"]] == ["5", "10"]
    assert options["cfg_scale"]["min_value"] == 0 and options["cfg_scale"]["max_value"] == 1
    admin = payload["kling-admin"]
    assert int(admin["default_member_permissions"]) == 1 << 5, "Manage Server"
    assert admin["name_localizations"]["nl"] == "kling-beheer"
    assert payload["Make a video"]["type"] == 3


def test_every_message_exists_in_both_languages() -> None:
    assert set(EN) == set(NL)
    assert set(PROBLEM_TEXT) == set(NL_IMAGES)
    for state in TaskState:
        assert text("nl", f"state.{state.value}", position=1, link="x", reason="r")
    for reason in FailureReason:
        assert f"reason.{reason.value}" in EN


def make_task(**changes: object) -> Task:
    now = time.time()
    task = Task(
        id=7,
        external_task_id="kvb-1",
        kling_task_id="861",
        user_id=42,
        guild_id=1,
        channel_id=2,
        status_message_id=3,
        thread_id=4,
        result_message_id=None,
        locale="nl",
        prompt="een kat",
        options=TaskOptions(duration="10"),
        image_count=2,
        input_dir="/tmp/x",
        state=TaskState.QUEUED,
        status_message=None,
        error_code=None,
        video_url=None,
        video_path=None,
        video_bytes=None,
        attempts=0,
        quota_refunded=False,
        callback_token="t",
        upload_limit=10 << 20,
        created_at=now,
        updated_at=now,
        submitted_at=None,
        finished_at=None,
        delivered_at=None,
        quota_reset_at=None,
        inputs_removed_at=None,
        notes=TaskNotes(image_names=("a.png", "b.png"), result_where=ResultWhere.THREAD),
    )
    return replace(task, **changes)  # type: ignore[arg-type]


def test_status_embed_speaks_the_users_language() -> None:
    embed = status_embed(make_task(), queue_position=3, quota_line="nog 4 van 5 vandaag")
    fields = {f.name: f.value for f in embed.fields}
    assert embed.title == "🎬 Videoverzoek #7"
    assert "plaats 3" in fields["Status"]
    assert "a.png" in fields["Afbeeldingen"]
    assert "10 s" in fields["Opties"]


def test_failure_reasons_are_plain_words() -> None:
    task = make_task(
        locale="en-US",
        state=TaskState.FAILED,
        error_code="provider_failed",
        status_message="risk control",
    )
    assert failure_reason(task) == "Kling couldn't make it (risk control)."
    assert "content policy" in failure_reason(replace(task, error_code="content_policy"))


def test_domain_errors_map_to_messages() -> None:
    images = ImageIntakeError(
        [ImageProblem(2, "tiny.png", "too_small", {"width": 250, "height": 250, "min": 300})]
    )
    assert "afbeelding 2 (tiny.png): 250×250 px" in describe_error("nl", images)
    assert "image 2 (tiny.png): 250×250 px, needs at least 300×300" in describe_error(
        "en-US", images
    )
    quota = QuotaExceeded(QuotaKind.DAILY_USER, 10, 10, next_free_at=1_800_000_000)
    assert (
        describe_error("en-US", quota)
        == "You've used 10 of your 10 videos for today. The next one frees <t:1800000000:R>."
    )
    assert "task 12" in describe_error("en-US", RuntimeError("boom"), task_id=12)
    assert "Traceback" not in describe_error("en-US", RuntimeError("boom"))


def test_result_buttons_keep_their_state_in_the_custom_id() -> None:
    view = result_view(make_task(locale="en-US"))
    ids = [item.custom_id for item in view.children]  # type: ignore[attr-defined]
    assert ids == ["kling:regen:7", "kling:details:7", "kling:delete:7"]
    assert task_marker(7) in ids
    assert all(len(i) <= 100 for i in ids)
    assert TaskButton.__discord_ui_compiled_template__.fullmatch("kling:delete:7")  # type: ignore[attr-defined]


def test_a_failure_notice_is_marked_as_its_tasks_by_its_details_button() -> None:
    view = notice_view(make_task(locale="en-US", state=TaskState.FAILED))
    assert [item.custom_id for item in view.children] == [task_marker(7)]  # type: ignore[attr-defined]


def test_a_recorded_request_comes_back_as_it_was_asked() -> None:
    """What is recorded at the acknowledgement is all a restart has: nothing may be lost."""
    request = VideoRequest(
        prompt="two cats dance",
        duration="10",
        mode="pro",
        aspect_ratio="9:16",
        negative_prompt="blur",
        cfg_scale=0.4,
        attachments=[
            AttachmentRef(
                1, "a.png", "https://cdn.example/a.png?ex=1", 1234, "image/png", 400, 500
            ),
            AttachmentRef(2, "b.jpg", "https://cdn.example/b.jpg?ex=1", None, None, None, None),
        ],
    )
    payload = json.loads(json.dumps(request.to_payload()))  # as stored: JSON, no bytes
    assert VideoRequest.from_payload(payload) == request
    regenerate = VideoRequest(prompt="again", source_task_id=7, image_names=["a.png", "b.png"])
    assert VideoRequest.from_payload(json.loads(json.dumps(regenerate.to_payload()))) == regenerate
