"""The outbox directory's layout, shared by what writes it (activities.providers.outbox), what
reads it (``kairos outbox``) and what erases a customer from it (``kairos forget``): the index,
the key markers, the lock, and writes no reader ever sees half done."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

INDEX_FILE = "index.jsonl"
KEYS_DIR = ".keys"


def erase_customer(outbox_dir: Path, customer_id: str) -> int:
    """Delete every message of ``customer_id`` from the outbox: its file, its key marker and
    its index line. Returns how many messages were removed (0 when there is no outbox)."""
    index = outbox_dir / INDEX_FILE
    if not index.exists():
        return 0
    with index_lock(outbox_dir):
        kept: list[str] = []
        removed = 0
        for line in index.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except ValueError:
                kept.append(line)
                continue
            if entry.get("customer_id") != customer_id:
                kept.append(line)
                continue
            removed += 1
            file = outbox_dir / str(entry.get("file", ""))
            if file.parent in (outbox_dir / "email", outbox_dir / "sms"):
                file.unlink(missing_ok=True)
            marker = hashlib.sha256(str(entry.get("key", "")).encode()).hexdigest()
            (outbox_dir / KEYS_DIR / marker).unlink(missing_ok=True)
        if removed:
            write_atomically(index, "".join(kept).encode())
    return removed


@contextlib.contextmanager
def index_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the outbox index, across processes (flock on a lock file)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".index.lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomically(path: Path, content: bytes) -> None:
    """Write via a temporary file and a rename, so no one ever opens a half-written message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
