"""What the spend reports and the metrics cost: chart, CSV, credit check, a /metrics scrape.

Run: `.venv/bin/python benchmarks/bench_reports.py`.

Prints, for the daily-spend chart (7, 31 and 90 days, random spend with a cap line) the time
to draw it (median of 20) and its size; for the usage CSV the rows per second and bytes per row
for 100,000 tasks; for `check_credits` + `explain` (a refusal worked out over 1,000 spends in
the window) the time per call; and for a /metrics scrape over HTTP with every series in use the
time per scrape and the size of the answer. Asserts nothing on time: these are figures (the
chart is drawn on the event loop's thread unless the caller hands it to a worker thread, so
its time is the stall it would cause).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bot.charts import spend_chart_png
from bot.credits import CreditKind, check_credits, explain
from bot.metrics import Health, Metrics, MetricsServer
from bot.usage import Counted, UsageRow, usage_csv


def median_ms(run: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_chart() -> None:
    rng = random.Random(1)
    for days in (7, 31, 90):
        values = [
            (date(2026, 1, 1) + timedelta(days=i), rng.choice([0, 100, 350, 700, 4200]))
            for i in range(days)
        ]
        png = spend_chart_png(
            values, title="Credits spent per day (UTC)", cap=3000, cap_label="cap"
        )
        took = median_ms(
            lambda values=values: spend_chart_png(
                values, title="Credits spent per day (UTC)", cap=3000, cap_label="cap"
            ),
            20,
        )
        print(f"chart, {days:2d} days: {took:6.1f} ms to draw, {len(png) / 1024:5.1f} KiB")


def bench_csv() -> None:
    rng = random.Random(2)
    rows = [
        UsageRow(
            created_at=1_790_000_000 + i * 13.0,
            task_id=i,
            guild_id=rng.choice([None, 123456789012345678]),
            user_id=rng.randrange(10**17, 10**18),
            mode=rng.choice(["std", "pro", None]),
            duration=rng.choice(["5", "10", None]),
            price=rng.choice([100, 200, 350, 700]),
            provider_deduction=rng.choice([None, "5", "2.5"]),
            state=rng.choice(["delivered", "failed", "timed_out"]),
            counted=rng.choice(list(Counted)),
        )
        for i in range(100_000)
    ]
    start = time.perf_counter()
    data = usage_csv(rows)
    took = time.perf_counter() - start
    print(
        f"CSV, {len(rows):,} tasks: {took * 1000:.0f} ms ({len(rows) / took:,.0f} rows/s), "
        f"{len(data) / len(rows):.0f} bytes per row, {len(data) / 2**20:.1f} MiB"
    )


def bench_check() -> None:
    now = 1_800_000_000.0
    spends = [(now - 86_000 + i * 80.0, 700) for i in range(1_000)]
    spent = sum(c for _, c in spends)
    checks = [(CreditKind.DAILY_GLOBAL, spent + 100)]

    def run() -> None:
        refusal = check_credits(700, checks, {CreditKind.DAILY_GLOBAL: spent})
        assert refusal is not None
        explain(refusal, spends, now=now)

    took = median_ms(run, 200)
    print(f"credit refusal worked out over 1,000 spends: {took * 1000:.0f} µs")


async def bench_scrape() -> None:
    metrics = Metrics("shards-0-1")
    for i in range(200):
        metrics.observe_answer(i / 100, "query" if i % 3 else "submit")
        metrics.count_poll()
        metrics.count_error(f"Error{i % 12}")
        metrics.count_delivery("file" if i % 4 else "link")
    metrics.set_tasks_by_state({s: 3 for s in ("queued", "submitted", "processing", "delivered")})

    async def ok() -> Health:
        return Health(True, "fine")

    server = MetricsServer(metrics, ok, host="127.0.0.1", port=0)
    port = await server.start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            times, size = [], 0
            for _ in range(200):
                start = time.perf_counter()
                async with session.get(url) as response:
                    size = len(await response.read())
                times.append(time.perf_counter() - start)
    finally:
        await server.stop()
    print(
        f"/metrics scrape over HTTP: {statistics.median(times) * 1000:.2f} ms median, "
        f"{size / 1024:.1f} KiB"
    )


def main() -> None:
    bench_chart()
    bench_csv()
    bench_check()
    asyncio.run(bench_scrape())


if __name__ == "__main__":
    main()
