"""Reading py-spy's collapsed stacks: where a worker process spent its CPU.

py-spy writes one line per distinct stack, ``frame;frame;...;leaf count``, outermost first,
each frame ``function (file:line)``. ``summarise`` turns the files of one side into the share
of samples in each area of interest and the hottest functions, by self and by total time.

Most samples of a worker are threads waiting: the event loop in ``select``, the workflow thread
pool for work, native threads with no Python frame. Those are counted as idle, and the areas
are also given as shares of the busy samples, which is what "where does the CPU go" asks.

    python -m benchmarks.profiles benchmarks/results/profile-<stamp>/   # both sides, again
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Areas of the hot path, matched against a stack's frames; a sample counts for each area it
# passes through, so shares overlap (the journey interpreter runs inside the sandbox, ...).
AREAS: dict[str, tuple[str, ...]] = {
    "journey interpreter (workflows/journey.py)": ("workflows/journey.py",),
    "hand-written journeys (benchmarks/baseline.py)": ("benchmarks/baseline.py",),
    "deliver activity (activities/messaging.py)": ("activities/messaging.py",),
    "rendering (kairos/messages/rendering.py and the modules it is built of)": (
        "kairos/messages/rendering.py",
        "kairos/messages/template_files.py",
        "kairos/messages/template_environment.py",
        "kairos/messages/template_checks.py",
        "kairos/messages/message_text.py",
        "kairos/messages/compliance_footers.py",
        "kairos/messages/preview.py",
    ),
    "customer store (kairos/store)": ("kairos/store/",),
    "PostgreSQL driver (psycopg)": ("psycopg/", "psycopg_pool/"),
    "expressions (kairos/language/expressions.py)": ("kairos/language/expressions.py",),
    "outbox provider": ("providers/outbox.py",),
    "workflow sandbox (temporalio/worker/workflow_sandbox)": ("workflow_sandbox/",),
    "workflow activation (temporalio/worker/_workflow_instance.py)": ("_workflow_instance.py",),
    "payload conversion (temporalio/converter.py)": ("temporalio/converter.py",),
    "pydantic": ("pydantic/", "pydantic_core"),
    "jinja2": ("jinja2/",),
    "asyncio event loop": ("asyncio/base_events.py",),
}
# Leaves of samples in which a thread waits rather than runs.
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",  # the event loop, waiting for I/O
    "_worker (concurrent/futures/thread.py",  # a pool thread, waiting for work
)
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _stacks(paths: Iterable[Path]) -> Iterable[tuple[list[str], int]]:
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _LINE.match(line)
            if match:
                yield match["stack"].split(";"), int(match["count"])


def _function(frame: str) -> str:
    """``function (file:line)`` -> ``function (file)``, the file shortened to its package."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "lib/python3", "/work/main/", "main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['function']} ({file})"


def summarise(paths: Iterable[Path], top: int = 15) -> dict[str, Any]:
    """Shares of samples per area, and the top functions by self and total samples."""
    total = idle = 0
    areas: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in _stacks(paths):
        total += count
        if not frames[-1] or frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        joined = ";".join(frames)
        for area, needles in AREAS.items():
            if any(needle in joined for needle in needles):
                areas[area] += count
        self_time[_function(frames[-1])] += count
        for name in {_function(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return {"samples": 0}

    busy = total - idle

    def share(counter: Counter[str], limit: int | None = None, of: int = total) -> dict[str, float]:
        return {k: round(100 * v / max(of, 1), 1) for k, v in counter.most_common(limit)}

    return {
        "samples": total,
        "idle_percent": round(100 * idle / total, 1),
        "area_percent": share(areas),
        "busy_area_percent": share(areas, of=busy),
        "top_self_percent": share(self_time, top),
        "top_busy_self_percent": share(self_time, top, of=busy),
        "top_total_percent": share(inclusive, top),
    }


def sides(directory: Path) -> dict[str, dict[str, Any]]:
    """``summarise`` of each side's files in a ``--profile`` directory."""
    found: dict[str, list[Path]] = {}
    for path in sorted(directory.glob("*.folded")):
        found.setdefault(path.name.split("-", 1)[0], []).append(path)
    return {side: summarise(paths) for side, paths in found.items()}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiles", description=__doc__)
    parser.add_argument("directory", type=Path, help="a benchmarks/results/profile-* directory")
    args = parser.parse_args(argv)
    summaries = sides(args.directory)
    if not summaries:
        raise SystemExit(f"no py-spy files (*.folded) in {args.directory}")
    names = sorted({a for s in summaries.values() for a in s.get("busy_area_percent", {})})
    print(f"{'share of busy samples, %':64}" + "".join(f"{side:>10}" for side in summaries))
    print(f"{'(idle samples, % of all)':64}"
          + "".join(f"{s.get('idle_percent', 0):>10}" for s in summaries.values()))  # fmt: skip
    for name in sorted(names, key=lambda n: -max(s["busy_area_percent"].get(n, 0)
                                                 for s in summaries.values())):  # fmt: skip
        cells = "".join(f"{s['busy_area_percent'].get(name, 0):>10}" for s in summaries.values())
        print(f"{name:64}{cells}")


if __name__ == "__main__":
    main()
