"""The checked project, kept between commands: a runtime command (``kairos emit``, the worker,
``serve``, ...) that finds the project it would check already checked skips the check.

An entry is written only for a project with no errors, and holds what the check produced from
the project's files: the catalogue, the plans, the warnings, the pinned template trees and the
segments (never a customer's data: no command's input reaches it). Its name is a SHA-256 of
everything that result depends on (:func:`project_key`): the content, path and link target of
every file under ``journeys/``, ``segments/`` and ``templates/`` (so an edit, a new file or a
deleted one is a new key), the resolved home, the actions a journey may call (the built-in ones
and those ``KAIROS_ACTIONS`` registers, with the source of the modules it names), and the
checking code itself: every ``kairos/**/*.py``, the Python version and the distributions
installed beside Jinja, with their versions (Babel, pydantic, the YAML parsers, ...).
Modification times are not part of it: a file is what it holds.

Entries are pickles in the user's own cache directory (``Settings.project_cache``); a
directory or entry that someone else could have written (not the user's, or writable by group
or others) is neither read nor written. Entries are written to a temporary file and renamed
into place, so a concurrent command reads a whole entry or none; the
newest :data:`MAX_ENTRIES` are kept. Anything that goes wrong with the cache (a missing,
truncated, corrupt or foreign entry, a directory that cannot be read or written, a full disk) is
ignored: the project is checked as if there were no cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from kairos.language.actions_catalogue import ACTIONS, ActionSpec
from kairos.language.catalogue import Catalogue
from kairos.language.plan import JourneyPlan
from kairos.language.problems import Report
from kairos.language.segments import Segment

# The folders of a project that checking reads.
PROJECT_FOLDERS = ("journeys", "segments", "templates")
# Entries kept; the least recently used beyond these are deleted.
MAX_ENTRIES = 16
# Changed when what an entry holds changes shape (the code's own hash covers the rest).
_FORMAT = b"kairos-project-cache 1"
_SUFFIX = ".pickle"
_CODE = Path(__file__).resolve().parent.parent  # the kairos package
# Where the libraries the check uses are installed (Jinja's site-packages).
_SITE = Path(jinja2.__file__).resolve().parent.parent


@dataclass(frozen=True)
class CheckedProject:
    """What an entry holds: a Project's data, without its template store (a live object,
    re-created from the home)."""

    key: str
    catalogue: Catalogue
    plans: dict[str, JourneyPlan]
    warnings: Report
    trees: dict[str, dict[str, str]]
    segments: dict[str, Segment]


def project_key(home: Path, actions: Iterable[str] = ()) -> str:
    """The SHA-256 naming the check of ``home`` with the modules ``actions`` imported."""
    digest = hashlib.sha256(_FORMAT)
    _add(digest, "python", sys.version.encode())
    _add(digest, "installed", _installed(_SITE))
    _add(digest, "code", _code_digest())
    home = Path(home).resolve()
    _add(digest, "home", os.fsencode(home))
    for spec in sorted(ACTIONS.values(), key=lambda spec: spec.name):
        _add(digest, "action", _spec_text(spec).encode())
    for module in actions:
        _add(digest, "actions module", module.encode())
        _add(digest, "actions source", _module_source(module))
    for folder in PROJECT_FOLDERS:
        for relative, target, content in _files(home / folder):
            _add(digest, "file", f"{folder}/{relative}".encode())
            _add(digest, "link", target)
            _add(digest, "content", content)
    return digest.hexdigest()


def read_entry(directory: Path, key: str) -> CheckedProject | None:
    """The entry named ``key``, or None when there is none or it cannot be used."""
    path = directory / f"{key}{_SUFFIX}"
    try:
        if not (_private(directory) and _private(path)):
            return None
        with path.open("rb") as handle:
            entry = pickle.load(handle)
        if not (isinstance(entry, CheckedProject) and entry.key == key and _well_formed(entry)):
            return None
        # Recently used: pruning keeps it.
        with contextlib.suppress(OSError):
            os.utime(path)
        return entry
    except Exception:  # any entry that cannot be used means: check the project
        return None


def write_entry(directory: Path, entry: CheckedProject) -> None:
    """Store ``entry`` atomically and prune old entries; failures are ignored."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(directory):
            return
        descriptor, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                pickle.dump(entry, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(name, directory / f"{entry.key}{_SUFFIX}")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        _prune(directory)
    except Exception:  # a cache that cannot be written is no cache
        pass


def _private(path: Path) -> bool:
    """Whether only this user can have written ``path``: it is theirs and nobody else may
    write it. An entry is a pickle, which can run code when read: one that someone else could
    have put there (a shared /tmp, a group-writable folder) is never read."""
    if not hasattr(os, "geteuid"):
        return True  # Windows: a user's own cache folder is private by its ACLs
    status = path.stat()
    return status.st_uid == os.geteuid() and not status.st_mode & 0o022


def _well_formed(entry: CheckedProject) -> bool:
    return (
        isinstance(entry.catalogue, Catalogue)
        and isinstance(entry.warnings, Report)
        and isinstance(entry.plans, dict)
        and all(isinstance(plan, JourneyPlan) for plan in entry.plans.values())
        and isinstance(entry.trees, dict)
        and isinstance(entry.segments, dict)
        and all(isinstance(segment, Segment) for segment in entry.segments.values())
    )


def _prune(directory: Path) -> None:
    entries: list[tuple[float, Path]] = []
    for path in directory.glob(f"*{_SUFFIX}"):
        with contextlib.suppress(OSError):
            entries.append((path.stat().st_mtime, path))
    entries.sort(reverse=True)
    for _, path in entries[MAX_ENTRIES:]:
        with contextlib.suppress(OSError):
            path.unlink()


def _add(digest: Any, label: str, value: bytes) -> None:
    """One labelled, length-prefixed field: no two different inputs give the same stream."""
    digest.update(f"{label}:{len(value)}:".encode())
    digest.update(value)


@functools.cache
def _installed(site: Path) -> bytes:
    """The distributions installed in ``site`` (their ``.dist-info`` names carry their
    versions): installing or upgrading any of them (Jinja, pydantic, Babel, css-inline, the
    YAML parsers the check uses, or any other) gives another key. Listing a folder, not reading
    each distribution's metadata: well under a millisecond."""
    try:
        names = sorted(name for name in os.listdir(site) if name.endswith(".dist-info"))
    except OSError as err:
        return f"unlisted: {err.errno}".encode()
    return "\n".join(names).encode()


@functools.cache
def _code_digest() -> bytes:
    """SHA-256 of every kairos/**/*.py (once per process: the code does not change as it runs)."""
    digest = hashlib.sha256()
    for path in sorted(_CODE.rglob("*.py")):
        _add(digest, path.relative_to(_CODE).as_posix(), path.read_bytes())
    return digest.digest()


def _spec_text(spec: ActionSpec) -> str:
    derive = spec.derive
    where = "" if derive is None else f"{derive.__module__}.{derive.__qualname__}"
    return repr((spec.name, spec.description, dict(spec.args), dict(spec.result), where))


def _module_source(name: str) -> bytes:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if not file:
        return b""
    try:
        return Path(file).read_bytes()
    except OSError as err:
        return f"unreadable: {err.strerror}".encode()


def _files(folder: Path) -> Iterator[tuple[str, bytes, bytes]]:
    """(path under ``folder``, link target, content) of every file in it, sorted, following
    links to folders once (a loop is not followed twice)."""
    seen: set[Path] = set()
    found: list[tuple[str, bytes, bytes]] = []

    def walk(directory: Path, prefix: str) -> None:
        try:
            real = directory.resolve()
            if real in seen:
                return
            seen.add(real)
            children = sorted(os.scandir(directory), key=lambda child: child.name)
        except OSError:
            return
        for child in children:
            name = f"{prefix}{child.name}"
            target = _link_target(child)
            if child.is_dir():
                found.append((name + "/", target, b""))
                walk(Path(child.path), name + "/")
            else:
                found.append((name, target, _content(Path(child.path))))

    walk(folder, "")
    yield from found


def _link_target(child: os.DirEntry[str]) -> bytes:
    if not child.is_symlink():
        return b""
    try:
        return os.fsencode(os.path.realpath(child.path))
    except OSError:
        return b"?"


def _content(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        # Checking reports an unreadable file; whether it can be read is part of the key.
        return f"\0unreadable: {err.errno}".encode()
