"""Kling client fuzz figures: thousands of hostile answers, and how each one ended.

Run: `python benchmarks/bench_client_fuzz.py [ANSWERS] [SEED]` (default 5,000 answers, seed 0).
A loopback peer answers every request with bytes hypothesis generates: any status, headers
(bad Retry-After dates, conflicting lengths, unknown encodings), bodies (task envelopes with
junk fields and hostile video URLs, random JSON, raw bytes, 200,000 brackets, bodies around
the 2 MiB cap, UTF-16, a BOM), framed by a true or lying Content-Length, chunked or by
closing, sometimes gzipped, cut into writes with pauses. Half are queries, half submits (an
ambiguous submit looks its task up, so it asks more than once). Prints the outcomes by type
and the foreign exceptions (anything not a task or a `KlingError`); exits 1 when there is one.
A second pass sends valid task answers framed and cut every way and counts how many were read.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.hostile_http import ClientHarness, fuzz_client, read_valid_answers

VALID_ANSWERS = 500


def main() -> int:
    answers = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    logging.getLogger("bot.kling.client").setLevel(logging.ERROR)  # each lookup logs a warning
    with ClientHarness() as harness:
        started = time.perf_counter()
        report = fuzz_client(harness, answers, seed=seed)
        fuzz_seconds = time.perf_counter() - started
        requests = harness.server.requests
        started = time.perf_counter()
        given, read = read_valid_answers(harness, VALID_ANSWERS, seed)
        valid_seconds = time.perf_counter() - started

    print(f"Hostile answers given to the client: {report.answers:,} (seed {seed})")
    print(f"  requests the peer answered: {requests:,} in {fuzz_seconds:.1f} s")
    for name, count in sorted(report.outcomes.items(), key=lambda item: -item[1]):
        print(f"  {name:<28} {count:>6,}")
    print(f"  foreign exceptions: {len(report.foreign)}")
    for line in report.foreign[:10]:
        print(f"    {line}")
    print(f"Valid task answers, framed and cut every way: {read:,} of {given:,} read as their task")
    print(f"  in {valid_seconds:.1f} s")
    return 1 if report.foreign or read != given else 0


if __name__ == "__main__":
    sys.exit(main())
