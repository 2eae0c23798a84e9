"""Running the real ``kairos`` command line (and the commands the docs show) as subprocesses.

``documented(command)`` marks a command a test runs word for word because a document shows it;
it fails when the documents no longer show it, and ``test_docs.py`` fails when a document shows
a command that no test passes through ``documented``. So what README.md and the docs tell people
to type is what the tests type.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from kairos.runtime.codec import data_converter
from kairos.store.keys import DatabaseKeys
from kairos.tools.dev import dev_server_args, temporal_binary

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KAIROS = BIN / "kairos"
# Every document, so that a new one is guarded without anyone remembering to add it here.
DOCS = ("README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))
# What the machine running the tests may have set that would point a command elsewhere.
FOREIGN_SETTINGS = re.compile(r"^(TEMPORAL_|KAIROS_|SENDGRID_|TWILIO_)")
# The setting that names the directory of checked projects (kairos.language.project_cache).
CACHE_SETTING = "KAIROS_CACHE_DIR"
_FENCE = re.compile(r"^```(\w*)\s*$")
_INLINE = re.compile(r"`((?:\.venv/bin/)?kairos [^`]+)`")
# A line of a plain ``` block that is a command someone would copy, not output or a file list.
_COMMAND = re.compile(r"^(python -m |make |\.venv/bin/|kairos |curl )")


@dataclass(frozen=True)
class Ran:
    """What a command did: exit code, standard output, standard error."""

    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def command_env(**values: str | int | os.PathLike[str]) -> dict[str, str]:
    """The environment for a command: this machine's, without Kairos, Temporal or provider
    settings, with the virtualenv's binaries on PATH, no colours and wide tables."""
    env = {k: v for k, v in os.environ.items() if not FOREIGN_SETTINGS.match(k)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(NO_COLOR="1", COLUMNS="200", KAIROS_HOME=str(ROOT))
    # The session's own cache of checked projects (conftest.py), never the user's.
    env["KAIROS_CACHE_DIR"] = os.environ.get(CACHE_SETTING, "off")
    env.update({k: str(v) for k, v in values.items()})
    return env


async def run(
    command: str | Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path = ROOT,
    stdin: str | None = None,
    timeout: float = 90,
    program: bool = False,
) -> Ran:
    """Run ``command`` and wait for it: a shell line, or a list of ``kairos`` arguments (with
    ``program``, a whole argv)."""
    if isinstance(command, str):
        argv = ["bash", "-c", command]
    else:
        argv = list(command) if program else [str(KAIROS), *command]
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@cache
def documented_commands() -> frozenset[str]:
    """Every command the documents show (see ``commands_in``)."""
    return frozenset(
        command
        for name in DOCS
        for command in commands_in((ROOT / name).read_text(encoding="utf-8"))
    )


def commands_in(document: str) -> set[str]:
    """The commands a Markdown document shows: each line of a ``sh`` code block (comments
    dropped, continuation lines joined), each line of a plain code block that starts with a
    command (``python -m``, ``make``, ``.venv/bin/``, ``kairos``, ``curl``), and each inline
    code span that starts with ``kairos``."""
    found: set[str] = set()
    language: str | None = None
    pending = ""
    prose: list[str] = []
    for line in document.splitlines():
        fence = _FENCE.match(line.strip())
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language is None:
            prose.append(line)
        elif language == "sh" or (language == "" and (pending or _COMMAND.match(line))):
            text = re.sub(r"\s{2,}#.*$", "", line).strip()
            if not text or text.startswith("#"):
                continue
            if text.endswith("\\"):
                pending += text[:-1].strip() + " "
                continue
            found.add(pending + text)
            pending = ""
    # A span may wrap onto the next line of a paragraph.
    for match in _INLINE.finditer("\n".join(prose)):
        found.add(" ".join(match.group(1).split()))
    return found


def documented(command: str) -> str:
    """``command``, which a document shows (fails when none does any more)."""
    assert command in documented_commands(), f"no document shows {command!r}"
    return command


def python_examples(name: str) -> list[str]:
    """The ``python`` code blocks of a document, in order: each runs as a script."""
    blocks: list[str] = []
    language: str | None = None
    lines: list[str] = []
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        fence = _FENCE.match(line.strip())
        if fence and language is None:
            language, lines = fence.group(1), []
        elif fence:
            if language == "python":
                blocks.append("\n".join(lines) + "\n")
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


@pytest_asyncio.fixture(name="temporal")
async def temporal_fixture(keys: DatabaseKeys) -> AsyncIterator[WorkflowEnvironment]:
    """``temporal``: a Temporal dev server of the test's own (in memory, under a second to
    start); import this into a test module to use it.

    Workflow ids are the customer's (``journey:welcome:c-42:1``), so two tests that use the
    same customer id on one shared server would find each other's runs; commands that the
    documents show must use the documents' ids.
    """
    args = dev_server_args(None, 0, None)
    # start_local adds server/start-dev, ip and port itself: pass only what follows.
    extra = [a for a in args[args.index("--log-level") :] if a != "--headless"]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary("temporal")),
        dev_server_extra_args=extra,
        data_converter=data_converter(keys),
        ui=False,
    )
    async with env:
        yield env


async def kairos_in_process(command: str, env: dict[str, str], cwd: Path = ROOT) -> Result:
    """A ``kairos ...`` line, split as the shell splits it, run in this process (in a thread
    of its own, so the test's worker goes on working); it must succeed. Seconds faster than a
    subprocess: the project is compiled, not Python started and every module imported."""
    from kairos.cli import app

    args = shlex.split(command)
    assert args[0] == "kairos", command

    def invoke() -> Result:
        before = Path.cwd()
        if cwd != before:
            os.chdir(cwd)  # the command's relative paths are the document's
        try:
            return CliRunner().invoke(app, args[1:], env=env)
        finally:
            os.chdir(before)

    result = await asyncio.to_thread(invoke)
    assert result.exit_code == 0, (command, result.output)
    return result
