"""Usage for accounting: a CSV any spreadsheet reads safely, spend per UTC day, top members."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.usage import (
    CSV_COLUMNS,
    Counted,
    ProviderDrift,
    UsageRow,
    daily_totals,
    iso_utc,
    neutralise,
    provider_drift,
    usage_csv,
)


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def row(**changes: object) -> UsageRow:
    values: dict[str, object] = {
        "created_at": utc(2026, 11, 5, 14, 3, 22),
        "task_id": 17,
        "guild_id": 1111,
        "user_id": 2222,
        "mode": "pro",
        "duration": "10",
        "price": 700,
        "provider_deduction": "5",
        "state": "delivered",
        "counted": Counted.COUNTED,
    }
    values.update(changes)
    return UsageRow(**values)  # type: ignore[arg-type]


def read(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), strict=True))


def test_one_row_per_task_with_a_header_in_rfc_4180() -> None:
    data = usage_csv(
        [
            row(),
            row(
                task_id=18,
                guild_id=None,  # a DM
                mode=None,
                duration=None,  # the API's defaults
                price=None,  # reserved before prices existed
                provider_deduction=None,
                state="failed",
                counted=Counted.REFUNDED,
            ),
            row(task_id=19, price=350, created_at=utc(2026, 11, 6), counted=Counted.RESET),
        ]
    )
    assert data.startswith(b"created_at_utc,task_id,") and data.endswith(b"\r\n")
    assert data.count(b"\r\n") == 4 and b"\n" not in data.replace(b"\r\n", b"")
    rows = read(data)
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1] == [
        "2026-11-05T14:03:22Z",
        "17",
        "1111",
        "2222",
        "pro",
        "10",
        "7",
        "5",
        "delivered",
        "counted",
    ]
    assert rows[2] == [
        "2026-11-05T14:03:22Z",
        "18",
        "",
        "2222",
        "std",
        "5",
        "",
        "",
        "failed",
        "refunded",
    ]
    assert rows[3][0] == "2026-11-06T00:00:00Z" and rows[3][6] == "3.5"
    assert rows[3][9] == "reset"


def test_no_rows_is_a_header_alone() -> None:
    assert read(usage_csv([])) == [list(CSV_COLUMNS)]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_that_could_be_a_formula_is_neutralised(start: str) -> None:
    hostile = f'{start}HYPERLINK("http://x","y"),1'
    rows = read(usage_csv([row(state=hostile, provider_deduction=hostile)]))
    assert rows[1][8] == "'" + hostile and rows[1][7] == "'" + hostile
    assert len(rows[1]) == len(CSV_COLUMNS)  # the comma and quotes stayed inside the cell


@given(st.text(max_size=40))
def test_any_text_in_a_cell_reads_back_whole_and_never_starts_a_formula(value: str) -> None:
    rows = read(usage_csv([row(state=value)]))
    assert len(rows) == 2 and len(rows[1]) == len(CSV_COLUMNS)
    cell = rows[1][8]
    assert cell == neutralise(value)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_times_are_utc_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Amsterdam")
    time.tzset()
    try:
        assert iso_utc(0) == "1970-01-01T00:00:00Z"
        # the night the clocks go forward in Amsterdam
        assert iso_utc(utc(2026, 3, 29, 1, 30, 59) + 0.9) == "2026-03-29T01:30:59Z"
        assert daily_totals([(utc(2026, 3, 29, 23, 30), 5)], last_day=date(2026, 3, 29), days=1)[
            0
        ] == (date(2026, 3, 29), 5)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_spend_is_summed_per_utc_day_with_every_day_present() -> None:
    spends = [
        (utc(2026, 11, 4, 23, 59, 59), 100),
        (utc(2026, 11, 5, 0, 0, 0), 350),
        (utc(2026, 11, 5, 12), 700),
        (utc(2026, 11, 7, 8), 200),
        (utc(2026, 10, 1), 9999),  # before the range
        (utc(2026, 11, 8), 9999),  # after it
    ]
    totals = daily_totals(spends, last_day=date(2026, 11, 7), days=4)
    assert totals == [
        (date(2026, 11, 4), 100),
        (date(2026, 11, 5), 1050),
        (date(2026, 11, 6), 0),
        (date(2026, 11, 7), 200),
    ]
    assert daily_totals([], last_day=date(2026, 11, 7), days=1) == [(date(2026, 11, 7), 0)]
    with pytest.raises(ValueError):
        daily_totals([], last_day=date(2026, 11, 7), days=0)


def test_the_providers_charges_are_summed_beside_ours_where_both_are_known() -> None:
    rows = [
        row(price=700, provider_deduction="5"),
        row(price=350, provider_deduction="2.5"),
        row(price=100, provider_deduction=None),  # not said
        row(price=None, provider_deduction="1"),  # ours unknown (before prices)
        row(price=200, provider_deduction="junk"),  # never stored, but never trusted either
    ]
    drift = provider_drift(rows)
    assert drift == ProviderDrift(tasks=2, deducted=Decimal("7.5"), ours=1050)
    assert provider_drift([]) == ProviderDrift(0, Decimal(0), 0)
