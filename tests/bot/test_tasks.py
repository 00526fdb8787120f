"""Tests of bot.tasks: the transition table, and the options and notes as stored."""

from __future__ import annotations

import json

from bot.tasks import (
    ACTIVE,
    FINISHED,
    TERMINAL,
    TRANSITIONS,
    ResultWhere,
    TaskNotes,
    TaskOptions,
    TaskState,
)


def test_every_state_has_its_way_in_and_endings_are_left_only_forwards() -> None:
    assert set(TRANSITIONS) == set(TaskState)
    assert ACTIVE | FINISHED == set(TaskState) and not ACTIVE & FINISHED
    for state in TERMINAL:
        assert not any(state in befores for befores in TRANSITIONS.values()), state
    assert [s for s, befores in TRANSITIONS.items() if TaskState.SUCCEEDED in befores] == [
        TaskState.DELIVERED
    ]


def test_options_and_notes_load_from_what_the_bot_stored_before_they_were_typed() -> None:
    """The column's JSON is the one the bot always wrote: old rows load, new rows match."""
    stored = {
        "aspect_ratio": "9:16",
        "cfg_scale": 0.5,
        "dm_fallback": True,
        "duration": "10",
        "image_changes": ["image 1 (a.webp): converted WEBP to PNG"],
        "image_names": ["a.webp", "b.png"],
        "image_urls": ["https://cdn/a", "https://cdn/b"],
        "mode": "pro",
        "negative_prompt": "blur",
        "quota_daily": 5,
        "result_where": "dm",
    }
    options = TaskOptions.from_json(stored)
    notes = TaskNotes.from_json(stored)
    assert options == TaskOptions(
        duration="10", mode="pro", aspect_ratio="9:16", negative_prompt="blur", cfg_scale=0.5
    )
    assert notes.result_where is ResultWhere.DM and notes.dm_fallback and notes.quota_daily == 5
    assert notes.image_names == ("a.webp", "b.png") and len(notes.image_urls) == 2
    assert {**options.to_json(), **notes.to_json()} == stored
    assert json.loads(json.dumps(notes.to_json())) == notes.to_json()


def test_unset_options_and_notes_take_no_room_and_default_back() -> None:
    old = {"duration": "5", "image_names": [], "quota_daily": None, "result_where": "thread"}
    notes = TaskNotes.from_json(old)
    assert notes == TaskNotes(result_where=ResultWhere.THREAD)
    assert notes.to_json() == {"result_where": "thread"}
    assert TaskOptions.from_json(old).to_json() == {"duration": "5"}
    assert TaskOptions(negative_prompt="", cfg_scale=0.0).to_json() == {"cfg_scale": 0.0}
    assert TaskOptions.from_json({}) == TaskOptions() and TaskNotes.from_json({}) == TaskNotes()
