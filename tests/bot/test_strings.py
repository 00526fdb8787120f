"""Every user-facing string, in English and Dutch."""

from __future__ import annotations

from bot.strings import EN, NL, NL_IMAGES, PROBLEM_TEXT, text
from bot.tasks import FailureReason, TaskState


def test_every_message_exists_in_both_languages() -> None:
    assert set(EN) == set(NL)
    assert set(PROBLEM_TEXT) == set(NL_IMAGES)
    for state in TaskState:
        assert text("nl", f"state.{state.value}", position=1, link="x", reason="r")
    for reason in FailureReason:
        assert f"reason.{reason.value}" in EN
