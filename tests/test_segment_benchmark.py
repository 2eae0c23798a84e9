"""The segment benchmark in miniature: it fills the store and counts what it claims to count."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import segments


def test_the_segment_benchmark_counts_each_segment_over_generated_customers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "segments.json"
    assert segments.main(["--customers", "210", "--json", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["customers"] == 210
    members = {name: figures["members"] for name, figures in result["segments"].items()}
    # Customer i: stage by i % 5 (3 is retention), a phone unless i % 3 == 0, sms consent when
    # i % 7 < 3, marketing when i is even, i % 4 orders; counted here the way the SQL counts.
    assert members["sms_subscribers_retention"] == sum(
        1
        for i in range(1, 211)
        if i % 5 == 3 and i % 3 > 0 and i % 7 < 3 and i % 2 == 0 and i % 4 >= 2
    )
    assert members["warm_leads"] == sum(1 for i in range(1, 211) if i % 100 >= 50 and i % 3 == 2)
    assert members["opened_nothing_in_90_days"] == sum(
        1 for i in range(1, 211) if not (i % 3 == 0 and i % 180 <= 90)
    )
    assert all(len(figures["seconds"]) == 3 for figures in result["segments"].values())
