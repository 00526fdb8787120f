"""Intake over mutated files: 20,000 in this process, 2,000 through the worker pool.

Run: `python benchmarks/bench_images_fuzz.py [--count 20000] [--pool-count 2000]`. Prints
figures; asserts nothing (tests/bot/images/test_fuzz.py holds the same property, the long run
marked slow). The files are valid JPEGs and PNGs of every common kind, each mutated one to three
times: bit flips, overwrites, cuts (with the end marker put back or not), deleted and repeated
spans, and PNG chunk changes that keep every CRC valid (tests/hostile_images.py). An outcome is
either a refusal (ImageIntakeError), or an accepted image whose bytes Pillow decodes fully at
the size intake reported. Anything else is counted: a foreign exception, or an accepted image
that doesn't decode.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.images import InspectionPool, PreparedImage
from tests.bot.images.hostile_images import FuzzTally, inspect_in_process, judge, mutated_files


def report(label: str, tally: FuzzTally, seconds: float, count: int) -> None:
    """One line of figures, and the first few of anything that went wrong."""
    assert tally.foreign is not None and tally.undecodable is not None
    print(
        f"{label}: {count} files in {seconds:.1f} s ({seconds / count * 1000:.2f} ms each):"
        f" accepted {tally.accepted}, refused {tally.refused},"
        f" foreign exceptions {len(tally.foreign)}, accepted but undecodable"
        f" {len(tally.undecodable)}"
    )
    for what, items in (("foreign", tally.foreign), ("undecodable", tally.undecodable)):
        for text, times in collections.Counter(item[:100] for item in items).most_common(5):
            print(f"   {what} ×{times}: {text}")


def main(count: int, pool_count: int) -> None:
    """Both runs."""
    warnings.simplefilter("ignore")  # Pillow's notes on odd metadata; the outcome is judged
    tally = FuzzTally()
    started = time.perf_counter()
    for data in mutated_files(count):
        judge(tally, data, inspect_in_process)
    report("in this process", tally, time.perf_counter() - started, count)

    pool = InspectionPool()
    pool.start()

    def through_pool(data: bytes) -> PreparedImage:
        return pool.inspect_blocking(1, "fuzz", data)

    tally = FuzzTally()
    started = time.perf_counter()
    try:
        for data in mutated_files(pool_count, seed=11):
            judge(tally, data, through_pool)
    finally:
        pool.close()
    report("through the worker pool", tally, time.perf_counter() - started, pool_count)
    outcomes = collections.Counter(figures.outcome for figures in pool.figures)
    print(f"   worker outcomes of the last {len(pool.figures)}: {dict(outcomes)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--pool-count", type=int, default=2_000)
    ns = parser.parse_args()
    main(ns.count, ns.pool_count)
