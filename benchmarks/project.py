"""The benchmark project: the journeys under benchmarks/journeys with the repository's catalogue
and templates, assembled into a Kairos home (``<home>/journeys`` and ``<home>/templates``).

The benchmark journeys mirror the real ones with waits of seconds; they reuse the real
``journeys/customer.yaml`` (its scoring rules included), the segments they trigger on and
``templates/`` so that routing, scoring, segment entry, policy and rendering cost what they
cost in production.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kairos.language.project_files import CATALOGUE_FILE

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
JOURNEYS = BENCH_DIR / "journeys"
BENCH_JOURNEYS = (
    "bench_welcome",
    "bench_cart_abandonment",
    "bench_nurture",
    "bench_referral_reward",
    "bench_win_back",
    "bench_sales_handover",
)
# The segments benchmark journeys trigger on, copied from the repository's segments/.
BENCH_SEGMENTS = ("sales_ready",)


def make_home(root: Path, *, copies: int = 1, templates: str = "link") -> Path:
    """Write a Kairos home under ``root`` with the benchmark journeys and return it.

    Args:
        root: An empty (or missing) directory to build the home in.
        copies: How many copies of each benchmark journey to write; copy ``k > 0`` of
            ``bench_x`` is the same journey named ``bench_x_k`` (for compile timings).
        templates: ``link`` to the repository's templates, or ``copy`` them (so that edits
            made while a benchmark runs do not reach it).
    """
    journeys = root / "journeys"
    journeys.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "journeys" / CATALOGUE_FILE, journeys / CATALOGUE_FILE)
    for name in BENCH_JOURNEYS:
        source = (JOURNEYS / f"{name}.yaml").read_text(encoding="utf-8")
        for copy in range(copies):
            renamed = name if copy == 0 else f"{name}_{copy}"
            text = source.replace(f"journey: {name}\n", f"journey: {renamed}\n", 1)
            (journeys / f"{renamed}.yaml").write_text(text, encoding="utf-8")
    segments = root / "segments"
    segments.mkdir(exist_ok=True)
    for name in BENCH_SEGMENTS:
        shutil.copyfile(REPO / "segments" / f"{name}.yaml", segments / f"{name}.yaml")
    target = root / "templates"
    if templates == "copy":
        shutil.copytree(REPO / "templates", target)
    else:
        target.symlink_to(REPO / "templates", target_is_directory=True)
    return root
