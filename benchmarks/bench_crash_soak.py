"""Crash soak figures: requests under repeated SIGKILLs of the real bot, per seed.

Run: `.venv/bin/python benchmarks/bench_crash_soak.py [--seeds 1 2 3] [--requests 40]
[--kills 12] [--users 6]`.

Each seed runs `tests/e2e/soak.py`: the real bot (`python -m bot`) against the fake Discord and
the fake CometAPI, `--requests` /video requests from `--users` users (about a quarter fail at
the provider), SIGKILLed `--kills` times at chosen moments (an image download held by the CDN,
a failure notice, an upload, the final status edit or a new status message held by Discord, a
submit the provider answers late, a restart in progress) and random ones, restarted at once on
the same data. It prints, per seed, the lost requests, double submits and double deliveries
(the targets are 0, 0, 0) with the other figures. Asserts nothing; exits 1 when a seed isn't
clean, so `make bench` shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.soak import run_soak


async def main(seeds: list[int], requests: int, kills: int, users: int) -> int:
    clean = True
    for seed in seeds:
        report = await run_soak(seed, requests=requests, kills=kills, users=users)
        print(report.summary(), flush=True)
        for line in report.details:
            print("   ", line)
        clean = clean and report.clean
    print("targets: lost 0, double submits 0, double deliveries 0 —", "met" if clean else "MISSED")
    return 0 if clean else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--users", type=int, default=6)
    ns = parser.parse_args()
    raise SystemExit(asyncio.run(main(ns.seeds, ns.requests, ns.kills, ns.users)))
