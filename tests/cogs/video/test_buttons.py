"""The buttons under a result: their state lives in the custom_id."""

from __future__ import annotations

from bot.tasks import TaskState
from cogs.video.buttons import TaskButton, notice_view, result_view, task_marker
from tests.cogs.helpers import make_task


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
