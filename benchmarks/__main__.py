"""``make bench`` / ``python -m benchmarks``: Kairos against the hand-written baseline.

Runs, in one go: every engine measurement (each side, each customer count, each worker count,
each on a fresh dev server and a fresh database of one temporary embedded PostgreSQL server),
rendering alone, and compiling 100 journeys; prints a table and writes the figures with a
description of the machine to ``benchmarks/results/``.

    python -m benchmarks                      # N = 100 and 1,000 with 1 worker (a few minutes)
    python -m benchmarks --scale full         # N = 100, 1,000, 5,000; 5,000 with 1 and 2 workers
    python -m benchmarks --customers 1000 --workers 2
    python -m benchmarks --customers 1000 --profile   # py-spy on the workers of the largest run
    python -m benchmarks --only report        # kairos report over 1,000,000 synthetic entries
    python -m benchmarks --only broadcast     # a broadcast to 2,000 members; what an event costs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import analytics, broadcast, engine, events, micro, profiles, report
from benchmarks.project import BENCH_DIR
from benchmarks.report import machine
from kairos.store.embedded import temporary_server
from kairos.tools.broadcast import DEFAULT_CONCURRENCY

SCALES: dict[str, list[tuple[int, int]]] = {
    "quick": [(100, 1), (1000, 1)],
    "full": [(100, 1), (1000, 1), (5000, 1), (5000, 2)],
}
PARTS = ("engine", "render", "compile", "report", "broadcast")
# What runs without --only: the report part is asked for by name (it generates 1M entries).
DEFAULT_PARTS = ("engine", "render", "compile")
SIDES = ("kairos", "baseline", "plain")
BROADCAST_MEMBERS = 2000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Kairos against a hand-written Temporal baseline: throughput and cost.",
    )
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="quick",
        help="which runs when --customers is not given (default: quick)",
    )
    parser.add_argument(
        "--customers",
        type=int,
        action="append",
        metavar="N",
        help="customers per run; repeat for several runs",
    )
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        choices=(1, 2),
        help="worker processes per run; repeat to compare (default 1)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the workers of the largest run with py-spy"
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the results (default: benchmarks/results/)",
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only these parts (default: engine, render, compile)",
    )
    parser.add_argument(
        "--report-entries",
        type=int,
        default=1_000_000,
        metavar="N",
        help="synthetic journey entries the report part reports on (default 1,000,000)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds a run may take before it is reported incomplete",
    )
    return parser  # fmt: skip


def plan(args: argparse.Namespace) -> list[tuple[int, int]]:
    """The (customers, workers) runs to make, smallest first."""
    if args.customers:
        return sorted({(n, w) for n in args.customers for w in (args.workers or [1])})
    runs = SCALES[args.scale]
    if args.workers:
        runs = sorted({(n, w) for n, _ in runs for w in args.workers})
    return runs


async def engine_runs(
    runs: list[tuple[int, int]], *, profile_dir: Path | None, timeout: float, postgres: str
) -> list[dict[str, Any]]:
    """Each run on every side, on the PostgreSQL server at ``postgres`` (its admin URL); the
    order of the sides rotates from one run to the next."""
    results = []
    largest = max(runs) if runs else None
    for index, (customers, workers) in enumerate(runs):
        shift = index % len(SIDES)
        sides = SIDES[shift:] + SIDES[:shift]
        pair: dict[str, Any] = {"customers": customers, "workers": workers}
        for side in sides:
            profile = None
            if profile_dir is not None and (customers, workers) == largest:
                profile = profile_dir / f"{side}-n{customers}-w{workers}"
            print(f"  {side:8} N={customers:<5} workers={workers} ...", end="", flush=True)
            phase = engine.Phase(side, customers, workers, profile)
            figures = await engine.measure(phase, timeout, postgres)
            if profile is not None:
                files = [Path(p) for p in figures.pop("profiles")]
                figures["profile"] = profiles.summarise(files)
            else:
                figures.pop("profiles")
            print(f" {figures['wall_seconds']}s", flush=True)
            pair[side] = figures
        pair["ratio"] = report.ratios(pair["kairos"], pair["baseline"])
        pair["ratio_plain"] = report.ratios(pair["kairos"], pair["plain"])
        results.append(pair)
    return results


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a run like Ctrl-C does: workers and dev servers are stopped on the way."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    args = _parser().parse_args(argv)
    parts = set(args.only or DEFAULT_PARTS)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_dir = BENCH_DIR / "results"
    results_dir.mkdir(exist_ok=True)
    result: dict[str, Any] = {
        "schema": 1,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "conditions": report.CONDITIONS,
    }
    if "render" in parts:
        print("rendering ...", flush=True)
        result["rendering"] = micro.rendering()
    if "compile" in parts:
        print("compiling 100 journeys ...", flush=True)
        result["compile"] = micro.compiling()
    if "report" in parts:
        print(f"kairos report over {args.report_entries:,} synthetic entries ...", flush=True)
        with temporary_server(Path(tempfile.gettempdir())) as postgres:
            result["report"] = asyncio.run(analytics.measure(postgres, args.report_entries))
    if "broadcast" in parts:
        print(f"a broadcast to {BROADCAST_MEMBERS:,} members; what an event costs ...", flush=True)
        with temporary_server(Path(tempfile.gettempdir())) as postgres:
            result["broadcast"] = asyncio.run(
                broadcast.measure(postgres, BROADCAST_MEMBERS, DEFAULT_CONCURRENCY)
            )
            result["events"] = asyncio.run(events.measure(postgres, 300))
    if "engine" in parts:
        print("engine runs (each on a fresh dev server):", flush=True)
        profile_dir = results_dir / f"profile-{stamp}" if args.profile else None
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
        with temporary_server(Path(tempfile.gettempdir())) as postgres:
            result["engine"] = asyncio.run(
                engine_runs(
                    plan(args), profile_dir=profile_dir, timeout=args.timeout, postgres=postgres
                )
            )
    path = args.json or results_dir / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(report.table(result))
    for part in ("broadcast", "events"):
        if part in result:
            print(f"{part}: {json.dumps(result[part], indent=2)}")
    print(f"\nwritten to {path}")
    if any(not pair[side]["complete"] for pair in result.get("engine", []) for side in SIDES):
        print("some runs did not complete in time: see 'complete' in the JSON", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
