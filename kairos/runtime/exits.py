"""Ending a process that used the Temporal SDK."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """End the process without interpreter teardown.

    The Temporal SDK's Rust threads can touch a finalizing interpreter and abort it after the
    work is done ("Fatal Python error: PyGILState_Release", exit 134; temporalio/sdk-python#300):
    a command that printed its answer would then fail at random. So the exit handlers run as
    usual (the embedded PostgreSQL's handle is released there), the output is flushed, and the
    process ends at once.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
