"""Benchmarks without Temporal: rendering alone, and compiling (``kairos validate``).

Rendering runs on one core in this process: personalised emails (subject, preheader, HTML with
the layout and CSS inlined, plain text) and SMS, each for a different customer, locale and
unsubscribe link, as the ``deliver`` activity renders them.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.infra import worker_environment
from benchmarks.project import BENCH_JOURNEYS, REPO, make_home
from benchmarks.workload import LOCALES, NAMES
from kairos.language.compiler import check_project
from kairos.messages.rendering import TemplateStore

EMAIL_TEMPLATES = (
    "welcome/welcome",
    "cart_abandonment/reminder",
    "nurture/espresso_1",
    "win_back/we_miss_you",
    "referral_reward/thanks",
)
SMS_TEMPLATE = "cart_abandonment/last_chance"


def _context(i: int) -> dict[str, Any]:
    """What ``deliver`` passes to the renderer for customer ``i`` (fresh profile, journey
    variables, the trigger event and an unsubscribe link)."""
    customer: dict[str, Any] = {
        "id": f"c-{i}",
        "email": f"c{i}@bench.example",
        "locale": LOCALES[i % 3],
        "timezone": "Europe/Helsinki",
        "phone": "+358401234567",
        "cart_total": 40.0 + i % 50,
        "stage": "consideration",
        "consent": {"email": True, "sms": True, "marketing": True, "transactional": True},
    }
    if name := NAMES[i % len(NAMES)]:
        customer["first_name"] = name
    return {
        "customer": customer,
        "event": {
            "name": "cart_updated", "id": f"e-{i}", "cart_total": 40.0 + i % 50,
            "currency": "EUR", "cart_url": f"https://lumo.example/cart/{i}", "item_count": 2,
            "first_item_name": "Ethiopia Yirgacheffe", "friend_first_name": "Kim",
        },
        "journey": {
            "name": "bench", "coupon": {"code": f"K{i:07d}", "percent": 10,
                                        "expires_at": "2030-01-31"},
            "reward": {"amount": 10.0, "currency": "EUR"},
        },
        "unsubscribe_url": f"https://lumo.example/u/{i}?sig=abc",
        "message": {"key": f"bench:{i}"},
    }  # fmt: skip


def _rate(render: Callable[[int], object], seconds: float) -> dict[str, float]:
    """Calls of ``render(i)`` per second of wall time and per CPU second, for ``seconds``."""
    render(0)  # compile and cache the templates first, as a running worker has
    count, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        render(count)
        count += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "rendered": count,
        "per_second": round(count / wall, 1),
        "per_cpu_second": round(count / cpu, 1),
        "ms_each": round(1000 * wall / count, 3),
    }


def rendering(seconds: float = 3.0) -> dict[str, Any]:
    """Emails and SMS rendered per second on one core."""
    store = TemplateStore(REPO / "templates")

    def email(i: int) -> object:
        template = EMAIL_TEMPLATES[i % len(EMAIL_TEMPLATES)]
        ctx = _context(i)
        return store.render_email(template, locale=ctx["customer"]["locale"],
                                  default_locale="en", context=ctx, marketing=True)  # fmt: skip

    def sms(i: int) -> object:
        ctx = _context(i)
        return store.render_sms(SMS_TEMPLATE, locale=ctx["customer"]["locale"],
                                default_locale="en", context=ctx, marketing=True)  # fmt: skip

    return {
        "email": _rate(email, seconds),
        "sms": _rate(sms, seconds),
        "email_templates": list(EMAIL_TEMPLATES),
        "sms_template": SMS_TEMPLATE,
    }


def compiling(journeys: int = 100) -> dict[str, Any]:
    """Time to check ``journeys`` journeys: ``kairos validate`` as a command (wall and CPU
    seconds, the first run and the second, with bytecode cached), and in-process."""
    # Six benchmark journeys since the sales handover: 17 copies check 102, not 120.
    copies = max(1, round(journeys / len(BENCH_JOURNEYS)))
    with tempfile.TemporaryDirectory(prefix="kairos-compile-") as tmp:
        home = make_home(Path(tmp), copies=copies)
        count = len(list((home / "journeys").glob("bench_*.yaml")))
        start = time.perf_counter()
        project, report = check_project(home)
        in_process = time.perf_counter() - start
        if project is None:
            raise RuntimeError(f"the benchmark journeys do not compile:\n{report}")
        command = [str(Path(sys.executable).parent / "kairos"), "validate"]
        # With bytecode cached, as an installed package has it (pip compiles it; the workers
        # of the engine benchmark cache it the same way): the first run writes it.
        env = {**worker_environment(Path(tmp), REPO), "KAIROS_HOME": str(home)}
        runs = []
        for _ in range(2):
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, check=False)
            seconds = time.perf_counter() - start
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
            runs.append((seconds, cpu))
    figures: dict[str, Any] = {
        "journeys": count,
        "validate_command_seconds": round(runs[1][0], 2),
        "validate_command_cpu_seconds": round(runs[1][1], 2),
        "validate_command_first_seconds": round(runs[0][0], 2),
        "validate_command_first_cpu_seconds": round(runs[0][1], 2),
        "validate_exit_code": done.returncode,
        "in_process_seconds": round(in_process, 2),
        "ms_per_journey": round(1000 * in_process / count, 1),
    }
    if done.returncode != 0:
        # The command's time means nothing then; say why it failed instead.
        lines = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        figures["validate_error"] = lines[-1] if lines else f"exit code {done.returncode}"
    return figures
